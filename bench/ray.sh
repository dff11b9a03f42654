#!/usr/bin/env bash
# The Ray Data benchmark (bench/bench_ray.py), in one run:
#
#   bench/ray.sh [RUNS]   # default 3; prints the table
set -euo pipefail
cd "$(dirname "$0")/.."
rustup toolchain install >/dev/null
cargo build -q -p sandgen --bin sandgen
cargo build -q --release --target wasm32-wasip2 -p fixture-spdl
venv=target/python-venv
requirements=host/python/requirements-test.txt
if ! cmp -s "$requirements" "$venv/.sandgen-installed-requirements.txt"; then
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install -q --disable-pip-version-check -r "$requirements"
    cp "$requirements" "$venv/.sandgen-installed-requirements.txt"
fi
PATH="$PWD/$venv/bin:$PATH" "$venv/bin/python" -m pip install -q --disable-pip-version-check \
    --no-build-isolation --no-deps --force-reinstall ./host/python
exec "$venv/bin/python" bench/bench_ray.py --runs "${1:-3}"
