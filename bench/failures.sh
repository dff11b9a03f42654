#!/usr/bin/env bash
# What failures during a pass cost (bench/bench_failures.py): items/s of a
# pass whose worker processes are killed every 100 ms against the same pass
# undisturbed, and the restart latency after a trap or a kill.
#
#   bench/failures.sh [RUNS] [--write]   # default 5 runs; --write updates
#                                        # BENCHMARKS.md between its markers
set -euo pipefail
cd "$(dirname "$0")/.."
rustup toolchain install >/dev/null
tests/python-venv.sh
SANDGEN_TEST_GUESTS="$(cargo run --quiet --locked -p sandgen-tests --bin sandgen-guests)"
export SANDGEN_TEST_GUESTS
exec target/python-venv/bin/python bench/bench_failures.py --runs "${1:-5}" ${2:+"$2"}
