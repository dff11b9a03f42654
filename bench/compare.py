#!/usr/bin/env python3
"""Runs every benchmark of bench/run.sh and prints its tables, with ratios
only between like and like.

sandgen figures come from `sandgen bench --decode u64|bytes` (every item
bincode-decoded, nothing printed); native and crossbeam from
`sandgen-bench-native` (every item bincode-encoded and decoded); SPDL from
bench_spdl.py (the reference benchmark, unchanged: every item unpickled and
summed). Each figure is the median of --runs runs. Throughput excludes
start-up on every side ("iter" in bench_spdl.py; from the first `iter()` to
the last item in sandgen); "call → first item" includes it. MB/s counts the
items' payload (N x size), not their encodings, on every side.

A ratio is printed only where both sides run a producer in the same language
and consume every item the same way: the Rust plugin against the same items
handed between two threads by crossbeam (sandgen's thread isolation is two
threads of one process too), and the Python example plugin in a worker
process against SPDL running the same Python generator in a forked process.

`--write` also puts the tables and the figures quoted in prose into
BENCHMARKS.md and README.md, between their `bench/run.sh` markers.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from bench_transport import decode_flags

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


# What each workload's consumer decodes every item as.
DECODE = {"ints": "u64", "bytes64k": "bytes", "bytes1m": "bytes"}


def sandgen_bench(
    generator: str,
    args: str,
    isolation: str,
    plugin: Path = PLUGIN,
    cache: Path = CACHE,
    binary: Path = SANDGEN,
    decode: str = "u64",
) -> dict:
    command = [binary, "bench", plugin, generator, "--args", args]
    command += ["--isolation", isolation]
    command += decode_flags(binary, decode)
    out = subprocess.run(
        command,
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
                figures[name] = sandgen_bench(
                    generator, args, isolation, plugin, decode=DECODE[name]
                )
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


def sandgen_figures(isolation: str, binary: Path, unread: bool = False) -> dict:
    """`unread`: every item counted, not decoded (`--decode none`), as a
    revision from before `--decode` did, so that the two compare alike."""
    figures = {}
    for name, (generator, args, _) in WORKLOADS.items():
        decode = "none" if unread else DECODE[name]
        figures[name] = sandgen_bench(
            generator, args, isolation, binary=binary, decode=decode
        )
    lat = [
        sandgen_bench("range", "1", isolation, binary=binary)["first_item_ms"]
        for _ in range(10)
    ]
    figures["first_item_ms"] = statistics.median(lat)
    return figures


def one_run() -> dict:
    res: dict = {"sandgen": {}, "native": {}, "spdl": spdl_bench()}
    if BEFORE is not None:
        res["before"], res["now_like_before"] = {}, {}
    for isolation in ("thread", "process"):
        if BEFORE is not None:
            # The same work on both sides: decoded where both can, counted
            # unread where the revision before has no --decode.
            unread = not decode_flags(BEFORE, "u64")
            res["before"][isolation] = sandgen_figures(isolation, BEFORE, unread)
            res["now_like_before"][isolation] = sandgen_figures(
                isolation, SANDGEN, unread
            )
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


# (key, label, unit): the throughput workloads.
THROUGHPUT = (
    ("ints", "200k small ints", "items/s"),
    ("bytes64k", "2,000 × 64 KiB", "MB/s"),
    ("bytes1m", "200 × 1 MiB", "MB/s"),
)
PAYLOAD = {"bytes64k": N_64K * SZ_64K, "bytes1m": N_1M * SZ_1M}


def rate(figures: dict, key: str) -> float:
    """items/s for small items, payload MB/s for byte strings."""
    if key == "ints":
        return figures["items_per_second"]
    return PAYLOAD[key] / figures["seconds"] / 1e6


def spdl_rate(p: dict, key: str) -> float:
    return {
        "ints": N_INTS / p["ints_buf3"]["iter_s"],
        "bytes64k": PAYLOAD["bytes64k"] / p["bytes64k_buf3"]["iter_s"] / 1e6,
        "bytes1m": PAYLOAD["bytes1m"] / p["bytes1m_buf3"]["iter_s"] / 1e6,
    }[key]


def fmt(unit: str, v: float) -> str:
    return f"{v:,.0f}" if unit == "items/s" else f"{v:,.1f}"


def ranged(f: dict, name: str, note: str = "") -> str:
    """Ratio `name` of `f` (see RATIOS) with its range over the runs."""
    return f"{f[name]:,.2f}× ({f[f'{name}_range']}{note})"


def figures(res: dict) -> dict:
    """The figures the documents quote, by name."""
    s, n, p, lang = res["sandgen"], res["native"], res["spdl"], res["languages"]
    out = {}
    for key, _, _ in THROUGHPUT:
        out[f"rust_thread_{key}"] = rate(s["thread"][key], key)
        out[f"rust_process_{key}"] = rate(s["process"][key], key)
        out[f"crossbeam_{key}"] = rate(n[key]["crossbeam"], key)
        out[f"native_{key}"] = rate(n[key]["native"], key)
        out[f"python_thread_{key}"] = rate(lang["python_thread"][key], key)
        out[f"python_process_{key}"] = rate(lang["python_process"][key], key)
        out[f"js_thread_{key}"] = rate(lang["js_thread"][key], key)
        out[f"js_process_{key}"] = rate(lang["js_process"][key], key)
        out[f"spdl_{key}"] = spdl_rate(p, key)
    for side in ("thread", "process"):
        out[f"rust_{side}_first_item_ms"] = s[side]["first_item_ms"]
        out[f"rust_{side}_run_ms"] = s[side]["run_ms"]
        for language in ("python", "js"):
            out[f"{language}_{side}_first_item_ms"] = lang[f"{language}_{side}"][
                "first_item_ms"
            ]
            out[f"{language}_{side}_run_ms"] = lang[f"{language}_{side}"]["run_ms"]
    out["spdl_first_item_ms"] = p["latency"]["first_item_s"] * 1e3
    return out


# (name, numerator, denominator): the like-for-like ratios, each taken
# within one run and then the median over the runs (never a ratio of two
# medians from different runs).
RATIOS = [
    *(
        (f"thread_vs_crossbeam_{k}", f"rust_thread_{k}", f"crossbeam_{k}")
        for k in PAYLOAD
    ),
    ("thread_vs_crossbeam_ints", "rust_thread_ints", "crossbeam_ints"),
    *(
        (f"python_process_vs_spdl_{k}", f"python_process_{k}", f"spdl_{k}")
        for k in ("ints", *PAYLOAD)
    ),
    ("spdl_vs_python_first_item", "spdl_first_item_ms", "python_process_first_item_ms"),
]


def with_ratios(res: dict, runs: list) -> dict:
    """The figures of `res` (medians), and each ratio of RATIOS as the
    median of its per-run values, with their range."""
    f = figures(res)
    per_run = [figures(run) for run in runs]
    for name, a, b in RATIOS:
        values = sorted(run[a] / run[b] for run in per_run)
        f[name] = statistics.median(values)
        f[f"{name}_range"] = f"{values[0]:,.2f}–{values[-1]:,.2f}"
    return f


def machine() -> dict:
    """Where a run is made, kept with its results."""
    return {
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
    }


def table(res: dict, runs: list) -> str:
    f = with_ratios(res, runs)
    p = res["spdl"]
    where = res.get("machine") or machine()
    lines = [
        (
            f"median of {len(runs)} runs | {where['platform']} | {where['cpus']} CPUs | "
            f"python {where['python']} | spdl {p['meta']['spdl']} "
            f"({p['meta']['default_mp_context']})"
        ),
        "",
        (
            "Ratios are the median of each run's own ratio (the range over the runs in "
            "brackets)."
        ),
        "",
        (
            "Rust producer: the fixture-spdl plugin against the same items from a Rust "
            "iterator; every consumer bincode-decodes every item. crossbeam hands each "
            "item over as its own message (sandgen hands over batches) and its time "
            "includes starting its thread; the ratio is the sandbox and transport "
            "against a plain channel, not a sandbox against a sandbox."
        ),
        "",
    ]
    rows = []
    for key, label, unit in THROUGHPUT:
        rows.append(
            (
                label,
                unit,
                fmt(unit, f[f"rust_thread_{key}"]),
                fmt(unit, f[f"rust_process_{key}"]),
                fmt(unit, f[f"crossbeam_{key}"]),
                fmt(unit, f[f"native_{key}"]),
                ranged(f, f"thread_vs_crossbeam_{key}"),
            )
        )
    lines += markdown_table(
        (
            "workload",
            "unit",
            "sandgen thread",
            "sandgen process",
            "crossbeam, 2 threads",
            "native, 1 thread",
            "sandgen thread / crossbeam",
        ),
        rows,
    )
    lines += [
        "",
        (
            "Python producer: the Python example plugin (componentize-py) against SPDL "
            "0.8.0 running the same Python generator in a forked process; every "
            "consumer decodes every item (sandgen bench: bincode, in Rust; "
            "bench_spdl.py: pickle, in Python)."
        ),
        "",
    ]
    rows = []
    for key, label, unit in THROUGHPUT:
        rows.append(
            (
                label,
                unit,
                fmt(unit, f[f"python_thread_{key}"]),
                fmt(unit, f[f"python_process_{key}"]),
                fmt(unit, f[f"spdl_{key}"]),
                ranged(f, f"python_process_vs_spdl_{key}"),
            )
        )
    rows.append(
        (
            "call → first item",
            "ms",
            f"{f['python_thread_first_item_ms']:,.2f}",
            f"{f['python_process_first_item_ms']:,.2f}",
            f"{f['spdl_first_item_ms']:,.2f}",
            ranged(f, "spdl_vs_python_first_item", "; above 1: sooner"),
        )
    )
    lines += markdown_table(
        (
            "workload",
            "unit",
            "sandgen thread",
            "sandgen process",
            "SPDL 0.8.0",
            "sandgen process / SPDL (consumers: Rust / Python)",
        ),
        rows,
    )
    lines += [
        "",
        (
            "Figures without a like peer (no ratio): the JavaScript example plugin "
            "(componentize-js), call → first item of the Rust plugin, and `sandgen "
            "run` end to end (a whole CLI process: start, load from the compile "
            "cache, 10 items, exit)."
        ),
        "",
    ]
    rows = []
    for key, label, unit in THROUGHPUT:
        rows.append(
            (
                label,
                unit,
                fmt(unit, f[f"js_thread_{key}"]),
                fmt(unit, f[f"js_process_{key}"]),
                "-",
                "-",
                "-",
                "-",
            )
        )
    for what, label in (
        ("first_item_ms", "call → first item"),
        ("run_ms", "`sandgen run` end to end"),
    ):
        rows.append(
            (
                label,
                "ms",
                f"{f[f'js_thread_{what}']:,.2f}",
                f"{f[f'js_process_{what}']:,.2f}",
                f"{f[f'rust_thread_{what}']:,.2f}",
                f"{f[f'rust_process_{what}']:,.2f}",
                f"{f[f'python_thread_{what}']:,.2f}" if what == "run_ms" else "-",
                f"{f[f'python_process_{what}']:,.2f}" if what == "run_ms" else "-",
            )
        )
    lines += markdown_table(
        (
            "workload",
            "unit",
            "JS thread",
            "JS process",
            "Rust thread",
            "Rust process",
            "Python thread",
            "Python process",
        ),
        rows,
    )
    for lang_name, fig in res.get("start", {}).items():
        lines.append(
            f"{lang_name}: {fig['size_mb']:.1f} MB component; load with an empty compile cache "
            f"{fig['cold_load_ms']:,.0f} ms, from the cache {fig['warm_load_ms']:,.0f} ms"
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
    """This tree's sandgen against another revision's, same run, interleaved,
    each side doing the same work with every item."""
    s, b = res["now_like_before"], res["before"]
    head = ("workload", "unit", "isolation", label, "this tree", "this / before")
    rows = []
    for isolation in ("thread", "process"):
        for key, text, unit, field in (
            ("ints", "200k small ints", "items/s", "items_per_second"),
            ("bytes64k", "2,000 × 64 KiB", "MB/s", "megabytes_per_second"),
            ("bytes1m", "200 × 1 MiB", "MB/s", "megabytes_per_second"),
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
                "call → first item",
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


# (figure, target, unit, higher is better, what): the project's performance
# targets for the Rust plugin (the design's section 7).
TARGETS = (
    ("rust_thread_ints", 5e6, "items/s", True, "small items, thread"),
    ("rust_process_ints", 2e6, "items/s", True, "small items, process"),
    ("rust_thread_bytes64k", 4000, "MB/s", True, "64 KiB, thread"),
    ("rust_process_bytes64k", 1500, "MB/s", True, "64 KiB, process"),
    ("rust_thread_bytes1m", 3000, "MB/s", True, "1 MiB, thread"),
    ("rust_process_bytes1m", 1000, "MB/s", True, "1 MiB, process"),
    ("rust_thread_first_item_ms", 2, "ms", False, "call → first item, thread"),
    ("rust_process_first_item_ms", 20, "ms", False, "call → first item, process"),
    ("rust_thread_run_ms", 50, "ms", False, "`sandgen run`, thread"),
    ("rust_process_run_ms", 50, "ms", False, "`sandgen run`, process"),
)


def quantity(unit: str, v: float) -> str:
    if unit == "items/s":
        return f"{v / 1e6:,.1f} M items/s"
    if unit == "MB/s":
        return f"{v / 1e3:,.1f} GB/s"
    return f"{v:,.2f} ms"


def targets(f: dict) -> str:
    parts, missed = [], []
    for key, target, unit, higher, what in TARGETS:
        met = f[key] >= target if higher else f[key] <= target
        sign = "≥" if higher else "≤"
        parts.append(
            f"{what} {quantity(unit, f[key])} (target {sign} {quantity(unit, target)}"
            f"{'' if met else ': not met'})"
        )
        if not met:
            missed.append(what)
    verdict = "All met." if not missed else f"Not met: {', '.join(missed)}."
    return (
        "Against the project's targets (the Rust plugin): "
        + "; ".join(parts)
        + ". "
        + verdict
    )


def readme_summary(f: dict, stamp: str) -> str:
    return (
        f"In one side-by-side run ({stamp}; `bench/run.sh`, BENCHMARKS.md), every "
        "consumer decoding every item (sandgen's in Rust, SPDL's in Python; ratios "
        "are medians of each run's own): the Rust plugin gives "
        f"{f['rust_thread_ints'] / 1e6:,.1f} M small items/s and "
        f"{f['rust_thread_bytes64k'] / 1e3:,.1f} GB/s of 64 KiB items in thread isolation "
        f"({f['thread_vs_crossbeam_ints']:,.2f}× and "
        f"{f['thread_vs_crossbeam_bytes64k']:,.2f}× the same Rust items "
        "handed between two threads by crossbeam), "
        f"{f['rust_process_ints'] / 1e6:,.1f} M items/s and "
        f"{f['rust_process_bytes64k'] / 1e3:,.1f} GB/s in process isolation. The Python "
        "example plugin, in a worker process, gives "
        f"{f['python_process_ints'] / 1e6:,.2f} M small items/s, "
        f"{f['python_process_vs_spdl_ints']:,.1f}× SPDL 0.8.0's "
        "`iterate_in_subprocess` running the same Python generator in a forked process "
        f"({f['python_process_vs_spdl_bytes64k']:,.1f}× for 64 KiB items), "
        f"and its first item in {f['python_process_first_item_ms']:,.1f} ms against SPDL's "
        f"{f['spdl_first_item_ms']:,.1f} ms. From call to first item, a Rust plugin takes "
        f"{f['rust_thread_first_item_ms']:,.2f} ms in thread isolation and "
        f"{f['rust_process_first_item_ms']:,.2f} ms in process isolation; the JavaScript "
        f"example yields {f['js_thread_ints'] / 1e6:,.2f} M small items/s."
    )


def replace_between(path: Path, text: str, script: str = "bench/run.sh") -> None:
    """Puts `text` between the file's markers of `script`."""
    begin, end = f"<!-- {script}: begin -->", f"<!-- {script}: end -->"
    old = path.read_text()
    if old.count(begin) != 1 or old.count(end) != 1:
        sys.exit(f"{path}: expected one pair of `{script}` markers")
    head, rest = old.split(begin)
    _, tail = rest.split(end)
    path.write_text(f"{head}{begin}\n{text}\n{end}{tail}")


