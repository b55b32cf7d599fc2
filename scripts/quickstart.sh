#!/usr/bin/env bash
# One command from a fresh Debian 12 machine (as root) to a pod running from a Nix store path:
# installs the packages, builds nixlet and the echoserver example into a signed binary cache,
# starts a private containerd with the nixlet handler and runs the echoserver pod through CRI on
# an empty image. Prints what the pod answered and printed; stops everything it started.
set -euo pipefail
cd "$(dirname "$0")/.."

# The example runs on runc; youki (a 6-minute build) is only for the tests.
bash scripts/install-deps.sh --without-youki
export PATH="$HOME/.cargo/bin:$PATH"

echo "==> building nixlet"
cargo build --quiet -p nixlet-shim -p nixlet-cli -p nixlet-e2e --bins

work=${NIXLET_EXAMPLE_DIR:-/var/tmp/nixlet-example}
echo "==> building the echoserver into a signed binary cache under $work"
bash examples/echoserver/build-cache.sh "$work"

echo "==> running the echoserver pod (runtimeClassName: nixlet, empty image)"
# The shim built above: left to itself the harness would build it again with nixlet-shim's own
# feature set (cargo unifies features per build invocation), compiling its dependencies twice.
NIXLET_E2E_SHIM="$PWD/target/debug/containerd-shim-nixlet-v2" \
  exec target/debug/nixlet-example "$(cat "$work/store-path")"
