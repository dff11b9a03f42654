#!/usr/bin/env python3
"""Start-up of sandgen: how soon a plugin gives its first item.

For the Rust (`example-tokenize`), Python and JavaScript example plugins:

- `sandgen run` end to end, warm cache: a whole CLI process (start, load
  from the compile cache, run, exit), median of --runs;
- call to first item in a fresh process (`sandgen bench`: building the
  iterable to its first item, the plugin loaded), median of --runs, with
  the load from the cache (`load_ms`) beside it;
- call to first item warm, in one process (`sandgen-bench-startup`: 200
  iterables one after another, median of all but the first);
- compiling (load with an empty cache), once;
- 1,000 iterables of the Python plugin one after another in one process:
  total time and resident memory;
- SPDL 0.8.0's `iterate_in_subprocess` call to first item (bench_spdl.py's
  own latency loop), the peer.

With --before, `sandgen run` and the fresh-process figures also for another
sandgen binary (an earlier revision), interleaved in the same run.
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

from bench_transport import decode_flags

ROOT = Path(__file__).resolve().parent.parent
# This tree's `sandgen`; the scripts that compare with another revision
# set SANDGEN_BENCH_NOW to this tree's HEAD built alike (build-revision.sh).
SANDGEN = Path(os.environ.get("SANDGEN_BENCH_NOW", ROOT / "target/debug/sandgen"))
STARTUP = ROOT / "target/debug/sandgen-bench-startup"
PLUGINS = {
    "rust": (
        ROOT / "target/wasm32-wasip2/release/example_tokenize.wasm",
        "windows",
        '{"text": "a b c d e f", "window": 2}',
    ),
    "python": (ROOT / "target/bench-plugins/example_python.wasm", "count", "10"),
    "js": (ROOT / "target/bench-plugins/example_js.wasm", "count", "10"),
}


def run_ms(binary: Path, cache: Path, plugin: str, isolation: str) -> float:
    path, generator, args = PLUGINS[plugin]
    env = {**os.environ, "SANDGEN_CACHE_DIR": str(cache)}
    argv = [binary, "run", path, generator, "--args", args, "--isolation", isolation]
    started = time.perf_counter()
    subprocess.run(argv, check=True, capture_output=True, env=env)
    return (time.perf_counter() - started) * 1e3


def bench(binary: Path, cache: Path, plugin: str, isolation: str) -> dict:
    path, generator, args = PLUGINS[plugin]
    env = {**os.environ, "SANDGEN_CACHE_DIR": str(cache)}
    argv = [binary, "bench", path, generator, "--args", args, "--isolation", isolation]
    argv += decode_flags(binary, "none")
    out = subprocess.run(argv, check=True, capture_output=True, text=True, env=env)
    return json.loads(out.stdout)


def warm(cache: Path, plugin: str, isolation: str, iterables: int) -> dict:
    path, generator, args = PLUGINS[plugin]
    env = {**os.environ, "SANDGEN_CACHE_DIR": str(cache)}
    argv = [STARTUP, path, generator, args, isolation, str(iterables)]
    out = subprocess.run(argv, check=True, capture_output=True, text=True, env=env)
    return json.loads(out.stdout)


def spdl_first_item_ms(runs: int) -> float | None:
    try:
        sys.path.insert(0, str(ROOT / "bench"))
        import bench_spdl  # the reference script, unchanged
        from spdl.pipeline import iterate_in_subprocess
    except ImportError:
        return None
    latency = bench_spdl.bench_latency(iterate_in_subprocess, runs)
    return latency["first_item_s"] * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--before", type=Path, help="another sandgen binary")
    parser.add_argument("--before-label", default="before")
    opts = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="sandgen-startup-"))
    binaries = {"now": (SANDGEN, tmp / "cache-now")}
    if opts.before:
        binaries[opts.before_label] = (opts.before, tmp / "cache-before")
    # Compiling: the first load of each plugin into an empty cache.
    compile_ms = {}
    for plugin in PLUGINS:
        for name, (binary, cache) in binaries.items():
            key = f"{name} {plugin}"
            compile_ms[key] = bench(binary, cache, plugin, "thread")["load_ms"]
            bench(binary, cache, plugin, "process")  # every cache entry made
    rows: dict = {}
    for round_ in range(opts.runs):
        # The binaries take turns going first: the second of two runs in a
        # row meets a warmer machine.
        order = list(binaries.items())
        if round_ % 2:
            order.reverse()
        for plugin in PLUGINS:
            for isolation in ("thread", "process"):
                for name, (binary, cache) in order:
                    key = (name, plugin, isolation)
                    row = rows.setdefault(key, {"run": [], "first": [], "load": []})
                    row["run"].append(run_ms(binary, cache, plugin, isolation))
                    report = bench(binary, cache, plugin, isolation)
                    row["first"].append(report["first_item_ms"])
                    row["load"].append(report["load_ms"])
    now_cache = binaries["now"][1]
    warm_first = {
        (plugin, isolation): warm(now_cache, plugin, isolation, 200)["first_item_ms"][
            "median"
        ]
        for plugin in PLUGINS
        for isolation in ("thread", "process")
    }
    thousand = warm(now_cache, "python", "thread", 1000)
    spdl = spdl_first_item_ms(opts.runs)
    med = {
        key: {k: statistics.median(v) for k, v in row.items()}
        for key, row in rows.items()
    }

    print(f"Medians of {opts.runs} runs; compile cache warm unless said.\n")
    print(
        "| plugin | isolation | sandgen | `sandgen run` ms | first item ms (fresh process)"
        " | load from cache ms | first item ms (warm, in process) |"
    )
    print("|---|---|---|---:|---:|---:|---:|")
    for plugin in PLUGINS:
        for isolation in ("thread", "process"):
            for name in binaries:
                m = med[(name, plugin, isolation)]
                warm_ms = warm_first[(plugin, isolation)] if name == "now" else None
                warm_text = f"{warm_ms:.3f}" if warm_ms is not None else "–"
                print(
                    f"| {plugin} | {isolation} | {name} | {m['run']:.1f} | {m['first']:.2f}"
                    f" | {m['load']:.2f} | {warm_text} |"
                )
    print()
    for name in binaries:
        rust = med[(name, "rust", "thread")]["run"]
        for plugin in ("python", "js"):
            ratio = med[(name, plugin, "thread")]["run"] / rust
            print(f"{name}: `sandgen run` {plugin} / rust (thread) = {ratio:.2f}x")
    print()
    for key, ms in compile_ms.items():
        print(f"compile (empty cache), {key}: {ms:,.0f} ms")
    print()
    print(
        "1,000 iterables of the Python plugin in one process (thread isolation):"
        f" {thousand['total_s']:.2f} s in all, first item median"
        f" {thousand['first_item_ms']['median']:.3f} ms; resident KiB after iterable"
        f" {thousand['rss_kib']}; peak {thousand['peak_rss_kib']} KiB"
    )
    if spdl is not None:
        rust_warm = warm_first[("rust", "thread")]
        rust_process = med[("now", "rust", "process")]["first"]
        print(
            f"SPDL 0.8.0 iterate_in_subprocess call to first item: {spdl:.2f} ms;"
            f" sandgen Rust thread (warm) {spdl / rust_warm:,.0f}x sooner,"
            f" process (fresh) {spdl / rust_process:.1f}x sooner"
        )
    print(json.dumps({"compile_ms": compile_ms, "thousand": thousand}), file=sys.stderr)


if __name__ == "__main__":
    main()
