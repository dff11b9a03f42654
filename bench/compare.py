#!/usr/bin/env python3
"""Runs every benchmark of bench/run.sh and prints one table with ratios.

sandgen figures come from `sandgen bench` (bincode items, nothing printed);
native and crossbeam from `sandgen-bench-native`; SPDL from bench_spdl.py (the
reference benchmark, unchanged). Each figure is the median of --runs runs.
Throughput excludes start-up on every side ("iter" in bench_spdl.py; from the
first `iter()` to the last item in sandgen); "call -> first item" includes it.
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
# This tree's `sandgen`; the scripts that compare with another revision
# set SANDGEN_BENCH_NOW to this tree's HEAD built alike (build-revision.sh).
SANDGEN = Path(os.environ.get("SANDGEN_BENCH_NOW", ROOT / "target/debug/sandgen"))
NATIVE = ROOT / "target/debug/sandgen-bench-native"
PLUGIN = ROOT / "target/wasm32-wasip2/release/fixture_spdl.wasm"
CACHE = ROOT / "target/bench-cache"

N_INTS = 200_000
N_64K, SZ_64K = 2_000, 64 * 1024
N_1M, SZ_1M = 200, 1024 * 1024

LANGUAGES = {
    "python": ROOT / "target/bench-plugins/example_python.wasm",
    "js": ROOT / "target/bench-plugins/example_js.wasm",
}
# The example plugins' generators for the same workloads.
LANGUAGE_WORKLOADS = {
    "ints": ("count", str(N_INTS)),
    "bytes64k": ("blobs", json.dumps({"n": N_64K, "size": SZ_64K})),
    "bytes1m": ("blobs", json.dumps({"n": N_1M, "size": SZ_1M})),
}

WORKLOADS = {
    "ints": ("range", str(N_INTS), ["ints", str(N_INTS)]),
    "bytes64k": (
        "bytes",
        json.dumps({"n": N_64K, "size": SZ_64K}),
        ["bytes", str(N_64K), str(SZ_64K)],
    ),
    "bytes1m": (
        "bytes",
        json.dumps({"n": N_1M, "size": SZ_1M}),
        ["bytes", str(N_1M), str(SZ_1M)],
    ),
}


def env() -> dict:
    return {**os.environ, "SANDGEN_CACHE_DIR": str(CACHE)}


# The `sandgen` of another revision (--before), run interleaved with this
# tree's on the sandgen workloads.
BEFORE: Path | None = None


def sandgen_bench(
    generator: str,
    args: str,
    isolation: str,
    plugin: Path = PLUGIN,
    cache: Path = CACHE,
    binary: Path = SANDGEN,
) -> dict:
    out = subprocess.run(
        [binary, "bench", plugin, generator, "--args", args, "--isolation", isolation],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "SANDGEN_CACHE_DIR": str(cache)},
    ).stdout
    return json.loads(out)


def sandgen_run_seconds(
    isolation: str, plugin: Path = PLUGIN, generator: str = "range"
) -> float:
    t0 = time.perf_counter()
    subprocess.run(
        [SANDGEN, "run", plugin, generator, "--args", "10", "--isolation", isolation],
        check=True,
        capture_output=True,
        env=env(),
    )
    return time.perf_counter() - t0


def language_run() -> dict:
    """One run of the Python and JS example plugins on the same workloads."""
    res: dict = {}
    for lang, plugin in LANGUAGES.items():
        for isolation in ("thread", "process"):
            figures = {}
            for name, (generator, args) in LANGUAGE_WORKLOADS.items():
                figures[name] = sandgen_bench(generator, args, isolation, plugin)
            figures["first_item_ms"] = statistics.median(
                sandgen_bench("count", "1", isolation, plugin)["first_item_ms"]
                for _ in range(5)
            )
            figures["run_ms"] = statistics.median(
                sandgen_run_seconds(isolation, plugin, "count") * 1e3 for _ in range(5)
            )
            res[f"{lang}_{isolation}"] = figures
    return res


def language_start() -> dict:
    """Per language: the component's size, and loading it with an empty
    compile cache (compiling) and from the cache, from `sandgen bench`."""
    res = {}
    for lang, plugin in LANGUAGES.items():
        cold = ROOT / f"target/bench-cold-{lang}"
        subprocess.run(["rm", "-rf", str(cold)], check=True)
        res[lang] = {
            "size_mb": plugin.stat().st_size / 1e6,
            "cold_load_ms": sandgen_bench("count", "1", "thread", plugin, cold)[
                "load_ms"
            ],
            "warm_load_ms": statistics.median(
                sandgen_bench("count", "1", "thread", plugin, cold)["load_ms"]
                for _ in range(5)
            ),
        }
        subprocess.run(["rm", "-rf", str(cold)], check=True)
    return res


def native_bench(argv: list[str]) -> dict:
    out = subprocess.run(
        [NATIVE, *argv], check=True, capture_output=True, text=True
    ).stdout
    return {json.loads(line)["baseline"]: json.loads(line) for line in out.splitlines()}


def spdl_bench() -> dict:
    sys.path.insert(0, str(ROOT / "bench"))
    import bench_spdl  # the reference script, unchanged

    return bench_spdl.run_all(argparse.Namespace(latency_contexts=[]))


def sandgen_figures(isolation: str, binary: Path) -> dict:
    figures = {}
    for name, (generator, args, _) in WORKLOADS.items():
        figures[name] = sandgen_bench(generator, args, isolation, binary=binary)
    lat = [
        sandgen_bench("range", "1", isolation, binary=binary)["first_item_ms"]
        for _ in range(10)
    ]
    figures["first_item_ms"] = statistics.median(lat)
    return figures


def one_run() -> dict:
    res: dict = {"sandgen": {}, "native": {}, "spdl": spdl_bench()}
    if BEFORE is not None:
        res["before"] = {}
    for isolation in ("thread", "process"):
        if BEFORE is not None:
            res["before"][isolation] = sandgen_figures(isolation, BEFORE)
        figures = sandgen_figures(isolation, SANDGEN)
        figures["run_ms"] = statistics.median(
            sandgen_run_seconds(isolation) * 1e3 for _ in range(10)
        )
        res["sandgen"][isolation] = figures
    for name, (_, _, argv) in WORKLOADS.items():
        res["native"][name] = native_bench(argv)
    res["languages"] = language_run()
    return res


def median(runs: list):
    first = runs[0]
    if isinstance(first, dict):
        return {k: median([r[k] for r in runs]) for k in first}
    if isinstance(first, (int, float)) and not isinstance(first, bool):
        return statistics.median(runs)
    return first


def table(res: dict, runs: int) -> str:
    s, n, p = res["sandgen"], res["native"], res["spdl"]
    rows = []

    def ratio(a: float, b: float) -> str:
        return f"{a / b:,.1f}x" if b else "-"

    def add(label, unit, thread, process, native, cross, spdl, higher_is_better=True):
        fmt = (
            (lambda v: f"{v:,.0f}") if unit in ("items/s",) else (lambda v: f"{v:,.1f}")
        )
        if higher_is_better:
            r_spdl_t, r_spdl_p = ratio(thread, spdl), ratio(process, spdl)
            r_nat = ratio(thread, native) if native else "-"
        else:
            r_spdl_t, r_spdl_p = ratio(spdl, thread), ratio(spdl, process)
            r_nat = ratio(native, thread) if native else "-"
        rows.append(
            (
                label,
                unit,
                fmt(thread),
                fmt(process),
                fmt(native) if native else "-",
                fmt(cross) if cross else "-",
                fmt(spdl),
                r_spdl_t,
                r_spdl_p,
                r_nat,
            )
        )

    spdl_ints = N_INTS / p["ints_buf3"]["iter_s"]
    add(
        "200k small ints",
        "items/s",
        s["thread"]["ints"]["items_per_second"],
        s["process"]["ints"]["items_per_second"],
        n["ints"]["native"]["items_per_second"],
        n["ints"]["crossbeam"]["items_per_second"],
        spdl_ints,
    )
    for key, spdl_key, label, count, size in (
        ("bytes64k", "bytes64k_buf3", "2,000 x 64 KiB", N_64K, SZ_64K),
        ("bytes1m", "bytes1m_buf3", "200 x 1 MiB", N_1M, SZ_1M),
    ):
        add(
            label,
            "MB/s",
            s["thread"][key]["megabytes_per_second"],
            s["process"][key]["megabytes_per_second"],
            n[key]["native"]["megabytes_per_second"],
            n[key]["crossbeam"]["megabytes_per_second"],
            count * size / p[spdl_key]["iter_s"] / 1e6,
        )
    add(
        "call -> first item",
        "ms",
        s["thread"]["first_item_ms"],
        s["process"]["first_item_ms"],
        None,
        None,
        p["latency"]["first_item_s"] * 1e3,
        higher_is_better=False,
    )
    add(
        "`sandgen run` end to end",
        "ms",
        s["thread"]["run_ms"],
        s["process"]["run_ms"],
        None,
        None,
        p["latency"]["first_item_s"] * 1e3,
        higher_is_better=False,
    )

    head = (
        "workload",
        "unit",
        "sandgen thread",
        "sandgen process",
        "native Rust",
        "crossbeam 2 threads",
        "SPDL 0.8.0",
        "thread / SPDL",
        "process / SPDL",
        "thread / native",
    )
    lines = [
        (
            f"median of {runs} runs | {platform.platform()} | {os.cpu_count()} CPUs | "
            f"python {platform.python_version()} | spdl {p['meta']['spdl']} "
            f"({p['meta']['default_mp_context']})"
        ),
        *markdown_table(head, rows),
    ]
    lines.append(
        "Ratios are 'how many times better': higher throughput, or lower latency."
    )
    lines.append("")
    lines.append(language_table(res))
    lines.append(
        "The `sandgen run` row compares a whole CLI process (start, load, run, exit) "
        "with SPDL's call -> first item inside an already running interpreter."
    )
    return "\n".join(lines)


def markdown_table(head: tuple, rows: list) -> list[str]:
    """`rows` under `head` as the lines of a Markdown table, columns aligned."""
    widths = [max(len(str(r[i])) for r in rows + [head]) for i in range(len(head))]
    lines = [
        "| " + " | ".join(h.ljust(w) for h, w in zip(head, widths)) + " |",
        "|" + "|".join("-" * (w + 2) for w in widths) + "|",
    ]
    for r in rows:
        lines.append(
            "| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths)) + " |"
        )
    return lines


def before_table(res: dict, label: str) -> str:
    """This tree's sandgen against another revision's, same run, interleaved."""
    s, b = res["sandgen"], res["before"]
    head = ("workload", "unit", "isolation", label, "this tree", "this / before")
    rows = []
    for isolation in ("thread", "process"):
        for key, text, unit, field in (
            ("ints", "200k small ints", "items/s", "items_per_second"),
            ("bytes64k", "2,000 x 64 KiB", "MB/s", "megabytes_per_second"),
            ("bytes1m", "200 x 1 MiB", "MB/s", "megabytes_per_second"),
        ):
            now, then = s[isolation][key][field], b[isolation][key][field]
            rows.append(
                (
                    text,
                    unit,
                    isolation,
                    f"{then:,.1f}",
                    f"{now:,.1f}",
                    f"{now / then:,.2f}x",
                )
            )
        now, then = s[isolation]["first_item_ms"], b[isolation]["first_item_ms"]
        rows.append(
            (
                "call -> first item",
                "ms",
                isolation,
                f"{then:,.3f}",
                f"{now:,.3f}",
                f"{then / now:,.2f}x",
            )
        )
    lines = markdown_table(head, rows)
    lines.append(
        "this / before: higher is better (for the latency row, before / this)."
    )
    return "\n".join(lines)


def language_table(res: dict) -> str:
    """The Python and JS example plugins against SPDL (Python generators in a
    subprocess) and native Rust, same workloads, same run."""
    s, n, p, lang = res["sandgen"], res["native"], res["spdl"], res["languages"]
    spdl = {
        "ints": N_INTS / p["ints_buf3"]["iter_s"],
        "bytes64k": N_64K * SZ_64K / p["bytes64k_buf3"]["iter_s"] / 1e6,
        "bytes1m": N_1M * SZ_1M / p["bytes1m_buf3"]["iter_s"] / 1e6,
    }
    head = (
        "workload",
        "unit",
        "Rust plugin",
        "Python thread",
        "Python process",
        "JS thread",
        "JS process",
        "SPDL 0.8.0",
        "Python / SPDL",
        "JS / SPDL",
        "Python / native",
        "JS / native",
    )
    rows = []
    for key, label, unit, field in (
        ("ints", "200k small ints", "items/s", "items_per_second"),
        ("bytes64k", "2,000 x 64 KiB", "MB/s", "megabytes_per_second"),
        ("bytes1m", "200 x 1 MiB", "MB/s", "megabytes_per_second"),
    ):
        fmt = (lambda v: f"{v:,.0f}") if unit == "items/s" else (lambda v: f"{v:,.1f}")
        native = n[key]["native"][field]
        py, js = lang["python_thread"][key][field], lang["js_thread"][key][field]
        rows.append(
            (
                label,
                unit,
                fmt(s["thread"][key][field]),
                fmt(py),
                fmt(lang["python_process"][key][field]),
                fmt(js),
                fmt(lang["js_process"][key][field]),
                fmt(spdl[key]),
                f"{py / spdl[key]:,.2f}x",
                f"{js / spdl[key]:,.2f}x",
                f"{py / native:,.3f}x",
                f"{js / native:,.3f}x",
            )
        )
    for key, label in (
        ("first_item_ms", "call -> first item"),
        ("run_ms", "`sandgen run` end to end"),
    ):
        spdl_ms = p["latency"]["first_item_s"] * 1e3
        py, js = lang["python_thread"][key], lang["js_thread"][key]
        rows.append(
            (
                label,
                "ms",
                f"{s['thread'][key]:,.1f}",
                f"{py:,.1f}",
                f"{lang['python_process'][key]:,.1f}",
                f"{js:,.1f}",
                f"{lang['js_process'][key]:,.1f}",
                f"{spdl_ms:,.1f}",
                f"{spdl_ms / py:,.2f}x",
                f"{spdl_ms / js:,.2f}x",
                "-",
                "-",
            )
        )
    lines = markdown_table(head, rows)
    for lang_name, fig in res.get("start", {}).items():
        lines.append(
            f"{lang_name}: {fig['size_mb']:.1f} MB component; load with an empty compile cache "
            f"{fig['cold_load_ms']:,.0f} ms, from the cache {fig['warm_load_ms']:,.0f} ms"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--before", type=Path, help="another revision's sandgen binary")
    ap.add_argument("--before-label", default="before")
    args = ap.parse_args()
    global BEFORE
    BEFORE = args.before
    if BEFORE is not None:
        for isolation in ("thread", "process"):  # its compile cache too
            sandgen_bench("range", "1", isolation, binary=BEFORE)
    for isolation in ("thread", "process"):  # warm the compile cache
        sandgen_bench("range", "1", isolation)
    for plugin in LANGUAGES.values():
        for isolation in ("thread", "process"):
            sandgen_bench("count", "1", isolation, plugin)
    runs = [one_run() for _ in range(args.runs)]
    res = median(runs)
    res["start"] = language_start()
    (ROOT / "bench/results.json").write_text(
        json.dumps({"median": res, "runs": runs}, indent=1)
    )
    print(table(res, args.runs))
    if BEFORE is not None:
        print()
        print(before_table(res, args.before_label))


if __name__ == "__main__":
    main()