def stamp_now(runs: int) -> str:
    """When, at which revision and where a run was made."""
    rev = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    dirty = subprocess.run(
        [
            "git",
            "diff",
            "--quiet",
            "HEAD",
            "--",
            "host",
            "guest-sdk",
            "examples",
            "bench",
        ],
        cwd=ROOT,
        check=False,
    ).returncode
    if dirty:
        rev += " with uncommitted changes"
    return (
        f"{time.strftime('%Y-%m-%d')}, {rev}, {os.cpu_count()} CPUs, median of {runs}"
    )


def write_docs(res: dict, runs: list, stamp: str | None) -> None:
    f = with_ratios(res, runs)
    stamp = stamp or stamp_now(runs)
    replace_between(
        ROOT / "BENCHMARKS.md",
        f"Written by `bench/run.sh --write {len(runs)}` ({stamp}).\n\n"
        + table(res, runs)
        + "\n\n"
        + textwrap.fill(targets(f), width=76, break_on_hyphens=False),
    )
    summary = textwrap.fill(readme_summary(f, stamp), width=76, break_on_hyphens=False)
    replace_between(ROOT / "README.md", summary)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--before", type=Path, help="another revision's sandgen binary")
    ap.add_argument("--before-label", default="before")
    ap.add_argument(
        "--write",
        action="store_true",
        help="put the tables and figures into BENCHMARKS.md and README.md",
    )
    ap.add_argument(
        "--rewrite",
        action="store_true",
        help="run nothing: write the documents from bench/results.json",
    )
    args = ap.parse_args()
    if args.rewrite:
        saved = json.loads((ROOT / "bench/results.json").read_text())
        write_docs(saved["median"], saved["runs"], saved.get("stamp"))
        return
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
    res["machine"] = machine()
    stamp = stamp_now(args.runs)
    (ROOT / "bench/results.json").write_text(
        json.dumps({"median": res, "runs": runs, "stamp": stamp}, indent=1)
    )
    print(table(res, runs))
    if args.write:
        write_docs(res, runs, stamp)
    if BEFORE is not None:
        print()
        print(before_table(res, args.before_label))


if __name__ == "__main__":
    main()
