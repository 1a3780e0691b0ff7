#!/usr/bin/env bash
# `make bench`: the foundation benchmarks, printed as a table and written raw to
# target/bench/results.txt. Figures are measured and reported, never asserted.
#
#   1. HTTP hello through a `lattice-host` (built with the `edge` profile, as for gateways)
#      beside `wasmtime serve` on the same
#      component, with wrk at concurrency 1, 16 and 64, the two servers measured alternately;
#   2. assignment -> first HTTP 200 with cached compiled code (cargo bench, tests/benches/);
#   3. lattice-host RSS idle, with hello deployed, and after a restart that serves hello from
#      the saved assignment and cached compiled code (with the restart -> first 200 time);
#      binary sizes (release, stripped, edge).
# Raw server logs and every wrk output are kept in target/bench/logs/.
#
# Settings (environment):
#   BENCH_DURATION=10      seconds measured per point
#   BENCH_WARMUP=2         seconds of warm-up load before each point (not measured)
#   BENCH_THREADS=1        wrk threads (the load generator shares the machine's cores)
#   BENCH_CONCURRENCY="1 16 64"
#   BENCH_REPEATS=3        passes over every (concurrency, server) pair; the order of the
#                          two servers alternates between passes; the table shows medians
#                          over passes, and the median of the per-pass ratios
#   BENCH_ROUNDS=20        rounds of the assignment benchmark (cached case)
#   BENCH_SKIP_BUILD=1     use the binaries already built
#   BENCH_HOST_PROFILE=edge  the cargo profile of the measured lattice-host (`release` to
#                          compare; the `lattice` CLI driving the benchmark is always release)
#   WASMTIME=/path         the wasmtime CLI (default: PATH, then ~/.cargo/bin/wasmtime);
#                          without it the peer column is skipped
#                          (install: cargo install wasmtime-cli@48.0.8 --locked)
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"

DURATION="${BENCH_DURATION:-10}"
WARMUP="${BENCH_WARMUP:-2}"
THREADS="${BENCH_THREADS:-1}"
CONCURRENCY="${BENCH_CONCURRENCY:-1 16 64}"
REPEATS="${BENCH_REPEATS:-3}"
ROUNDS="${BENCH_ROUNDS:-20}"

OUT_DIR="$REPO_ROOT/target/bench"
RESULTS="$OUT_DIR/results.txt"
HOST_PROFILE="${BENCH_HOST_PROFILE:-edge}"
LATTICE="$REPO_ROOT/target/release/lattice"
LATTICE_HOST="$REPO_ROOT/target/$HOST_PROFILE/lattice-host"
HELLO="$REPO_ROOT/examples/target/wasm32-wasip2/release/hello.wasm"

say() { printf '\n==> %s\n' "$*" >&2; }
die() { printf 'bench: error: %s\n' "$*" >&2; exit 1; }

# Both servers run with the same environment: no backtrace captured by libraries.
unset RUST_BACKTRACE
export RUST_LIB_BACKTRACE=0
unset RUST_LOG

