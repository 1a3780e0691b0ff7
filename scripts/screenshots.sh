#!/usr/bin/env bash
# Makes the dashboard's screenshots in docs/img/ (shown in the README) by running its browser
# tests with LATTICE_SCREENSHOTS set: headless Chromium (scripts/install-deps.sh installs it).
set -euo pipefail
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"
mkdir -p docs/img
cargo build --workspace --bins
LATTICE_SCREENSHOTS="$REPO_ROOT/docs/img" cargo test -p lattice-tests --test dashboard
ls -l docs/img/dashboard-*.png
