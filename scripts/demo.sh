#!/usr/bin/env bash
# `make demo`: a local lattice with the hello component deployed, answering on
# http://127.0.0.1:8080/. Runs until Ctrl-C. Running it again reuses the same state
# directory (keys, NATS data, the pushed artifact, the deployed app).
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"
STATE_DIR="${LATTICE_STATE_DIR:-$HOME/.lattice}"
export LATTICE_STATE_DIR="$STATE_DIR"
LATTICE="$REPO_ROOT/target/debug/lattice"
say() { printf '\n==> %s\n' "$*"; }

say "Building the hello component for wasm32-wasip2"
cargo build --release --target wasm32-wasip2 --manifest-path examples/Cargo.toml -p hello
HELLO="examples/target/wasm32-wasip2/release/hello.wasm"

mkdir -p "$STATE_DIR"
say "Starting a local lattice (lattice up, state in $STATE_DIR; log in $STATE_DIR/up.log)"
"$LATTICE" up --state-dir "$STATE_DIR" >"$STATE_DIR/up.log" 2>&1 &
UP_PID=$!
stop() {
    if kill -0 "$UP_PID" 2>/dev/null; then
        kill -TERM "$UP_PID" 2>/dev/null || true
        wait "$UP_PID" 2>/dev/null || true
    fi
}
trap stop EXIT
trap 'exit 130' INT TERM

for _ in $(seq 1 300); do
    if ! kill -0 "$UP_PID" 2>/dev/null; then
        echo "lattice up exited; its log:" >&2
        tail -n 20 "$STATE_DIR/up.log" >&2
        exit 1
    fi
    if "$LATTICE" ctl get hosts -o json 2>/dev/null | grep -q '"id"'; then
        break
    fi
    sleep 0.2
done
"$LATTICE" ctl get hosts

say "Signing the component with the lattice's dev issuer key"
"$LATTICE" sign "$HELLO" -o "$STATE_DIR/hello.signed.wasm" \
    --issuer "$STATE_DIR/keys/issuer.nk" --name hello --version 0.1.0 --allow wasi:http
"$LATTICE" inspect "$STATE_DIR/hello.signed.wasm" | head -n 4

say "Pushing it into the lattice"
"$LATTICE" push "$STATE_DIR/hello.signed.wasm"

say "Compiling it ahead for this machine's hosts (they load the signed code instead of compiling)"
"$LATTICE" compile hello:0.1.0 --issuer "$STATE_DIR/keys/issuer.nk" --target host

say "Deploying examples/manifests/hello.yaml"
"$LATTICE" ctl deploy examples/manifests/hello.yaml --wait

say "curl http://127.0.0.1:8080/"
curl -sS http://127.0.0.1:8080/

say "Lattice is running. Try: $LATTICE ctl get apps   |   Press Ctrl-C to stop."
wait "$UP_PID"
