#!/usr/bin/env bash
# Breaks each promise on purpose and checks that its tests catch it.
#
#   tests/mutations/run.sh                # every mutation here
#   tests/mutations/run.sh wasi-handles   # the ones named
#
# Each `NAME.patch` opens with what it breaks (`Breaks:`) and the tests that
# must then fail (`Caught-by:`, as cargo test filters: `mod::test` for the
# end-to-end tests of `tests/all`, `mod::tests::test` for the library's unit
# tests; or a pytest node id under `host/python/`, run by tests/python.sh),
# followed by the change itself (`git diff` output). For each one
# the script applies the change, runs those tests, expects every one of them
# to fail, and takes the change back (also when interrupted). It prints one
# line per mutation, `caught` or `MISSED`, and exits 1 if any was missed.
# Run from the repository's root on a clean tree; each mutation rebuilds the
# host (about a minute on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/../.."
here=tests/mutations
if [ $# -eq 0 ]; then
    set -- $(cd "$here" && ls ./*.patch | sed 's|^\./||; s|\.patch$||')
fi
applied=""
undo() {
    if [ -n "$applied" ]; then
        git apply -R "$applied"
        applied=""
    fi
}
trap undo EXIT INT TERM
# One pytest node of the Python package, with the package rebuilt from this
# tree (as tests/python.sh does).
pytest_one() {
    tests/python-venv.sh
    SANDGEN_TEST_GUESTS="$(cargo run --quiet --locked -p sandgen-tests --bin sandgen-guests)" \
        bash -c 'cd host/python && ../../target/python-venv/bin/python -m pytest -q -p no:cacheprovider "$1"' _ "$1"
}
missed=0
for name in "$@"; do
    patch="$here/$name.patch"
    [ -f "$patch" ] || { echo "no mutation $name ($patch)" >&2; exit 2; }
    what=$(sed -n 's/^Breaks: //p' "$patch")
    git apply "$patch"
    applied="$patch"
    verdict=caught
    while read -r test; do
        case "$test" in
            *.py::*) run=(pytest_one "${test#host/python/}") ;;
            *::tests::*) run=(cargo test --locked -q -p sandgen --lib -- "$test") ;;
            *) run=(cargo test --locked -q -p sandgen --test all -- "$test") ;;
        esac
        log="$(mktemp)"
        if "${run[@]}" >"$log" 2>&1; then
            # Passed: missed, unless no test ran at all (a stale name).
            if grep -qE "running 0 tests|no tests ran" "$log" && ! grep -q "running [1-9]" "$log"; then
                echo "$name: no test matches \`$test\`" >&2
                exit 2
            fi
            verdict=MISSED
            echo "  $test passed" >&2
        elif ! grep -qE "test result: FAILED|[0-9]+ failed" "$log"; then
            echo "$name: \`$test\` did not build or run:" >&2
            tail -20 "$log" >&2
            exit 2
        fi
        rm -f "$log"
    done < <(sed -n 's/^Caught-by: //p' "$patch")
    undo
    [ "$verdict" = caught ] || missed=1
    echo "$verdict: $name ($what)"
done
exit "$missed"
