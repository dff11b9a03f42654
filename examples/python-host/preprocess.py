"""Preprocess the bundled reviews from Python, with the JSON Lines example
plugin running in a sandbox.

Build the plugin and install the package, then run this script:

    cargo build --release --target wasm32-wasip2 -p example-jsonl
    pip install ./host/python
    python examples/python-host/preprocess.py target/wasm32-wasip2/release/example_jsonl.wasm

The plugin sees only examples/data (read-only, as /data), no environment and
no network; it may use 256 MiB and must send something every 10 seconds.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import sandgen

DATA = Path(__file__).resolve().parents[1] / "data"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("plugin", help="the example_jsonl.wasm plugin")
    parser.add_argument("--isolation", choices=["thread", "process"], default="thread")
    options = parser.parse_args(argv)

    plugin = sandgen.load(options.plugin)
    for name, description in plugin.generators():
        print(f"generator {name}: {description}")

    by_language: dict[str, list[int]] = {}
    with plugin.iterable(
        "rows",
        args={"path": "/data/reviews.jsonl", "fields": ["id", "stars", "lang"]},
        dirs={str(DATA): "/data"},
        isolation=options.isolation,
        memory_limit_mib=256,
        timeout=10.0,
    ) as rows:
        for row in rows:
            by_language.setdefault(row["lang"], []).append(row["stars"])
    for lang, stars in sorted(by_language.items()):
        print(f"{lang}: {len(stars)} reviews, mean {sum(stars) / len(stars):.2f} stars")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
