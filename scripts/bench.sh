#!/usr/bin/env bash
# `make bench`: the foundation benchmarks, printed as a table and written raw to
# target/bench/results.txt. Figures are measured and reported, never asserted.
#
#   1. HTTP hello, and wasmCloud's hello template built with `wasmcloud-component`, through a
#      `lattice-host` (built with the `edge` profile, as for gateways) beside `wasmtime serve` on
#      the same component, with wrk at concurrency 1, 16 and 64, the two servers measured
#      alternately; with BENCH_WASI_P3=1 the host runs with `--wasi-p3` and hello for WASI 0.3
#      (`hello-p3`, instances reused) is measured too, and against the 0.2 hello;
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
#   BENCH_WASI_P3=1        the host with --wasi-p3, and hello-p3 measured (WASI 0.3 makes
#                          every instance dearer: section 1's figures are without it)
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
# wasmCloud's HTTP hello world template, built with the `wasmcloud-component` crate: the
# component wasmCloud users bring (larger, and importing the WASI CLI interfaces).
WC_HELLO="$REPO_ROOT/examples/target/wasm32-wasip2/release/wasmcloud_hello.wasm"
# hello for WASI 0.3 (`wasi:http/handler@0.3.0`): served with instances reused, on a host with
# --wasi-p3 (BENCH_WASI_P3=1).
P3_HELLO="$REPO_ROOT/examples/target/wasm32-wasip2/release/hello_p3.wasm"
WASI_P3="${BENCH_WASI_P3:-0}"

