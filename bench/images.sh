#!/usr/bin/env bash
# The image example against PIL + numpy in a DataLoader (bench/bench_images.py)
# with 1 and 2 DataLoader workers, in one run.
#
#   bench/images.sh [RUNS] [--write]   # default 3 runs; --write updates
#                                      # BENCHMARKS.md between its markers
set -euo pipefail
cd "$(dirname "$0")/.."
rustup toolchain install >/dev/null
tests/python-venv.sh
SANDGEN_TEST_GUESTS="$(cargo run --quiet --locked -p sandgen-tests --bin sandgen-guests)"
export SANDGEN_TEST_GUESTS
exec target/python-venv/bin/python bench/bench_images.py --runs "${1:-3}" ${2:+"$2"}
