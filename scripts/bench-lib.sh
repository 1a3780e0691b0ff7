# Shared by the whole-system benchmarks (scripts/bench.sh, scripts/bench-compare.sh,
# scripts/bench-observability.sh): processes
# cleaned up whatever happens, waits, process and machine counters, one wrk point, and a lattice
# brought up with hello deployed. Sourced, never run; the caller sets WORK (a scratch directory),
# RESULTS (the raw results file), THREADS, WARMUP and DURATION, and calls `bench_traps`.

say() { printf '\n==> %s\n' "$*" >&2; }
die() { printf 'bench: error: %s\n' "$*" >&2; exit 1; }
record() { printf '%s\n' "$*" >>"$RESULTS"; }

# Both servers run with the same environment: no backtrace captured by libraries.
unset RUST_BACKTRACE
export RUST_LIB_BACKTRACE=0
unset RUST_LOG

# --- Processes, cleaned up whatever happens ------------------------------------------------
PIDS=()
# Called once a side's lattice-host has joined, before anything is deployed: SIDE PID.
bench_host_joined() { :; }
# Extra cleanup of the caller (e.g. keeping logs), run before WORK is removed.
bench_on_exit() { :; }
bench_cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 1 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    # lattice up stops its nats-server; if it could not, stop that one too (its pid is in the
    # name of its ports file).
    local f
    for f in "$WORK"/*/up/nats/*.ports "$WORK"/up/nats/*.ports; do
        [ -e "$f" ] || continue
        pid="${f##*_}"
        pid="${pid%.ports}"
        # Only if that pid is still our nats-server (pids are recycled).
        if [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] &&
            tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" | grep -qF "$WORK/"; then
            kill -TERM "$pid" 2>/dev/null || true
        fi
    done
    bench_on_exit
    rm -rf "$WORK"
}
bench_traps() {
    trap bench_cleanup EXIT
    trap 'exit 130' INT TERM
}

# Starts "$@" in the background with its output in $1's log; sets STARTED to its pid.
start() {
    local log="$1"
    shift
    "$@" >"$log" 2>&1 &
    STARTED=$!
    PIDS+=("$STARTED")
}

stop() {
    local pid="$1"
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    # Forget it, so that cleanup never signals a recycled pid.
    local kept=() p
    for p in "${PIDS[@]}"; do
        [ "$p" = "$pid" ] || kept+=("$p")
    done
    PIDS=("${kept[@]}")
}

# Waits (at most $2 seconds) until `$3...` succeeds.
wait_until() {
    local what="$1" limit="$2"
    shift 2
    local deadline=$((SECONDS + limit))
    until "$@" >/dev/null 2>&1; do
        [ "$SECONDS" -lt "$deadline" ] || die "timed out waiting for $what"
        sleep 0.1
    done
}

http_ok() { [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$1")" = 200 ]; }
rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }
# "VmRSS anon=RssAnon file=RssFile" in kB.
rss_detail() { awk '/^VmRSS:/ { r = $2 } /^RssAnon:/ { a = $2 } /^RssFile:/ { f = $2 } END { print r, "anon_kb=" a, "file_kb=" f }' "/proc/$1/status"; }
hwm_kb() { awk '/^VmHWM:/ { print $2 }' "/proc/$1/status"; }
# utime + stime of a process, in clock ticks (fields 14 and 15, after the `(comm)` field).
cpu_ticks() { sed 's/^.*) //' "/proc/$1/stat" | awk '{ print $12 + $13 }'; }
# "total idle steal" ticks of all cores, from /proc/stat.
machine_ticks() { awk '$1 == "cpu" { t = 0; for (i = 2; i <= NF; i++) t += $i; print t, $5 + $6, $9; exit }' /proc/stat; }
free_port() {
    local port
    for _ in $(seq 1 100); do
        port=$((20000 + RANDOM % 20000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "$port"
            return 0
        fi
    done
    die "no free port found"
}

# The machine the figures come from.
record_machine() {
    local cpu mem
    cpu="$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)"
    mem="$(awk '/^MemTotal:/ { printf "%.0f", $2 / 1048576 }' /proc/meminfo)"
    record "# Lattice benchmarks $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    record "machine cpu=\"$cpu\" cores=$(nproc) mem_gib=$mem kernel=$(uname -r)"
}

# --- Tools --------------------------------------------------------------------------------
ensure_wrk() {
    command -v wrk >/dev/null 2>&1 && return 0
    command -v apt-get >/dev/null 2>&1 || die "wrk is missing; install it with your package manager"
    local sudo
    if [ "$(id -u)" -eq 0 ]; then
        sudo=()
    elif command -v sudo >/dev/null 2>&1; then
        sudo=(sudo)
    else
        die "wrk is missing, and not root and no sudo: as root, run: apt-get install wrk"
    fi
    say "installing wrk: ${sudo[*]:+${sudo[*]} }apt-get install -y --no-install-recommends wrk"
    "${sudo[@]}" apt-get update
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends wrk
}

# --- A lattice with hello deployed ---------------------------------------------------------

# lattice_with_hello SIDE LATTICE LATTICE_HOST HELLO: under $WORK/SIDE, `lattice up` with
# LATTICE, a separate LATTICE_HOST labelled role=bench (admitted with a join token when the CLI
# makes them), hello signed, pushed and deployed onto it at a fixed port (so that a restarted
# host serves the same URL). Sets, for the caller: SIDE_UP_PID, SIDE_HOST_PID, SIDE_URL,
# SIDE_PORT, and SIDE_HOST_ARGS (the host's arguments, to start it again).
# The caller may set HOST_ENV (VAR=VALUE words, the environment of that host only) and
# HOST_EXTRA_ARGS (more lattice-host arguments) before the call; both empty by default.
HOST_ENV=()
HOST_EXTRA_ARGS=()
lattice_with_hello() {
    local side="$1" lattice="$2" host_bin="$3" hello="$4"
    local dir="$WORK/$side"
    # Each side's CLI finds its own lattice through its state directory's record.
    local ctl=(env LATTICE_STATE_DIR="$dir/up" "$lattice")
    mkdir -p "$dir/up" "$dir/host"
    start "$dir/up.log" "$lattice" up --nats-port 0 --state-dir "$dir/up"
    printf -v "${side}_UP_PID" %s "$STARTED"
    wait_until "$side: lattice up to write up.json" 60 test -s "$dir/up/up.json"
    json_field() { sed -n "s/.*\"$1\": *\"\\([^\"]*\\)\".*/\\1/p" "$dir/up/up.json"; }
    local host_args=(--nats-url "$(json_field nats_url)" --lattice "$(json_field lattice)"
        --trust-issuer "$(json_field issuer)" --trust-operator "$(json_field operator)"
        --label role=bench --name bench --state-dir "$dir/host")
    # A lattice that admits hosts (join tokens) needs one for this host; older ones admit all.
    local token
    if token="$("${ctl[@]}" ctl hosts token --label role=bench --note bench 2>/dev/null)"; then
        host_args+=(--join-token "$token")
    fi
    host_args+=("${HOST_EXTRA_ARGS[@]}")
    # `env` execs the host: the pid recorded is the host's.
    start "$dir/host.log" env "${HOST_ENV[@]}" "$host_bin" "${host_args[@]}"
    printf -v "${side}_HOST_PID" %s "$STARTED"
    host_joined() { "${ctl[@]}" ctl get hosts -o json | grep -q '"bench"'; }
    wait_until "$side: the lattice-host to join" 60 host_joined
    bench_host_joined "$side" "$STARTED"

    "$lattice" sign "$hello" -o "$dir/hello.signed.wasm" --issuer "$dir/up/keys/issuer.nk" \
        --name hello --version 0.1.0 --allow wasi:http >/dev/null
    "${ctl[@]}" push "$dir/hello.signed.wasm" >/dev/null
    local port
    port="$(free_port)"
    hello_manifest "$port" >"$dir/hello.yaml"
    "${ctl[@]}" ctl deploy "$dir/hello.yaml" --wait >/dev/null
    local status addr
    status="$("${ctl[@]}" ctl status hello -o json)"
    addr="$(grep -o '"endpoint": *"[^"]*"' <<<"$status" | head -n 1 | sed 's/.*"\([^"]*\)"$/\1/')"
    [ -n "$addr" ] || die "$side: no endpoint in the status: $status"
    wait_until "$side: Lattice to answer on http://$addr/" 30 http_ok "http://$addr/"
    printf -v "${side}_URL" %s "http://$addr/"
    printf -v "${side}_PORT" %s "$port"
    eval "${side}_HOST_ARGS=(\"\${host_args[@]}\")"
}

