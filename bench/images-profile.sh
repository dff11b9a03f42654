#!/usr/bin/env bash
# Where the image example's time goes (bench/profile_images.py): decode,
# resize and the rest, from `perf record`, beside PIL's stages.
#
#   bench/images-profile.sh [--write]   # --write updates BENCHMARKS.md
#                                       # between its markers
set -euo pipefail
cd "$(dirname "$0")/.."
command -v perf >/dev/null || { echo "bench/images-profile.sh needs Linux perf (linux-tools)" >&2; exit 1; }
rustup toolchain install >/dev/null
tests/python-venv.sh
SANDGEN_TEST_GUESTS="$(cargo run --quiet --locked -p sandgen-tests --bin sandgen-guests)"
export SANDGEN_TEST_GUESTS
exec target/python-venv/bin/python bench/profile_images.py ${1:+"$1"}
