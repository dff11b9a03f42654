"""Preprocess JSON Lines data into a Ray dataset with the jsonl example
plugin, sandboxed, one read task per file.

    cargo build --release --target wasm32-wasip2 -p example-jsonl
    pip install "./host/python[ray]"
    python examples/ray/preprocess.py target/wasm32-wasip2/release/example_jsonl.wasm

It makes a larger input first (copies of examples/data/reviews.jsonl in a
temporary folder, one file per shard) and runs on a local Ray; on a real
cluster, call `ray.init(address="auto")` instead and put the files where
every node sees them at the same path (or give each shard a URL its plugin
can read).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import ray
import sandgen.ray

DATA = Path(__file__).resolve().parents[1] / "data" / "reviews.jsonl"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("plugin", help="the example_jsonl.wasm plugin")
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument(
        "--copies", type=int, default=250, help="copies of the data per shard"
    )
    options = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as folder:
        lines = DATA.read_text()
        for shard in range(options.shards):
            Path(folder, f"part-{shard}.jsonl").write_text(lines * options.copies)
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        ds = sandgen.ray.read_generator(
            options.plugin,
            "rows",
            shard_args=[
                {"path": f"/data/part-{shard}.jsonl", "fields": ["id", "stars", "lang"]}
                for shard in range(options.shards)
            ],
            dirs={folder: "/data"},
            timeout=30.0,
        )
        print(ds.schema())
        for row in ds.take(3):
            print(row)
        print(f"{ds.count()} rows from {options.shards} shards")
        ray.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
