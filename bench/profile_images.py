"""Where the image example's time goes (issue 27): decode, resize, the rest.

examples/images runs in a plain Python loop (thread isolation, one worker,
items read as ``(numpy.ndarray, int)``) under ``perf record``, which samples
only while the loop runs (a control FIFO turns it on and off), every 0.1 ms
of CPU time. The samples are grouped by the code they ran: the JPEG decoder
(zune-jpeg), the resize and crop (fast_image_resize), the rest of the plugin
(sharding, encoding items), the file reads (wasmtime-wasi runs them on
tokio's blocking threads), and the rest of the host (context switches, the
transfer into numpy, the Python loop). A stage's figure is its
CPU time per image. The worker thread and the Python thread run at the same
time, so CPU time per image can exceed the wall time per image.

Beside it, PIL doing the same work with the same images in one thread,
timed stage by stage: ``Image.open(path).convert("RGB")`` (decode), then
the bilinear resize and centre crop with ``np.asarray`` (bench_images.py's
dataset).

The images are bench_images.py's (500x375 JPEGs, quality 90), made before
anything is measured; the plugin is loaded and run once before the
profiled run, so that its compilation is cached and not in the profile.

    bench/images-profile.sh [--write]   # --write puts the table between
                                        # BENCHMARKS.md's markers

Needs Linux ``perf`` with permission to profile its own processes.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import sandgen
from compare import replace_between, stamp_now

# bench_images (torch, PIL) is imported by the parent only: the profiled
# child imports no more than the loop needs.
SIZE = 224

ROOT = Path(__file__).resolve().parents[1]

# The stages, in the table's order, and how a sample's symbol is told apart.
# Guest code shows as `wasm[0]::function[N]::<mangled Rust name>`.
STAGES = {
    "decode": ("zune_jpeg", "zune_core"),
    "resize and crop": ("fast_image_resize",),
    "rest of the plugin": ("wasm[0]",),
}
# wasmtime-wasi does the plugin's file reads on tokio's blocking threads.
FILES = "file reads (WASI's blocking threads)"
HOST = "host: context switches, transfer into numpy, Python loop"
# One sample per 0.1 ms of CPU time (`cpu-clock` counts nanoseconds).
PERIOD_NS = 100_000


def plugin_rate(
    plugin: str, root: Path, control: tuple[str, str] | None = None
) -> float:
    """Images per second of one pass in a plain loop; with `control` (perf's
    control and acknowledgement FIFOs), perf samples the loop only."""
    loaded = sandgen.load(plugin)
    items = loaded.iterable(
        "images",
        {"dir": "/data", "size": SIZE},
        dirs={str(root): "/data"},
        encoding="bincode",
        item_type=tuple[np.ndarray, int],
        memory_limit_mib=512,
    )
    perf = None
    if control:
        perf = open(control[0], "w", buffering=1), open(control[1])  # noqa: SIM115
    tell(perf, "enable")
    start = time.perf_counter()
    count = sum(1 for image, _ in items if image.shape == (SIZE, SIZE, 3))
    seconds = time.perf_counter() - start
    tell(perf, "disable")
    if count != len(list(root.glob("*/*.jpg"))):
        sys.exit(f"expected every image of {root}, got {count}")
    return count / seconds


def tell(perf: tuple | None, command: str) -> None:
    """Sends perf a control command and waits for its acknowledgement."""
    if perf:
        perf[0].write(f"{command}\n")
        perf[1].readline()


def stage_of(thread: str, symbol: str) -> str:
    if thread.startswith("tokio-rt-worker"):
        return FILES
    for stage, marks in STAGES.items():
        if any(mark in symbol for mark in marks):
            return stage
    return HOST


def profile(plugin: str, root: Path, tmp: Path) -> tuple[float, dict[str, float]]:
    """The loop's rate under `perf record` and each stage's CPU
    milliseconds per image."""
    ctl, ack = tmp / "ctl", tmp / "ack"
    os.mkfifo(ctl)
    os.mkfifo(ack)
    data = tmp / "perf.data"
    child = subprocess.run(
        ["perf", "record", "-q", "-e", "cpu-clock", "-c", str(PERIOD_NS), "-D", "-1"]
        + ["--control", f"fifo:{ctl},{ack}", "-o", str(data), "--"]
        + [sys.executable, __file__, "--child", str(root), "--control", f"{ctl},{ack}"],
        check=True,
        capture_output=True,
        text=True,
        env=os.environ,
    )
    rate = float(child.stdout.strip().splitlines()[-1])
    report = subprocess.run(
        ["perf", "report", "-i", str(data), "--stdio", "--no-children", "-n"]
        + ["--sort", "comm,dso,sym", "-t", "|"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    images = len(list(root.glob("*/*.jpg")))
    ms: dict[str, float] = {stage: 0.0 for stage in [*STAGES, FILES, HOST]}
    for line in report.splitlines():
        fields = line.split("|")
        if (
            line.startswith("#")
            or len(fields) < 5
            or not fields[0].strip().endswith("%")
        ):
            continue
        ms[stage_of(fields[2].strip(), fields[4])] += (
            int(fields[1]) * PERIOD_NS / 1e6 / images
        )
    return rate, ms


def pil_stages(files: list[tuple[str, int]]) -> tuple[float, float]:
    """PIL's milliseconds per image: decode, then resize and crop."""
    from bench_images import centre
    from PIL import Image

    decode = resize = 0.0
    for path, _ in files:
        start = time.perf_counter()
        image = Image.open(path).convert("RGB")
        decoded = time.perf_counter()
        box = centre(*image.size)
        out = np.asarray(image.resize((SIZE, SIZE), Image.BILINEAR, box=box))
        resize += time.perf_counter() - decoded
        decode += decoded - start
        assert out.shape == (SIZE, SIZE, 3)
    return 1000 * decode / len(files), 1000 * resize / len(files)


