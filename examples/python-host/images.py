"""Images into a training loop: the image example plugin (examples/images)
decodes, resizes and centre-crops JPEG and PNG files inside its sandbox,
and a real PyTorch DataLoader hands them to the loop as tensors. It trains
nothing: it shows what a model would be fed.

Build the plugin and install the package with torch, then run this script
on a folder with one sub-folder of images per class:

    cargo build --release --target wasm32-wasip2 -p example-images
    pip install "./host/python[torch]"
    python examples/python-host/images.py \\
        target/wasm32-wasip2/release/example_images.wasm /path/to/images

The plugin sees only that folder (read-only, as /data). Each DataLoader
worker runs a sandboxed worker of its own; the plugin shares the files
among them (`sharding="plugin"`), and sandgen stacks each batch in Rust.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import sandgen.torch
from torch.utils.data import DataLoader


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("plugin", help="the example_images.wasm plugin")
    parser.add_argument("dir", help="a folder with one sub-folder of images per class")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers")
    parser.add_argument("--epochs", type=int, default=1)
    options = parser.parse_args(argv)

    data = sandgen.torch.dataset(
        options.plugin,
        "images",
        {"dir": "/data", "size": options.size},
        dirs={options.dir: "/data"},
        encoding="bincode",
        item_type=tuple[np.ndarray, int],
        batch_size=options.batch_size,
        sharding="plugin",
        memory_limit_mib=512,
    )
    loader = DataLoader(
        data,
        batch_size=None,
        num_workers=options.workers,
        persistent_workers=options.workers > 0,
    )
    for epoch in range(options.epochs):
        data.set_epoch(epoch)
        start = time.perf_counter()
        count, labels, shapes = 0, set(), set()
        for images, label in loader:
            # What a model takes: NCHW floats in [0, 1].
            batch = images.permute(0, 3, 1, 2).float().div_(255)
            shapes.add(tuple(batch.shape[1:]))
            count += len(label)
            labels.update(label.tolist())
        seconds = time.perf_counter() - start
        print(
            f"epoch {epoch}: {count} images of {sorted(shapes)}, labels {sorted(labels)} "
            f"({count / seconds:,.0f} images/s)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
