#!/usr/bin/env bash
# The Python package's checks, as the README's test command runs them after
# `cargo test`: makes target/python-venv current (tests/python-venv.sh: the
# pinned test tools, then `pip install ./host/python`, reusing the build of
# wasmtime that `cargo test` made), then runs ruff and the pytest suite
# against the guests that tests/build.rs built from source.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
venv="$root/target/python-venv"
"$root/tests/python-venv.sh"

# Our Python (bench_spdl.py is SPDL's reference benchmark, kept unchanged).
sources=("$root/host/python" "$root/examples/python-host" "$root/examples/ray"
    "$root/bench/bench_python.py" "$root/bench/bench_workers.py" "$root/bench/bench_ray.py"
    "$root/bench/bench_transport.py" "$root/bench/bench_startup.py" "$root/bench/compare.py"
    "$root/bench/bench_dataloader.py" "$root/bench/bench_arrays.py" "$root/bench/bench_images.py"
    "$root/bench/profile_images.py" "$root/bench/bench_resume.py" "$root/bench/bench_failures.py")
"$venv/bin/ruff" check --quiet "${sources[@]}"
"$venv/bin/ruff" format --quiet --check "${sources[@]}"

# The guests' paths, as the Rust tests see them.
SANDGEN_TEST_GUESTS="$(cd "$root" && cargo run --quiet --locked -p sandgen-tests --bin sandgen-guests)"
export SANDGEN_TEST_GUESTS
cd "$root/host/python"
"$venv/bin/python" -m pytest -q -p no:cacheprovider tests "$@"
