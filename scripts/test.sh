#!/usr/bin/env bash
# The whole test suite: unit tests, and end-to-end tests against a private containerd with real
# runc and real Nix store paths, on three containerd release lines. Run as root on Debian 12.
# Under CI=true a missing prerequisite fails the end-to-end tests instead of skipping them.
#
# containerd lines (each test prints the version it ran on):
#   - the newest 2.x of Debian testing/unstable: the whole end-to-end suite;
#   - Debian 13's 1.7 and Debian 12's 1.6 (the system package): the pod-level tests
#     (POD_LEVEL below), which cover start, exec, stop, removal, a containerd restart, the runc
#     options, a crashed nixlet shim, OCI runtimes and the installer.
# The newer lines are unpacked into a private prefix by scripts/fetch-containerd.sh and picked by
# putting their directory first on PATH; the system containerd is never replaced. The e2e runs
# go on past a failing test binary (--no-fail-fast) so one run shows every failure.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh
export PATH="$HOME/.cargo/bin:$PATH"

cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo build --workspace --bins
# Every crate's own tests (those that start a containerd use the system one, 1.6).
cargo test --workspace --exclude nixlet-e2e -- --nocapture

# The end-to-end runs and the reliability suite all run even when one fails, so that one CI run
# shows every failure; each run's output is also kept in target/e2e-logs, and the panics of the
# failed ones are printed again at the very end, where a summary that shows only the tail of
# the output still finds them (a failing test's own output scrolls far up).
#
# A failed end-to-end test binary (or the reliability suite) is run once more, alone. These
# tests drive real containerds, runc and Nix on a 2-core machine; a CI run failed twice in a
# way no local run reproduced. A binary that fails both times fails the run. One that passes
# the second time does not, but it is reported at the very end as FLAKY with the first
# attempt's panics, so the failure is seen and kept (target/e2e-logs/NAME.log), not hidden.
e2e_logs=target/e2e-logs
rm -rf "$e2e_logs" && mkdir -p "$e2e_logs"
failed=()
flaky=()
run_e2e() {
  local name=$1
  shift
  if "$@" 2>&1 | tee "$e2e_logs/$name.log"; then
    return
  fi
  # cargo's --no-fail-fast summary names each failed binary as "    `-p nixlet-e2e --test X`".
  local retry=()
  local binary
  for binary in $(sed -nE 's/^    `(-p [a-z_-]+ )?--test ([A-Za-z0-9_]+)`$/\2/p' "$e2e_logs/$name.log"); do
    retry+=(--test "$binary")
  done
  local again=("$@")
  if [ ${#retry[@]} -gt 0 ]; then
    # Same command, only the failed binaries: drop the earlier --test selection.
    again=()
    local skip=0 arg
    for arg in "$@"; do
      if [ $skip = 1 ]; then skip=0; continue; fi
      if [ "$arg" = --test ]; then skip=1; continue; fi
      if [ "$arg" = -- ]; then again+=("${retry[@]}"); fi
      again+=("$arg")
    done
  fi
  echo "== $name failed; running ${retry[*]:-it} once more"
  if "${again[@]}" 2>&1 | tee "$e2e_logs/$name.retry.log"; then
    flaky+=("$name")
  else
    failed+=("$name")
  fi
}
repeat_panics() {
  grep -E -A 12 "panicked at|^FAILED|^failures:|not clean" "$1" | cut -c1-2000 || true
}

POD_LEVEL=(--test walking_skeleton --test runc_options --test runc_type_handler --test shim_bootstrap --test shim_crash --test oci_runtimes
  --test node_install --test concurrent_calls)

newest=$(bash scripts/fetch-containerd.sh 2)
echo "== end-to-end suite on containerd $("$newest/containerd" --version | awk '{print $3}')"
PATH="$newest:$PATH" run_e2e e2e-newest cargo test -p nixlet-e2e --no-fail-fast -- --nocapture

line_1_7=$(bash scripts/fetch-containerd.sh 1.7)
echo "== pod-level end-to-end tests on containerd $("$line_1_7/containerd" --version | awk '{print $3}')"
PATH="$line_1_7:$PATH" run_e2e pod-level-1.7 cargo test -p nixlet-e2e --no-fail-fast "${POD_LEVEL[@]}" -- --nocapture

echo "== pod-level end-to-end tests on containerd $(containerd --version | awk '{print $3}')"
run_e2e pod-level-1.6 cargo test -p nixlet-e2e --no-fail-fast "${POD_LEVEL[@]}" -- --nocapture

# The reliability suite in quick mode (a few iterations of each scenario, a few minutes): shim
# and containerd kills, a full store, cache faults, churn, GC under pods, unreachable caches.
# Fails on any failure, leak or invalid store path; the full run is
# `cargo run -p nixlet-reliability -- all` (RELIABILITY.md).
echo "== reliability suite, quick mode, on containerd $(containerd --version | awk '{print $3}')"
run_e2e reliability-quick cargo run -p nixlet-reliability -- all --quick

for name in "${flaky[@]}"; do
  echo "== FLAKY: $name failed, then passed when run again; the first attempt's panics:"
  repeat_panics "$e2e_logs/$name.log"
done
if [ ${#failed[@]} -gt 0 ]; then
  for name in "${failed[@]}"; do
    echo "== $name failed twice; its panics and failures, first and second attempt:"
    repeat_panics "$e2e_logs/$name.log"
    repeat_panics "$e2e_logs/$name.retry.log"
  done
  echo "== failed: ${failed[*]}"
  exit 1
fi
[ ${#flaky[@]} -eq 0 ] || echo "== flaky (passed when run again): ${flaky[*]}"
