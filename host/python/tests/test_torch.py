"""sandgen.torch with a real PyTorch DataLoader: every sample exactly once per
epoch whatever the workers, a new order every epoch that is the same with
persistent and fresh workers, errors that keep their attributes through the
DataLoader's re-raise, and checks before any worker starts.

Every DataLoader here has a `timeout`, so that a wait for a worker's batch
cannot hang the run."""

from __future__ import annotations

import multiprocessing
from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader

import sandgen
import sandgen.torch
from conftest import guest

# Seconds a DataLoader waits for a worker's batch before it fails the test.
LOADER_TIMEOUT = 120


def loader(dataset: Any, workers: int, persistent: bool = False, method: str = "fork") -> Any:
    """A DataLoader over `dataset` that yields items one by one."""
    if workers == 0:
        return DataLoader(dataset, batch_size=None)
    return DataLoader(
        dataset,
        batch_size=None,
        num_workers=workers,
        persistent_workers=persistent,
        multiprocessing_context=multiprocessing.get_context(method),
        timeout=LOADER_TIMEOUT,
    )


def items(batches: Any) -> list[Any]:
    """Plain ints from what a DataLoader yields (tensors, from collation)."""
    return [int(x) if isinstance(x, torch.Tensor) else x for x in batches]


def rotated(n: int, epoch: int) -> list[int]:
    """Pass `epoch` of the `shuffle` fixture: 0..n rotated by epoch + 1."""
    return [(i + epoch + 1) % n for i in range(n)]


# Every sample once per epoch: DataLoader workers x sandgen workers, by
# start method and persistence, for a plugin that does not shard itself.
CASES = [(0, 1, False, "fork"), (0, 2, False, "fork")] + [
    (loaders, workers, persistent, method)
    for method in ("fork", "spawn")
    for loaders in (2, 3)
    for workers in (1, 2)
    for persistent in (False, True)
    if method == "fork" or workers == 2
]


@pytest.mark.parametrize(("loaders", "workers", "persistent", "method"), CASES)
def test_each_sample_comes_once_per_epoch(
    cache_dir: str, loaders: int, workers: int, persistent: bool, method: str
) -> None:
    data = sandgen.torch.dataset(
        guest("FIXTURE_SPDL"), "range", 101, num_workers=workers, cache_dir=cache_dir
    )
    dataloader = loader(data, loaders, persistent, method)
    for epoch in range(2):
        data.set_epoch(epoch)
        seen = items(dataloader)
        assert sorted(seen) == list(range(101)), f"epoch {epoch}"
    # By plugin, a plugin that does not shard itself repeats its stream in
    # every worker: what "items" is for.
    by_plugin = sandgen.torch.dataset(
        guest("FIXTURE_SPDL"), "range", 10, sharding="plugin", cache_dir=cache_dir
    )
    assert len(items(loader(by_plugin, loaders, persistent, method))) == 10 * max(loaders, 1)


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_each_epoch_is_the_next_pass_with_persistent_and_fresh_workers(
    cache_dir: str, method: str
) -> None:
    # `shuffle` rotates 0..n by one more every pass. By items, 2 DataLoader
    # workers keep alternate items, and DataLoader takes one from each in
    # turn: each epoch is the whole pass, in its order.
    n = 30
    expected = [rotated(n, epoch) for epoch in range(3)]

    def epochs(workers: int, persistent: bool) -> list[list[int]]:
        data = sandgen.torch.dataset(
            guest("FIXTURE_SPDL"), "shuffle", n, num_workers=workers, cache_dir=cache_dir
        )
        dataloader = loader(data, 2, persistent, method)
        seen = []
        for epoch in range(3):
            data.set_epoch(epoch)
            seen.append(items(dataloader))
        return seen

    for workers in (1, 2):
        assert epochs(workers, persistent=True) == expected, f"{workers} persistent"
        assert epochs(workers, persistent=False) == expected, f"{workers} fresh"


def test_without_workers_epochs_follow_on_and_set_epoch_moves_them(cache_dir: str) -> None:
    data = sandgen.torch.dataset(guest("FIXTURE_SPDL"), "shuffle", 10, cache_dir=cache_dir)
    dataloader = loader(data, 0)
    # Without set_epoch, each iteration is the next pass.
    assert items(dataloader) == rotated(10, 0)
    assert items(dataloader) == rotated(10, 1)
    # Forward, by skipping passes; back, with a new iterable.
    data.set_epoch(5)
    assert items(dataloader) == rotated(10, 5)
    assert items(dataloader) == rotated(10, 6)
    data.set_epoch(2)
    assert items(dataloader) == rotated(10, 2)
    # A pass cut short still counts as its epoch.
    first = next(iter(dataloader))
    assert int(first) == rotated(10, 3)[0]
    assert items(dataloader) == rotated(10, 4)


def test_epochs_without_workers_keep_their_sandgen_workers(cache_dir: str) -> None:
    # (Persistent DataLoader workers keep theirs too: without it, the epochs
    # above would all be pass 0, as set_epoch does not reach them.)
    data = sandgen.torch.dataset(
        guest("FIXTURE_SPDL"), "range", 5, isolation="process", cache_dir=cache_dir
    )
    assert data.worker_pids == []
    items(loader(data, 0))
    pids = data.worker_pids
    assert len(pids) == 1
    items(loader(data, 0))
    assert data.worker_pids == pids, "the next epoch runs in the same worker process"


