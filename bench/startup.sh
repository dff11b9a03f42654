#!/usr/bin/env bash
# The start-up benchmark (bench/bench_startup.py), in one run: `sandgen run`
# end to end, call to first item (fresh process and warm, in one process),
# loading from the cache and compiling, and 1,000 iterables in one process,
# for the Rust, Python and JavaScript example plugins; with REF, the same for
# the `sandgen` of that git revision, side by side.
#
#   bench/startup.sh [RUNS] [REF]   # default 15 runs; e.g. REF=e638039
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
cargo build -q -p sandgen-bench --bin sandgen-bench-startup
cargo build -q --release --target wasm32-wasip2 -p example-tokenize
bench/build-plugins.sh
if [ ! -x bench/.venv/bin/python ]; then
    python3 -m venv bench/.venv
fi
bench/.venv/bin/pip install -q "spdl==0.8.0"
exec bench/.venv/bin/python bench/bench_startup.py --runs "${1:-15}" "${args[@]}"
