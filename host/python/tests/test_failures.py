"""on_failure and max_restarts (design section 15) from Python: a failing
item left out and listed, restarts spent with the count in the error, and
worker processes killed during a pass restarted where they stood, so that
the pass is exactly the undisturbed one; through sandgen.torch with the real
DataLoader as well."""

from __future__ import annotations

import contextlib
import os
import random
import signal
from typing import Any

import pytest
from torch.utils.data import DataLoader

import sandgen
import sandgen.torch
from conftest import guest

SEED = 20261207
BAD = {"n": 30, "fail_at": 11, "message": "bad sample 11"}


def test_skip_leaves_out_the_failing_item_and_lists_it(
    spdl: sandgen.Plugin, isolation: str
) -> None:
    iterable = spdl.iterable("fail_at", BAD, isolation=isolation, on_failure="skip")
    assert list(iterable) == [i for i in range(30) if i != 11]
    assert iterable.failures == [
        {
            "worker": 0,
            "pass": 0,
            "position": 11,
            "skipped": 11,
            "kind": "iteration_failed",
            "action": "skip",
            "message": "iteration failed in generator fail_at: bad sample 11",
        }
    ]
    # The next pass meets it again, and leaves it out again.
    assert list(iterable) == [i for i in range(30) if i != 11]
    assert [f["pass"] for f in iterable.failures] == [0, 1]


def test_restart_spends_max_restarts_and_raises_with_the_count(
    spdl: sandgen.Plugin, isolation: str
) -> None:
    iterable = spdl.iterable(
        "fail_at", BAD, isolation=isolation, on_failure="restart", max_restarts=2
    )
    got = []
    with pytest.raises(sandgen.IterationFailedError) as raised:
        for item in iterable:
            got.append(item)
    assert got == list(range(11))
    assert "the pass failed after 2 restarts" in str(raised.value)
    assert "bad sample 11" in str(raised.value)
    assert [(f["action"], f["position"]) for f in iterable.failures] == [("restart", 11)] * 2
    # Stop, the default, fails at once and lists nothing.
    stopping = spdl.iterable("fail_at", BAD, isolation=isolation)
    with pytest.raises(sandgen.IterationFailedError) as raised:
        list(stopping)
    assert "restart" not in str(raised.value)
    assert stopping.failures == []


@pytest.mark.parametrize(("workers", "in_order"), [(1, True), (3, True), (3, False)])
def test_killed_worker_processes_restart_exactly(
    spdl: sandgen.Plugin, workers: int, in_order: bool
) -> None:
    def make() -> sandgen.Iterable:
        return spdl.iterable(
            "random",
            2000,
            seed=3,
            num_workers=workers,
            in_order=in_order,
            isolation="process",
            buffer_size=64,
            on_failure="restart",
            max_restarts=100,
        )

    whole = list(make())
    rng = random.Random(SEED + workers + in_order)
    # In the first half: every worker is still in its pass.
    kill_at = set(rng.sample(range(1, len(whole) // 2), 5))
    iterable = make()
    got = []
    for index, item in enumerate(iterable):
        got.append(item)
        if index in kill_at:
            # A worker killed a moment ago may be gone and not yet replaced.
            with contextlib.suppress(ProcessLookupError):
                os.kill(rng.choice(iterable.worker_pids), signal.SIGKILL)
    if not in_order:
        got.sort()
        whole.sort()
    assert got == whole
    failures = iterable.failures
    assert 1 <= len(failures) <= 5, failures
    assert all(f["kind"] == "worker_died" and f["action"] == "restart" for f in failures)


def test_bad_options_are_refused_by_name(spdl: sandgen.Plugin) -> None:
    with pytest.raises(sandgen.InvalidInputError, match="unknown on_failure 'retry'"):
        spdl.iterable("range", 3, on_failure="retry")
    with pytest.raises(sandgen.InvalidInputError, match="max_restarts"):
        spdl.iterable("range", 3, max_restarts=-1)
    with pytest.raises(sandgen.InvalidInputError, match="max_restarts"):
        spdl.iterable("range", 3, max_restarts=2**32)


def test_iterate_takes_the_options(cache_dir: str) -> None:
    items = sandgen.iterate(
        guest("FIXTURE_SPDL"), "fail_at", BAD, cache_dir=cache_dir, on_failure="skip"
    )
    assert list(items) == [i for i in range(30) if i != 11]


@pytest.mark.parametrize("loaders", [0, 2])
def test_a_dataloader_epoch_survives_a_bad_sample(cache_dir: str, loaders: int) -> None:
    data = sandgen.torch.dataset(
        guest("FIXTURE_SPDL"), "fail_at", BAD, cache_dir=cache_dir, on_failure="skip"
    )
    kwargs: dict[str, Any] = {"num_workers": loaders, "timeout": 120} if loaders else {}
    seen = [int(x) for x in DataLoader(data, batch_size=None, **kwargs)]
    assert sorted(seen) == [i for i in range(30) if i != 11]
