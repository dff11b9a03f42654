#!/usr/bin/env bash
# What resuming costs (bench/bench_resume.py): `sandgen run --resume` at
# item 1,000,000 of a plugin that replays, against a fresh run.
#
#   bench/resume.sh [RUNS] [--write]   # default 5 runs; --write updates
#                                      # BENCHMARKS.md between its markers
set -euo pipefail
cd "$(dirname "$0")/.."
rustup toolchain install >/dev/null
cargo build -q --locked -p sandgen --bin sandgen
SANDGEN_TEST_GUESTS="$(cargo run --quiet --locked -p sandgen-tests --bin sandgen-guests)"
export SANDGEN_TEST_GUESTS
exec python3 bench/bench_resume.py --runs "${1:-5}" ${2:+"$2"}
