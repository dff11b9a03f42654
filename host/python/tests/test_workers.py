"""Several workers per iterable from Python, in both modes."""

from __future__ import annotations

import os
import signal
import time

import pytest

import sandgen
from conftest import limit, process_state


def test_items_come_round_robin_by_worker(spdl: sandgen.Plugin, isolation: str) -> None:
    with spdl.iterable("range", num_workers=3, worker_args=[3, 5, 1], isolation=isolation) as it:
        assert it.num_workers == 3
        expected = [0, 0, 0, 1, 1, 2, 2, 3, 4]
        assert list(it) == expected
        assert list(it) == expected  # workers live across passes
        if isolation == "process":
            assert len(set(it.worker_pids)) == 3


def test_sharded_workers_keep_the_input_order(load, isolation: str) -> None:
    for plugin in ["FIXTURE_SPDL", "FIXTURE_PYTHON"]:
        with load(plugin).iterable("sharded", 100, num_workers=3, isolation=isolation) as it:
            assert list(it) == list(range(100)), plugin


def test_unordered_gives_every_item(spdl: sandgen.Plugin, isolation: str) -> None:
    with spdl.iterable(
        "sharded",
        10_000,
        num_workers=2,
        in_order=False,
        isolation=isolation,
        encoding="bincode",
        item_type=int,
    ) as it:
        assert sorted(it) == list(range(10_000))


def test_workers_see_their_info(load, isolation: str) -> None:
    with load("FIXTURE_PYTHON").iterable(
        "worker", num_workers=2, seed=5, isolation=isolation
    ) as it:
        assert list(it) == [[0, 2, 5], [1, 2, 5]]
    with load("FIXTURE_SPDL").iterable("worker", num_workers=2, isolation=isolation) as it:
        assert list(it) == [[0, 2, None], [1, 2, None]]


def test_a_seed_gives_the_same_stream_in_both_modes(load) -> None:
    def run(seed: int, isolation: str) -> list[str]:
        with load("FIXTURE_PYTHON").iterable(
            "entropy", 4, num_workers=2, seed=seed, isolation=isolation
        ) as it:
            return list(it)

    first = run(2**64 - 1, "thread")
    assert len(set(first)) == 8
    assert run(2**64 - 1, "process") == first
    assert run(0, "thread") != first


def test_a_failure_names_its_worker(spdl: sandgen.Plugin, isolation: str) -> None:
    args = [{"n": 5, "fail_at": 99, "message": "x"}, {"n": 5, "fail_at": 1, "message": "boom"}]
    it = spdl.iterable("fail_at", num_workers=2, worker_args=args, isolation=isolation)
    items = []
    with pytest.raises(sandgen.IterationFailedError, match="worker 1 of 2") as failed:
        for item in it:
            items.append(item)
    assert items == [0, 0, 1]
    assert failed.value.plugin_message == "boom"


def test_leaving_a_pass_early_lets_the_next_start_afresh(
    spdl: sandgen.Plugin, isolation: str
) -> None:
    # Far more items than a worker may run ahead (8): each worker is busy
    # with the pass when it is left, and the next pass starts from every
    # worker's first item.
    with spdl.iterable("range", 10_000, num_workers=2, buffer_size=8, isolation=isolation) as it:
        for _ in range(3):
            first = []
            for i, item in enumerate(it):
                first.append(item)
                if i == 4:
                    break
            assert first == [0, 0, 1, 1, 2]
        assert sum(1 for _ in it) == 20_000


def test_a_silent_worker_times_out(spdl: sandgen.Plugin, isolation: str) -> None:
    it = spdl.iterable(
        "spin", num_workers=2, worker_args=[10**9, 0], timeout=0.3, isolation=isolation
    )
    started = time.monotonic()
    with pytest.raises(sandgen.TimeoutError, match="worker 1 of 2"):
        list(it)
    assert time.monotonic() - started < limit(20)


