"""Preprocess JSON Lines data into a Ray dataset with the jsonl example
plugin, sandboxed, in several read tasks that share one file.

    cargo build --release --target wasm32-wasip2 -p example-jsonl
    pip install "./host/python[ray]"
    python examples/ray/preprocess.py target/wasm32-wasip2/release/example_jsonl.wasm

It makes a larger input first (copies of examples/data/reviews.jsonl in a
temporary folder) and runs on a local Ray. Each read task's sandgen worker
sees its index among the shards (`SANDGEN_WORKER_ID`, `SANDGEN_NUM_WORKERS`),
and the plugin reads every n-th row from its own: each row once. (For one
file per task, give `shard_args=[...]` to a plugin that does not shard by
worker: a plugin that does would take its share of each task's file.) On a
real cluster, call `ray.init(address="auto")` instead and put the file where
every node sees it at the same path.
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
        Path(folder, "reviews.jsonl").write_text(
            lines * options.copies * options.shards
        )
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        ds = sandgen.ray.read_generator(
            options.plugin,
            "rows",
            args={"path": "/data/reviews.jsonl", "fields": ["id", "stars", "lang"]},
            num_shards=options.shards,
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
