#!/usr/bin/env python3
"""Process isolation against thread isolation, on the workloads where the
transport between a worker process and its caller is the limit.

Runs `sandgen bench` (bincode items, nothing printed) on the fixture-spdl
plugin in both isolations, interleaved, --runs times, and prints the medians
and the process/thread ratio. With --before, the same for another sandgen
binary (an earlier revision), in the same interleaved run, so that the
before/after ratios come from one run on one machine state.

Workloads: `bytes` (fresh byte strings, as bench_spdl.py makes them: the
plugin allocates and fills each one), `blocks` (one block sent many times:
the plugin only encodes, so the transport is the limit), and `range` (small
u64 items: the per-batch cost of the transport).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# This tree's `sandgen`; the scripts that compare with another revision
# set SANDGEN_BENCH_NOW to this tree's HEAD built alike (build-revision.sh).
SANDGEN = Path(os.environ.get("SANDGEN_BENCH_NOW", ROOT / "target/debug/sandgen"))
PLUGIN = ROOT / "target/wasm32-wasip2/release/fixture_spdl.wasm"
CACHE = ROOT / "target/bench-cache"

# Each run moves about 2 GB (or 10 M items): long enough that start-up and
# scheduling hiccups weigh little.
WORKLOADS = [
    ("bytes", 30_000, 64 << 10, "30,000 x 64 KiB, fresh"),
    ("bytes", 2_000, 1 << 20, "2,000 x 1 MiB, fresh"),
    ("blocks", 30_000, 64 << 10, "30,000 x 64 KiB, one block"),
    ("blocks", 2_000, 1 << 20, "2,000 x 1 MiB, one block"),
    ("range", 10_000_000, 0, "10,000,000 small u64"),
]


@functools.cache
def decode_flags(binary: Path, kind: str) -> tuple[str, ...]:
    """`--decode KIND` where `binary` has it (a revision before it had no
    such option and never read its items: `none` is the like of that)."""
    usage = subprocess.run(
        [binary, "bench", "--help"], check=False, capture_output=True, text=True
    ).stdout
    return ("--decode", kind) if "--decode" in usage else ()


def bench(binary: Path, generator: str, n: int, size: int, isolation: str) -> float:
    """MB/s (items/s for `range`) of one `sandgen bench` run."""
    args = str(n) if generator == "range" else json.dumps({"n": n, "size": size})
    out = subprocess.run(
        [
            binary,
            "bench",
            PLUGIN,
            generator,
            "--args",
            args,
            "--isolation",
            isolation,
            # The transport alone, on both sides of a comparison.
            *decode_flags(binary, "none"),
        ],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "SANDGEN_CACHE_DIR": str(CACHE)},
    ).stdout
    report = json.loads(out)
    return (
        report["items_per_second"]
        if generator == "range"
        else report["megabytes_per_second"]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--before", type=Path, help="another sandgen binary to compare")
    parser.add_argument("--before-label", default="before")
    opts = parser.parse_args()
    binaries = [("now", SANDGEN)]
    if opts.before:
        binaries.insert(0, (opts.before_label, opts.before))
    for _, binary in binaries:  # warm the compile cache
        bench(binary, "range", 1, 0, "process")
    figures: dict = {}
    for _ in range(opts.runs):
        for generator, n, size, label in WORKLOADS:
            for name, binary in binaries:
                for isolation in ("thread", "process"):
                    key = (label, name, isolation)
                    figures.setdefault(key, []).append(
                        bench(binary, generator, n, size, isolation)
                    )
    median = {key: statistics.median(values) for key, values in figures.items()}
    header = "| workload | unit |"
    rule = "|---|---|"
    for name, _ in binaries:
        header += f" {name} thread | {name} process | {name} process / thread |"
        rule += "---:|---:|---:|"
    print(f"Median of {opts.runs} interleaved runs.\n")
    print(header)
    print(rule)
    for generator, _, _, label in WORKLOADS:
        unit = "items/s" if generator == "range" else "MB/s"
        row = f"| {label} | {unit} |"
        for name, _ in binaries:
            thread, process = (
                median[(label, name, "thread")],
                median[(label, name, "process")],
            )
            row += f" {thread:,.0f} | {process:,.0f} | {process / thread:.2f}× |"
        print(row)
    if opts.before:
        print()
        before, now = binaries[0][0], binaries[1][0]
        for generator, _, _, label in WORKLOADS:
            ratio = median[(label, now, "process")] / median[(label, before, "process")]
            print(f"{label}: process isolation {ratio:.2f}× of {before}")


if __name__ == "__main__":
    main()