# deploy_on_bench_host SIDE LATTICE FILE APP PORT [ALLOW...]: signs FILE as APP 0.1.0 with
# SIDE's dev issuer (allowed to import wasi:http and each ALLOW), pushes it and deploys it as app
# APP on the role=bench host at 127.0.0.1:PORT; sets ${SIDE}_<APP>_URL (APP with `-` as `_`).
deploy_on_bench_host() {
    local side="$1" lattice="$2" file="$3" app="$4" port="$5" allow
    local dir="$WORK/$side"
    local ctl=(env LATTICE_STATE_DIR="$dir/up" "$lattice")
    # The interfaces it may import beyond WASI's base: wasi:http, and those given after the port.
    local allows=(--allow wasi:http)
    for allow in "${@:6}"; do allows+=(--allow "$allow"); done
    "$lattice" sign "$file" -o "$dir/$app.signed.wasm" --issuer "$dir/up/keys/issuer.nk" \
        --name "$app" --version 0.1.0 "${allows[@]}" >/dev/null
    "${ctl[@]}" push "$dir/$app.signed.wasm" >/dev/null
    hello_manifest "$port" "$app" >"$dir/$app.yaml"
    "${ctl[@]}" ctl deploy "$dir/$app.yaml" --wait >/dev/null
    wait_until "$side: $app to answer on http://127.0.0.1:$port/" 30 http_ok "http://127.0.0.1:$port/"
    printf -v "${side}_${app//-/_}_URL" %s "http://127.0.0.1:$port/"
}

