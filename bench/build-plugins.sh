#!/usr/bin/env bash
# Builds the Python and JavaScript example plugins into target/bench-plugins
# with the pinned toolchains (tests/install-plugin-tools.sh), for the
# benchmarks (bench/run.sh, bench/startup.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
tests/install-plugin-tools.sh
mkdir -p target/bench-plugins
PYTHONDONTWRITEBYTECODE=1 guest-sdk/python/.venv/bin/componentize-py -d wit -w resumable-plugin componentize \
    -p guest-sdk/python -p examples/python app -o target/bench-plugins/example_python.wasm >/dev/null
guest-sdk/js/node_modules/.bin/componentize-js examples/js/app.js -w guest-sdk/js/wit -n resumable-plugin \
    -d http -d fetch-event -o target/bench-plugins/example_js.wasm >/dev/null
