#!/usr/bin/env bash
# Installs what building and testing Lattice needs and is missing, on Debian/Ubuntu:
#   - the Rust target wasm32-wasip2 (example components, test fixtures);
#   - nats-server (tests, `lattice up`, the demo), from the distribution's packages;
#   - redis-server (the keyvalue-redis provider's tests), likewise;
#   - mosquitto (the mqtt provider's tests), likewise;
#   - curl (the demo);
#   - a C compiler (build-essential), which crates such as ring need.
# Idempotent: installs nothing that is already there. Runs as root, or as a user with sudo.
set -euo pipefail

WASM_TARGET=wasm32-wasip2
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

say() { printf 'install-deps: %s\n' "$*"; }
die() { printf 'install-deps: error: %s\n' "$*" >&2; exit 1; }

# --- Rust -------------------------------------------------------------------------------
if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then
    say "cargo is not on PATH; using $HOME/.cargo/bin (add it to your PATH: . \"\$HOME/.cargo/env\")"
    export PATH="$HOME/.cargo/bin:$PATH"
fi
if ! command -v cargo >/dev/null 2>&1; then
    die "Rust (cargo) is not installed. Install it with rustup:
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh
then open a new shell (or run: . \"\$HOME/.cargo/env\") and run this again."
fi

# Run rustup from the repository so that a toolchain file there, if any, is honoured.
cd "$REPO_ROOT"
if command -v rustup >/dev/null 2>&1; then
    if rustup target list --installed | grep -qx "$WASM_TARGET"; then
        say "Rust target $WASM_TARGET: installed"
    else
        say "Rust target $WASM_TARGET: installing (rustup target add $WASM_TARGET)"
        rustup target add "$WASM_TARGET"
    fi
else
    sysroot="$(rustc --print sysroot)"
    if [ -d "$sysroot/lib/rustlib/$WASM_TARGET" ]; then
        say "Rust target $WASM_TARGET: installed (toolchain without rustup)"
    else
        die "the Rust target $WASM_TARGET is missing and rustup is not installed to add it.
Install Rust with rustup (https://rustup.rs), then run: rustup target add $WASM_TARGET"
    fi
fi

# --- System packages -----------------------------------------------------------------------
# Debian installs nats-server to /usr/sbin, which is not on a regular user's PATH.
find_nats_server() {
    command -v nats-server 2>/dev/null && return 0
    local candidate
    for candidate in /usr/sbin/nats-server /usr/local/sbin/nats-server; do
        if [ -x "$candidate" ]; then
            echo "$candidate"
            return 0
        fi
    done
    return 1
}

missing=()
if nats="$(find_nats_server)"; then
    say "nats-server: found at $nats"
else
    say "nats-server: missing"
    missing+=(nats-server)
fi
if command -v curl >/dev/null 2>&1; then
    say "curl: found at $(command -v curl)"
else
    say "curl: missing"
    missing+=(curl)
fi
# Some crates (ring, for NATS TLS) compile C: a C compiler and linker must be there.
if command -v cc >/dev/null 2>&1; then
    say "C compiler: found at $(command -v cc)"
else
    say "C compiler: missing"
    missing+=(build-essential)
fi

if [ "${#missing[@]}" -gt 0 ]; then
    command -v apt-get >/dev/null 2>&1 \
        || die "apt-get not found: install these with your system's package manager: ${missing[*]}"
    if [ "$(id -u)" -eq 0 ]; then
        sudo=()
    elif command -v sudo >/dev/null 2>&1; then
        sudo=(sudo)
    else
        die "not root and sudo is not installed: as root, run: apt-get install ${missing[*]}"
    fi
    say "installing: ${missing[*]}"
    say "running: ${sudo[*]:+${sudo[*]} }apt-get update"
    "${sudo[@]}" apt-get update
    say "running: ${sudo[*]:+${sudo[*]} }apt-get install -y --no-install-recommends ${missing[*]}"
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y --no-install-recommends "${missing[@]}"
    nats="$(find_nats_server)" || die "nats-server is still not found after installing it"
    say "nats-server: installed at $nats"
fi

# --- redis-server (the keyvalue-redis provider's tests) --------------------------------------
# Its own block, so that other test servers can be added beside it without touching this one.
if command -v redis-server >/dev/null 2>&1 || [ -x /usr/bin/redis-server ]; then
    say "redis-server: found at $(command -v redis-server || echo /usr/bin/redis-server)"
else
    say "redis-server: missing"
    command -v apt-get >/dev/null 2>&1 \
        || die "apt-get not found: install redis-server with your system's package manager"
    if [ "$(id -u)" -eq 0 ]; then
        sudo=()
    elif command -v sudo >/dev/null 2>&1; then
        sudo=(sudo)
    else
        die "not root and sudo is not installed: as root, run: apt-get install redis-server"
    fi
    say "running: ${sudo[*]:+${sudo[*]} }apt-get update"
    "${sudo[@]}" apt-get update
    say "running: ${sudo[*]:+${sudo[*]} }apt-get install -y --no-install-recommends redis-server"
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y --no-install-recommends redis-server
    command -v redis-server >/dev/null 2>&1 || [ -x /usr/bin/redis-server ] \
        || die "redis-server is still not found after installing it"
    say "redis-server: installed"
fi

# --- mosquitto (the mqtt provider's tests) ----------------------------------------------------
# Its own block too. Debian installs the broker to /usr/sbin, not on a regular user's PATH.
find_mosquitto() {
    command -v mosquitto 2>/dev/null && return 0
    local candidate
    for candidate in /usr/sbin/mosquitto /usr/local/sbin/mosquitto; do
        if [ -x "$candidate" ]; then
            echo "$candidate"
            return 0
        fi
    done
    return 1
}
if mosquitto="$(find_mosquitto)"; then
    say "mosquitto: found at $mosquitto"
else
    say "mosquitto: missing"
    command -v apt-get >/dev/null 2>&1 \
        || die "apt-get not found: install mosquitto with your system's package manager"
    if [ "$(id -u)" -eq 0 ]; then
        sudo=()
    elif command -v sudo >/dev/null 2>&1; then
        sudo=(sudo)
    else
        die "not root and sudo is not installed: as root, run: apt-get install mosquitto"
    fi
    say "running: ${sudo[*]:+${sudo[*]} }apt-get update"
    "${sudo[@]}" apt-get update
    say "running: ${sudo[*]:+${sudo[*]} }apt-get install -y --no-install-recommends mosquitto"
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y --no-install-recommends mosquitto
    mosquitto="$(find_mosquitto)" || die "mosquitto is still not found after installing it"
    say "mosquitto: installed at $mosquitto"
fi

say "nats-server version: $("$nats" --version 2>&1 | head -n 1)"
say "all dependencies present"
