"""Array items into numpy, side by side in one run (design section 7,
issue 27): float32 arrays of 64 KiB and 1 MiB read in a Python ``for`` loop,
and batches of 224x224x3 uint8 images.

Every consumer does the same work with every item: it reads the item as a
numpy array of its dtype and shape and reads one element of it
(``item[-1]``). The columns:

- ``ndarray``: sandgen, the Rust fixture ``ramp`` (tests/fixtures/arrays),
  ``item_type=numpy.ndarray`` (writable arrays, one copy out of the batch);
- ``bytes + frombuffer``: the same plugin and items read as raw ``bytes``
  (bincode without ``item_type``: one copy out of the batch, as
  ``item_type=bytes`` makes) and made arrays with ``np.frombuffer`` over the
  record's data (its tail), the path users had before (read-only arrays);
- ``python``: a plain in-process Python generator handing out ready-made
  arrays (a pool of 64, made before the clock starts): what a loop costs
  with no producer at all, the ceiling;
- ``python, fresh``: a plain Python generator making each array
  (``np.full``: one write of its memory, as sandgen's one copy);
- ``SPDL arena``: SPDL 0.8.0's ``iterate_in_subprocess`` with its
  shared-memory arena (``arena=SharedMemorySegmentPool(...)``, whose items
  arrive as zero-copy views of shared memory), its subprocess handing out
  the same ready-made array (a Python producer: SPDL runs Python only; the
  producer does no work on either side). Python's resource tracker may
  print ``KeyError`` tracebacks for the arena's segments at exit (SPDL
  unlinks them itself); they do not touch the figures.

The plugin yields the same ready-made array every time (``repeat``: its one
copy in the guest is the encoding into the batch), as the ``python`` column
hands out ready-made arrays, so that the figures measure the transfer, not
the fixture's element loop.

    bench/arrays.sh [RUNS] [--write]   # prints the table; --write puts it
                                       # between BENCHMARKS.md's markers

Ratios are the median of each run's own ratio (both sides measured in that
run), with their range.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path

import numpy as np
import sandgen
from compare import replace_between, stamp_now
from spdl.pipeline import SharedMemorySegmentPool, iterate_in_subprocess

ROOT = Path(__file__).resolve().parents[1]


def guests() -> dict[str, str]:
    return json.loads(os.environ["SANDGEN_TEST_GUESTS"])


def consume(items: Iterable[np.ndarray]) -> tuple[int, float]:
    """Reads one element of every item; returns the count and a checksum."""
    n, total = 0, 0.0
    for item in items:
        total += float(item.flat[-1])
        n += 1
    return n, total


def timed(make: Callable[[], Iterable[np.ndarray]], expect: int) -> float:
    """Items per second of one pass (the iterable made before the clock)."""
    items = make()
    start = time.perf_counter()
    n, _ = consume(items)
    seconds = time.perf_counter() - start
    if n != expect:
        sys.exit(f"expected {expect} items, got {n}")
    return n / seconds


def ready_made(elements: int, n: int) -> Iterable[np.ndarray]:
    """SPDL's producer: one ready-made array (ramp's item 0), n times."""
    array = np.arange(elements, dtype=np.float32)
    return (array for _ in range(n))


def spdl_arena(elements: int, n: int) -> Iterable[np.ndarray]:
    """The same arrays through SPDL's subprocess and shared-memory arena
    (segments sized for one item and its header; as many as SPDL's buffer
    plus the consumer's holds need)."""
    pool = SharedMemorySegmentPool(segment_size=4 * elements + (1 << 16), count=8)
    return iterate_in_subprocess(partial(ready_made, elements, n), arena=pool)


def array_rates(plugin: sandgen.Plugin, elements: int, n: int) -> dict[str, float]:
    args = {"n": n, "dtype": "float32", "shape": [elements], "repeat": True}

    def ours(isolation: str) -> Callable[[], Iterable[np.ndarray]]:
        def make() -> Iterable[np.ndarray]:
            return plugin.iterable(
                "ramp",
                args,
                encoding="bincode",
                item_type=np.ndarray,
                isolation=isolation,
            )

        return make

    def frombuffer() -> Iterable[np.ndarray]:
        # The record is dtype, shape, then the data: its last 4 * elements
        # bytes. Read as bytes (`item_type=bytes` reads a length-prefixed
        # string, which the record is not), the raw item's tail is the data.
        raw = plugin.iterable("ramp", args, encoding="bincode", isolation="thread")
        size = 4 * elements
        return (
            np.frombuffer(item, np.float32, count=elements, offset=len(item) - size)
            for item in raw
        )

    pool = [np.arange(elements, dtype=np.float32) + k for k in range(64)]

    def python() -> Iterable[np.ndarray]:
        return (pool[k % 64] for k in range(n))

    def python_fresh() -> Iterable[np.ndarray]:
        return (np.full(elements, k, np.float32) for k in range(n))

    return {
        "ndarray_thread": timed(ours("thread"), n),
        "ndarray_process": timed(ours("process"), n),
        "bytes_frombuffer": timed(frombuffer, n),
        "python": timed(python, n),
        "python_fresh": timed(python_fresh, n),
        "spdl_arena": timed(partial(spdl_arena, elements, n), n),
    }


def batch_rates(plugin: sandgen.Plugin, n: int) -> dict[str, float]:
    args = {"n": n, "dtype": "uint8", "shape": [224, 224, 3], "repeat": True}

    def items() -> Iterable[np.ndarray]:
        return plugin.iterable("ramp", args, encoding="bincode", item_type=np.ndarray)

    def batches() -> Iterable[np.ndarray]:
        return plugin.iterable(
            "ramp", args, encoding="bincode", item_type=np.ndarray, batch_size=64
        )

    unbatched = timed(items, n)
    start = time.perf_counter()
    count = sum(len(batch) for batch in batches())
    batched = count / (time.perf_counter() - start)
    if count != n:
        sys.exit(f"expected {n} items in batches, got {count}")
    return {"items": unbatched, "batch64_items": batched}


def one_run(plugin: sandgen.Plugin) -> dict[str, dict[str, float]]:
    return {
        "64KiB": array_rates(plugin, 16 * 1024, 40_000),
        "1MiB": array_rates(plugin, 256 * 1024, 4_000),
        "batch": batch_rates(plugin, 25_600),
    }


def ranged(values: list[float]) -> str:
    return f"{statistics.median(values):.2f}× ({min(values):.2f}–{max(values):.2f})"


def table(runs: list[dict]) -> str:
    def med(size: str, key: str) -> float:
        return statistics.median(r[size][key] for r in runs)

    def ratio(size: str, a: str, b: str) -> str:
        return ranged([r[size][a] / r[size][b] for r in runs])

    lines = [
        (
            f"Array items into numpy ({stamp_now(len(runs))}): items/s (median) and ratios "
            "of each run's own figures (median, range)."
        ),
        "",
        (
            "| float32 item | ndarray, thread | ndarray, process | bytes + frombuffer | python "
            "| python, fresh | SPDL arena | thread / frombuffer | thread / python "
            "| thread / python, fresh | process / thread | process / SPDL arena |"
        ),
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for size in ["64KiB", "1MiB"]:
        lines.append(
            f"| {size.replace('KiB', ' KiB').replace('MiB', ' MiB')} "
            f"| {med(size, 'ndarray_thread'):,.0f} | {med(size, 'ndarray_process'):,.0f} "
            f"| {med(size, 'bytes_frombuffer'):,.0f} | {med(size, 'python'):,.0f} "
            f"| {med(size, 'python_fresh'):,.0f} | {med(size, 'spdl_arena'):,.0f} "
            f"| {ratio(size, 'ndarray_thread', 'bytes_frombuffer')} "
            f"| {ratio(size, 'ndarray_thread', 'python')} "
            f"| {ratio(size, 'ndarray_thread', 'python_fresh')} "
            f"| {ratio(size, 'ndarray_process', 'ndarray_thread')} "
            f"| {ratio(size, 'ndarray_process', 'spdl_arena')} |"
        )
    lines += [
        "",
        "| 224×224×3 uint8 | items/s one by one | items/s in batches of 64 | batched / items |",
        "|---|---|---|---|",
        (
            f"| thread | {med('batch', 'items'):,.0f} | {med('batch', 'batch64_items'):,.0f} "
            f"| {ratio('batch', 'batch64_items', 'items')} |"
        ),
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--write", action="store_true")
    options = parser.parse_args()
    plugin = sandgen.load(guests()["FIXTURE_ARRAYS"])
    runs = [one_run(plugin) for _ in range(options.runs)]
    text = table(runs)
    print(json.dumps(runs))
    print(text)
    if options.write:
        replace_between(ROOT / "BENCHMARKS.md", text, "bench/arrays.sh")


if __name__ == "__main__":
    main()
