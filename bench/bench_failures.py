"""Failures during a pass (issue 29), through the Python package:

- ``under kills``: items/s of a pass whose worker processes are SIGKILLed
  every 100 ms, with ``on_failure="restart"``, against the same pass
  undisturbed, in the same run; every item decoded (JSON) by the consumer,
  and the killed pass checked to be exactly the undisturbed one;
- ``restart latency``: from a failure to the next item, in thread and
  process isolation: a trap (the `flaky` fixture traps at given values and,
  restarted by its skip, spares the one that made it restart), and in
  process isolation a SIGKILL of the worker. The gap between the item
  before and the first item of the new worker, less the median gap.

`random` of fixture-spdl (Rust SDK, seeded) is the killed plugin: its
restarts resume by skipping inside the plugin (wit/resume.wit), and the
seeded stream shows that nothing was lost or repeated.

    bench/failures.sh [RUNS] [--write]   # default 5 runs; --write puts the
                                         # tables between BENCHMARKS.md's markers
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import signal
import statistics
import sys
import threading
import time
from pathlib import Path

import sandgen
from compare import replace_between, stamp_now

ROOT = Path(__file__).resolve().parents[1]
# Items per worker of the killed pass: a second or two undisturbed.
ITEMS = 4_000_000
# The pass's items are checked by a polynomial hash modulo this prime (the
# consumer's work on each item, the same on both sides).
PRIME = 2**61 - 1
TRAPS = 20


def guest(fixture: str) -> str:
    return json.loads(os.environ["SANDGEN_TEST_GUESTS"])[fixture]


def killed_pass(
    plugin: sandgen.Plugin, workers: int, kill: bool
) -> tuple[float, int, tuple[int, int]]:
    """Seconds of one pass, its restarts, and (items, hash of the sequence),
    killing a worker every 100 ms."""
    iterable = plugin.iterable(
        "random",
        ITEMS,
        seed=5,
        num_workers=workers,
        isolation="process",
        on_failure="restart",
        max_restarts=100_000,
    )
    done = threading.Event()
    chooser = random.Random(workers)

    def killer() -> None:
        while not done.wait(0.1):
            pids = iterable.worker_pids
            try:
                os.kill(chooser.choice(pids), signal.SIGKILL)
            except ProcessLookupError:
                pass

    thread = threading.Thread(target=killer)
    start = time.perf_counter()
    if kill:
        thread.start()
    count, digest = 0, 0
    for item in iterable:
        digest = (digest * 1_000_003 + item) % PRIME
        count += 1
    seconds = time.perf_counter() - start
    done.set()
    if kill:
        thread.join()
    restarts = len(iterable.failures)
    iterable.close()
    return seconds, restarts, (count, digest)


def trap_latency(plugin: sandgen.Plugin, isolation: str) -> list[float]:
    """Seconds from the item before a trap to the next item, less the
    median gap between items, for each of TRAPS traps."""
    n = 200_000
    traps = [n * (i + 1) // (TRAPS + 1) for i in range(TRAPS)]
    iterable = plugin.iterable(
        "flaky",
        {"n": n, "traps": traps},
        isolation=isolation,
        buffer_size=2,
        on_failure="restart",
        max_restarts=TRAPS,
        # The panic messages of the traps.
        on_output=lambda worker, stream, line: None,
    )
    times = []
    for _ in iterable:
        times.append(time.perf_counter())
    if len(times) != n or len(iterable.failures) != TRAPS:
        sys.exit(f"flaky: {len(times)} items, {len(iterable.failures)} restarts")
    gaps = [b - a for a, b in itertools.pairwise(times)]
    typical = statistics.median(gaps)
    return [gaps[trap - 1] - typical for trap in traps]


def kill_latency(plugin: sandgen.Plugin) -> list[float]:
    """Seconds from a SIGKILL of the worker process to the new worker's
    first item (the old one's items in flight, at most 2, come first)."""
    latencies = []
    iterable = plugin.iterable(
        "range",
        10**9,
        isolation="process",
        buffer_size=2,
        on_failure="restart",
        max_restarts=TRAPS,
    )
    items = iter(iterable)
    for _ in range(TRAPS):
        for _ in range(1000):
            next(items)
        killed = time.perf_counter()
        os.kill(iterable.worker_pids[0], signal.SIGKILL)
        # The new worker's first item: after the (at most 2) in flight.
        last = killed
        gaps = []
        for _ in range(4):
            next(items)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now
        latencies.append(max(gaps))
    iterable.close()
    return latencies


def one_run(plugin: sandgen.Plugin) -> dict[str, object]:
    run: dict[str, object] = {}
    for workers in (1, 2):
        calm, _, expected = killed_pass(plugin, workers, kill=False)
        killed, restarts, items = killed_pass(plugin, workers, kill=True)
        if items != expected:
            sys.exit(f"{workers} workers: the killed pass is not the undisturbed one")
        run[f"kills_{workers}"] = {
            "undisturbed_s": calm,
            "killed_s": killed,
            "restarts": restarts,
            "items": items[0],
        }
    for isolation in ("thread", "process"):
        run[f"trap_{isolation}"] = trap_latency(plugin, isolation)
    run["kill_process"] = kill_latency(plugin)
    return run


def table(runs: list[dict]) -> str:
    lines = [
        (
            f"Failures during a pass ({stamp_now(len(runs))}): process isolation, "
            f"`random` (Rust SDK, seeded), {ITEMS:,} items per worker decoded from JSON "
            "and hashed in order by the consumer; each killed pass's hash checked equal to "
            "the undisturbed one's."
        ),
        "",
        (
            "| workers | undisturbed (items/s) | killed every 100 ms (items/s) | restarts "
            "| killed / undisturbed |"
        ),
        "|---|---|---|---|---|",
    ]
    for workers in (1, 2):
        key = f"kills_{workers}"
        calm = [r[key]["items"] / r[key]["undisturbed_s"] for r in runs]
        killed = [r[key]["items"] / r[key]["killed_s"] for r in runs]
        ratios = [k / c for k, c in zip(killed, calm, strict=True)]
        restarts = [r[key]["restarts"] for r in runs]
        lines.append(
            f"| {workers} | {statistics.median(calm):,.0f} | {statistics.median(killed):,.0f} "
            f"| {statistics.median(restarts):.0f} "
            f"| {statistics.median(ratios):.2f}× ({min(ratios):.2f}–{max(ratios):.2f}) |"
        )
    lines += [
        "",
        (
            f"Restart latency, failure → the new worker's next item (ms, median of {TRAPS} "
            f"per run over {len(runs)} runs, and the slowest):"
        ),
        "",
        "| failure | isolation | median (ms) | max (ms) |",
        "|---|---|---|---|",
    ]
    for key, failure, isolation in [
        ("trap_thread", "trap", "thread"),
        ("trap_process", "trap", "process"),
        ("kill_process", "SIGKILL", "process"),
    ]:
        values = [1000 * v for r in runs for v in r[key]]
        lines.append(
            f"| {failure} | {isolation} | {statistics.median(values):.1f} | {max(values):.1f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--write", action="store_true")
    options = parser.parse_args()
    plugin = sandgen.load(guest("FIXTURE_SPDL"))
    runs = [one_run(plugin) for _ in range(options.runs)]
    print(json.dumps(runs))
    text = table(runs)
    print(text)
    if options.write:
        replace_between(ROOT / "BENCHMARKS.md", text, "bench/failures.sh")


if __name__ == "__main__":
    main()