# An app (default hello; the image is `<app>:0.1.0`) on the role=bench host, served at
# 127.0.0.1:$1.
hello_manifest() {
    local app="${2:-hello}"
    cat <<EOF
apiVersion: core.oam.dev/v1beta1
kind: Application
metadata:
  name: $app
  annotations:
    version: bench
spec:
  components:
    - name: $app
      type: component
      properties:
        image: $app:0.1.0
        config:
          - name: greeting
            properties:
              GREETING: Hello
      traits:
        - type: spreadscaler
          properties:
            instances: 1
            spread:
              - name: bench
                requirements:
                  role: bench
    - name: httpserver
      type: capability
      properties:
        image: builtin:http-server
      traits:
        - type: link
          properties:
            namespace: wasi
            package: http
            interfaces: [incoming-handler]
            target:
              name: $app
            source:
              config:
                - name: default-http
                  properties:
                    address: 127.0.0.1:$1
EOF
}

# --- Load ----------------------------------------------------------------------------------
to_us() { # wrk's "123.45us" / "1.23ms" / "1.00s" -> microseconds
    awk -v v="$1" 'BEGIN {
        if (v ~ /us$/) { sub(/us$/, "", v); print v + 0 }
        else if (v ~ /ms$/) { sub(/ms$/, "", v); print v * 1000 }
        else if (v ~ /s$/) { sub(/s$/, "", v); print v * 1000000 }
        else print "nan" }'
}

# point NAME PID URL C PASS: one measured point, appended to the results.
point() {
    local name="$1" pid="$2" url="$3" c="$4" pass="$5" out
    local t=$THREADS
    [ "$t" -le "$c" ] || t=$c
    wrk -t "$t" -c "$c" -d "${WARMUP}s" "$url" >/dev/null 2>&1 || true
    local cpu0 cpu1 sys0 sys1
    cpu0=$(cpu_ticks "$pid")
    sys0="$(machine_ticks)"
    out="$(wrk -t "$t" -c "$c" -d "${DURATION}s" --latency "$url")"
    cpu1=$(cpu_ticks "$pid")
    sys1="$(machine_ticks)"
    printf '%s\n' "$out" >"$WORK/wrk-$name-c$c-p$pass.txt"
    local rps p50 p99 requests errors non2xx cpu_us
    rps="$(awk '/^Requests\/sec:/ { print $2 }' <<<"$out")"
    requests="$(awk '/requests in/ { print $1 }' <<<"$out")"
    p50="$(to_us "$(awk '$1 == "50%" { print $2 }' <<<"$out")")"
    p99="$(to_us "$(awk '$1 == "99%" { print $2 }' <<<"$out")")"
    errors="$(awk '/Socket errors/ { print }' <<<"$out" | tr -d ',' | awk '{ print $4 + $6 + $8 + $10 }')"
    non2xx="$(awk '/Non-2xx/ { print $NF }' <<<"$out")"
    local tck
    tck="$(getconf CLK_TCK)"
    cpu_us="$(awk -v a="$cpu0" -v b="$cpu1" -v n="$requests" -v t="$tck" \
        'BEGIN { if (n > 0) printf "%.1f", (b - a) / t * 1e6 / n; else print "nan" }')"
    # Machine-wide over the point, in % of all cores: busy (server + wrk + anything else
    # running), the server alone, and steal (time the hypervisor gave to other guests).
    local shares
    shares="$(awk -v s0="$sys0" -v s1="$sys1" -v a="$cpu0" -v b="$cpu1" 'BEGIN {
        split(s0, x, " "); split(s1, y, " "); total = y[1] - x[1]; idle = y[2] - x[2]; steal = y[3] - x[3]
        if (total <= 0) { print "machine_busy_pct=nan server_pct=nan steal_pct=nan"; exit }
        printf "machine_busy_pct=%.0f server_pct=%.0f steal_pct=%.1f", 100 * (total - idle - steal) / total, 100 * (b - a) / total, 100 * steal / total }')"
    record "http server=$name c=$c pass=$pass rps=$rps p50_us=$p50 p99_us=$p99 requests=$requests cpu_us_per_req=$cpu_us socket_errors=${errors:-0} non2xx=${non2xx:-0} $shares"
    printf '  %-9s c=%-3s pass %s: %10s req/s  p50 %8s us  p99 %9s us  %6s us CPU/req  (%s)\n' \
        "$name" "$c" "$pass" "$rps" "$p50" "$p99" "$cpu_us" "$shares" >&2
}

