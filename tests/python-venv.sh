#!/usr/bin/env bash
# Makes target/python-venv current: the pinned test tools
# (host/python/requirements-test.txt, installed once), then the sandgen
# package itself with `pip install ./host/python` (maturin, in the
# workspace's dev profile, so it reuses the workspace's build of wasmtime).
# Used by tests/python.sh and the benchmark scripts in bench/.
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
# maturin's build backend runs the `maturin` of the venv; the package builds
# in the workspace's one profile (a user's `pip install` builds in release),
# so that it reuses the build of wasmtime that `cargo test` made.
PATH="$venv/bin:$PATH" MATURIN_PEP517_ARGS="--profile dev" "${pip[@]}" install --no-build-isolation --no-deps --force-reinstall \
    "$root/host/python"