# --- Processes, cleaned up whatever happens ------------------------------------------------
WORK="$(mktemp -d "${TMPDIR:-/tmp}/lattice-bench.XXXXXX")"
PIDS=()
cleanup() {
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
    for f in "$WORK"/up/nats/*.ports; do
        [ -e "$f" ] || continue
        pid="${f##*_}"
        pid="${pid%.ports}"
        # Only if that pid is still our nats-server (pids are recycled).
        if [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] &&
            tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" | grep -qF "$WORK/up/nats"; then
            kill -TERM "$pid" 2>/dev/null || true
        fi
    done
    # Keep the logs and wrk's full outputs next to the results.
    if [ -d "$OUT_DIR" ]; then
        rm -rf "$OUT_DIR/logs"
        mkdir -p "$OUT_DIR/logs"
        cp "$WORK"/*.log "$WORK"/*.txt "$OUT_DIR/logs/" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

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

# --- Tools --------------------------------------------------------------------------------
if ! command -v wrk >/dev/null 2>&1; then
    command -v apt-get >/dev/null 2>&1 || die "wrk is missing; install it with your package manager"
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
fi
command -v curl >/dev/null 2>&1 || die "curl is missing (make deps installs it)"
command -v jq >/dev/null 2>&1 || JQ_MISSING=1

WASMTIME="${WASMTIME:-$(command -v wasmtime || true)}"
if [ -z "$WASMTIME" ] && [ -x "$HOME/.cargo/bin/wasmtime" ]; then
    WASMTIME="$HOME/.cargo/bin/wasmtime"
fi
if [ -z "$WASMTIME" ]; then
    say "wasmtime CLI not found: the peer column is skipped (cargo install wasmtime-cli@48.0.8 --locked)"
fi

# --- Build --------------------------------------------------------------------------------
mkdir -p "$OUT_DIR"
if [ "${BENCH_SKIP_BUILD:-0}" != 1 ]; then
    say "Building release binaries (cargo build --release -p lattice-cli -p lattice-host)"
    cargo build --release -p lattice-cli -p lattice-host
    if [ "$HOST_PROFILE" != release ]; then
        say "Building the measured host (cargo build --profile $HOST_PROFILE -p lattice-host --bin lattice-host)"
        cargo build --profile "$HOST_PROFILE" -p lattice-host --bin lattice-host
    fi
    say "Building the hello component"
    cargo build --release --target wasm32-wasip2 --manifest-path examples/Cargo.toml -p hello
    say "Building the assignment benchmark"
    cargo bench -p lattice-tests --bench assign_to_first_200 --no-run --message-format=json-render-diagnostics \
        | sed -n 's/.*"executable":"\([^"]*assign_to_first_200[^"]*\)".*/\1/p' | tail -n 1 >"$OUT_DIR/assign-bench-exe"
fi
# The benchmark executable built with the binaries above (so a later edit of the tree does not
# rebuild it halfway through the run).
ASSIGN_BENCH="$(cat "$OUT_DIR/assign-bench-exe" 2>/dev/null || true)"
if [ -z "$ASSIGN_BENCH" ] || [ ! -x "$ASSIGN_BENCH" ]; then
    ASSIGN_BENCH="$(ls -t "$REPO_ROOT"/target/release/deps/assign_to_first_200-* 2>/dev/null | grep -v '\.d$' | head -n 1 || true)"
fi
for f in "$LATTICE" "$LATTICE_HOST" "$HELLO" "$ASSIGN_BENCH"; do
    [ -f "$f" ] || die "$f is missing (run without BENCH_SKIP_BUILD=1)"
done

mkdir -p "$OUT_DIR"
: >"$RESULTS"
record() { printf '%s\n' "$*" >>"$RESULTS"; }

# --- The machine ----------------------------------------------------------------------------
CPU_MODEL="$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)"
MEM_GB="$(awk '/^MemTotal:/ { printf "%.0f", $2 / 1048576 }' /proc/meminfo)"
record "# Lattice benchmarks $(date -u +%Y-%m-%dT%H:%M:%SZ)"
record "machine cpu=\"$CPU_MODEL\" cores=$(nproc) mem_gib=$MEM_GB kernel=$(uname -r)"
record "commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD 2>/dev/null || echo ' (dirty tree)')"
NATS_BIN="$(command -v nats-server || echo /usr/sbin/nats-server)"
record "versions rustc=\"$(rustc --version)\" wrk=\"$(wrk -v 2>&1 | head -n 1 | awk '{print $2}')\" nats-server=\"$("$NATS_BIN" --version 2>&1 | head -n 1)\" wasmtime=\"$([ -n "$WASMTIME" ] && "$WASMTIME" --version)\""
record "binaries lattice-host profile=$HOST_PROFILE built $(date -u -r "$LATTICE_HOST" +%Y-%m-%dT%H:%M:%SZ)$([ "${BENCH_SKIP_BUILD:-0}" = 1 ] && echo ' (BENCH_SKIP_BUILD=1: not rebuilt for this run)')"
record "environment RUST_BACKTRACE=unset RUST_LIB_BACKTRACE=0 RUST_LOG=unset"
record "load wrk -t $THREADS -c <c> -d ${DURATION}s --latency, after -d ${WARMUP}s warm-up; loopback; $REPEATS passes, servers alternated"
record "load_before $(cut -d' ' -f1-3 /proc/loadavg)"

# --- A lattice, and a lattice-host process alone -----------------------------------------
say "Starting a lattice (lattice up) and a separate lattice-host labelled role=bench"
mkdir -p "$WORK/up" "$WORK/host"
start "$WORK/up.log" "$LATTICE" up --nats-port 0 --state-dir "$WORK/up"
UP_PID=$STARTED
wait_until "lattice up to write up.json" 60 test -s "$WORK/up/up.json"
json_field() { sed -n "s/.*\"$1\": *\"\\([^\"]*\\)\".*/\\1/p" "$WORK/up/up.json"; }
NATS_URL="$(json_field nats_url)"
LATTICE_NAME="$(json_field lattice)"
ISSUER="$(json_field issuer)"
OPERATOR="$(json_field operator)"
export LATTICE_STATE_DIR="$WORK/up"

start "$WORK/host.log" "$LATTICE_HOST" --nats-url "$NATS_URL" --lattice "$LATTICE_NAME" \
    --trust-issuer "$ISSUER" --trust-operator "$OPERATOR" --label role=bench --name bench \
    --state-dir "$WORK/host"
HOST_PID=$STARTED
host_joined() { "$LATTICE" ctl get hosts -o json | grep -q '"bench"'; }
wait_until "the lattice-host to join" 60 host_joined
sleep 3
record "rss_idle_kb $(rss_detail "$HOST_PID") (lattice-host joined, nothing deployed)"

say "Signing, pushing and deploying hello onto the role=bench host"
"$LATTICE" sign "$HELLO" -o "$WORK/hello.signed.wasm" --issuer "$WORK/up/keys/issuer.nk" \
    --name hello --version 0.1.0 --allow wasi:http >/dev/null
"$LATTICE" push "$WORK/hello.signed.wasm" >/dev/null
cat >"$WORK/hello.yaml" <<'EOF'
apiVersion: core.oam.dev/v1beta1
kind: Application
metadata:
  name: hello
  annotations:
    version: bench
spec:
  components:
    - name: hello
      type: component
      properties:
        image: hello:0.1.0
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
              name: hello
            source:
              config:
                - name: default-http
                  properties:
                    address: 127.0.0.1:L_PORT
EOF
# A fixed port, so that the host serves the same URL after the restart below.
L_PORT="$(free_port)"
sed -i "s/L_PORT/$L_PORT/" "$WORK/hello.yaml"
"$LATTICE" ctl deploy "$WORK/hello.yaml" --wait >/dev/null
STATUS_JSON="$("$LATTICE" ctl status hello -o json)"
if [ -z "${JQ_MISSING:-}" ]; then
    L_ADDR="$(jq -r '[.components[] | select(.endpoint != null) | .endpoint][0]' <<<"$STATUS_JSON")"
    L_HOST="$(jq -r '[.components[] | select(.endpoint != null) | .host][0]' <<<"$STATUS_JSON")"
else
    L_ADDR="$(grep -o '"endpoint": *"[^"]*"' <<<"$STATUS_JSON" | head -n 1 | sed 's/.*"\([^"]*\)"$/\1/')"
    L_HOST=""
