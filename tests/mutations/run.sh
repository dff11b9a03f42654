#!/usr/bin/env bash
# Breaks each promise on purpose and checks that its tests catch it.
#
#   tests/mutations/run.sh                # every mutation here
#   tests/mutations/run.sh wasi-handles   # the ones named
#
# Each `NAME.patch` opens with what it breaks (`Breaks:`) and the tests that
# must then fail (`Caught-by:`, as cargo test filters: `mod::test` for the
# end-to-end tests of `tests/all`, `mod::tests::test` for the library's unit
# tests, `PACKAGE:mod::tests::test` for the unit tests of another package of
# the workspace; or a pytest node id under `host/python/`, run as
# tests/python.sh runs it),
# followed by the change itself (`git diff` output). For each one
# the script applies the change, runs those tests, expects every one of them
# to fail, and takes the change back (also when interrupted). It prints one
# line per mutation, `caught` or `MISSED`, and exits 1 if any was missed.
# It records each verdict in SECURITY.md's table of mutations (between the
# `tests/mutations/run.sh` markers, by tests/mutations/record.py), with the
# date and the revision, so that the document states the last run of each,
# not a memory of one.
# Run from the repository's root on a clean tree; each mutation rebuilds what
# it touches (all of them take about ten minutes on 2 cores), and the
# README's test command, which CI runs, ends with this script.
set -euo pipefail
cd "$(dirname "$0")/../.."
here=tests/mutations
if [ $# -eq 0 ]; then
    set -- $(cd "$here" && ls ./*.patch | sed 's|^\./||; s|\.patch$||')
fi
# The verdicts are of the committed revision that SECURITY.md names.
if [ -n "$(git status --porcelain -- . ':!SECURITY.md')" ]; then
    echo "run.sh records its verdicts against HEAD: commit or stash your changes (untracked files too) first" >&2
    exit 2
fi
# The tests' time limits as written: a stretched limit would let a slowed
# break pass (timeout-waits-100x).
export SANDGEN_TEST_TIME_FACTOR=1
applied=""
undo() {
    if [ -n "$applied" ]; then
        git apply -R "$applied"
        applied=""
    fi
}
trap undo EXIT
trap 'undo; exit 130' INT TERM
# One pytest node of the Python package, with the package rebuilt from this
# tree (as tests/python.sh does).
pytest_one() {
    tests/python-venv.sh
    SANDGEN_TEST_GUESTS="$(cargo run --quiet --locked -p sandgen-tests --bin sandgen-guests)" \
        bash -c 'cd host/python && ../../target/python-venv/bin/python -m pytest -q -p no:cacheprovider "$1"' _ "$1"
}
# The command that runs one Caught-by test, in `run`.
command_for() {
    if [[ "$1" =~ ^([A-Za-z0-9_-]+):([^:].*)$ ]]; then
        run=(cargo test --locked -q -p "${BASH_REMATCH[1]}" --lib -- "${BASH_REMATCH[2]}")
    else
        case "$1" in
            *.py::*) run=(pytest_one "${1#host/python/}") ;;
            *::tests::*) run=(cargo test --locked -q -p sandgen --lib -- "$1") ;;
            *) run=(cargo test --locked -q -p sandgen --test all -- "$1") ;;
        esac
    fi
}
# Whether the log of a passing run shows that no test ran (a stale name).
ran_nothing() {
    grep -qE "running 0 tests|no tests ran" "$1" && ! grep -q "running [1-9]" "$1"
}
# First, on the tree as it is: every Caught-by test must pass, or its
# failing under a mutation would prove nothing.
for name in "$@"; do
    patch="$here/$name.patch"
    [ -f "$patch" ] || { echo "no mutation $name ($patch)" >&2; exit 2; }
    while read -r test; do
        command_for "$test"
        log="$(mktemp)"
        if ! "${run[@]}" >"$log" 2>&1; then
            echo "$name: \`$test\` fails without the mutation; fix it first:" >&2
            tail -20 "$log" >&2
            exit 2
        fi
        if ran_nothing "$log"; then
            echo "$name: no test matches \`$test\`" >&2
            exit 2
        fi
        rm -f "$log"
    done < <(sed -n 's/^Caught-by: //p' "$patch")
done
echo "every test named passes without its mutation"
missed=0
for name in "$@"; do
    patch="$here/$name.patch"
    what=$(sed -n 's/^Breaks: //p' "$patch")
    git apply "$patch"
    applied="$patch"
    verdict=caught
    while read -r test; do
        command_for "$test"
        log="$(mktemp)"
        if "${run[@]}" >"$log" 2>&1; then
            verdict=MISSED
            echo "  $test passed" >&2
        elif ! grep -qE "test result: FAILED|[0-9]+ failed|test watchdog: " "$log"; then
            echo "$name: \`$test\` did not build or run:" >&2
            tail -20 "$log" >&2
            exit 2
        fi
        rm -f "$log"
    done < <(sed -n 's/^Caught-by: //p' "$patch")
    undo
    [ "$verdict" = caught ] || missed=1
    echo "$verdict: $name ($what)"
    # Recorded at once: an interrupted run keeps the verdicts it made.
    results="$(mktemp)"
    echo "$name $verdict" >"$results"
    python3 "$here/record.py" "$results"
    rm -f "$results"
done
exit "$missed"
