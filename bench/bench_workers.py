#!/usr/bin/env python3
"""Parallel workers, side by side in one run: a CPU-bound Rust plugin (the
`busy` generator of fixture-spdl, ~50 µs of integer arithmetic per item)
with 1, 2 and 4 workers, in order and unordered, in thread and process
isolation (`sandgen bench --workers N`); tiny items (u64s, `sharded`) with 1
and 2 workers, to show the merge is not the bottleneck; the same through the
Python package; and a PyTorch-style baseline: `multiprocessing.Pool` running
the same arithmetic as a Python function. Writes a plot of throughput
against workers (bench/workers.png).

    bench/workers.sh [RUNS]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SANDGEN = ROOT / "target/debug/sandgen"
PLUGIN = ROOT / "target/wasm32-wasip2/release/fixture_spdl.wasm"
CACHE = ROOT / "target/bench-cache"

ROUNDS = 22_000  # about 50 µs per item here
N_BUSY = 4_000
N_TINY = 4_000_000
WORKERS = (1, 2, 4)
MASK = (1 << 64) - 1


def sandgen_bench(
    generator: str, args: dict, workers: int, isolation: str, unordered: bool
) -> float:
    command = [
        SANDGEN,
        "bench",
        PLUGIN,
        generator,
        "--args",
        json.dumps(args),
        "--workers",
        str(workers),
        "--isolation",
        isolation,
        "--decode",
        "u64",
    ]
    if unordered:
        command.append("--unordered")
    out = subprocess.run(
        command,
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "SANDGEN_CACHE_DIR": str(CACHE)},
    ).stdout
    return json.loads(out)["items_per_second"]


def busy_python(i: int) -> int:
    """The plugin's per-item arithmetic, in Python."""
    x = ((i * 0x9E3779B97F4A7C15) & MASK) | 1
    for _ in range(ROUNDS):
        x ^= x >> 12
        x = (x ^ (x << 25)) & MASK
        x ^= x >> 27
        x = (x * 0x2545F4914F6CDD1D) & MASK
    return x


def pool_rate(processes: int, n: int) -> float:
    with mp.get_context("fork").Pool(processes) as pool:
        t0 = time.perf_counter()
        count = sum(1 for _ in pool.imap(busy_python, range(n), chunksize=1))
        return count / (time.perf_counter() - t0)


def python_api_rate(workers: int, in_order: bool) -> float:
    import sandgen

    plugin = sandgen.load(PLUGIN, cache_dir=CACHE)
    with plugin.iterable(
        "busy",
        {"n": N_BUSY, "rounds": ROUNDS},
        num_workers=workers,
        in_order=in_order,
        encoding="bincode",
        item_type=int,
    ) as it:
        t0 = time.perf_counter()
        count = sum(1 for _ in it)
        return count / (time.perf_counter() - t0)


def one_run() -> dict:
    res: dict = {"busy": {}, "tiny": {}, "python": {}, "pool": {}}
    for isolation in ("thread", "process"):
        for unordered in (False, True):
            key = f"{isolation}/{'unordered' if unordered else 'in order'}"
            res["busy"][key] = {
                w: sandgen_bench(
                    "busy", {"n": N_BUSY, "rounds": ROUNDS}, w, isolation, unordered
                )
                for w in WORKERS
            }
            res["tiny"][key] = {
                w: sandgen_bench("sharded", N_TINY, w, isolation, unordered)
                for w in (1, 2)
            }
    for in_order in (True, False):
        key = "in order" if in_order else "unordered"
        res["python"][key] = {w: python_api_rate(w, in_order) for w in (1, 2)}
    res["pool"] = {w: pool_rate(w, 24 * w) for w in (1, 2)}
    return res


def median(runs: list):
    first = runs[0]
    if isinstance(first, dict):
        return {k: median([r[k] for r in runs]) for k in first}
    return statistics.median(runs)


def table(res: dict) -> str:
    lines = [
        "| busy items (~50 µs each) | 1 worker | 2 workers | 4 workers | 2 / 1 | 4 / 1 |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for key, rates in res["busy"].items():
        lines.append(
            f"| sandgen {key} | {rates[1]:,.0f} | {rates[2]:,.0f} | {rates[4]:,.0f} | "
            f"{rates[2] / rates[1]:.2f}× | {rates[4] / rates[1]:.2f}× |"
        )
    for key, rates in res["python"].items():
        lines.append(
            f"| Python package, thread, {key} | {rates[1]:,.0f} | {rates[2]:,.0f} | – | "
            f"{rates[2] / rates[1]:.2f}× | – |"
        )
    pool = res["pool"]
    lines.append(
        f"| `multiprocessing.Pool`, the same arithmetic in Python | {pool[1]:,.1f} | "
        f"{pool[2]:,.1f} | – | {pool[2] / pool[1]:.2f}× | – |"
    )
    lines += [
        "",
        "| tiny items (u64) | 1 worker | 2 workers | 2 / 1 |",
        "|---|---:|---:|---:|",
    ]
    for key, rates in res["tiny"].items():
        lines.append(
            f"| sandgen {key} | {rates[1]:,.0f} | {rates[2]:,.0f} | {rates[2] / rates[1]:.2f}× |"
        )
    return "\n".join(lines)


def plot(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=110)
    for key, rates in res["busy"].items():
        ax.plot(
            list(WORKERS),
            [rates[w] for w in WORKERS],
            marker="o",
            label=f"sandgen {key}",
        )
    ideal = res["busy"]["thread/unordered"][1]
    ax.plot(
        list(WORKERS),
        [ideal * w for w in WORKERS],
        linestyle=":",
        color="gray",
        label="linear from 1 worker",
    )
    ax.axvline(os.cpu_count() or 2, color="lightgray", linewidth=1)
    ax.set_xlabel("workers (vertical line: cores of this machine)")
    ax.set_ylabel("items/s (~50 µs of arithmetic each)")
    ax.set_xticks(list(WORKERS))
    ax.set_title("One iterable, several workers")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", type=Path, default=ROOT / "target/bench-workers.json")
    parser.add_argument("--plot", type=Path, default=ROOT / "bench/workers.png")
    args = parser.parse_args()
    runs = [one_run() for _ in range(args.runs)]
    res = median(runs)
    args.json.write_text(
        json.dumps({"median": res, "runs": runs, "cpus": os.cpu_count()}, indent=1)
    )
    plot(res, args.plot)
    print(f"{os.cpu_count()} CPUs, median of {args.runs} run(s)\n")
    print(table(res))


if __name__ == "__main__":
    sys.exit(main())
