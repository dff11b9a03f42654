"""The image example against PIL + numpy, side by side in one run (issue
27): images per second through a real PyTorch DataLoader with the same
number of workers, both doing the same work with every image: decode a
JPEG, resize it so that its shorter side is 224 (bilinear), cut the
centre 224x224 square, and hand the DataLoader a uint8 HWC tensor that it
collates into batches of 32.

- ``sandgen``: examples/images in its sandbox (one sandboxed worker per
  DataLoader worker, the plugin sharding the files), items as numpy arrays
  made tensors;
- ``PIL``: a map-style torch Dataset calling ``Image.open(path).convert("RGB")
  .resize((224, 224), Image.BILINEAR, box=centre)`` and ``np.asarray``.

The images are made before the clock starts: ``--images`` JPEGs of
500x375 (quality 90) with smooth random content, in 4 class folders. Each
figure is the second of two epochs over persistent workers (the first
starts the workers).

    bench/images.sh [RUNS] [--write]   # default 3 runs; --write updates
                                       # BENCHMARKS.md between its markers
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import sandgen.torch
import torch
from compare import replace_between, stamp_now
from PIL import Image
from torch.utils.data import DataLoader, Dataset

ROOT = Path(__file__).resolve().parents[1]
SIZE = 224
BATCH = 32


def make_images(root: Path, count: int) -> list[tuple[str, int]]:
    """`count` JPEGs in 4 class folders; returns (path, label) sorted as the
    plugin sorts them."""
    rng = np.random.default_rng(7)
    files = []
    for i in range(count):
        label = i % 4
        folder = root / f"class{label}"
        folder.mkdir(parents=True, exist_ok=True)
        small = rng.integers(0, 256, size=(15, 20, 3), dtype=np.uint8)
        image = Image.fromarray(small).resize((500, 375), Image.BICUBIC)
        path = folder / f"{i:05}.jpg"
        image.save(path, quality=90)
        files.append((str(path), label))
    return sorted(files, key=lambda f: (f[1], Path(f[0]).name))


def centre(width: int, height: int) -> tuple[float, float, float, float]:
    """The centre square of the image, as PIL's resize box."""
    side = min(width, height)
    left, top = (width - side) / 2, (height - side) / 2
    return (left, top, left + side, top + side)


class PilImages(Dataset):
    def __init__(self, files: list[tuple[str, int]]) -> None:
        self.files = files

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        path, label = self.files[i]
        with Image.open(path) as image:
            rgb = image.convert("RGB")
            out = rgb.resize((SIZE, SIZE), Image.BILINEAR, box=centre(*rgb.size))
        return torch.from_numpy(np.asarray(out).copy()), label


def epoch_rate(loader: Any, expect: int) -> float:
    """Images per second of the second of two epochs."""
    rate = 0.0
    for _ in range(2):
        start = time.perf_counter()
        count = 0
        for images, labels in loader:
            assert images.shape[1:] == (SIZE, SIZE, 3) and images.dtype == torch.uint8
            count += len(labels)
        rate = count / (time.perf_counter() - start)
        if count != expect:
            sys.exit(f"expected {expect} images, got {count}")
    return rate


def one_run(plugin: str, root: Path, files: list, workers: int) -> dict[str, float]:
    ours = sandgen.torch.dataset(
        plugin,
        "images",
        {"dir": "/data", "size": SIZE},
        dirs={str(root): "/data"},
        encoding="bincode",
        item_type=tuple[np.ndarray, int],
        sharding="plugin",
        memory_limit_mib=512,
    )
    options = {"batch_size": BATCH, "num_workers": workers, "persistent_workers": True}
    return {
        "sandgen": epoch_rate(DataLoader(ours, **options), len(files)),
        "pil": epoch_rate(DataLoader(PilImages(files), **options), len(files)),
    }


def table(runs: list[dict]) -> str:
    lines = [
        (
            f"The image example against PIL + numpy ({stamp_now(len(runs))}): images/s "
            "through a DataLoader (median) and the ratio of each run's own figures "
            "(median, range)."
        ),
        "",
        "| DataLoader workers | sandgen (examples/images) | PIL + numpy | sandgen / PIL |",
        "|---|---|---|---|",
    ]
    for workers in sorted({w for r in runs for w in r}):
        ours = [r[workers]["sandgen"] for r in runs]
        pil = [r[workers]["pil"] for r in runs]
        ratios = [a / b for a, b in zip(ours, pil, strict=True)]
        lines.append(
            f"| {workers} | {statistics.median(ours):,.0f} | {statistics.median(pil):,.0f} "
            f"| {statistics.median(ratios):.2f}× ({min(ratios):.2f}–{max(ratios):.2f}) |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--write", action="store_true")
    options = parser.parse_args()
    plugin = json.loads(os.environ["SANDGEN_TEST_GUESTS"])["EXAMPLE_IMAGES"]
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        files = make_images(root, options.images)
        runs = [
            {w: one_run(plugin, root, files, w) for w in (1, 2)}
            for _ in range(options.runs)
        ]
    print(json.dumps(runs))
    text = table(runs)
    print(text)
    if options.write:
        replace_between(ROOT / "BENCHMARKS.md", text, "bench/images.sh")


if __name__ == "__main__":
    main()
