#!/usr/bin/env bash
# `scripts/bench-observability.sh`: what metrics and traces cost an HTTP workload (BENCHMARKS.md,
# section 12), both sides in one run so that the machine's noise is shared.
#
# Two lattices, each brought up by `lattice up` with hello deployed onto a release `lattice-host`
# of its own (scripts/bench-lib.sh):
#   on   the host serves Prometheus metrics (`--metrics-addr`) and exports OTLP traces to a local
#        receiver (`lattice-otlp-sink`, the test suite's receiver as a program), sampling 1 % of
#        new traces (`parentbased_traceidratio`);
#   off  the host with neither.
# wrk at 16 and 64 connections, the two hosts measured in turn (which goes first alternates by
# pass), several passes; the table gives each side's requests per second and on/off per pass with
# its median. At the end the on host's metrics are scraped once (proof that they were on: its
# request counter) and the receiver's span count is set against it (proof that ~1 % was sampled).
#
# Settings (environment):
#   BENCH_DURATION=10  BENCH_WARMUP=2  BENCH_THREADS=1  as in scripts/bench.sh
#   BENCH_CONCURRENCY="16 64"
#   BENCH_REPEATS=5        passes over every (concurrency, host) pair
#   BENCH_SAMPLE_RATIO=0.01  the on host's OTEL_TRACES_SAMPLER_ARG
#   BENCH_PROFILE=release  the cargo profile of `lattice` and `lattice-host` (`debug` only to
#                          try the script out: its figures mean nothing)
#   BENCH_SKIP_BUILD=1     use the binaries already built
#   BENCH_HELLO=path       the hello component (default: examples' release build)
# Binaries are looked for in $CARGO_TARGET_DIR (default target/). Raw results and the table go to
# target/bench/observability/.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"

DURATION="${BENCH_DURATION:-10}"
WARMUP="${BENCH_WARMUP:-2}"
THREADS="${BENCH_THREADS:-1}"
CONCURRENCY="${BENCH_CONCURRENCY:-16 64}"
REPEATS="${BENCH_REPEATS:-5}"
RATIO="${BENCH_SAMPLE_RATIO:-0.01}"
PROFILE="${BENCH_PROFILE:-release}"

TARGET_DIR="${CARGO_TARGET_DIR:-$REPO_ROOT/target}"
case "$PROFILE" in
debug | dev)
    BIN_DIR="$TARGET_DIR/debug"
    PROFILE_ARGS=()
    ;;
*)
    BIN_DIR="$TARGET_DIR/$PROFILE"
    PROFILE_ARGS=(--profile "$PROFILE")
    ;;
esac
LATTICE="$BIN_DIR/lattice"
LATTICE_HOST="$BIN_DIR/lattice-host"
# The receiver only counts: a debug build keeps up with 1 % of the load.
SINK="$TARGET_DIR/debug/lattice-otlp-sink"
HELLO="${BENCH_HELLO:-$REPO_ROOT/examples/target/wasm32-wasip2/release/hello.wasm}"

OUT_DIR="$REPO_ROOT/target/bench/observability"
RESULTS="$OUT_DIR/results.txt"

# shellcheck source=scripts/bench-lib.sh
source "$REPO_ROOT/scripts/bench-lib.sh"
# Only the on host is configured, below: nothing from the shell switches the other on.
unset OTEL_EXPORTER_OTLP_ENDPOINT OTEL_EXPORTER_OTLP_TRACES_ENDPOINT OTEL_TRACES_SAMPLER \
    OTEL_TRACES_SAMPLER_ARG OTEL_SERVICE_NAME OTEL_SDK_DISABLED LATTICE_METRICS_ADDR \
    LATTICE_HOST_METRICS_ADDR

