#!/usr/bin/env python3
"""Ray Data, side by side in one run: rows/s of
`sandgen.ray.read_generator(...)` through `iter_rows()` and `iter_batches()`
with 1 and 2 shards of a CPU-bound Rust plugin (`busy` of fixture-spdl, ~48
µs per item), beside the same plugin through the sandgen Python API with 1
and 2 workers, and beside plain Ray Data (`ray.data.range(n).map(f)`) with
`f` doing the same arithmetic in Python.

    bench/ray.sh [RUNS]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import ray
import ray.data
import sandgen
import sandgen.ray

ROOT = Path(__file__).resolve().parent.parent
PLUGIN = ROOT / "target/wasm32-wasip2/release/fixture_spdl.wasm"
CACHE = ROOT / "target/bench-cache"
ROUNDS = 22_000
N = 40_000
N_PYTHON = 64
MASK = (1 << 64) - 1


def busy_python(row: dict) -> dict:
    x = ((row["id"] * 0x9E3779B97F4A7C15) & MASK) | 1
    for _ in range(ROUNDS):
        x ^= x >> 12
        x = (x ^ (x << 25)) & MASK
        x ^= x >> 27
        x = (x * 0x2545F4914F6CDD1D) & MASK
    return {"item": x}


def timed(count_rows) -> float:
    t0 = time.perf_counter()
    rows = count_rows()
    return rows / (time.perf_counter() - t0)


def one_run() -> dict:
    res: dict = {}
    for shards in (1, 2):
        # Each shard runs the whole `busy` range sharded by its worker info:
        # N items in all, whatever the number of shards.
        def dataset(shards: int = shards) -> ray.data.Dataset:
            return sandgen.ray.read_generator(
                PLUGIN,
                "busy",
                num_shards=shards,
                args={"n": N, "rounds": ROUNDS},
                encoding="bincode",
                item_type=int,
                cache_dir=CACHE,
            )

        res[f"ray iter_rows, {shards} shard(s)"] = timed(
            lambda: sum(1 for _ in dataset().iter_rows())
        )
        res[f"ray iter_batches, {shards} shard(s)"] = timed(
            lambda: sum(
                len(b["item"]) for b in dataset().iter_batches(batch_format="pyarrow")
            )
        )
    plugin = sandgen.load(PLUGIN, cache_dir=CACHE)
    for workers in (1, 2):

        def python(workers: int = workers) -> int:
            with plugin.iterable(
                "busy",
                {"n": N, "rounds": ROUNDS},
                num_workers=workers,
                encoding="bincode",
                item_type=int,
            ) as it:
                return sum(1 for _ in it)

        res[f"Python API, {workers} worker(s)"] = timed(python)
    # Rows are consumed (not counted: `count()` would skip the map).
    res["plain Ray Data, map of a Python function"] = timed(
        lambda: sum(
            1
            for _ in ray.data.range(N_PYTHON, override_num_blocks=2)
            .map(busy_python)
            .iter_rows()
        )
    )
    return res


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    ray.init(
        num_cpus=os.cpu_count(),
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"SANDGEN_CACHE_DIR": str(CACHE)}},
    )
    ray.data.DataContext.get_current().enable_progress_bars = False
    one_run()  # warm: every worker process loads the plugin once
    runs = [one_run() for _ in range(args.runs)]
    res = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
    (ROOT / "target/bench-ray.json").write_text(
        json.dumps({"median": res, "runs": runs}, indent=1)
    )
    print(
        f"{os.cpu_count()} CPUs, Ray {ray.__version__}, median of {args.runs} run(s)\n"
    )
    print("| reading | rows/s |")
    print("|---|---:|")
    for key, value in res.items():
        print(f"| {key} | {value:,.0f} |")
    ray.shutdown()


if __name__ == "__main__":
    main()
