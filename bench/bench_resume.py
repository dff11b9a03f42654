"""Resume (issue 28): what resuming costs, through `sandgen run`.

The Rust fixture `range` (fixture-spdl, built with the guest SDK: it has no
way to skip items of its own, so resuming replays them) yields 0..n as JSON
lines. Each figure is the wall time of one `sandgen run` in thread
isolation, stdout to /dev/null, the compile cache warm:

- ``first item``: `--take 1` of a fresh run: start-up, load, the first item;
- ``resume at 1,000,000, first item``: `--resume` from a position saved
  after item 1,000,000 of pass 0 (`--take 1000000 --save-state`), then
  `--take 1`: the replay drops a million items in the worker;
- ``1,000,000 items``: a run that prints items 0..999,999: the plugin's
  normal delivery, encoded, moved, decoded and printed.

From them: the replay's rate (a million items over the resume's extra time
beyond a fresh run's first item) against the normal delivery rate (a
million items over the full run's extra time), both in the same run.

    bench/resume.sh [RUNS] [--write]   # default 5 runs; --write puts the
                                       # table between BENCHMARKS.md's markers
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from compare import replace_between, stamp_now

ROOT = Path(__file__).resolve().parents[1]
SANDGEN = ROOT / "target/debug/sandgen"
MILLION = 1_000_000


def plugin() -> str:
    return json.loads(os.environ["SANDGEN_TEST_GUESTS"])["FIXTURE_SPDL"]


def run(extra: list[str]) -> float:
    """Seconds of one `sandgen run` of range over 2,000,000 items."""
    command = [str(SANDGEN), "run", plugin(), "range", "--args", str(2 * MILLION)]
    start = time.perf_counter()
    subprocess.run(command + extra, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def one_run(state: Path) -> dict[str, float]:
    return {
        "first": run(["--take", "1"]),
        "resume": run(["--resume", str(state), "--take", "1"]),
        "million": run(["--take", str(MILLION)]),
    }


def table(runs: list[dict[str, float]]) -> str:
    def med(key: str) -> float:
        return statistics.median(r[key] for r in runs)

    replay = [MILLION / (r["resume"] - r["first"]) for r in runs]
    normal = [MILLION / (r["million"] - r["first"]) for r in runs]
    ratios = [a / b for a, b in zip(replay, normal, strict=True)]
    return "\n".join(
        [
            (
                f"Resume through `sandgen run` ({stamp_now(len(runs))}): wall time of one "
                "run (median), thread isolation, the Rust fixture `range` (no skip of its "
                "own: the replay fallback)."
            ),
            "",
            "| run | ms |",
            "|---|---|",
            f"| fresh run, first item | {1000 * med('first'):.1f} |",
            f"| resume at item 1,000,000, first item | {1000 * med('resume'):.1f} |",
            f"| fresh run, 1,000,000 items printed | {1000 * med('million'):.1f} |",
            "",
            "| rate (items/s, median) | replay | normal delivery | replay / normal |",
            "|---|---|---|---|",
            (
                f"| range, JSON | {statistics.median(replay):,.0f} "
                f"| {statistics.median(normal):,.0f} "
                f"| {statistics.median(ratios):.2f}× ({min(ratios):.2f}–{max(ratios):.2f}) |"
            ),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--write", action="store_true")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp) / "state.json"
        run(["--take", str(MILLION), "--save-state", str(state)])
        if json.loads(state.read_text())["delivered"] != [MILLION]:
            sys.exit(f"the state is not after item {MILLION}: {state.read_text()}")
        runs = [one_run(state) for _ in range(options.runs)]
    print(json.dumps(runs))
    text = table(runs)
    print(text)
    if options.write:
        replace_between(ROOT / "BENCHMARKS.md", text, "bench/resume.sh")


if __name__ == "__main__":
    main()