WORK="$(mktemp -d "${TMPDIR:-/tmp}/lattice-observability.XXXXXX")"
bench_on_exit() {
    [ -d "$OUT_DIR" ] || return 0
    rm -rf "$OUT_DIR/logs"
    mkdir -p "$OUT_DIR/logs"
    cp "$WORK"/*.log "$WORK"/*.txt "$OUT_DIR/logs/" 2>/dev/null || true
    local side
    for side in on off; do
        [ -d "$WORK/$side" ] || continue
        mkdir -p "$OUT_DIR/logs/$side"
        cp "$WORK/$side"/*.log "$OUT_DIR/logs/$side/" 2>/dev/null || true
    done
}
bench_traps
ensure_wrk
command -v curl >/dev/null 2>&1 || die "curl is missing (make deps installs it)"

# --- Build ------------------------------------------------------------------------------------
mkdir -p "$OUT_DIR"
if [ "${BENCH_SKIP_BUILD:-0}" != 1 ]; then
    say "Building lattice and lattice-host ($PROFILE), and the OTLP receiver"
    cargo build "${PROFILE_ARGS[@]}" -p lattice-cli -p lattice-host --bin lattice --bin lattice-host
    cargo build -p lattice-tests --bin lattice-otlp-sink
    if [ -z "${BENCH_HELLO:-}" ]; then
        cargo build --release --target wasm32-wasip2 --manifest-path examples/Cargo.toml -p hello
    fi
fi
for f in "$LATTICE" "$LATTICE_HOST" "$SINK" "$HELLO"; do
    [ -f "$f" ] || die "$f is missing (run without BENCH_SKIP_BUILD=1, or set BENCH_HELLO)"
done

: >"$RESULTS"
record_machine
record "commit $(git rev-parse --short HEAD)$(git diff --quiet HEAD || echo ' dirty') profile=$PROFILE"
record "load wrk -t $THREADS -c <c> -d ${DURATION}s --latency, after -d ${WARMUP}s warm-up; loopback; $REPEATS passes, hosts alternated"
record "on: --metrics-addr, OTLP/HTTP to a local receiver, parentbased_traceidratio $RATIO; off: neither"
record "load_before $(cut -d' ' -f1-3 /proc/loadavg)"

# --- The receiver -----------------------------------------------------------------------------
say "Starting the OTLP receiver"
start "$WORK/sink.log" "$SINK"
SINK_PID=$STARTED
wait_until "the OTLP receiver to listen" 30 grep -q '^listening ' "$WORK/sink.log"
ENDPOINT="$(sed -n 's/^listening //p' "$WORK/sink.log" | head -n 1)"

# --- The two lattices -------------------------------------------------------------------------
say "Bringing up the on lattice: hello on a host with metrics and traces"
HOST_ENV=(OTEL_EXPORTER_OTLP_ENDPOINT="$ENDPOINT" OTEL_SERVICE_NAME=bench-on
    OTEL_TRACES_SAMPLER=parentbased_traceidratio OTEL_TRACES_SAMPLER_ARG="$RATIO")
HOST_EXTRA_ARGS=(--metrics-addr 127.0.0.1:0)
lattice_with_hello on "$LATTICE" "$LATTICE_HOST" "$HELLO"
METRICS_ADDR="$(grep 'serving metrics' "$WORK/on/host.log" | grep -o 'addr=[^ ]*' | head -n 1 | cut -d= -f2)"
[ -n "$METRICS_ADDR" ] || die "the on host logged no metrics address (see $WORK/on/host.log)"
say "Bringing up the off lattice: hello on a host without either"
HOST_ENV=()
HOST_EXTRA_ARGS=()
lattice_with_hello off "$LATTICE" "$LATTICE_HOST" "$HELLO"
# Both hosts idle while the other is measured; a moment for both to settle.
sleep 2

# --- Load -------------------------------------------------------------------------------------
say "HTTP load: wrk -t $THREADS, ${WARMUP}s warm-up + ${DURATION}s per point, $REPEATS passes"
# shellcheck disable=SC2154 # set by lattice_with_hello
alternate on "$on_HOST_PID" "$on_URL" off "$off_HOST_PID" "$off_URL"
record "load_after $(cut -d' ' -f1-3 /proc/loadavg)"

# --- Proof that both were on --------------------------------------------------------------------
# The host's counter of the requests hello answered: every request, warm-ups included.
SCRAPE="$(curl -s --max-time 5 "http://$METRICS_ADDR/metrics")" ||
    die "scraping http://$METRICS_ADDR/metrics failed"
printf '%s\n' "$SCRAPE" >"$WORK/scrape.txt"
SERVED="$(awk '/^lattice_host_http_requests_total\{/ && /outcome="ok"/ { n += $NF } END { printf "%d", n }' <<<"$SCRAPE")"
[ "$SERVED" -gt 0 ] || die "the on host's metrics count no request served (see $OUT_DIR/logs/scrape.txt)"
record "metrics lattice_host_http_requests_total_ok=$SERVED"
# Spans still in the host's batch go out within its schedule delay (OTEL_BSP_SCHEDULE_DELAY,
# 5 s by default): wait until the count stops moving.
stats() { curl -s --max-time 5 "$ENDPOINT/stats"; }
previous=""
for _ in $(seq 1 30); do
    current="$(stats)"
    [ "$current" != "$previous" ] || break
    previous="$current"
    sleep 2
done
record "traces $current"
SAMPLED="$(tr ' ' '\n' <<<"$current" | sed -n 's/^lattice\.http\.request=//p')"
SAMPLED="${SAMPLED:-0}"
SHARE="$(awk -v s="$SAMPLED" -v n="$SERVED" 'BEGIN { printf "%.3f", 100 * s / n }')"
record "sampling requests=$SERVED sampled=$SAMPLED share_pct=$SHARE asked_pct=$(awk -v r="$RATIO" 'BEGIN { print 100 * r }')"
stop "$SINK_PID"

# --- Table ------------------------------------------------------------------------------------
http_table "Observability overhead: metrics + traces sampled at $RATIO (on) vs neither (off), $PROFILE lattice-host" \
    on on off off <"$RESULTS" | tee "$OUT_DIR/table.txt"
{
    printf '\nMetrics on: the on host counted %s requests served (lattice_host_http_requests_total).\n' "$SERVED"
    printf 'Traces on: %s of them sampled (lattice.http.request spans received) = %s %% (asked: %s).\n' \
        "$SAMPLED" "$SHARE" "$RATIO"
    printf 'Receiver: %s\n' "$current"
} | tee -a "$OUT_DIR/table.txt"
awk -v s="$SAMPLED" -v n="$SERVED" -v r="$RATIO" 'BEGIN { share = s / n; exit !(share >= r / 2 && share <= r * 2) }' ||
    printf 'warning: the sampled share is not within half to twice the ratio asked: check the on host log\n' >&2
printf '\nRaw results: %s\n' "$RESULTS"
