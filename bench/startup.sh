#!/usr/bin/env bash
# The start-up benchmark (bench/bench_startup.py), in one run: `sandgen run`
# end to end, call to first item (fresh process and warm, in one process),
# loading from the cache and compiling, and 1,000 iterables in one process,
# for the Rust, Python and JavaScript example plugins; with REF, the same for
# the `sandgen` of that git revision, side by side.
#
#   bench/startup.sh [RUNS] [REF]   # default 15 runs; e.g. REF=e638039
set -euo pipefail
cd "$(dirname "$0")/.."
rustup toolchain install >/dev/null
args=()
if [ -n "${2:-}" ]; then
    worktree=$(mktemp -d)
    trap 'git worktree remove --force "$worktree"' EXIT
    git worktree add -q --detach "$worktree" "$2"
    # As in bench/transport.sh: REF's crates get artifact names of their own.
    separate=()
    for crate in sandgen sandgen-wire; do
        separate+=(--config "profile.dev.package.$crate.codegen-units=255")
    done
    binary=$(CARGO_TARGET_DIR="$PWD/target" cargo build -q "${separate[@]}" --manifest-path "$worktree/Cargo.toml" \
        -p sandgen --bin sandgen --message-format=json |
        python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "sandgen" and m.get("executable"):
        print(m["executable"])')
    mkdir -p target/bench-before
    cp "$binary" target/bench-before/sandgen
    args=(--before target/bench-before/sandgen --before-label "$2")
fi
# target/debug/sandgen may be REF's by now: link this tree's again.
touch host/src/main.rs
cargo build -q -p sandgen --bin sandgen
cargo build -q -p sandgen-bench --bin sandgen-bench-startup
cargo build -q --release --target wasm32-wasip2 -p example-tokenize
tests/install-plugin-tools.sh
mkdir -p target/bench-plugins
PYTHONDONTWRITEBYTECODE=1 guest-sdk/python/.venv/bin/componentize-py -d wit -w plugin componentize \
    -p guest-sdk/python -p examples/python app -o target/bench-plugins/example_python.wasm >/dev/null
guest-sdk/js/node_modules/.bin/componentize-js examples/js/app.js -w guest-sdk/js/wit -n plugin \
    -d http -d fetch-event -o target/bench-plugins/example_js.wasm >/dev/null
if [ ! -x bench/.venv/bin/python ]; then
    python3 -m venv bench/.venv
fi
bench/.venv/bin/pip install -q "spdl==0.8.0"
exec bench/.venv/bin/python bench/bench_startup.py --runs "${1:-15}" "${args[@]}"
