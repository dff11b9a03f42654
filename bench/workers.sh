#!/usr/bin/env bash
# The parallel-workers benchmark (bench/bench_workers.py), in one run:
#
#   bench/workers.sh [RUNS]   # default 3; prints the tables, writes bench/workers.png
set -euo pipefail
cd "$(dirname "$0")/.."
rustup toolchain install >/dev/null
cargo build -q -p sandgen --bin sandgen
cargo build -q --release --target wasm32-wasip2 -p fixture-spdl
# The venv of the Python tests (tests/python.sh), plus matplotlib for the plot.
venv=target/python-venv
requirements=host/python/requirements-test.txt
if ! cmp -s "$requirements" "$venv/.sandgen-installed-requirements.txt"; then
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install -q --disable-pip-version-check -r "$requirements"
    cp "$requirements" "$venv/.sandgen-installed-requirements.txt"
fi
"$venv/bin/python" -m pip install -q --disable-pip-version-check "matplotlib==3.11.2"
PATH="$PWD/$venv/bin:$PATH" "$venv/bin/python" -m pip install -q --disable-pip-version-check \
    --no-build-isolation --no-deps --force-reinstall ./host/python
exec "$venv/bin/python" bench/bench_workers.py --runs "${1:-3}"
