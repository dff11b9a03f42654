"""sandgen with what Python users already use: an SPDL pipeline, a PyTorch
DataLoader (through a stand-in, see below), and the example script."""

from __future__ import annotations

import pickle
import subprocess
import sys
import types
from collections.abc import Iterator
from typing import Any

import pytest

import sandgen
from conftest import ROOT, guest


def test_a_sandgen_iterable_is_the_source_of_an_spdl_pipeline(
    spdl: sandgen.Plugin, isolation: str
) -> None:
    from spdl.pipeline import PipelineBuilder

    with spdl.iterable("range", args=200, isolation=isolation) as source:
        pipeline = (
            PipelineBuilder()
            .add_source(source)
            .pipe(lambda x: x * x, concurrency=4, output_order="input")
            .add_sink(16)
            .build(num_threads=4)
        )
        with pipeline.auto_stop():
            squares = list(pipeline.get_iterator(timeout=60))
    assert squares == [x * x for x in range(200)]


# --- PyTorch -----------------------------------------------------------------
# torch is too large to install in CI, so these tests run sandgen.torch
# against a stand-in of the two things DataLoader relies on: the
# IterableDataset base class, and get_worker_info() inside a worker. The
# stand-in DataLoader below does what torch's does with an IterableDataset:
# without workers it iterates the dataset itself; with N workers it pickles
# the dataset into each worker, where get_worker_info() tells the worker its
# id, and interleaves what the workers yield.


class _IterableDataset:
    def __iter__(self) -> Iterator[Any]:
        raise NotImplementedError


class _WorkerInfo:
    def __init__(self, id: int, num_workers: int) -> None:
        self.id = id
        self.num_workers = num_workers


_current_worker: list[_WorkerInfo | None] = [None]


def _get_worker_info() -> _WorkerInfo | None:
    return _current_worker[0]


def _data_loader(dataset: Any, num_workers: int) -> list[Any]:
    if num_workers == 0:
        return list(dataset)
    streams = []
    for worker in range(num_workers):
        copy = pickle.loads(pickle.dumps(dataset))
        _current_worker[0] = _WorkerInfo(worker, num_workers)
        try:
            streams.append(list(copy))
        finally:
            _current_worker[0] = None
    # Round-robin over the workers, as DataLoader's in-order merge does.
    merged = []
    for i in range(max(map(len, streams))):
        merged.extend(stream[i] for stream in streams if i < len(stream))
    return merged


@pytest.fixture
def fake_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    torch = types.ModuleType("torch")
    utils = types.ModuleType("torch.utils")
    data = types.ModuleType("torch.utils.data")
    data.IterableDataset = _IterableDataset  # type: ignore[attr-defined]
    data.get_worker_info = _get_worker_info  # type: ignore[attr-defined]
    torch.utils = utils  # type: ignore[attr-defined]
    utils.data = data  # type: ignore[attr-defined]
    for name, module in [("torch", torch), ("torch.utils", utils), ("torch.utils.data", data)]:
        monkeypatch.setitem(sys.modules, name, module)


def test_importing_sandgen_does_not_import_torch() -> None:
    out = subprocess.run(
        [sys.executable, "-c", "import sandgen, sandgen.torch, sys; print('torch' in sys.modules)"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert out.strip() == "False"


def test_a_torch_dataset_iterates_one_pass_per_epoch(fake_torch: None, cache_dir: str) -> None:
    import sandgen.torch

    dataset = sandgen.torch.dataset(guest("FIXTURE_SPDL"), "range", 5, cache_dir=cache_dir)
    assert isinstance(dataset, _IterableDataset)
    assert _data_loader(dataset, 0) == [0, 1, 2, 3, 4]
    assert _data_loader(dataset, 0) == [0, 1, 2, 3, 4]


def _shard(args: dict[str, Any], worker: int, workers: int) -> dict[str, Any]:
    return {**args, "n": 3 + worker}


def test_torch_workers_get_their_shard(fake_torch: None, cache_dir: str, isolation: str) -> None:
    import sandgen.torch

    dataset = sandgen.torch.dataset(
        guest("FIXTURE_SPDL"),
        "fail_at",
        {"n": 0, "fail_at": 99, "message": "unused"},
        shard=_shard,
        isolation=isolation,
        cache_dir=cache_dir,
    )
    # Worker 0 yields 0..3, worker 1 yields 0..4, merged round-robin.
    assert _data_loader(dataset, 2) == [0, 0, 1, 1, 2, 2, 3]


def test_a_torch_dataset_checks_everything_up_front(fake_torch: None, cache_dir: str) -> None:
    import sandgen.torch

    with pytest.raises(sandgen.InvalidInputError, match="has no generator 'nope'"):
        sandgen.torch.dataset(guest("FIXTURE_SPDL"), "nope", cache_dir=cache_dir)
    with pytest.raises(sandgen.InvalidInputError, match="unknown isolation"):
        sandgen.torch.dataset(
            guest("FIXTURE_SPDL"), "range", 3, isolation="vm", cache_dir=cache_dir
        )
    with pytest.raises(sandgen.InvalidInputError, match="unknown option"):
        sandgen.torch.dataset(guest("FIXTURE_SPDL"), "range", 3, num_threads=2, cache_dir=cache_dir)
    with pytest.raises(sandgen.LoadError):
        sandgen.torch.dataset("/nonexistent.wasm", "range", cache_dir=cache_dir)


@pytest.mark.parametrize("isolation", ["thread", "process"])
def test_the_example_script_runs(isolation: str) -> None:
    out = subprocess.run(
        [
            sys.executable,
            str(ROOT / "examples/python-host/preprocess.py"),
            guest("EXAMPLE_JSONL"),
            "--isolation",
            isolation,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    assert out.splitlines()[0].startswith("generator rows: yields the rows")
    assert "en: " in out