fi
[ -n "$L_ADDR" ] && [ "$L_ADDR" != null ] || die "no endpoint in the status: $STATUS_JSON"
if [ -n "$L_HOST" ] && ! "$LATTICE" ctl get hosts -o json | jq -e --arg id "$L_HOST" \
    '.[] | select(.id == $id and .name == "bench")' >/dev/null 2>&1; then
    die "hello was placed on $L_HOST, not on the bench host"
fi
LATTICE_URL="http://$L_ADDR/"
wait_until "Lattice to answer on $LATTICE_URL" 30 http_ok "$LATTICE_URL"
sleep 2
record "rss_deployed_before_load_kb $(rss_detail "$HOST_PID") (hello deployed and compiled by the host's compiler process, one request served)"
record "lattice_url $LATTICE_URL body=\"$(curl -s "$LATTICE_URL" | tr -d '\n')\""

# --- wasmtime serve, same component, same environment for the guest ------------------------
W_PID=""
if [ -n "$WASMTIME" ]; then
    W_PORT="$(free_port)"
    say "Starting wasmtime serve on 127.0.0.1:$W_PORT"
    start "$WORK/wasmtime.log" "$WASMTIME" serve -S cli --addr "127.0.0.1:$W_PORT" \
        --env GREETING=Hello --env LATTICE_HOST_NAME=bench --env LATTICE_HOST_ID=bench \
        "$HELLO"
    W_PID=$STARTED
    WASMTIME_URL="http://127.0.0.1:$W_PORT/"
    wait_until "wasmtime serve to answer on $WASMTIME_URL" 60 http_ok "$WASMTIME_URL"
    record "wasmtime_url $WASMTIME_URL body=\"$(curl -s "$WASMTIME_URL" | tr -d '\n')\""
