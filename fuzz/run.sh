#!/usr/bin/env bash
# Runs one fuzz target with libFuzzer, coverage-guided, on the stable toolchain:
#
#   fuzz/run.sh TARGET [SECONDS]     e.g. fuzz/run.sh nar_unpack 600
#   fuzz/run.sh --merge TARGET       fold the run's new inputs into fuzz/corpus/TARGET, minimised
#
# `cargo fuzz` (cargo install cargo-fuzz) builds with `-s none`: no sanitizer, which is the part
# that needs nightly; nixlet has no `unsafe`, so what the fuzzer hunts is panics, hangs, OOMs and
# broken invariants, which libFuzzer's coverage instrumentation finds on stable. Niced, one
# worker: the machine is shared. The working corpus and crashers stay outside the repository
# ($NIXLET_FUZZ_WORK, default /tmp/nixlet-fuzz-work); a crasher becomes a file in
# fuzz/regressions/TARGET/ once its bug is fixed, and `cargo test -p nixlet-fuzz` replays it.
set -euo pipefail
cd "$(dirname "$0")/.."

merge=false
if [[ ${1:-} == --merge ]]; then
    merge=true
    shift
fi
target=${1:?usage: fuzz/run.sh [--merge] TARGET [SECONDS]}
seconds=${2:-300}
work=${NIXLET_FUZZ_WORK:-/tmp/nixlet-fuzz-work}/$target
mkdir -p "$work/corpus" "$work/artifacts"
# Unpacking targets write a scratch tree per input: keep it in memory.
if [[ -d /dev/shm ]]; then
    export TMPDIR=/dev/shm
fi

build=(cargo +stable fuzz build -s none -O --debug-assertions --fuzz-dir fuzz/libfuzzer "$target")
nice -n 19 "${build[@]}"
binary=fuzz/libfuzzer/target/x86_64-unknown-linux-gnu/release/$target

if $merge; then
    minimised=$(mktemp -d)
    nice -n 19 "$binary" -merge=1 -rss_limit_mb=2048 -timeout=10 \
        "$minimised" "fuzz/corpus/$target" "$work/corpus"
    # libFuzzer names merged inputs by their sha1; seeds keep their names (they say what they
    # are). Inputs a minimal set no longer needs are dropped, so the corpus (and the replay in
    # `cargo test`) does not grow with every run; only new contents are added.
    for file in "fuzz/corpus/$target"/*; do
        name=$(basename "$file")
        if [[ $name =~ ^[0-9a-f]{40}$ && ! -e $minimised/$name ]]; then
            rm "$file"
        fi
    done
    known=$(sha1sum "fuzz/corpus/$target"/* | cut -d' ' -f1)
    for file in "$minimised"/*; do
        name=$(basename "$file")
        if ! grep -qx "$name" <<<"$known"; then
            cp "$file" "fuzz/corpus/$target/$name"
        fi
    done
    rm -rf "$minimised"
    exit 0
fi

# -timeout: an input slower than 10 s is a hang; -rss_limit_mb: more than 2 GB is an OOM.
nice -n 19 "$binary" "$work/corpus" "fuzz/corpus/$target" \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
    -artifact_prefix="$work/artifacts/" -print_final_stats=1 2>&1 | tee "$work/log"
