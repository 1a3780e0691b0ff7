#!/usr/bin/env bash
# `scripts/bench-compare.sh BASE [HEAD]`: two commits of Lattice measured in one run, so that what
# a change costs shows as a ratio (after/before) with the machine's noise shared by both sides.
#
#   1. HTTP hello (BENCHMARKS.md section 1): each side brings up its own lattice with its own
#      `lattice` and release `lattice-host` and deploys hello; wrk at each concurrency, the two
#      hosts measured in turn (which goes first alternates by pass);
#   2. links (section 5): each side's `links` bench, run in turn (base, head, base, head, ...);
#      the p50 of every variant, and head/base per variant;
#   3. control plane at scale (section 4), when BENCH_SCALE_RUNS > 0: each side's
#      `control_scale` bench in turn (its part 2 runs that side's release `lattice control`);
#      deploy -> all assigned and the control plane's CPU, per side;
#   4. queued drain (section 9), when BENCH_DRAIN_RUNS > 0: each side's `queue_drain` bench in
#      turn; forwarder / raw and forwarded-and-delivered / raw, per side.
#
# BASE and HEAD are git revisions; HEAD defaults to the working tree as it is. A revision is built
# in a git worktree under target/bench/compare/, each side in a target directory of its own
# (BENCH_COMPARE_TARGET-base and -head, default target/bench/compare/target-base and -head):
# cargo judges a workspace crate fresh by file times, and both sides' crates have the same names,
# so one directory would hand one side's build to the other. The same hello component (the
# working tree's) is served by both sides: the host is measured.
#
# Settings (environment), as in scripts/bench.sh: BENCH_DURATION=10, BENCH_WARMUP=2,
# BENCH_THREADS=1, BENCH_CONCURRENCY="1 16 64", BENCH_REPEATS=3; and BENCH_LINK_RUNS=2 (runs of
# the links bench per side, 0 to skip), BENCH_LINK_CALLS (calls per round, the bench's default
# when unset), BENCH_SCALE_RUNS=0 and BENCH_SCALE_HOSTS (runs of control_scale per side, its
# hosts), BENCH_DRAIN_RUNS=0 and BENCH_DRAIN_ARGS="200000 2 200000" (runs of queue_drain per
# side, its arguments: entries, rounds, entries delivered), BENCH_SKIP_HTTP=1 (no HTTP part),
# BENCH_SKIP_BUILD=1 (use the binaries of the previous build), BENCH_BUILD_ONLY=1
# (build, measure nothing: e.g. `nice` the build, then measure with BENCH_SKIP_BUILD=1).
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"

[ $# -ge 1 ] && [ $# -le 2 ] || {
    echo "usage: scripts/bench-compare.sh BASE [HEAD]   (git revisions; HEAD: the working tree)" >&2
    exit 2
}
BASE_REV="$1"
HEAD_REV="${2:-}"

DURATION="${BENCH_DURATION:-10}"
WARMUP="${BENCH_WARMUP:-2}"
THREADS="${BENCH_THREADS:-1}"
CONCURRENCY="${BENCH_CONCURRENCY:-1 16 64}"
REPEATS="${BENCH_REPEATS:-3}"
LINK_RUNS="${BENCH_LINK_RUNS:-2}"
LINK_CALLS="${BENCH_LINK_CALLS:-}"
SCALE_RUNS="${BENCH_SCALE_RUNS:-0}"
SCALE_HOSTS="${BENCH_SCALE_HOSTS:-}"
DRAIN_RUNS="${BENCH_DRAIN_RUNS:-0}"
DRAIN_ARGS="${BENCH_DRAIN_ARGS:-200000 2 200000}"
SKIP_HTTP="${BENCH_SKIP_HTTP:-0}"

OUT_DIR="$REPO_ROOT/target/bench/compare"
RESULTS="$OUT_DIR/results.txt"
TARGET_PREFIX="${BENCH_COMPARE_TARGET:-$OUT_DIR/target}"
HELLO="$REPO_ROOT/examples/target/wasm32-wasip2/release/hello.wasm"

# shellcheck source=scripts/bench-lib.sh
source "$REPO_ROOT/scripts/bench-lib.sh"
git rev-parse --verify --quiet "$BASE_REV^{commit}" >/dev/null ||
    die "$BASE_REV is not a commit of this repository (try: git log --oneline)"
[ -z "$HEAD_REV" ] || git rev-parse --verify --quiet "$HEAD_REV^{commit}" >/dev/null ||
    die "$HEAD_REV is not a commit of this repository (try: git log --oneline)"