def table(rate: float, ms: dict[str, float], pil: tuple[float, float]) -> str:
    pil_ms = {"decode": pil[0], "resize and crop": pil[1]}
    cpu = sum(ms.values())
    lines = [
        (
            f"Where the image example's time goes ({stamp_now(1)}, `perf record` of one "
            f"worker in thread isolation at {rate:,.0f} images/s, {1000 / rate:.2f} ms of "
            "wall time per image): CPU milliseconds per 500×375 JPEG, each stage's share "
            "of the CPU time, and PIL's time for the same stage."
        ),
        "",
        "| stage | examples/images | share | PIL + numpy |",
        "|---|---|---|---|",
    ]
    for stage, spent in ms.items():
        theirs = pil_ms.get(stage)
        lines.append(
            f"| {stage} | {spent:.2f} | {100 * spent / cpu:.0f}% "
            f"| {'–' if theirs is None else f'{theirs:.2f}'} |"
        )
    lines.append(f"| all | {cpu:.2f} | 100% | {sum(pil):.2f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--write", action="store_true")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--control", help=argparse.SUPPRESS)
    options = parser.parse_args()
    plugin = json.loads(os.environ["SANDGEN_TEST_GUESTS"])["EXAMPLE_IMAGES"]
    if options.child:
        ctl, ack = options.control.split(",")
        print(plugin_rate(plugin, Path(options.child), (ctl, ack)))
        return
    from bench_images import make_images

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "images"
        files = make_images(root, options.images)
        plugin_rate(plugin, root)  # compiles the plugin into the cache
        rate, ms = profile(plugin, root, Path(tmp))
        pil = pil_stages(files)
    text = table(rate, ms, pil)
    print(text)
    if options.write:
        replace_between(ROOT / "BENCHMARKS.md", text, "bench/images-profile.sh")


if __name__ == "__main__":
    main()
