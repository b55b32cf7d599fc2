#!/usr/bin/env bash
# Installs every system package nixlet's build, tests and example need on Debian 12, and youki.
# Idempotent: safe to run on every CI run and on a developer machine.
# --without-youki: skip youki (a 6-minute build) when only runc is needed, as in the quick start.
set -euo pipefail

with_youki=1
for arg in "$@"; do
  case "$arg" in
    --without-youki) with_youki=0 ;;
    *) echo "install-deps.sh: unknown argument $arg" >&2; exit 2 ;;
  esac
done

packages=(
  containerd runc crun      # the container stack nixlet plugs into (containerd 1.6, runc 1.1)
  nix-bin                   # builds the example store paths and binary caches; not needed on nodes
  umoci busybox-static      # builds the pause and empty OCI images for tests without a registry
  bash-static               # the end-to-end fixtures' bash, for environments with activation hooks
  protobuf-compiler         # protoc, for the CRI client used by the end-to-end tests
  docker-registry           # loopback OCI registry the benchmarks pull images from (nixlet-bench)
  libseccomp-dev pkg-config # youki's seccomp support links libseccomp (built below)
  curl ca-certificates jq iproute2 util-linux psmisc
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# The Debian containerd unit may start a system containerd; nixlet's tests run their own private
# one and do not need it, but leave it alone if an operator uses it.

# Nix as root without a daemon: single-user mode needs no build users.
mkdir -p /etc/nix
if ! grep -q '^build-users-group' /etc/nix/nix.conf 2>/dev/null; then
  echo 'build-users-group =' >> /etc/nix/nix.conf
fi
grep -q '^experimental-features' /etc/nix/nix.conf 2>/dev/null ||
  echo 'experimental-features = nix-command' >> /etc/nix/nix.conf
grep -q '^sandbox' /etc/nix/nix.conf 2>/dev/null || echo 'sandbox = false' >> /etc/nix/nix.conf

# youki, the third OCI runtime nixlet is tested with (tests/tests/oci_runtimes.rs), is not in
# Debian 12: built from crates.io into ~/.cargo/bin, where the tests look for it. Without a
# cgroup feature the binary cannot run any container: these VMs are hybrid (`youki info`: cgroup
# setup hybrid), which youki drives through its v1 manager; v2 is for pure cgroup v2 nodes,
# systemd for the systemd cgroup driver, seccomp for pods' seccomp profiles. About 6 minutes on
# 2 cores, so skipped when that version is already there.
youki_version=0.7.0
cargo_bin="${CARGO_HOME:-$HOME/.cargo}/bin"
if [ "$with_youki" = 1 ] && ! "$cargo_bin/youki" --version 2>/dev/null | grep -qx "youki version: $youki_version"; then
  PATH="$cargo_bin:$PATH" cargo install youki --version "$youki_version" --locked \
    --features v1,v2,systemd,seccomp
fi