# As commits of this checkout: `HEAD` or a branch name read in a side's worktree would name
# that worktree's own.
BASE_REV="$(git rev-parse "$BASE_REV^{commit}")"
[ -z "$HEAD_REV" ] || HEAD_REV="$(git rev-parse "$HEAD_REV^{commit}")"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/lattice-compare.XXXXXX")"
bench_on_exit() {
    rm -rf "$OUT_DIR/logs"
    mkdir -p "$OUT_DIR/logs"
    cp "$WORK"/*.txt "$OUT_DIR/logs/" 2>/dev/null || true
    local side
    for side in base head; do
        [ -d "$WORK/$side" ] || continue
        mkdir -p "$OUT_DIR/logs/$side"
        cp "$WORK/$side"/*.log "$OUT_DIR/logs/$side/" 2>/dev/null || true
    done
}
bench_traps
ensure_wrk

# --- Build: each side's binaries copied to $OUT_DIR/<side>/bin ------------------------------

# The source tree of a side: a worktree of its revision, or the working tree.
side_tree() {
    local side="$1" rev="$2"
    if [ -z "$rev" ]; then
        echo "$REPO_ROOT"
        return
    fi
    local tree="$OUT_DIR/$side-tree"
    if [ -d "$tree" ]; then
        git -C "$tree" checkout --quiet --detach "$rev" >&2
    else
        git worktree add --quiet --detach "$tree" "$rev" >&2
    fi
    echo "$tree"
}

# The path of a side's bench executable, built with the bench profile.
bench_exe() {
    local tree="$1" target="$2" bench="$3" exe
    exe="$(cd "$tree" && CARGO_TARGET_DIR="$target" cargo bench -p lattice-tests --bench "$bench" --no-run \
        --message-format=json-render-diagnostics |
        sed -n "s/.*\"executable\":\"\([^\"]*\/$bench-[^\"]*\)\".*/\1/p" | tail -n 1)"
    [ -n "$exe" ] || die "the $bench bench was not built in $tree"
    echo "$exe"
}

build_side() {
    local side="$1" rev="$2" tree bin
    tree="$(side_tree "$side" "$rev")"
    bin="$OUT_DIR/$side/bin"
    mkdir -p "$bin"
    say "Building $side ($([ -n "$rev" ] && git rev-parse --short "$rev" || echo 'the working tree')): lattice, lattice-host (release), the links bench"
    # The host binary moved between packages over time: build it by name, workspace-wide.
    local target="$TARGET_PREFIX-$side"
    (cd "$tree" && CARGO_TARGET_DIR="$target" cargo build --release --bin lattice --bin lattice-host)
    cp "$target/release/lattice" "$target/release/lattice-host" "$bin/"
    if [ "$LINK_RUNS" -gt 0 ]; then
        local exe
        exe="$(cd "$tree" && CARGO_TARGET_DIR="$target" cargo bench -p lattice-tests --bench links --no-run \
            --message-format=json-render-diagnostics |
            sed -n 's/.*"executable":"\([^"]*\/links-[^"]*\)".*/\1/p' | tail -n 1)"
        [ -n "$exe" ] || die "$side: the links bench was not built"
        cp "$exe" "$bin/links-bench"
    fi
    # These two stay where cargo put them: control_scale finds its side's release `lattice`
    # beside its own directory.
    local bench runs
    for bench in control_scale queue_drain; do
        runs="$SCALE_RUNS"
        [ "$bench" = control_scale ] || runs="$DRAIN_RUNS"
        [ "$runs" -gt 0 ] || continue
        bench_exe "$tree" "$target" "$bench" >"$bin/$bench.path"
    done
    (cd "$tree" && git rev-parse --short HEAD && git diff --quiet HEAD || echo dirty) \
        | paste -sd' ' >"$OUT_DIR/$side/commit"
}

if [ "${BENCH_SKIP_BUILD:-0}" != 1 ]; then
    build_side base "$BASE_REV"
    build_side head "$HEAD_REV"
    say "Building the hello component"
    cargo build --release --target wasm32-wasip2 --manifest-path examples/Cargo.toml -p hello
fi
[ "${BENCH_BUILD_ONLY:-0}" != 1 ] || exit 0
for f in "$OUT_DIR"/{base,head}/bin/lattice "$OUT_DIR"/{base,head}/bin/lattice-host "$HELLO"; do
    [ -f "$f" ] || die "$f is missing (run without BENCH_SKIP_BUILD=1)"
done

: >"$RESULTS"
record_machine
record "base $(cat "$OUT_DIR/base/commit") head $(cat "$OUT_DIR/head/commit")"
record "load wrk -t $THREADS -c <c> -d ${DURATION}s --latency, after -d ${WARMUP}s warm-up; loopback; $REPEATS passes, sides alternated"
record "load_before $(cut -d' ' -f1-3 /proc/loadavg)"

# --- 1. HTTP hello ------------------------------------------------------------------------------
if [ "$SKIP_HTTP" != 1 ]; then
for side in base head; do
    say "Bringing up the $side lattice with hello on its own lattice-host"
    lattice_with_hello "$side" "$OUT_DIR/$side/bin/lattice" "$OUT_DIR/$side/bin/lattice-host" "$HELLO"
done
# Both hosts idle while the other is measured; a moment for both to settle.
sleep 2
say "HTTP load: wrk -t $THREADS, ${WARMUP}s warm-up + ${DURATION}s per point, $REPEATS passes"
# shellcheck disable=SC2154 # set by lattice_with_hello
alternate head "$head_HOST_PID" "$head_URL" base "$base_HOST_PID" "$base_URL"
record "load_after_http $(cut -d' ' -f1-3 /proc/loadavg)"
for side in base head; do
    pid="${side}_HOST_PID"
    stop "${!pid}"
    pid="${side}_UP_PID"
    stop "${!pid}"
