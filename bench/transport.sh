#!/usr/bin/env bash
# The process-isolation transport benchmark (bench/bench_transport.py): thread
# and process isolation side by side, for this tree's `sandgen` and, when REF
# is given, for the `sandgen` of that git revision, in one interleaved run.
#
#   bench/transport.sh [RUNS] [REF]   # default 5 runs; e.g. REF=28debc0
#
# REF is built in a temporary git worktree with this tree's target directory,
# so that wasmtime is not compiled again; a profile setting that only REF's
# build uses gives REF's own crates other artifact names than this tree's
# (the two trees have the same layout, so cargo would otherwise take one
# tree's crates for the other's).
set -euo pipefail
cd "$(dirname "$0")/.."
rustup toolchain install >/dev/null
args=()
if [ -n "${2:-}" ]; then
    worktree=$(mktemp -d)
    trap 'git worktree remove --force "$worktree"' EXIT
    git worktree add -q --detach "$worktree" "$2"
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
cargo build -q --release --target wasm32-wasip2 -p fixture-spdl
exec python3 bench/bench_transport.py --runs "${1:-5}" "${args[@]}"
