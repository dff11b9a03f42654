#!/usr/bin/env bash
# The parallel-workers benchmark (bench/bench_workers.py), in one run:
#
#   bench/workers.sh [RUNS]   # default 3; prints the tables, writes bench/workers.png
set -euo pipefail
cd "$(dirname "$0")/.."
rustup toolchain install >/dev/null
cargo build -q -p sandgen --bin sandgen
cargo build -q --release --target wasm32-wasip2 -p fixture-spdl
# The venv of the Python tests, with the package built from this tree.
venv=target/python-venv
tests/python-venv.sh
"$venv/bin/python" -m pip install -q --disable-pip-version-check "matplotlib==3.11.2"
exec "$venv/bin/python" bench/bench_workers.py --runs "${1:-3}"
