#!/usr/bin/env bash
# The whole test suite: unit tests, and end-to-end tests against a private containerd with real
# runc and real Nix store paths. Run as root on Debian 12. Under CI=true a missing prerequisite
# fails the end-to-end tests instead of skipping them.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh
export PATH="$HOME/.cargo/bin:$PATH"

cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo build --workspace --bins
cargo test --workspace -- --nocapture