fi

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

say "HTTP load: wrk -t $THREADS, ${WARMUP}s warm-up + ${DURATION}s per point, $REPEATS passes (load average now: $(cut -d' ' -f1-3 /proc/loadavg))"
for pass in $(seq 1 "$REPEATS"); do
    for c in $CONCURRENCY; do
        if [ -z "$W_PID" ]; then
            point lattice "$HOST_PID" "$LATTICE_URL" "$c" "$pass"
        elif [ $((pass % 2)) -eq 1 ]; then
            point lattice "$HOST_PID" "$LATTICE_URL" "$c" "$pass"
            point wasmtime "$W_PID" "$WASMTIME_URL" "$c" "$pass"
        else
            point wasmtime "$W_PID" "$WASMTIME_URL" "$c" "$pass"
            point lattice "$HOST_PID" "$LATTICE_URL" "$c" "$pass"
        fi
    done
done
record "load_after_http $(cut -d' ' -f1-3 /proc/loadavg)"

sleep 5
record "rss_deployed_after_load_kb $(rss_detail "$HOST_PID") (5 s after the last load)"
record "rss_peak_kb $(hwm_kb "$HOST_PID") (VmHWM of the lattice-host over the whole run)"
if [ -n "$W_PID" ]; then
    record "wasmtime_rss_after_load_kb $(rss_kb "$W_PID") peak_kb=$(hwm_kb "$W_PID")"
    stop "$W_PID"
fi

# The same host restarted: it serves hello from its saved assignment and its cached compiled
# code, so it starts no compiler process (the steady state of a rebooted gateway).
say "Restarting the lattice-host (saved assignment, cached compiled code)"
stop "$HOST_PID"
wait_until "the port to close" 30 sh -c "! curl -s -o /dev/null --max-time 1 '$LATTICE_URL'"
RESTART_T0="$(date +%s%N)"
start "$WORK/host-restarted.log" "$LATTICE_HOST" --nats-url "$NATS_URL" --lattice "$LATTICE_NAME" \
    --trust-issuer "$ISSUER" --trust-operator "$OPERATOR" --label role=bench --name bench \
    --state-dir "$WORK/host"
HOST_PID=$STARTED
deadline=$((SECONDS + 60))
# Polled with bash's /dev/tcp (no process per attempt while the port is closed).
get_200() {
    (exec 3<>"/dev/tcp/127.0.0.1/$L_PORT" &&
        printf 'GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n' >&3 &&
        head -c 12 <&3 | grep -q ' 200') 2>/dev/null
}
until get_200; do
    [ "$SECONDS" -lt "$deadline" ] || die "the restarted host does not answer on $LATTICE_URL"
done
RESTART_T1="$(date +%s%N)"
record "restart_to_first_200_ms $(((RESTART_T1 - RESTART_T0) / 1000000)) (lattice-host process started -> first 200, polling a connect)"
wait_until "the restarted host to rejoin" 60 host_joined
sleep 3
wait_until "the restarted host to serve hello" 30 http_ok "$LATTICE_URL"
record "rss_restarted_kb $(rss_detail "$HOST_PID") (restarted, hello served from cached code, one request)"
wrk -t "$THREADS" -c 16 -d "${DURATION}s" "$LATTICE_URL" >/dev/null
sleep 5
record "rss_restarted_after_load_kb $(rss_detail "$HOST_PID") (after ${DURATION}s of wrk -c 16, then 5 s idle)"
if grep -q "compiled component" "$WORK/host-restarted.log"; then
    record "note the restarted host compiled hello again (its compiled-code cache was not used)"
fi
if grep -q "stopped serving HTTP" "$WORK/host-restarted.log"; then
    record "note the restarted host stopped serving hello for a moment after its restart (see its log)"
fi
stop "$HOST_PID"
stop "$UP_PID"

# --- Binary sizes ----------------------------------------------------------------------------
for bin in lattice-host lattice; do
    path="$REPO_ROOT/target/release/$bin"
    [ -f "$path" ] || continue
    strip -o "$WORK/$bin.stripped" "$path"
    record "binary $bin release_bytes=$(stat -c %s "$path") stripped_bytes=$(stat -c %s "$WORK/$bin.stripped")"
done
if [ "$HOST_PROFILE" != release ]; then
    record "binary lattice-host ${HOST_PROFILE}_bytes=$(stat -c %s "$LATTICE_HOST")"
