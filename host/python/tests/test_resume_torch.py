"""sandgen.torch datasets checkpointed by torchdata's StatefulDataLoader (one
state per DataLoader worker): stopped after any batch and resumed in a new
loader over a new dataset, the batches equal those of the uninterrupted run,
within an epoch and across epochs, with the dataset's own drawn seed.

Every loader here has a `timeout`, so that a wait for a worker's batch
cannot hang the run."""

from __future__ import annotations

import multiprocessing
from typing import Any

import pytest
from torchdata.stateful_dataloader import StatefulDataLoader

import sandgen
import sandgen.torch
from conftest import guest

# Seconds a loader waits for a worker's batch before it fails the test.
LOADER_TIMEOUT = 120


def loader(dataset: Any, workers: int, persistent: bool = False) -> StatefulDataLoader:
    """A StatefulDataLoader of batches of 4 over `dataset`, as lists (the
    items are u64 hashes: no int64 tensor holds them)."""
    if workers == 0:
        return StatefulDataLoader(dataset, batch_size=4, collate_fn=list)
    return StatefulDataLoader(
        dataset,
        batch_size=4,
        collate_fn=list,
        num_workers=workers,
        persistent_workers=persistent,
        multiprocessing_context=multiprocessing.get_context("fork"),
        timeout=LOADER_TIMEOUT,
    )


def plain(batch: Any) -> list[int]:
    assert isinstance(batch, list)
    return [int(x) for x in batch]


def dataset(**options: Any) -> Any:
    return sandgen.torch.dataset(guest("FIXTURE_SPDL"), "random", 30, **options)


@pytest.mark.parametrize("workers", [0, 1, 2])
@pytest.mark.parametrize("stop", [1, 4, 7])
def test_a_stopped_loader_resumes_with_the_next_batch(workers: int, stop: int) -> None:
    # The dataset draws its seed: the resumed one takes the state's.
    first = loader(dataset(num_workers=2), workers)
    batches = []
    state = None
    for batch in first:
        batches.append(plain(batch))
        if len(batches) == stop:
            state = first.state_dict()
    del first
    assert state is not None and len(batches) > stop
    again = loader(dataset(num_workers=2), workers)
    again.load_state_dict(state)
    rest = [plain(batch) for batch in again]
    assert rest == batches[stop:]


@pytest.mark.parametrize("workers", [0, 2])
def test_a_loader_stopped_in_a_later_epoch_resumes_there(workers: int) -> None:
    persistent = workers > 0
    # No seed: each dataset draws one, and a resumed one takes its state's.
    data = dataset()
    first = loader(data, workers, persistent)
    epochs: list[list[list[int]]] = []
    for epoch in range(3):
        data.set_epoch(epoch)
        epochs.append([])
        for batch in first:
            epochs[-1].append(plain(batch))
            if (epoch, len(epochs[-1])) == (1, 3):
                within = first.state_dict()
        if epoch == 1:
            finished = first.state_dict()
    del first
    assert epochs[0] != epochs[1] != epochs[2]
    # Stopped within epoch 1: its rest, then epoch 2.
    data = dataset()
    again = loader(data, workers, persistent)
    again.load_state_dict(within)
    assert [plain(batch) for batch in again] == epochs[1][3:]
    data.set_epoch(2)
    assert [plain(batch) for batch in again] == epochs[2]
    # Stopped once epoch 1 was over: the loader goes on with epoch 2.
    data = dataset()
    again = loader(data, workers, persistent)
    again.load_state_dict(finished)
    data.set_epoch(2)
    assert [plain(batch) for batch in again] == epochs[2]


def test_a_state_of_another_dataset_is_refused_by_name() -> None:
    first = loader(dataset(seed=5), 0)
    iterator = iter(first)
    next(iterator)
    state = first.state_dict()
    del iterator, first
    other = loader(dataset(seed=6), 0)
    other.load_state_dict(state)
    with pytest.raises(sandgen.InvalidInputError, match="seed 5, this iterable has seed 6"):
        next(iter(other))


def test_dataset_states_are_checked_when_loaded() -> None:
    data = dataset(seed=5)
    assert data.state_dict() == {}
    data.set_epoch(3)
    assert data.state_dict() == {"epoch": 3}
    with pytest.raises(sandgen.InvalidInputError, match="must be a dict from the dataset"):
        data.load_state_dict({"pass": 1})
    with pytest.raises(sandgen.InvalidInputError, match="not JSON data"):
        data.load_state_dict({"position": {"pass": object()}})
    with pytest.raises(sandgen.InvalidInputError, match="no position format"):
        data.load_state_dict({"position": {"pass": 1}})
    # Nothing lost: the epoch set before is still the next.
    assert data.state_dict() == {"epoch": 3}
    items = iter(data)
    next(items)
    state = data.state_dict()
    assert state["position"]["pass"] == 3
    with pytest.raises(sandgen.BusyError, match="while an epoch is being read"):
        data.load_state_dict(state)
