#!/usr/bin/env bash
# What resuming costs (bench/bench_resume.py): `sandgen run --resume` at
# item 1,000,000 of a plugin with the fast path and of one that replays,
# against fresh runs; and the cost of taking a position (Python package).
#
#   bench/resume.sh [RUNS] [--write]   # default 5 runs; --write updates
#                                      # BENCHMARKS.md between its markers
set -euo pipefail
cd "$(dirname "$0")/.."
rustup toolchain install >/dev/null
cargo build -q --locked -p sandgen --bin sandgen
tests/python-venv.sh
SANDGEN_TEST_GUESTS="$(cargo run --quiet --locked -p sandgen-tests --bin sandgen-guests)"
export SANDGEN_TEST_GUESTS
exec target/python-venv/bin/python bench/bench_resume.py --runs "${1:-5}" ${2:+"$2"}
