#!/usr/bin/env bash
# The Python package's checks, as the README's test command runs them after
# `cargo test`: installs the pinned test tools (host/python/
# requirements-test.txt) into target/python-venv once, installs the package
# there with `pip install ./host/python` (maturin, in the workspace's dev
# profile, so it reuses the build of wasmtime that `cargo test` made), then
# runs ruff and the pytest suite against the guests that tests/build.rs
# built from source.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
venv="$root/target/python-venv"
requirements="$root/host/python/requirements-test.txt"
pip=("$venv/bin/python" -m pip --quiet --disable-pip-version-check)

# The venv is current when it was made from this very requirements file.
if ! cmp -s "$requirements" "$venv/.sandgen-installed-requirements.txt"; then
    echo "installing the Python test tools into target/python-venv" >&2
    rm -rf "$venv"
    python3 -m venv "$venv"
    "${pip[@]}" install -r "$requirements"
    cp "$requirements" "$venv/.sandgen-installed-requirements.txt"
fi

echo "building and installing the sandgen Python package (pip install ./host/python)" >&2
# maturin's build backend runs the `maturin` of the venv.
export PATH="$venv/bin:$PATH"
"${pip[@]}" install --no-build-isolation --no-deps --force-reinstall "$root/host/python"

"$venv/bin/ruff" check --quiet "$root/host/python" "$root/examples/python-host" "$root/examples/ray" "$root/bench/bench_python.py" "$root/bench/bench_workers.py" "$root/bench/bench_ray.py"
"$venv/bin/ruff" format --quiet --check "$root/host/python" "$root/examples/python-host" "$root/examples/ray" "$root/bench/bench_python.py" "$root/bench/bench_workers.py" "$root/bench/bench_ray.py"

# The guests' paths, as the Rust tests see them.
SANDGEN_TEST_GUESTS="$(cd "$root" && cargo run --quiet --locked -p sandgen-tests --bin sandgen-guests)"
export SANDGEN_TEST_GUESTS
cd "$root/host/python"
"$venv/bin/python" -m pytest -q -p no:cacheprovider tests "$@"