done
fi

# --- 2. Links -----------------------------------------------------------------------------------
if [ "$LINK_RUNS" -gt 0 ]; then
    say "Links: the links bench of each side, $LINK_RUNS runs each, in turn"
    for run in $(seq 1 "$LINK_RUNS"); do
        for side in base head; do
            "$OUT_DIR/$side/bin/links-bench" $LINK_CALLS >"$WORK/links-$side-$run.txt" 2>&1 ||
                die "the $side links bench failed (see $OUT_DIR/logs/links-$side-$run.txt)"
            # "RESULT links.<variant> size=<n> ... p50_us=<x> ..." -> "links side=<side> run=<run> ..."
            sed -n "s/^RESULT \(links\.[^ ]*\) \(.*p50_us=.*\)/links side=$side run=$run variant=\1 \2/p" \
                "$WORK/links-$side-$run.txt" >>"$RESULTS"
        done
    done
fi

# --- 3. Control plane at scale, 4. queued drain --------------------------------------------------
# Each side's bench in turn; its RESULT lines (control_scale) or its summary lines (queue_drain)
# go to the results with the side and run.
if [ "$SCALE_RUNS" -gt 0 ]; then
    say "Control plane at scale: each side's control_scale bench, $SCALE_RUNS runs each, in turn"
    for run in $(seq 1 "$SCALE_RUNS"); do
        for side in base head; do
            # shellcheck disable=SC2086 # an empty setting means the bench's default
            "$(cat "$OUT_DIR/$side/bin/control_scale.path")" $SCALE_HOSTS >"$WORK/scale-$side-$run.txt" 2>&1 ||
                die "the $side control_scale bench failed (see $OUT_DIR/logs/scale-$side-$run.txt)"
            sed -n "s/^RESULT \(control_scale\.[^ ]*\) \(.*\)/scale side=$side run=$run measure=\1 \2/p" \
                "$WORK/scale-$side-$run.txt" >>"$RESULTS"
        done
    done
fi
if [ "$DRAIN_RUNS" -gt 0 ]; then
    say "Queued drain: each side's queue_drain bench ($DRAIN_ARGS), $DRAIN_RUNS runs each, in turn"
    for run in $(seq 1 "$DRAIN_RUNS"); do
        for side in base head; do
            # shellcheck disable=SC2086 # the bench's arguments, split on purpose
            "$(cat "$OUT_DIR/$side/bin/queue_drain.path")" $DRAIN_ARGS >"$WORK/drain-$side-$run.txt" 2>&1 ||
                die "the $side queue_drain bench failed (see $OUT_DIR/logs/drain-$side-$run.txt)"
            grep -E '^round |^\| \*\*|^forwarded in' "$WORK/drain-$side-$run.txt" |
                sed "s/^/drain side=$side run=$run | /" >>"$RESULTS"
        done
    done
fi
record "load_after_all $(cut -d' ' -f1-3 /proc/loadavg)"

# --- Tables --------------------------------------------------------------------------------------
: >"$OUT_DIR/table.txt"
[ "$SKIP_HTTP" = 1 ] ||
    http_table "HTTP hello (release lattice-host): head $(cat "$OUT_DIR/head/commit") vs base $(cat "$OUT_DIR/base/commit")" \
        head head base base <"$RESULTS" | tee "$OUT_DIR/table.txt"
if [ "$LINK_RUNS" -gt 0 ]; then
    awk "$AWK_RESULTS"'
$1 == "links" {
    key = kv("variant") (kv("size") == "" ? "" : " size=" kv("size"))
    p50[kv("side"), key] = p50[kv("side"), key] " " kv("p50_us")
    if (!(key in seen)) { seen[key] = 1; order[++n] = key }
}
END {
    printf "\nLinks: p50 per call (us), median of runs; speed head/base = base p50 / head p50 (>= 1: head is as fast or faster)\n"
    printf "%-40s | %9s | %9s | %s\n", "variant", "base", "head", "head/base speed"
    for (i = 1; i <= n; i++) {
        k = order[i]; b = median(p50["base", k]); h = median(p50["head", k])
        if (b == "nan" || h == "nan") { printf "%-40s | %9s | %9s | %s\n", k, b, h, "- (one side lacks it)"; continue }
        printf "%-40s | %9.2f | %9.2f | %.2f\n", k, b, h, (h > 0 ? b / h : 0)
    }
}' "$RESULTS" | tee -a "$OUT_DIR/table.txt"
fi
if [ "$SCALE_RUNS" -gt 0 ] || [ "$DRAIN_RUNS" -gt 0 ]; then
    printf '\nControl plane at scale and queued drain, per side and run:\n' | tee -a "$OUT_DIR/table.txt"
    grep -E '^(scale|drain) ' "$RESULTS" | sort -s -k1,1 | tee -a "$OUT_DIR/table.txt"
fi
printf '\nRaw results: %s\n' "$RESULTS"
