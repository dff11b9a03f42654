#!/usr/bin/env bash
# One benchmark run, side by side on this machine: sandgen in thread and
# process isolation, a native Rust iterator and a crossbeam hand-off of the
# same bincode items, SPDL 0.8.0's iterate_in_subprocess (installed from
# PyPI into bench/.venv), and the Python and JavaScript example plugins, on
# the workloads of bench/bench_spdl.py.
#
#   bench/run.sh [--write] [RUNS] [REF]   # default 3; prints the tables, writes bench/results.json
#
# With --write, the tables and the figures quoted in prose also go into
# BENCHMARKS.md and README.md, between their `bench/run.sh` markers: the
# documents' figures are this script's output, never retyped.
#
# With REF (a git revision, built by bench/build-revision.sh), the sandgen
# workloads also run with REF's `sandgen`, interleaved, and a second table
# compares the two.
set -euo pipefail
cd "$(dirname "$0")/.."
write=()
if [ "${1:-}" = --write ]; then
    write=(--write)
    shift
fi
rustup toolchain install >/dev/null
before=()
if [ -n "${2:-}" ]; then
    before=(--before "$(bench/build-revision.sh "$2")" --before-label "$2")
    # This tree's side, built alike (see bench/build-revision.sh): HEAD, so
    # commit what is to be measured.
    if ! git diff --quiet HEAD -- host guest-sdk Cargo.toml Cargo.lock; then
        echo "note: uncommitted changes are not measured; HEAD is" >&2
    fi
    SANDGEN_BENCH_NOW="$PWD/$(bench/build-revision.sh HEAD now)"
    export SANDGEN_BENCH_NOW
fi
# The dev profile optimizes every package (Cargo.toml): the same binaries the
# tests use, no second build. target/debug/sandgen may be REF's by now: link
# this tree's again.
touch host/src/bin/sandgen/main.rs
cargo build -q -p sandgen --bin sandgen
cargo build -q -p sandgen-bench
cargo build -q --release --target wasm32-wasip2 -p fixture-spdl
# The Python and JavaScript example plugins, with the pinned toolchains.
bench/build-plugins.sh
if [ ! -x bench/.venv/bin/python ]; then
    python3 -m venv bench/.venv
fi
bench/.venv/bin/pip install -q "spdl==0.8.0"
exec bench/.venv/bin/python bench/compare.py --runs "${1:-3}" "${before[@]}" "${write[@]}"
