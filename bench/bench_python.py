#!/usr/bin/env python3
"""The Python edge, side by side in one run: sandgen's Python package against
SPDL 0.8.0's iterate_in_subprocess (bench_spdl.py, unchanged, in this same
interpreter) and against sandgen's Rust API (`sandgen bench`), on the
workloads of bench_spdl.py. Items are consumed by the same Python `for`
loops (bench_spdl's `_consume_ints` / `_consume_bytes`) on both sides.

    bench/python.sh [RUNS]     # builds what it needs, then runs this
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

import bench_spdl
import sandgen

SANDGEN = ROOT / "target/debug/sandgen"
PLUGIN = ROOT / "target/wasm32-wasip2/release/fixture_spdl.wasm"
CACHE = ROOT / "target/bench-cache"

# sandgen moves small ints so fast that SPDL's 200k take a few milliseconds:
# ten times more, for a steadier rate (the figure is per item either way).
N_INTS = 2_000_000
N_64K, SZ_64K = bench_spdl.N_64K, bench_spdl.SZ_64K
N_1M, SZ_1M = bench_spdl.N_1M, bench_spdl.SZ_1M
N_LAT = 50


def python_api(plugin: sandgen.Plugin, isolation: str) -> dict:
    res: dict = {}

    def timed(generator: str, args: object, consume, expect, **options) -> float:
        it = plugin.iterable(generator, args, isolation=isolation, **options)
        t0 = time.perf_counter()
        got = consume(iter(it))
        seconds = time.perf_counter() - t0
        it.close()
        assert got == expect, (got, expect)
        return seconds

    ints = (bench_spdl._consume_ints, (N_INTS, N_INTS * (N_INTS - 1) // 2))
    res["ints_bincode_per_s"] = N_INTS / timed(
        "range", N_INTS, *ints, encoding="bincode", item_type=int
    )
    res["ints_json_per_s"] = N_INTS / timed("range", N_INTS, *ints)
    for key, n, size in (("bytes64k", N_64K, SZ_64K), ("bytes1m", N_1M, SZ_1M)):
        seconds = timed(
            "bytes",
            {"n": n, "size": size},
            bench_spdl._consume_bytes,
            (n, n * size),
            encoding="bincode",
            item_type=bytes,
        )
        res[f"{key}_mb_per_s"] = n * size / seconds / 1e6
    latencies = []
    for _ in range(N_LAT):
        t0 = time.perf_counter()
        it = plugin.iterable(
            "range", 1, isolation=isolation, encoding="bincode", item_type=int
        )
        first = next(iter(it))
        latencies.append(time.perf_counter() - t0)
        assert first == 0
        it.close()
    res["first_item_ms"] = statistics.median(latencies) * 1e3
    return res


def rust_api(isolation: str) -> dict:
    def bench(generator: str, args: object) -> dict:
        out = subprocess.run(
            [
                SANDGEN,
                "bench",
                PLUGIN,
                generator,
                "--args",
                json.dumps(args),
                "--isolation",
                isolation,
                # Every item decoded, as the Python side makes an object
                # of every item.
                "--decode",
                "u64" if generator == "range" else "bytes",
            ],
            check=True,
            capture_output=True,
            text=True,
            env={**os.environ, "SANDGEN_CACHE_DIR": str(CACHE)},
        ).stdout
        return json.loads(out)

    return {
        "ints_bincode_per_s": bench("range", N_INTS)["items_per_second"],
        "bytes64k_mb_per_s": _mb_per_s(bench("bytes", {"n": N_64K, "size": SZ_64K})),
        "bytes1m_mb_per_s": _mb_per_s(bench("bytes", {"n": N_1M, "size": SZ_1M})),
        "first_item_ms": statistics.median(
            bench("range", 1)["first_item_ms"] for _ in range(9)
        ),
    }


def _mb_per_s(figures: dict) -> float:
    return figures["bytes"] / figures["seconds"] / 1e6


def spdl() -> dict:
    res = bench_spdl.run_all(argparse.Namespace(latency_contexts=[]))

    def mb(key: str, n: int, size: int) -> float:
        return n * size / res[key]["iter_s"] / 1e6

    return {
        "ints_per_s": bench_spdl.N_INTS / res["ints_buf3"]["iter_s"],
        "ints_buf64_per_s": bench_spdl.N_INTS / res["ints_buf64"]["iter_s"],
        "bytes64k_mb_per_s": mb("bytes64k_buf3", N_64K, SZ_64K),
        "bytes1m_mb_per_s": mb("bytes1m_buf3", N_1M, SZ_1M),
        "first_item_ms": res["latency"]["first_item_s"] * 1e3,
        "native_ints_per_s": bench_spdl.N_INTS / res["native_ints"]["iter_s"],
        "meta": res["meta"],
    }


def one_run(plugin: sandgen.Plugin) -> dict:
    return {
        "python": {iso: python_api(plugin, iso) for iso in ("thread", "process")},
        "rust": {iso: rust_api(iso) for iso in ("thread", "process")},
        "spdl": spdl(),
    }


def median(runs: list):
    first = runs[0]
    if isinstance(first, dict):
        return {k: median([r[k] for r in runs]) for k in first}
    if isinstance(first, int | float):
        return statistics.median(runs)
    return first


def table(res: dict, runs: int) -> str:
    py, rs, sp = res["python"], res["rust"], res["spdl"]
    rows = [
        (
            "small ints, bincode `item_type=int`",
            "items/s",
            "ints_bincode_per_s",
            "ints_per_s",
            True,
        ),
        ("small ints, JSON", "items/s", "ints_json_per_s", "ints_per_s", True),
        (
            "2,000 × 64 KiB `bytes`",
            "MB/s",
            "bytes64k_mb_per_s",
            "bytes64k_mb_per_s",
            True,
        ),
        ("200 × 1 MiB `bytes`", "MB/s", "bytes1m_mb_per_s", "bytes1m_mb_per_s", True),
        ("call → first item (warm)", "ms", "first_item_ms", "first_item_ms", False),
    ]
    head = (
        "workload",
        "unit",
        "Python thread",
        "Python process",
        "Rust API thread",
        "Rust API process",
        "SPDL 0.8.0",
        "Python thread / Rust API thread",
    )
    lines = [
        "| " + " | ".join(head) + " |",
        "|" + "---|" * 2 + "---:|" * (len(head) - 2),
    ]

    def fmt(value: float | None, unit: str) -> str:
        if value is None:
            return "–"
        return f"{value:.2f}" if unit == "ms" else f"{value:,.0f}"

    for label, unit, key, spdl_key, higher in rows:
        thread, process = py["thread"][key], py["process"][key]
        rust_t = rs["thread"].get(key if "json" not in key else "ints_bincode_per_s")
        rust_p = rs["process"].get(key if "json" not in key else "ints_bincode_per_s")
        spdl_value = sp[spdl_key]
        vs_rust = thread / rust_t if higher else rust_t / thread
        lines.append(
            f"| {label} | {unit} | {fmt(thread, unit)} | {fmt(process, unit)} | "
            f"{fmt(rust_t, unit)} | {fmt(rust_p, unit)} | {fmt(spdl_value, unit)} | "
            f"{vs_rust:.2f}× |"
        )
    lines.append("")
    lines.append(
        f"Median of {runs} run(s). The ratio is the Python package against the "
        "Rust API on the same plugin in the same isolation (higher throughput, "
        "lower latency): below 1 is the cost of the Python edge. SPDL runs a "
        "Python generator where sandgen runs the Rust plugin, so its column has "
        "no ratio (bench/run.sh sets the Python example plugin against it). SPDL with "
        f"buffer_size=64: {sp['ints_buf64_per_s']:,.0f} items/s; a plain Python "
        f"generator in-process: {sp['native_ints_per_s']:,.0f} items/s."
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", type=Path, default=ROOT / "target/bench-python.json")
    args = parser.parse_args()
    plugin = sandgen.load(PLUGIN, cache_dir=CACHE)
    runs = [one_run(plugin) for _ in range(args.runs)]
    res = median(runs)
    res["meta"] = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "spdl": runs[0]["spdl"]["meta"]["spdl"],
    }
    args.json.write_text(json.dumps({"median": res, "runs": runs}, indent=1))
    print(table(res, args.runs))


if __name__ == "__main__":
    main()
