#!/usr/bin/env bash
# The Python package's benchmark (bench/bench_python.py), side by side with
# SPDL 0.8.0 and sandgen's Rust API in one run:
#
#   bench/python.sh [RUNS]    # default 3; prints the table
set -euo pipefail
cd "$(dirname "$0")/.."
rustup toolchain install >/dev/null
cargo build -q -p sandgen --bin sandgen
cargo build -q --release --target wasm32-wasip2 -p fixture-spdl
# The venv of the Python tests, with the package built from this tree.
venv=target/python-venv
tests/python-venv.sh
exec "$venv/bin/python" bench/bench_python.py --runs "${1:-3}"
