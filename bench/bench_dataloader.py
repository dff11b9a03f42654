#!/usr/bin/env python3
"""The example tokenizer in a PyTorch DataLoader with 2 workers, in one run:
`sandgen.torch.dataset` over `example_tokenize.wasm` (`windows`, 128 tokens,
shuffled per epoch) with `sharding="plugin"` (the plugin takes its share of
the windows) and `sharding="items"` (every worker tokenizes and produces the
whole stream, and keeps its share), against a plain Python
`IterableDataset` doing the same work in the DataLoader workers: read the
file, tokenize it (the same word split, FNV-1a ids and windows), shuffle the
windows with the same seeded permutation and yield this worker's share.

Beside them, the DataLoader alone: the same windows made beforehand,
yielded by the workers with no tokenizing (the ceiling, what moving a
sample from a worker to the loop costs).

Every run iterates two epochs of fresh DataLoader workers (their start
included, as a training loop pays it) and takes every window, a list of 128
ints, into the training loop; samples/s is windows over the wall time.

    bench/dataloader.sh [RUNS]
"""

from __future__ import annotations

import argparse
import json
import random
import re
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import sandgen.torch
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

ROOT = Path(__file__).resolve().parent.parent
PLUGIN = ROOT / "target/wasm32-wasip2/release/example_tokenize.wasm"
CACHE = ROOT / "target/bench-cache"

WINDOW = 128
VOCAB = 32768
SEED = 1
EPOCHS = 2
WORKERS = 2

PAD, EOD, FIRST_WORD_ID = 0, 1, 2
MASK = (1 << 64) - 1
SPLIT = re.compile(r"[^\w']|_")


def corpus(path: Path, documents: int = 12000) -> None:
    """A reproducible corpus: `documents` paragraphs of 60-260 words."""
    rng = random.Random(7)
    words = [f"w{i}" for i in range(20000)]
    paragraphs = (
        " ".join(rng.choice(words) for _ in range(rng.randint(60, 260)))
        for _ in range(documents)
    )
    path.write_text("\n\n".join(paragraphs) + "\n")


# --- the plain Python dataset: the example's work, in Python ---------------


def fnv1a(word: str) -> int:
    h = 0xCBF29CE484222325
    for b in word.encode():
        h = ((h ^ b) * 0x100000001B3) & MASK
    return h


def tokenize(text: str) -> list[int]:
    tokens: list[int] = []
    for document in text.split("\n\n"):
        if not document.strip():
            continue
        # The example's split: runs of letters, digits and apostrophes.
        for word in SPLIT.split(document):
            if word:
                tokens.append(
                    FIRST_WORD_ID + fnv1a(word.lower()) % (VOCAB - FIRST_WORD_ID)
                )
        tokens.append(EOD)
    return tokens


def shuffle(order: list[int], seed: int) -> None:
    """The example's permutation (xorshift64* Fisher-Yates)."""
    state = ((seed * 0x9E3779B97F4A7C15) & MASK) | 1
    for i in range(len(order) - 1, 0, -1):
        state ^= state >> 12
        state ^= (state << 25) & MASK
        state ^= state >> 27
        r = (state * 0x2545F4914F6CDD1D) & MASK
        j = r % (i + 1)
        order[i], order[j] = order[j], order[i]


class PythonWindows(IterableDataset):
    def __init__(self, path: str) -> None:
        self.path = path
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[list[int]]:
        with open(self.path) as f:
            tokens = tokenize(f.read())
        starts = list(range(0, len(tokens), WINDOW))
        order = list(range(len(starts)))
        shuffle(order, SEED + self.epoch)
        info = get_worker_info()
        mine = order if info is None else order[info.id :: info.num_workers]
        for i in mine:
            window = tokens[starts[i] : starts[i] + WINDOW]
            yield window + [PAD] * (WINDOW - len(window))


class Prebuilt(IterableDataset):
    """The DataLoader alone: each worker's share of windows made before the
    run (the ceiling: what moving the samples costs, with no tokenizing)."""

    def __init__(self, epochs: list[list[list[int]]]) -> None:
        self.epochs = epochs
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[list[int]]:
        info = get_worker_info()
        windows = self.epochs[self.epoch]
        yield from windows if info is None else windows[info.id :: info.num_workers]


# --- the runs ------------------------------------------------------------------


def run(dataset: object) -> tuple[float, int, list[list[int]]]:
    """Two epochs through a DataLoader of fresh workers: seconds, samples,
    and the first epoch's first windows (to check both sides agree)."""
    loader = DataLoader(dataset, batch_size=None, num_workers=WORKERS, timeout=600)
    samples, first = 0, []
    started = time.perf_counter()
    for epoch in range(EPOCHS):
        dataset.set_epoch(epoch)  # type: ignore[attr-defined]
        for window in loader:
            samples += 1
            if epoch == 0 and len(first) < 4:
                first.append(list(window))
    return time.perf_counter() - started, samples, first


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        text = Path(tmp) / "corpus.txt"
        corpus(text)
        args = {"path": "/data/corpus.txt", "window": WINDOW, "shuffle_seed": SEED}

        def sandgen_dataset(sharding: str) -> object:
            return sandgen.torch.dataset(
                PLUGIN,
                "windows",
                args,
                dirs={tmp: "/data"},
                sharding=sharding,
                cache_dir=CACHE,
            )

        sides = {
            "sandgen, sharding=plugin": lambda: sandgen_dataset("plugin"),
            "sandgen, sharding=items": lambda: sandgen_dataset("items"),
            "Python IterableDataset": lambda: PythonWindows(str(text)),
        }
        reference = PythonWindows(str(text))
        prebuilt = []
        for epoch in range(EPOCHS):
            reference.set_epoch(epoch)
            prebuilt.append(list(reference))
        sides["DataLoader alone, windows made beforehand"] = lambda: Prebuilt(prebuilt)
        seconds: dict[str, list[float]] = {name: [] for name in sides}
        counts, firsts = {}, {}
        for _ in range(options.runs):
            for name, make in sides.items():
                took, counts[name], firsts[name] = run(make())
                seconds[name].append(took)
        # Like for like: the same windows on every side, each once per
        # epoch, in the same order.
        assert len(set(counts.values())) == 1, counts
        python_first = firsts["Python IterableDataset"]
        assert all(first == python_first for first in firsts.values()), firsts
        results = {}
        python = statistics.median(seconds["Python IterableDataset"])
        for name, runs in seconds.items():
            median = statistics.median(runs)
            results[name] = {
                "samples": counts[name],
                "seconds": round(median, 3),
                "samples_per_s": round(counts[name] / median),
                "vs_python": round(python / median, 2),
            }
        print(
            f"torch {torch.__version__}, {WORKERS} DataLoader workers, {EPOCHS} epochs, "
            f"{options.runs} runs (medians)"
        )
        print("| dataset | samples | s | samples/s | × Python |")
        print("|---|---:|---:|---:|---:|")
        for name, r in results.items():
            print(
                f"| {name} | {r['samples']} | {r['seconds']} | {r['samples_per_s']} | "
                f"{r['vs_python']} |"
            )
        print(json.dumps(results))


if __name__ == "__main__":
    main()
