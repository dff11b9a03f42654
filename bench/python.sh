#!/usr/bin/env bash
# The Python package's benchmark (bench/bench_python.py), side by side with
# SPDL 0.8.0 and sandgen's Rust API in one run:
#
#   bench/python.sh [RUNS] [release]   # default 3 runs; prints the table
#
# By default the package is the tests' build (the workspace's dev profile,
# target/python-venv); with `release`, the package as users install it
# (`pip install ./host/python`, a release build) in target/release-venv.
set -euo pipefail
cd "$(dirname "$0")/.."
rustup toolchain install >/dev/null
cargo build -q -p sandgen --bin sandgen
cargo build -q --release --target wasm32-wasip2 -p fixture-spdl
if [ "${2:-}" = release ]; then
    venv=target/release-venv
    if [ ! -x "$venv/bin/python" ]; then
        python3 -m venv "$venv"
    fi
    "$venv/bin/pip" install -q --disable-pip-version-check maturin==1.16.0 numpy==2.4.6 \
        spdl==0.8.0 spdl_core==0.8.0 spdl_io==0.8.0
    PATH="$PWD/$venv/bin:$PATH" "$venv/bin/pip" install -q --disable-pip-version-check \
        --no-build-isolation --no-deps --force-reinstall ./host/python
else
    # The venv of the Python tests, with the package built from this tree.
    venv=target/python-venv
    tests/python-venv.sh
fi
exec "$venv/bin/python" bench/bench_python.py --runs "${1:-3}"