# shellcheck source=scripts/bench-lib.sh
source "$REPO_ROOT/scripts/bench-lib.sh"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/lattice-bench.XXXXXX")"
# Keep the logs and wrk's full outputs next to the results.
bench_on_exit() {
    if [ -d "$OUT_DIR" ]; then
        rm -rf "$OUT_DIR/logs"
        mkdir -p "$OUT_DIR/logs"
        cp "$WORK"/*.log "$WORK"/*.txt "$WORK"/lattice/*.log "$OUT_DIR/logs/" 2>/dev/null || true
    fi
}
bench_traps

# --- Tools --------------------------------------------------------------------------------
ensure_wrk
command -v curl >/dev/null 2>&1 || die "curl is missing (make deps installs it)"

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
    cargo build --release --target wasm32-wasip2 --manifest-path examples/Cargo.toml -p hello -p wasmcloud-hello -p hello-p3
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
for f in "$LATTICE" "$LATTICE_HOST" "$HELLO" "$WC_HELLO" "$P3_HELLO" "$ASSIGN_BENCH"; do
    [ -f "$f" ] || die "$f is missing (run without BENCH_SKIP_BUILD=1)"
done

mkdir -p "$OUT_DIR"
: >"$RESULTS"

# --- The machine ----------------------------------------------------------------------------
record_machine
record "commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD 2>/dev/null || echo ' (dirty tree)')"
NATS_BIN="$(command -v nats-server || echo /usr/sbin/nats-server)"
record "versions rustc=\"$(rustc --version)\" wrk=\"$(wrk -v 2>&1 | head -n 1 | awk '{print $2}')\" nats-server=\"$("$NATS_BIN" --version 2>&1 | head -n 1)\" wasmtime=\"$([ -n "$WASMTIME" ] && "$WASMTIME" --version)\""
record "binaries lattice-host profile=$HOST_PROFILE built $(date -u -r "$LATTICE_HOST" +%Y-%m-%dT%H:%M:%SZ)$([ "${BENCH_SKIP_BUILD:-0}" = 1 ] && echo ' (BENCH_SKIP_BUILD=1: not rebuilt for this run)')"
record "environment RUST_BACKTRACE=unset RUST_LIB_BACKTRACE=0 RUST_LOG=unset"
record "load wrk -t $THREADS -c <c> -d ${DURATION}s --latency, after -d ${WARMUP}s warm-up; loopback; $REPEATS passes, servers alternated"
record "load_before $(cut -d' ' -f1-3 /proc/loadavg)"

# --- A lattice, and a lattice-host process alone -----------------------------------------
say "Starting a lattice (lattice up) and a separate lattice-host labelled role=bench; deploying hello onto it"
# Idle memory: the host joined, nothing deployed yet.
bench_host_joined() {
    sleep 3
    record "rss_idle_kb $(rss_detail "$2") (lattice-host joined, nothing deployed)"
}
# Sets lattice_UP_PID, lattice_HOST_PID, lattice_URL, lattice_PORT, lattice_HOST_ARGS.
[ "$WASI_P3" != 1 ] || HOST_EXTRA_ARGS=(--wasi-p3)
lattice_with_hello lattice "$LATTICE" "$LATTICE_HOST" "$HELLO"
export LATTICE_STATE_DIR="$WORK/lattice/up"
UP_PID=$lattice_UP_PID
HOST_PID=$lattice_HOST_PID
LATTICE_URL=$lattice_URL
L_PORT=$lattice_PORT
host_joined() { "$LATTICE" ctl get hosts -o json | grep -q '"bench"'; }
sleep 2
record "rss_deployed_before_load_kb $(rss_detail "$HOST_PID") (hello deployed and compiled by the host's compiler process, one request served)"
record "lattice_url $LATTICE_URL body=\"$(curl -s "$LATTICE_URL" | tr -d '\n')\""
deploy_on_bench_host lattice "$LATTICE" "$WC_HELLO" wasmcloud-hello "$(free_port)"
LATTICE_WC_URL=$lattice_wasmcloud_hello_URL
record "lattice_wc_url $LATTICE_WC_URL body=\"$(curl -s "$LATTICE_WC_URL" | tr -d '\n')\" component=\"$(stat -c %s "$WC_HELLO") bytes\""
if [ "$WASI_P3" = 1 ]; then
    deploy_on_bench_host lattice "$LATTICE" "$P3_HELLO" hello-p3 "$(free_port)" wasi:keyvalue
    LATTICE_P3_URL=$lattice_hello_p3_URL
    record "lattice_p3_url $LATTICE_P3_URL body=\"$(curl -s "$LATTICE_P3_URL" | tr -d '\n')\" component=\"$(stat -c %s "$P3_HELLO") bytes\""
fi

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
    W2_PORT="$(free_port)"
    start "$WORK/wasmtime-wc.log" "$WASMTIME" serve -S cli --addr "127.0.0.1:$W2_PORT" "$WC_HELLO"
    W2_PID=$STARTED
    WASMTIME_WC_URL="http://127.0.0.1:$W2_PORT/"
    wait_until "wasmtime serve to answer on $WASMTIME_WC_URL" 60 http_ok "$WASMTIME_WC_URL"
    # WASI 0.3: `-S p3` links WASI 0.3, `-W component-model-async` lets the guest use it;
    # `-S keyvalue` links the wasi:keyvalue hello-p3 imports (its `/` route does not use it).
    if [ "$WASI_P3" = 1 ]; then
        W3_PORT="$(free_port)"
        start "$WORK/wasmtime-p3.log" "$WASMTIME" serve -S cli -S p3 -S keyvalue \
            -W component-model-async --addr "127.0.0.1:$W3_PORT" --env GREETING=Hello \
            --env LATTICE_HOST_NAME=bench "$P3_HELLO"
        W3_PID=$STARTED
        WASMTIME_P3_URL="http://127.0.0.1:$W3_PORT/"
        wait_until "wasmtime serve to answer on $WASMTIME_P3_URL" 60 http_ok "$WASMTIME_P3_URL"
    fi
fi

# --- Load ----------------------------------------------------------------------------------
say "HTTP load: wrk -t $THREADS, ${WARMUP}s warm-up + ${DURATION}s per point, $REPEATS passes (load average now: $(cut -d' ' -f1-3 /proc/loadavg))"
alternate lattice "$HOST_PID" "$LATTICE_URL" wasmtime "$W_PID" "${WASMTIME_URL:-}"
alternate lattice-wc "$HOST_PID" "$LATTICE_WC_URL" wasmtime-wc "${W2_PID:-}" "${WASMTIME_WC_URL:-}"
if [ "$WASI_P3" = 1 ]; then
    alternate lattice-p3 "$HOST_PID" "$LATTICE_P3_URL" wasmtime-p3 "${W3_PID:-}" "${WASMTIME_P3_URL:-}"
fi
record "load_after_http $(cut -d' ' -f1-3 /proc/loadavg)"

sleep 5
record "rss_deployed_after_load_kb $(rss_detail "$HOST_PID") (5 s after the last load)"
record "rss_peak_kb $(hwm_kb "$HOST_PID") (VmHWM of the lattice-host over the whole run)"
if [ -n "$W_PID" ]; then
    record "wasmtime_rss_after_load_kb $(rss_kb "$W_PID") peak_kb=$(hwm_kb "$W_PID")"
    stop "$W_PID"
    stop "$W2_PID"
    [ -z "${W3_PID:-}" ] || stop "$W3_PID"
fi

# The same host restarted: it serves hello from its saved assignment and its cached compiled
# code, so it starts no compiler process (the steady state of a rebooted gateway).
say "Restarting the lattice-host (saved assignment, cached compiled code)"
stop "$HOST_PID"
wait_until "the port to close" 30 sh -c "! curl -s -o /dev/null --max-time 1 '$LATTICE_URL'"
RESTART_T0="$(date +%s%N)"
start "$WORK/host-restarted.log" "$LATTICE_HOST" "${lattice_HOST_ARGS[@]}"
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
http_table "HTTP hello (Lattice = lattice-host, $HOST_PROFILE profile; peer = wasmtime serve)" \
    lattice Lattice wasmtime wasmtime <"$RESULTS" | tee "$OUT_DIR/table.txt"
http_table "HTTP hello of wasmCloud's template, wasmcloud-component crate (Lattice = lattice-host, $HOST_PROFILE profile; peer = wasmtime serve)" \
    lattice-wc Lattice wasmtime-wc wasmtime <"$RESULTS" | tee -a "$OUT_DIR/table.txt"
if [ "$WASI_P3" = 1 ]; then
    http_table "HTTP hello for WASI 0.3, instances reused (Lattice = lattice-host --wasi-p3, $HOST_PROFILE profile; peer = wasmtime serve)" \
        lattice-p3 Lattice wasmtime-p3 wasmtime <"$RESULTS" | tee -a "$OUT_DIR/table.txt"
    http_table "Lattice --wasi-p3: WASI 0.3 hello, reused instances / WASI 0.2 hello, fresh instances (same run)" \
        lattice-p3 "0.3 reused" lattice "0.2 fresh" <"$RESULTS" | tee -a "$OUT_DIR/table.txt"
fi
awk '
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
    printf "\nlattice-host RSS (MiB): idle %.1f; hello deployed (compiled by its compiler process) %.1f before load, %.1f after load, peak %.1f\n", idle / 1024, before / 1024, after / 1024, peak / 1024
    printf "lattice-host restarted (cached code): first 200 %s ms after the process started; RSS %.1f MiB, %.1f MiB after load\n", restart, rs / 1024, rsl / 1024
    for (b = 1; b <= nbins; b++) print bins[b]
    for (a in assign) print assign[a]
}' "$RESULTS" | tee -a "$OUT_DIR/table.txt"
printf '\nRaw results: %s\n' "$RESULTS"