def test_closing_ends_every_worker_process(spdl: sandgen.Plugin) -> None:
    it = spdl.iterable("spin", 0, num_workers=3, isolation="process")
    pids = it.worker_pids
    assert len(pids) == 3
    it.close()
    for pid in pids:
        assert process_state(pid) is None


def test_a_killed_worker_is_named(spdl: sandgen.Plugin) -> None:
    it = spdl.iterable("sleep", {"ms": 20, "n": 10_000}, num_workers=2, isolation="process")
    pass_ = iter(it)
    assert next(pass_) == 0
    os.kill(it.worker_pids[1], signal.SIGKILL)
    with pytest.raises(sandgen.WorkerDiedError, match="worker 1 of 2"):
        list(pass_)


def test_a_slow_consumer_is_not_a_timeout(spdl: sandgen.Plugin, isolation: str) -> None:
    # The inactivity timeout counts the time spent waiting for the workers,
    # not the time the caller spends on each item.
    with spdl.iterable("range", 4, timeout=0.2, buffer_size=1, isolation=isolation) as it:
        seen = []
        for item in it:
            seen.append(item)
            time.sleep(0.4)
        assert seen == [0, 1, 2, 3]


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"num_workers": 0}, "num_workers must be at least 1"),
        ({"num_workers": 1000}, "num_workers must be at most 256"),
        ({"num_workers": "2"}, "num_workers must be an int"),
        ({"in_order": 1}, "in_order must be a bool"),
        ({"seed": 2**64}, "it must fit 64 bits"),
        ({"seed": -1}, "it must fit 64 bits"),
        ({"seed": 1.5}, "seed must be an int"),
        ({"num_workers": 2, "worker_args": [1]}, "worker_args has 1 values for 2 worker(s)"),
        ({"worker_args": 3}, "worker_args must be a list"),
        ({"num_workers": 1, "worker_args": [1], "args": 3}, "either args"),
        ({"num_workers": 2, "worker_args": [1, object()]}, "worker_args[1] is not JSON"),
        ({"env": {"SANDGEN_SEED": "1"}}, "SANDGEN_SEED is set by sandgen"),
        ({"sharding": "rows"}, "unknown sharding 'rows': use 'plugin' or 'items'"),
        ({"sharding": "items", "shard": (0, 2)}, "sharding by items over 2 shards needs a seed"),
        (
            {"sharding": "items", "num_workers": 2, "worker_args": [1, 2]},
            "sharding by items runs every worker on the same stream",
        ),
    ],
)
def test_bad_worker_options(spdl: sandgen.Plugin, options: dict, words: str) -> None:
    call = {"args": None} | options
    args = call.pop("args")
    with pytest.raises(sandgen.InvalidInputError) as raised:
        spdl.iterable("range", args, **call)
    assert words in str(raised.value)


def test_unordered_with_one_worker_is_fine(spdl: sandgen.Plugin) -> None:
    assert list(spdl.iterable("range", 3, in_order=False)) == [0, 1, 2]


def test_sharding_by_items_gives_each_item_once(load, isolation: str, cache_dir: str) -> None:
    # The `count` and `range` generators ignore their worker index: by
    # plugin, every worker yields the whole stream; by items, each item
    # comes once, in order, every pass.
    for plugin, generator in [("FIXTURE_SPDL", "range"), ("FIXTURE_PYTHON", "count")]:
        with load(plugin).iterable(
            generator, 100, num_workers=3, sharding="items", isolation=isolation, timeout=60
        ) as it:
            assert list(it) == list(range(100)), plugin
            assert list(it) == list(range(100)), plugin
        with load(plugin).iterable(
            generator, 10, num_workers=3, isolation=isolation, timeout=60
        ) as it:
            assert sorted(it) == sorted(list(range(10)) * 3), plugin
    items = sandgen.iterate(
        load("FIXTURE_SPDL").path,
        "range",
        10,
        cache_dir=cache_dir,
        num_workers=2,
        sharding="items",
        in_order=False,
    )
    assert sorted(items) == list(range(10))