# alternate A_NAME A_PID A_URL B_NAME B_PID B_URL: every concurrency of $CONCURRENCY for
# $REPEATS passes, the two servers measured in turn, which goes first alternating by pass.
alternate() {
    local pass c
    for pass in $(seq 1 "$REPEATS"); do
        for c in $CONCURRENCY; do
            if [ -z "$5" ]; then
                point "$1" "$2" "$3" "$c" "$pass"
            elif [ $((pass % 2)) -eq 1 ]; then
                point "$1" "$2" "$3" "$c" "$pass"
                point "$4" "$5" "$6" "$c" "$pass"
            else
                point "$4" "$5" "$6" "$c" "$pass"
                point "$1" "$2" "$3" "$c" "$pass"
            fi
        done
    done
}

# awk functions for reading results lines: kv("name") is the value of a `name=value` field;
# median("1 3 2") is the median of space-separated numbers.
AWK_RESULTS='
function kv(field,    i, x) { for (i = 1; i <= NF; i++) { split($i, x, "="); if (x[1] == field) return x[2] } return "" }
function median(s,    v, n, i, j, x) {
    n = split(s, v, " ")
    if (n == 0) return "nan"
    for (i = 2; i <= n; i++) { x = v[i] + 0; for (j = i - 1; j >= 1 && v[j] + 0 > x; j--) v[j + 1] = v[j]; v[j + 1] = x }
    return n % 2 ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
}
'

# http_table TITLE A_NAME A_LABEL B_NAME B_LABEL < results: medians over passes of each
# (server, concurrency), and the ratio A/B in requests per second (median of per-pass ratios).
http_table() {
    awk -v title="$1" -v a="$2" -v al="$3" -v b="$4" -v bl="$5" "$AWK_RESULTS"'
$1 == "http" {
    s = kv("server"); c = kv("c"); p = kv("pass")
    key = s SUBSEP c
    rps[key] = rps[key] " " kv("rps"); p50[key] = p50[key] " " kv("p50_us"); p99[key] = p99[key] " " kv("p99_us"); cpu[key] = cpu[key] " " kv("cpu_us_per_req")
    one[s, c, p] = kv("rps")
    if (!(c in seen)) { seen[c] = 1; order[++nc] = c }
    if (p > np) np = p
}
END {
    printf "\n%s, median of %d passes\n", title, np
    printf "%4s | %12s %8s %8s %7s | %12s %8s %8s %7s | %s\n", "c", al " r/s", "p50 us", "p99 us", "CPU/req", bl " r/s", "p50 us", "p99 us", "CPU/req", "ratio r/s (per pass)"
    for (i = 1; i <= nc; i++) {
        c = order[i]; l = a SUBSEP c; w = b SUBSEP c
        ratios = ""; list = ""
        for (p = 1; p <= np; p++) if ((((b, c, p) in one)) && one[b, c, p] > 0) {
            r = one[a, c, p] / one[b, c, p]; ratios = ratios " " r; list = list sprintf("%s%.2f", list == "" ? "" : " ", r)
        }
        ratio = ratios == "" ? "-" : sprintf("%.2f (%s)", median(ratios), list)
        printf "%4s | %12.0f %8.0f %8.0f %7.1f | %12.0f %8.0f %8.0f %7.1f | %s\n", c,
            median(rps[l]), median(p50[l]), median(p99[l]), median(cpu[l]),
            median(rps[w]), median(p50[w]), median(p99[w]), median(cpu[w]), ratio
    }
}'
}
