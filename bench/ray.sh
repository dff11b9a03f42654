#!/usr/bin/env bash
# The Ray Data benchmark (bench/bench_ray.py), in one run:
#
#   bench/ray.sh [RUNS]   # default 3; prints the table
set -euo pipefail
cd "$(dirname "$0")/.."
rustup toolchain install >/dev/null
cargo build -q -p sandgen --bin sandgen
cargo build -q --release --target wasm32-wasip2 -p fixture-spdl
# The venv of the Python tests, with the package built from this tree.
venv=target/python-venv
tests/python-venv.sh
exec "$venv/bin/python" bench/bench_ray.py --runs "${1:-3}"
