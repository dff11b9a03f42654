#!/usr/bin/env bash
# Array items into numpy (bench/bench_arrays.py): sandgen's ndarray items
# against raw bytes + np.frombuffer and a plain Python generator, in one run.
#
#   bench/arrays.sh [RUNS] [--write]   # default 3 runs; --write updates
#                                      # BENCHMARKS.md between its markers
set -euo pipefail
cd "$(dirname "$0")/.."
rustup toolchain install >/dev/null
tests/python-venv.sh
SANDGEN_TEST_GUESTS="$(cargo run --quiet --locked -p sandgen-tests --bin sandgen-guests)"
export SANDGEN_TEST_GUESTS
exec target/python-venv/bin/python bench/bench_arrays.py --runs "${1:-3}" ${2:+"$2"}