fi
record "component hello.wasm bytes=$(stat -c %s "$HELLO")"

# --- Assignment -> first 200 -------------------------------------------------------------------
say "Assignment -> first 200 (cargo bench -p lattice-tests --bench assign_to_first_200 -- $ROUNDS)"
"$ASSIGN_BENCH" "$ROUNDS" | tee "$WORK/assign.txt" >&2
grep '^RESULT ' "$WORK/assign.txt" | sed 's/^RESULT //' >>"$RESULTS"
record "load_after_all $(cut -d' ' -f1-3 /proc/loadavg)"

# --- Table ---------------------------------------------------------------------------------
awk -v profile="$HOST_PROFILE" '
function kv(field,    i, a) { for (i = 1; i <= NF; i++) { split($i, a, "="); if (a[1] == field) return a[2] } return "" }
# median of the space-separated numbers in s
function median(s,    v, n, i, j, x) {
    n = split(s, v, " ")
    if (n == 0) return "nan"
    for (i = 2; i <= n; i++) { x = v[i] + 0; for (j = i - 1; j >= 1 && v[j] + 0 > x; j--) v[j + 1] = v[j]; v[j + 1] = x }
    return n % 2 ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
}
$1 == "http" {
    s = kv("server"); c = kv("c"); p = kv("pass")
    key = s SUBSEP c
    rps[key] = rps[key] " " kv("rps"); p50[key] = p50[key] " " kv("p50_us"); p99[key] = p99[key] " " kv("p99_us"); cpu[key] = cpu[key] " " kv("cpu_us_per_req")
    one[s, c, p] = kv("rps")
    if (!(c in seen)) { seen[c] = 1; order[++nc] = c }
    if (p > np) np = p
}
$1 == "rss_idle_kb" { idle = $2 }
$1 == "rss_deployed_after_load_kb" { after = $2 }
$1 == "rss_deployed_before_load_kb" { before = $2 }
$1 == "rss_peak_kb" { peak = $2 }
$1 == "rss_restarted_kb" { rs = $2 }
$1 == "rss_restarted_after_load_kb" { rsl = $2 }
$1 == "restart_to_first_200_ms" { restart = $2 }
$1 == "binary" { bins[++nbins] = $0 }
$1 ~ /^assign_to_first_200/ { assign[$1] = $0 }
END {
    printf "\nHTTP hello, median of %d passes (Lattice = lattice-host, %s profile; peer = wasmtime serve)\n", np, profile
    printf "%4s | %12s %8s %8s %7s | %12s %8s %8s %7s | %s\n", "c", "Lattice r/s", "p50 us", "p99 us", "CPU/req", "wasmtime r/s", "p50 us", "p99 us", "CPU/req", "ratio r/s (per pass)"
    for (i = 1; i <= nc; i++) {
        c = order[i]; l = "lattice" SUBSEP c; w = "wasmtime" SUBSEP c
        ratios = ""; list = ""
        for (p = 1; p <= np; p++) if (((("wasmtime", c, p) in one)) && one["wasmtime", c, p] > 0) {
            r = one["lattice", c, p] / one["wasmtime", c, p]; ratios = ratios " " r; list = list sprintf("%s%.2f", list == "" ? "" : " ", r)
        }
        ratio = ratios == "" ? "-" : sprintf("%.2f (%s)", median(ratios), list)
        printf "%4s | %12.0f %8.0f %8.0f %7.1f | %12.0f %8.0f %8.0f %7.1f | %s\n", c,
            median(rps[l]), median(p50[l]), median(p99[l]), median(cpu[l]),
            median(rps[w]), median(p50[w]), median(p99[w]), median(cpu[w]), ratio
    }
    printf "\nlattice-host RSS (MiB): idle %.1f; hello deployed (compiled by its compiler process) %.1f before load, %.1f after load, peak %.1f\n", idle / 1024, before / 1024, after / 1024, peak / 1024
    printf "lattice-host restarted (cached code): first 200 %s ms after the process started; RSS %.1f MiB, %.1f MiB after load\n", restart, rs / 1024, rsl / 1024
    for (b = 1; b <= nbins; b++) print bins[b]
    for (a in assign) print assign[a]
}' "$RESULTS" | tee "$OUT_DIR/table.txt"
printf '\nRaw results: %s\n' "$RESULTS"
