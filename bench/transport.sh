#!/usr/bin/env bash
# The process-isolation transport benchmark (bench/bench_transport.py): thread
# and process isolation side by side, for this tree's `sandgen` and, when REF
# is given, for the `sandgen` of that git revision, in one interleaved run.
#
#   bench/transport.sh [RUNS] [REF]   # default 5 runs; e.g. REF=28debc0
#
# REF is built by bench/build-revision.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
rustup toolchain install >/dev/null
args=()
if [ -n "${2:-}" ]; then
    args=(--before "$(bench/build-revision.sh "$2")" --before-label "$2")
    # This tree's side, built alike (see bench/build-revision.sh): HEAD, so
    # commit what is to be measured.
    if ! git diff --quiet HEAD -- host guest-sdk Cargo.toml Cargo.lock; then
        echo "note: uncommitted changes are not measured; HEAD is" >&2
    fi
    SANDGEN_BENCH_NOW="$PWD/$(bench/build-revision.sh HEAD now)"
    export SANDGEN_BENCH_NOW
fi
# target/debug/sandgen may be REF's by now: link this tree's again.
touch host/src/bin/sandgen/main.rs
cargo build -q -p sandgen --bin sandgen
cargo build -q --release --target wasm32-wasip2 -p fixture-spdl
exec python3 bench/bench_transport.py --runs "${1:-5}" "${args[@]}"
