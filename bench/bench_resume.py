"""Resume (issue 28): what resuming costs, through `sandgen run`, and what
taking a position costs, through the Python package.

Two plugins that yield 0..n as JSON lines, in thread isolation:

- `range` of fixture-spdl, built with the Rust guest SDK: it exports the fast
  path of resuming (wit/resume.wit), so a resume skips the items before its
  position inside the plugin (`Iterator::nth` over a `Range`, no item made);
- `count` of fixture-raw, written against generator.wit alone: a resume
  replays the items before its position (the worker makes them and drops
  them before they are encoded for the caller).

Each figure is the wall time of one `sandgen run`, stdout to /dev/null, the
compile cache warm:

- ``first item``: `--take 1` of a fresh run: start-up, load, the first item;
- ``resume at 1,000,000, first item``: `--resume` from a position saved
  after item 1,000,000 of pass 0 (`--take 1000000 --save-state`), then
  `--take 1`;
- ``1,000,000 items``: a run that prints items 0..999,999: the plugin's
  normal delivery, encoded, moved, decoded and printed.

From them: what a resume adds to a fresh run's first item, and the rate of
the items it skips or replays (a million over that time) against the normal
delivery rate (a million over the full run's extra time), in the same run.

Then the cost of one position taken during a pass, per call: Python's
`Iterable.state_dict()` (the Rust `Iterable::position_before`, its JSON,
`json.loads`) and the native pass's JSON alone, over a live pass of `range`.

    bench/resume.sh [RUNS] [--write]   # default 5 runs; --write puts the
                                       # tables between BENCHMARKS.md's markers
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

import sandgen
from compare import replace_between, stamp_now

ROOT = Path(__file__).resolve().parents[1]
SANDGEN = ROOT / "target/debug/sandgen"
MILLION = 1_000_000
# (name in the tables, fixture, generator, how it resumes)
PLUGINS = [
    ("range", "FIXTURE_SPDL", "range", "fast path: skips inside the plugin"),
    ("count", "FIXTURE_RAW", "count", "replay fallback: generator.wit alone"),
]
# Positions taken per timing of `state_dict`.
CALLS = 20_000


def guest(fixture: str) -> str:
    return json.loads(os.environ["SANDGEN_TEST_GUESTS"])[fixture]


def run(fixture: str, generator: str, extra: list[str]) -> float:
    """Seconds of one `sandgen run` of the generator over 2,000,000 items."""
    command = [
        str(SANDGEN),
        "run",
        guest(fixture),
        generator,
        "--args",
        str(2 * MILLION),
    ]
    start = time.perf_counter()
    subprocess.run(command + extra, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def one_run(states: dict[str, Path]) -> dict[str, dict[str, float]]:
    runs = {}
    for name, fixture, generator, _ in PLUGINS:
        runs[name] = {
            "first": run(fixture, generator, ["--take", "1"]),
            "resume": run(
                fixture, generator, ["--resume", str(states[name]), "--take", "1"]
            ),
            "million": run(fixture, generator, ["--take", str(MILLION)]),
        }
    return runs


def position_costs(rounds: int) -> dict[str, list[float]]:
    """Microseconds per call of `state_dict()` and of the native pass's JSON,
    `rounds` timings of CALLS calls each, during a live pass."""
    plugin = sandgen.load(guest("FIXTURE_SPDL"))
    costs: dict[str, list[float]] = {"state_dict": [], "native": []}
    with plugin.iterable("range", 10 * MILLION) as iterable:
        items = iter(iterable)
        for _ in range(1000):
            next(items)
        running = iterable._pass() if iterable._pass is not None else None
        assert running is not None and running.live
        for _ in range(rounds):
            start = time.perf_counter()
            for _ in range(CALLS):
                iterable.state_dict()
            costs["state_dict"].append(1e6 * (time.perf_counter() - start) / CALLS)
            start = time.perf_counter()
            for _ in range(CALLS):
                running.state()
            costs["native"].append(1e6 * (time.perf_counter() - start) / CALLS)
        state = iterable.state_dict()
        if state["delivered"] != [1000]:
            sys.exit(f"the state is not after item 1000: {state}")
    return costs


def table(
    runs: list[dict[str, dict[str, float]]], costs: dict[str, list[float]]
) -> str:
    def med(name: str, key: str) -> float:
        return statistics.median(r[name][key] for r in runs)

    lines = [
        (
            f"Resume through `sandgen run` ({stamp_now(len(runs))}): wall time of one run "
            "(median), thread isolation, JSON."
        ),
        "",
        (
            "| plugin | how it resumes | first item, fresh (ms) | first item, resumed at "
            "1,000,000 (ms) | resume adds (ms) | 1,000,000 items printed (ms) |"
        ),
        "|---|---|---|---|---|---|",
    ]
    for name, _, _, how in PLUGINS:
        adds = [r[name]["resume"] - r[name]["first"] for r in runs]
        lines.append(
            f"| {name} | {how} | {1000 * med(name, 'first'):.1f} "
            f"| {1000 * med(name, 'resume'):.1f} | {1000 * statistics.median(adds):.1f} "
            f"({1000 * min(adds):.1f}–{1000 * max(adds):.1f}) "
            f"| {1000 * med(name, 'million'):.1f} |"
        )
    # The replay's rate: the fast path's time is within start-up's noise.
    replay = [name for name, _, _, how in PLUGINS if how.startswith("replay")]
    lines += [
        "",
        "| plugin | items/s replayed | items/s delivered | replay / delivery |",
        "|---|---|---|---|",
    ]
    for name in replay:
        replayed = [MILLION / (r[name]["resume"] - r[name]["first"]) for r in runs]
        normal = [MILLION / (r[name]["million"] - r[name]["first"]) for r in runs]
        ratios = [a / b for a, b in zip(replayed, normal, strict=True)]
        lines.append(
            f"| {name} | {statistics.median(replayed):,.0f} "
            f"| {statistics.median(normal):,.0f} "
            f"| {statistics.median(ratios):.2f}× ({min(ratios):.2f}–{max(ratios):.2f}) |"
        )
    lines += [
        "",
        (
            f"Taking a position during a pass (median of {len(costs['native'])} timings of "
            f"{CALLS:,} calls):"
        ),
        "",
        "| call | µs per call |",
        "|---|---|",
        f"| `Iterable.state_dict()` (Python dict) | {statistics.median(costs['state_dict']):.2f} |",
        f"| the native pass's position as JSON text | {statistics.median(costs['native']):.2f} |",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--write", action="store_true")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        states = {}
        for name, fixture, generator, _ in PLUGINS:
            states[name] = Path(tmp) / f"{name}.json"
            run(
                fixture,
                generator,
                ["--take", str(MILLION), "--save-state", str(states[name])],
            )
            saved = json.loads(states[name].read_text())
            if saved["delivered"] != [MILLION]:
                sys.exit(f"the state is not after item {MILLION}: {saved}")
        runs = [one_run(states) for _ in range(options.runs)]
    costs = position_costs(options.runs)
    print(json.dumps({"runs": runs, "costs": costs}))
    text = table(runs, costs)
    print(text)
    if options.write:
        replace_between(ROOT / "BENCHMARKS.md", text, "bench/resume.sh")


if __name__ == "__main__":
    main()
