#!/usr/bin/env bash
# The DataLoader benchmark (bench/bench_dataloader.py), in one run: the
# example tokenizer through sandgen.torch (sharding by plugin and by items)
# against a plain Python IterableDataset, 2 DataLoader workers.
#
#   bench/dataloader.sh [RUNS]   # default 3; prints a table and a JSON line
set -euo pipefail
cd "$(dirname "$0")/.."
rustup toolchain install >/dev/null
cargo build -q --release --target wasm32-wasip2 -p example-tokenize
# The venv of the Python tests (torch pinned there), with the package built
# from this tree.
tests/python-venv.sh
exec target/python-venv/bin/python bench/bench_dataloader.py --runs "${1:-3}"
