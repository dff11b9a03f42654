#!/usr/bin/env bash
# Builds the `sandgen` binary of git revision REF and prints its path
# (target/bench-NAME/sandgen, NAME `before` unless given), for the
# benchmarks that compare a revision with this tree (bench/run.sh,
# bench/transport.sh, bench/startup.sh). They build this tree's HEAD the
# same way (NAME `now`): the profile setting below changes the code's
# layout, which alone moved `sandgen run` by 0.4-1 ms on this machine, so
# both sides of a comparison are built alike.
#
#   bench/build-revision.sh REF [NAME]
#
# REF is built in a temporary git worktree with this tree's target
# directory, so that wasmtime is not compiled again; a profile setting that
# only REF's build uses gives REF's own crates other artifact names than
# this tree's (the two trees have the same layout, so cargo would otherwise
# take one tree's crates for the other's). Afterwards target/debug/sandgen
# may be REF's: the callers link this tree's again.
set -euo pipefail
cd "$(dirname "$0")/.."
worktree=$(mktemp -d)
trap 'git worktree remove --force "$worktree"' EXIT
git worktree add -q --detach "$worktree" "$1"
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
name="${2:-before}"
mkdir -p "target/bench-$name"
cp "$binary" "target/bench-$name/sandgen"
echo "target/bench-$name/sandgen"
