"""sandgen.ray: generators as Ray Data datasets, on a local Ray cluster that
the tests start (two CPUs, no dashboard)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pyarrow as pa
import pytest
import ray
import ray.data

import sandgen
import sandgen.ray
from conftest import ROOT, guest, limit


@pytest.fixture(scope="module", autouse=True)
def cluster(cache_dir: str):
    # The workers inherit the compile cache of the tests (so a plugin
    # compiles once for all of them) through the environment.
    os.environ["SANDGEN_CACHE_DIR"] = cache_dir
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        configure_logging=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"SANDGEN_CACHE_DIR": cache_dir}},
    )
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True
    context.enable_progress_bars = False
    yield
    ray.shutdown()


def test_exact_items_per_shard_in_order(isolation: str) -> None:
    ds = sandgen.ray.read_generator(
        guest("FIXTURE_SPDL"), "range", shard_args=[3, 5], isolation=isolation
    )
    assert [row["item"] for row in ds.take_all()] == [0, 1, 2, 0, 1, 2, 3, 4]


def test_num_shards_number_the_workers() -> None:
    ds = sandgen.ray.read_generator(guest("FIXTURE_SPDL"), "worker", num_shards=3, seed=4)
    assert [row["item"] for row in ds.take_all()] == [[0, 3, 4], [1, 3, 4], [2, 3, 4]]


def test_object_items_become_columns() -> None:
    ds = sandgen.ray.read_generator(
        guest("EXAMPLE_JSONL"),
        "rows",
        shard_args=[{"path": "/data/reviews.jsonl", "fields": ["id", "stars"]}],
        dirs={str(ROOT / "examples/data"): "/data"},
    )
    assert ds.schema().names == ["id", "stars"]
    rows = ds.take_all()
    assert rows == list(
        sandgen.load(guest("EXAMPLE_JSONL")).iterable(
            "rows",
            {"path": "/data/reviews.jsonl", "fields": ["id", "stars"]},
            dirs={str(ROOT / "examples/data"): "/data"},
        )
    )
    assert [row["id"] for row in rows] == [1, 2, 3, 4, 5]


def test_u64_items_beyond_int64_are_uint64_columns() -> None:
    import pyarrow as pa

    ds = sandgen.ray.read_generator(
        guest("FIXTURE_SPDL"), "random", shard_args=[64], seed=1, encoding="bincode", item_type=int
    )
    items = [row["item"] for row in ds.take_all()]
    expected = list(
        sandgen.load(guest("FIXTURE_SPDL")).iterable(
            "random", 64, seed=1, shard=(0, 1), encoding="bincode", item_type=int
        )
    )
    assert items == expected
    assert max(items) >= 2**63, "a seed whose stream has a u64 beyond int64"
    assert ds.schema().base_schema.field("item").type == pa.uint64()


def test_bytes_items_are_binary_columns() -> None:
    import pyarrow as pa

    ds = sandgen.ray.read_generator(
        guest("FIXTURE_SPDL"),
        "bytes",
        shard_args=[{"n": 3, "size": 5}],
        encoding="bincode",
        item_type=bytes,
    )
    assert ds.schema().base_schema.field("item").type == pa.binary()
    assert [row["item"] for row in ds.take_all()] == [bytes([i]) * 5 for i in range(3)]


def test_options_reach_the_workers(isolation: str) -> None:
    ds = sandgen.ray.read_generator(
        guest("FIXTURE_SPDL"),
        "environment",
        num_shards=1,
        env={"DATASET": "train"},
        isolation=isolation,
        timeout=30.0,
    )
    assert [row["item"] for row in ds.take_all()] == [
        "env DATASET=train",
        "env SANDGEN_WORKER_ID=0",
        "env SANDGEN_NUM_WORKERS=1",
    ]


def test_a_failing_shard_fails_the_dataset_with_the_plugins_words() -> None:
    ok = {"n": 3, "fail_at": 99, "message": "unused"}
    bad = {"n": 3, "fail_at": 1, "message": "boom in the second shard"}
    ds = sandgen.ray.read_generator(guest("FIXTURE_SPDL"), "fail_at", shard_args=[ok, bad])
    with pytest.raises(Exception) as raised:
        ds.take_all()
    text = str(raised.value)
    assert "boom in the second shard" in text
    assert "shard 1 of 2" in text


def test_limits_in_a_shard_say_so() -> None:
    ds = sandgen.ray.read_generator(guest("FIXTURE_SPDL"), "spin", shard_args=[0], timeout=0.3)
    with pytest.raises(Exception, match="timed out"):
        ds.take_all()
    ds = sandgen.ray.read_generator(
        guest("FIXTURE_SPDL"), "allocate", shard_args=[64], memory_limit_mib=16
    )
    with pytest.raises(Exception, match="memory limit of 16 MiB"):
        ds.take_all()


def _lines_in_worker_logs(marker: str) -> int:
    """How many lines of the Ray workers' logs (this session's) hold `marker`."""
    logs = Path(ray._private.worker._global_node.get_session_dir_path()) / "logs"
    return sum(
        line.count(marker)
        for path in logs.glob("worker-*")
        for line in path.read_text(errors="replace").splitlines()
    )


def test_plugin_errors_are_not_retried() -> None:
    # Each attempt of the read task runs the plugin's initializer, which
    # prints the marker on the guest's stderr, into the Ray worker's log: a
    # plugin error must end the task after one attempt, not after Ray's
    # retries (which are for lost workers and nodes).
    marker = f"attempt-of-{uuid.uuid4().hex}"
    bad = {"n": 3, "fail_at": 0, "message": "a deterministic plugin error"}
    ds = sandgen.ray.read_generator(
        guest("FIXTURE_SPDL"), "fail_at", shard_args=[bad], config={"announce": marker}
    )
    with pytest.raises(Exception, match="a deterministic plugin error"):
        ds.take_all()
    # Every attempt ran before the error reached the driver; their lines
    # reach the log files on the workers' own time.
    deadline = time.monotonic() + limit(30)
    while _lines_in_worker_logs(marker) == 0:
        assert time.monotonic() < deadline, "no attempt's line reached the workers' logs"
        time.sleep(0.05)
    assert _lines_in_worker_logs(marker) == 1


def test_the_plugin_travels_with_the_tasks(tmp_path: Path) -> None:
    copy = tmp_path / "copied.wasm"
    shutil.copy(guest("FIXTURE_SPDL"), copy)
    ds = sandgen.ray.read_generator(copy, "range", shard_args=[4, 2])
    copy.unlink()
    assert [row["item"] for row in ds.take_all()] == [0, 1, 2, 3, 0, 1]


@pytest.mark.parametrize(
    ("call", "error", "words"),
    [
        ({"shard_args": [1], "num_shards": 1}, sandgen.InvalidInputError, "exactly one of"),
        ({}, sandgen.InvalidInputError, "exactly one of"),
        ({"shard_args": []}, sandgen.InvalidInputError, "non-empty list"),
        ({"num_shards": 0}, sandgen.InvalidInputError, "num_shards must be at least 1"),
        ({"shard_args": [1], "args": 2}, sandgen.InvalidInputError, "args goes with num_shards"),
        ({"shard_args": [object()]}, sandgen.InvalidInputError, "shard 0 of 1: args is not JSON"),
        ({"num_shards": 1, "isolation": "vm"}, sandgen.InvalidInputError, "unknown isolation"),
        ({"num_shards": 1, "threads": 2}, sandgen.InvalidInputError, "unknown option"),
        (
            {"num_shards": 1, "generator": "nope"},
            sandgen.InvalidInputError,
            "has no generator 'nope'",
        ),
        ({"num_shards": 1, "plugin": "/no/such.wasm"}, sandgen.LoadError, "/no/such.wasm"),
    ],
)
def test_bad_input_fails_on_the_driver(call: dict, error: type, words: str) -> None:
    plugin = call.pop("plugin", guest("FIXTURE_SPDL"))
    generator = call.pop("generator", "range")
    with pytest.raises(error) as raised:
        sandgen.ray.read_generator(plugin, generator, **call)
    assert words in str(raised.value)


def test_importing_sandgen_does_not_import_ray() -> None:
    out = subprocess.run(
        [sys.executable, "-c", "import sandgen, sys; print('ray' in sys.modules)"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert out.strip() == "False"


def test_the_example_runs(tmp_path: Path) -> None:
    # Its own process and its own local Ray, as a newcomer runs it.
    out = subprocess.run(
        [
            sys.executable,
            str(ROOT / "examples/ray/preprocess.py"),
            guest("EXAMPLE_JSONL"),
            "--shards",
            "2",
            "--copies",
            "3",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
        env={**os.environ, "RAY_ADDRESS": ""},
    ).stdout
    assert "30 rows from 2 shards" in out
    assert "{'id': 1, 'lang': 'en', 'stars': 5}" in out


def test_arrays_become_tensor_columns() -> None:
    import numpy as np
    from ray.data.extensions import (
        ArrowTensorType,
        ArrowTensorTypeV2,
        ArrowVariableShapedTensorType,
    )

    args = {"n": 6, "dtype": "float32", "shape": [2, 3]}
    ds = sandgen.ray.read_generator(
        guest("FIXTURE_ARRAYS"),
        "labelled",
        shard_args=[args, dict(args, n=4)],
        encoding="bincode",
        item_type=tuple[np.ndarray, int],
    )
    schema = ds.schema().base_schema
    assert isinstance(schema.field("item_0").type, ArrowTensorType | ArrowTensorTypeV2)
    assert schema.field("item_0").type.shape == (2, 3)
    assert schema.field("item_1").type == pa.int64()
    batches = list(ds.iter_batches(batch_size=None, batch_format="numpy"))
    images = np.concatenate([b["item_0"] for b in batches])
    labels = np.concatenate([b["item_1"] for b in batches]).tolist()
    assert labels == [0, 1, 2, 3, 4, 5, 0, 1, 2, 3]
    assert images.shape == (10, 2, 3) and images.dtype == np.float32
    for image, k in zip(images, labels, strict=True):
        np.testing.assert_array_equal(image.ravel(), k * 1000 + np.arange(6, dtype=np.float32))
    # Arrays of several shapes in one block: a variable-shaped tensor column.
    ragged = sandgen.ray.read_generator(
        guest("FIXTURE_ARRAYS"),
        "ramp",
        shard_args=[dict(args, ragged_at=2)],
        encoding="bincode",
        item_type=np.ndarray,
    )
    assert isinstance(ragged.schema().base_schema.field("item").type, ArrowVariableShapedTensorType)
    shapes = [row["item"].shape for row in ragged.take_all()]
    assert shapes == [(2, 3)] * 2 + [(3, 3)] * 4


def test_batch_size_is_rays_to_set() -> None:
    with pytest.raises(sandgen.InvalidInputError, match="batch_size"):
        sandgen.ray.read_generator(guest("FIXTURE_SPDL"), "range", num_shards=1, batch_size=4)


def _by_shard(rows: list[dict]) -> dict[int, list[int]]:
    shards: dict[int, list[int]] = {}
    for row in rows:
        shards.setdefault(int(row["sandgen_shard"]), []).append(int(row["item"]))
    return shards


def test_a_dataset_stopped_after_any_rows_resumes_with_the_rest() -> None:
    def dataset(resume: list | None = None) -> ray.data.Dataset:
        return sandgen.ray.read_generator(
            guest("FIXTURE_SPDL"),
            "random",
            num_shards=3,
            args=30,
            seed=9,
            positions=True,
            resume=resume,
        )

    whole = _by_shard(dataset().take_all())
    assert sorted(whole) == [0, 1, 2] and all(len(items) == 30 for items in whole.values())
    # Rows used one by one (iter_rows), then in batches (iter_batches).
    for used, batch_size in ((1, None), (41, None), (90, None), (35, 7)):
        positions = sandgen.ray.ShardPositions(num_shards=3)
        taken: list[dict] = []
        if batch_size is None:
            for row in dataset().iter_rows():
                if len(taken) == used:
                    break
                taken.append(row)
                positions.update(row)
        else:
            for batch in dataset().iter_batches(batch_size=batch_size, batch_format="numpy"):
                if len(taken) >= used:
                    break
                taken += [
                    {"sandgen_shard": s, "item": i}
                    for s, i in zip(batch["sandgen_shard"], batch["item"], strict=True)
                ]
                positions.update(batch)
        state = positions.state()
        json.dumps(state)
        # All 90 used: every shard resumes at its end, with no row.
        rest = _by_shard(dataset(state).take_all())
        before = _by_shard(taken)
        for shard in range(3):
            joined = before.get(shard, []) + rest.get(shard, [])
            assert joined == whole[shard], (used, shard)


def test_a_resume_of_another_dataset_is_refused_by_name() -> None:
    def dataset(seed: int, resume: list | None = None) -> ray.data.Dataset:
        return sandgen.ray.read_generator(
            guest("FIXTURE_SPDL"),
            "range",
            num_shards=2,
            args=5,
            seed=seed,
            positions=True,
            resume=resume,
        )

    positions = sandgen.ray.ShardPositions(num_shards=2)
    for row in dataset(1).take(3):
        positions.update(row)
    with pytest.raises(sandgen.InvalidInputError, match="seed 1, this iterable has seed 2"):
        dataset(2, positions.state()).take_all()
    with pytest.raises(sandgen.InvalidInputError, match="one position \\(or None\\) per shard"):
        dataset(1, positions.state()[:1])
    with pytest.raises(sandgen.InvalidInputError, match="resume\\[1\\], shard 1 of 2"):
        dataset(1, [None, {"format": 1}])
    with pytest.raises(sandgen.InvalidInputError, match="positions=True"):
        positions.update({"item": 3})


def test_on_failure_skip_acts_inside_the_read_task() -> None:
    # Shard 1's plugin fails at its item 1: skipped inside the read task, so
    # Ray sees no failure and the other rows all come, in order.
    ok = {"n": 3, "fail_at": 99, "message": "unused"}
    bad = {"n": 4, "fail_at": 1, "message": "a bad sample"}
    ds = sandgen.ray.read_generator(
        guest("FIXTURE_SPDL"), "fail_at", shard_args=[ok, bad], on_failure="skip"
    )
    assert [row["item"] for row in ds.take_all()] == [0, 1, 2, 0, 2, 3]
