#!/usr/bin/env bash
# Installs the pinned toolchains that build Python and JavaScript plugins:
# componentize-py (guest-sdk/python/requirements.txt) into
# guest-sdk/python/.venv, and componentize-js (guest-sdk/js/package-lock.json)
# into guest-sdk/js/node_modules. The test build (tests/build.rs) uses both.
# Does nothing for a toolchain that is already installed at its pinned version.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"

py="$root/guest-sdk/python"
want_py="$(sed -n 's/^componentize-py==//p' "$py/requirements.txt")"
if [ "$("$py/.venv/bin/componentize-py" --version 2>/dev/null | awk '{print $2}')" != "$want_py" ]; then
    echo "installing componentize-py $want_py into guest-sdk/python/.venv" >&2
    python3 -m venv "$py/.venv"
    "$py/.venv/bin/pip" install --quiet --disable-pip-version-check -r "$py/requirements.txt"
fi

js="$root/guest-sdk/js"
# node_modules is current when it was installed from this very lock file.
if ! cmp -s "$js/package-lock.json" "$js/node_modules/.sandgen-installed-lock.json"; then
    echo "installing componentize-js into guest-sdk/js/node_modules" >&2
    # `npm install` from the lock file, which it leaves untouched (--no-save);
    # not `npm ci`, which npm 11 refuses for this lock file because of the
    # other platforms' optional binaries it does not list.
    (cd "$js" && npm install --no-save --no-audit --no-fund --loglevel=error)
    cp "$js/package-lock.json" "$js/node_modules/.sandgen-installed-lock.json"
fi