def test_a_worker_error_keeps_its_attributes_through_the_dataloader(cache_dir: str) -> None:
    data = sandgen.torch.dataset(
        guest("FIXTURE_SPDL"),
        "fail_at",
        {"n": 10, "fail_at": 3, "message": "bad sample 3"},
        cache_dir=cache_dir,
    )
    with pytest.raises(sandgen.IterationFailedError) as caught:
        items(loader(data, 2))
    error = caught.value
    assert error.kind == "iteration_failed"
    assert error.plugin_message == "bad sample 3"
    assert "DataLoader worker process" in str(error)
    # Without workers, the error is sandgen's own.
    with pytest.raises(sandgen.IterationFailedError) as direct:
        items(loader(data, 0))
    assert direct.value.plugin_message == "bad sample 3"
    assert "sandgen error attributes" not in str(direct.value)


def _shard_by_worker(args: dict[str, int], worker: int, workers: int) -> int:
    return args["n"] + worker


def test_shard_gives_each_dataloader_worker_its_args(cache_dir: str) -> None:
    data = sandgen.torch.dataset(
        guest("FIXTURE_SPDL"),
        "range",
        {"n": 2},
        shard=_shard_by_worker,
        sharding="plugin",
        cache_dir=cache_dir,
    )
    assert sorted(items(loader(data, 2, method="spawn"))) == [0, 0, 1, 1, 2]


def test_bad_options_are_refused_before_any_worker_starts(cache_dir: str) -> None:
    spdl = guest("FIXTURE_SPDL")
    with pytest.raises(sandgen.InvalidInputError, match="unknown sharding 'rows'"):
        sandgen.torch.dataset(spdl, "range", 3, sharding="rows", cache_dir=cache_dir)
    with pytest.raises(sandgen.InvalidInputError, match="use sharding='plugin' with shard="):
        sandgen.torch.dataset(spdl, "range", 3, shard=_shard_by_worker, cache_dir=cache_dir)
    with pytest.raises(sandgen.InvalidInputError, match="has no generator 'nope'"):
        sandgen.torch.dataset(spdl, "nope", cache_dir=cache_dir)
    with pytest.raises(sandgen.InvalidInputError, match="unknown option"):
        sandgen.torch.dataset(spdl, "range", 3, num_threads=2, cache_dir=cache_dir)
    with pytest.raises(sandgen.LoadError):
        sandgen.torch.dataset("/nonexistent.wasm", "range", cache_dir=cache_dir)
    data = sandgen.torch.dataset(spdl, "range", 3, cache_dir=cache_dir)
    for epoch, words in [(-1, "at least 0"), (1.5, "takes an int"), (True, "takes an int")]:
        with pytest.raises(sandgen.InvalidInputError, match=words):
            data.set_epoch(epoch)
    # A function that cannot be pickled into spawned workers: named, before
    # any of them starts.
    unpicklable = sandgen.torch.dataset(
        spdl,
        "range",
        {"n": 2},
        shard=lambda args, worker, workers: args["n"],
        sharding="plugin",
        cache_dir=cache_dir,
    )
    with pytest.raises(sandgen.InvalidInputError, match=r"shard= cannot be pickled"):
        items(loader(unpicklable, 2, method="spawn"))
    # With fork it needs no pickling.
    assert sorted(items(loader(unpicklable, 2, method="fork"))) == [0, 0, 1, 1]


def test_arrays_come_as_writable_tensors_without_a_warning(cache_dir: str) -> None:
    import warnings

    import numpy as np

    def dataset(generator: str, args: Any, item_type: Any, **options: Any) -> Any:
        return sandgen.torch.dataset(
            guest("FIXTURE_ARRAYS"),
            generator,
            args,
            cache_dir=cache_dir,
            encoding="bincode",
            item_type=item_type,
            **options,
        )

    args = {"n": 20, "dtype": "uint8", "shape": [4, 4, 3]}
    # Batched by sandgen (stacked in Rust), through DataLoader workers.
    data = dataset("labelled", args, tuple[np.ndarray, int], batch_size=4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        batches = list(loader(data, 2))
    labels = sorted(int(x) for _, label in batches for x in label)
    assert labels == list(range(20)), "each sample once"
    for images, label in batches:
        assert isinstance(images, torch.Tensor) and images.dtype == torch.uint8
        assert images.shape == (len(label), 4, 4, 3) and label.dtype == torch.int64
        for image, k in zip(images, label, strict=True):
            expected = (int(k) * 1000 + np.arange(48)).astype(np.uint8).reshape(4, 4, 3)
            assert torch.equal(image, torch.from_numpy(expected))
    # Item by item in this process: writable tensors, without torch's
    # warning about read-only arrays.
    data = dataset("named", {"n": 3, "dtype": "float32", "shape": [2]}, dict[str, np.ndarray])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = list(loader(data, 0))
    assert [sorted(item) for item in got] == [["image", "mask"]] * 3
    assert got[2]["image"].tolist() == [2000.0, 2001.0]
    assert got[2]["mask"].dtype == torch.bool
    got[2]["image"][0] = 1.0
    # Collated by the DataLoader from unbatched items.
    data = dataset("labelled", args, tuple[np.ndarray, int])
    collated = list(DataLoader(data, batch_size=8))
    assert [tuple(images.shape) for images, _ in collated] == [
        (8, 4, 4, 3),
        (8, 4, 4, 3),
        (4, 4, 4, 3),
    ]
    assert sorted(int(x) for _, label in collated for x in label) == list(range(20))
