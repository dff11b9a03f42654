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
# Run from the repository's root on a clean tree; each mutation rebuilds the
# host (about a minute on 2 cores; all of them take about 40 minutes, too
# long for CI's 90 with the rest, so they run on demand).
set -euo pipefail
cd "$(dirname "$0")/../.."
here=tests/mutations
if [ $# -eq 0 ]; then
    set -- $(cd "$here" && ls ./*.patch | sed 's|^\./||; s|\.patch$||')
fi
# The verdicts are of the committed revision that SECURITY.md names.
if ! git diff --quiet HEAD -- . ':!SECURITY.md'; then
    echo "run.sh records its verdicts against HEAD: commit or stash your changes first" >&2
    exit 2
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
caught=()
missed_names=()
for name in "$@"; do
    patch="$here/$name.patch"
    [ -f "$patch" ] || { echo "no mutation $name ($patch)" >&2; exit 2; }
    what=$(sed -n 's/^Breaks: //p' "$patch")
    git apply "$patch"
    applied="$patch"
    verdict=caught
    while read -r test; do
        if [[ "$test" =~ ^([A-Za-z0-9_-]+):([^:].*)$ ]]; then
            run=(cargo test --locked -q -p "${BASH_REMATCH[1]}" --lib -- "${BASH_REMATCH[2]}")
        else
            case "$test" in
                *.py::*) run=(pytest_one "${test#host/python/}") ;;
                *::tests::*) run=(cargo test --locked -q -p sandgen --lib -- "$test") ;;
                *) run=(cargo test --locked -q -p sandgen --test all -- "$test") ;;
            esac
        fi
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
    if [ "$verdict" = caught ]; then
        caught+=("$name")
    else
        missed=1
        missed_names+=("$name")
    fi
    echo "$verdict: $name ($what)"
done
results="$(mktemp)"
for name in "${caught[@]}"; do echo "$name caught"; done >"$results"
for name in "${missed_names[@]}"; do echo "$name MISSED"; done >>"$results"
python3 "$here/record.py" "$results"
rm -f "$results"
echo "recorded in SECURITY.md: ${#caught[@]} caught, ${#missed_names[@]} missed"
exit "$missed"
