"""Example plugin in Python: data-loading generators for ML training.

Build (from the repository root; `tests/install-plugin-tools.sh` installs the
pinned componentize-py into guest-sdk/python/.venv):

    componentize-py -d wit -w resumable-plugin componentize -p guest-sdk/python -p examples/python app -o target/example_python.wasm

Run:

    sandgen run target/example_python.wasm windows --args '{"text": "the quick brown fox jumps over the lazy dog", "window": 4}'
"""

import random

import sandgen_guest


def windows(text: str, window: int = 4, stride: int = 0):
    """Yields the windows of `window` words of `text`, `stride` apart (default: no overlap)."""
    words = text.split()
    stride = stride or window
    # Several workers share the windows: each yields every n-th.
    for start in sandgen_guest.worker_info().shard(range(0, len(words), stride)):
        yield words[start : start + window]


@sandgen_guest.generator(name="epochs")
class Epochs:
    """Yields 0..n in a new shuffled order each pass, reproducible from seed."""

    def __init__(self, n: int, seed: int = 0):
        self.n = n
        self.seed = seed
        self.epoch = 0

    def __iter__(self):
        order = list(range(self.n))
        random.Random(f"{self.seed}/{self.epoch}").shuffle(order)
        self.epoch += 1
        # Every worker draws the same order and yields its share of it.
        return sandgen_guest.worker_info().shard(order)


def count(n: int):
    """Yields 0..n (small items, for benchmarks)."""
    return range(n)


def blobs(n: int, size: int):
    """Yields n fresh byte strings of `size` bytes (large items, for benchmarks)."""
    for _ in range(n):
        yield bytes(size)


Generator = sandgen_guest.plugin(windows, Epochs, count, blobs)
