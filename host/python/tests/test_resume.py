"""Iterable.state_dict() and load_state_dict() (design section 14): for random
cut points, the items before the cut and those after resuming equal the
uninterrupted run, item for item (in order) or as a multiset (unordered),
across passes, with workers, batches and plugins in every language; bad
states and misuse are refused by name and lose nothing."""

from __future__ import annotations

import itertools
import json
import random
from typing import Any

import numpy
import pytest

import sandgen

SEED = 20261207


def plain(value: Any) -> Any:
    """Items as comparable Python values (stacked batches as lists)."""
    if isinstance(value, numpy.ndarray):
        return value.tolist()
    return value


def run(iterable: sandgen.Iterable, passes: int) -> list[list[Any]]:
    """`passes` whole passes of `iterable`."""
    return [[plain(item) for item in iterable] for _ in range(passes)]


def cut(iterable: sandgen.Iterable, at: int) -> tuple[list[Any], dict[str, Any]]:
    """The first `at` items of a pass, then the state there (the pass still
    live: the rest of its batch is held, unused)."""
    items = iter(iterable)
    taken = [plain(item) for item in itertools.islice(items, at)]
    state = iterable.state_dict()
    del items
    return taken, state


def same(expected: list[Any], got: list[Any], in_order: bool) -> None:
    if in_order:
        assert got == expected
    else:
        assert sorted(map(json.dumps, got)) == sorted(map(json.dumps, expected))


# (generator of the fixture, its arguments, options): seeded streams, with
# state across passes (`shuffle`), in order and not, by plugin and by items.
RUNS = [
    ("FIXTURE_SPDL", "random", 120, {"seed": 7}),
    ("FIXTURE_SPDL", "random", 120, {"seed": 7, "num_workers": 3}),
    ("FIXTURE_SPDL", "random", 120, {"seed": 7, "num_workers": 3, "in_order": False}),
    ("FIXTURE_SPDL", "random", 120, {"seed": 7, "num_workers": 2, "sharding": "items"}),
    ("FIXTURE_SPDL", "shuffle", 50, {"num_workers": 2}),
    ("FIXTURE_SPDL", "random", 120, {"seed": 7, "num_workers": 2, "batch_size": 7}),
    ("FIXTURE_SPDL", "random", 120, {"seed": 7, "batch_size": 16, "drop_last": True}),
    ("FIXTURE_PYTHON", "entropy", 40, {"seed": 3, "num_workers": 2}),
    ("FIXTURE_JS", "entropy", 40, {"seed": 3}),
]


@pytest.mark.parametrize(("name", "generator", "n", "options"), RUNS)
def test_random_cuts_resume_exactly(
    load: Any, isolation: str, name: str, generator: str, n: int, options: dict[str, Any]
) -> None:
    plugin = load(name)
    options = dict(options, isolation=isolation)
    if "batch_size" in options:
        # Batches stacked into one integer array each.
        options["item_type"] = int
    in_order = options.get("in_order", True)
    with plugin.iterable(generator, n, **options) as whole:
        expected = run(whole, 3)
    length = len(expected[0])
    chooser = random.Random(f"{SEED} {name} {generator} {options}")
    # The first and last item, past the end, and random points between.
    cuts = [0, 1, length - 1, length, *chooser.sample(range(2, length - 1), 3)]
    for at in cuts:
        with plugin.iterable(generator, n, **options) as first:
            run(first, 1)
            before, state = cut(first, at)
        assert state["pass"] == 1
        json.dumps(state)
        with plugin.iterable(generator, n, **options) as again:
            again.load_state_dict(state)
            after = run(again, 2)
        same(expected[1], before + after[0], in_order)
        same(expected[2], after[1], in_order)


def take(iterable: sandgen.Iterable, count: int) -> tuple[list[Any], dict[str, Any]]:
    """`count` items, across passes, then the state there."""
    got: list[Any] = []
    while True:
        items = iter(iterable)
        got += itertools.islice(items, count - len(got))
        if len(got) == count:
            return got, iterable.state_dict()
        # The pass ended: the next `iter()` is the next pass.


def test_a_resumed_run_resumes_again(spdl: sandgen.Plugin, isolation: str) -> None:
    # Two workers of 30 items each: 60 items a pass.
    options = {"seed": 11, "num_workers": 2, "isolation": isolation}
    with spdl.iterable("random", 30, **options) as whole:
        expected = run(whole, 3)
    got: list[Any] = []
    state = None
    # Stop and resume five times; the fourth stop is in pass 1.
    for count in (7, 13, 25, 20, 9):
        with spdl.iterable("random", 30, **options) as part:
            if state is not None:
                part.load_state_dict(state)
            taken, state = take(part, count)
            got += taken
    assert state is not None and state["pass"] == 1
    with spdl.iterable("random", 30, **options) as rest:
        rest.load_state_dict(state)
        taken, _ = take(rest, 180 - len(got))
        got += taken
    assert got == expected[0] + expected[1] + expected[2]


def test_load_state_dict_moves_an_iterable_back(spdl: sandgen.Plugin) -> None:
    with spdl.iterable("shuffle", 10) as iterable:
        first = run(iterable, 1)[0]
        state = iterable.state_dict()
        assert (state["pass"], state["delivered"]) == (1, [0])
        second = run(iterable, 2)
        # Back to pass 1: its workers start afresh and run pass 0 unsent.
        iterable.load_state_dict(state)
        assert run(iterable, 2) == second
        assert first == [(i + 1) % 10 for i in range(10)]


def test_state_at_the_end_of_a_pass_and_between_passes(spdl: sandgen.Plugin) -> None:
    with spdl.iterable("shuffle", 5) as iterable:
        items = iter(iterable)
        assert [next(items) for _ in range(5)] == [1, 2, 3, 4, 0]
        # Every item taken, the pass not yet seen to end.
        at_end = iterable.state_dict()
        assert (at_end["pass"], at_end["delivered"]) == (0, [5])
        assert list(items) == []
        between = iterable.state_dict()
        assert (between["pass"], between["delivered"]) == (1, [0])
    with spdl.iterable("shuffle", 5) as iterable:
        iterable.load_state_dict(at_end)
        # The rest of pass 0 is empty; pass 1 follows.
        assert run(iterable, 2) == [[], [2, 3, 4, 0, 1]]


def test_items_read_ahead_are_given_again(spdl: sandgen.Plugin) -> None:
    # The pass reads whole worker batches ahead of the loop: the state counts
    # only the items the loop took.
    with spdl.iterable("range", 1000, buffer_size=256) as iterable:
        items = iter(iterable)
        # Worker batches grow from one item (1, 2, 4, ...): the fifth item
        # comes in the third, with two more.
        assert [next(items) for _ in range(5)] == [0, 1, 2, 3, 4]
        # The pass has more in hand than the loop took (else this tests nothing).
        assert json.loads(iterable._native.position())["delivered"][0] > 5
        state = iterable.state_dict()
        assert state["delivered"] == [5]
        del items
    with spdl.iterable("range", 1000, buffer_size=256) as again:
        again.load_state_dict(state)
        assert list(again) == list(range(5, 1000))
    # Stacked, the items waiting for their batch to fill are not counted.
    options = {"batch_size": 4, "item_type": int, "num_workers": 2, "seed": 1}
    with spdl.iterable("random", 30, **options) as whole:
        expected = run(whole, 1)[0]
    with spdl.iterable("random", 30, **options) as iterable:
        items = iter(iterable)
        taken = [plain(next(items)) for _ in range(3)]
        state = iterable.state_dict()
        assert sum(state["delivered"]) == 12
        del items
    with spdl.iterable("random", 30, **options) as again:
        again.load_state_dict(state)
        assert taken + run(again, 1)[0] == expected


def test_after_a_failed_pass_the_state_is_where_it_failed(load: Any) -> None:
    plugin = load("FIXTURE_PYTHON")
    # Item 2 of `kinds` is 1.5, not an i64: the pass fails there.
    with plugin.iterable("kinds", item_type=sandgen.i64) as iterable:
        items = iter(iterable)
        assert [next(items), next(items)] == [7, -3]
        with pytest.raises(sandgen.DecodeError, match="item 2"):
            next(items)
        state = iterable.state_dict()
        assert (state["pass"], state["delivered"]) == (0, [2])
    # Read as JSON, the rest of the pass is there from the failed item on.
    with plugin.iterable("kinds") as iterable:
        iterable.load_state_dict(state)
        assert list(iterable)[:2] == [1.5, "hé"]


def test_load_state_dict_during_a_live_pass_is_refused(spdl: sandgen.Plugin) -> None:
    with spdl.iterable("range", 10) as iterable:
        items = iter(iterable)
        assert next(items) == 0
        state = iterable.state_dict()
        with pytest.raises(sandgen.BusyError, match="while one of its passes is live"):
            iterable.load_state_dict(state)
        # Nothing lost: the pass goes on.
        assert list(items) == list(range(1, 10))
        iterable.load_state_dict(state)
        assert list(iterable) == list(range(1, 10))
    with pytest.raises(sandgen.ClosedError, match="it is closed"):
        iterable.load_state_dict(state)


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"args": 11}, "other args"),
        ({"seed": 2}, "seed 1, this iterable has seed 2"),
        ({"num_workers": 3}, "workers: 2, this iterable has 3"),
        ({"in_order": False}, "items in order, this iterable has unordered"),
        ({"generator": "shuffle"}, 'generator "range", this iterable has "shuffle"'),
    ],
)
def test_a_state_of_another_run_is_refused_by_name(
    spdl: sandgen.Plugin, change: dict[str, Any], words: str
) -> None:
    base = {"generator": "range", "args": 10, "seed": 1, "num_workers": 2}
    with spdl.iterable(base["generator"], base["args"], seed=1, num_workers=2) as iterable:
        _, state = cut(iterable, 3)
    other = dict(base, **change)
    generator, args = other.pop("generator"), other.pop("args")
    with spdl.iterable(generator, args, **other) as iterable:
        expected = run(iterable, 1)
        with pytest.raises(sandgen.InvalidInputError, match=words) as error:
            iterable.load_state_dict(state)
        assert error.value.kind == "invalid_input"
        # The iterable is as it was: its next pass follows.
        assert sorted(run(iterable, 1)[0]) == sorted(expected[0])


def test_a_damaged_state_is_refused(spdl: sandgen.Plugin) -> None:
    with spdl.iterable("range", 10) as iterable:
        _, state = cut(iterable, 4)
        edited = dict(state, delivered=[2])
        with pytest.raises(sandgen.InvalidInputError, match="checksum does not match"):
            iterable.load_state_dict(edited)
        newer = dict(state, format=99)
        with pytest.raises(sandgen.InvalidInputError, match="newer sandgen"):
            iterable.load_state_dict(newer)
        with pytest.raises(sandgen.InvalidInputError, match="must be a dict"):
            iterable.load_state_dict("state")  # type: ignore[arg-type]
        with pytest.raises(sandgen.InvalidInputError, match="not JSON data"):
            iterable.load_state_dict({"pass": object()})
        # Still whole, and still able to resume.
        assert list(iterable) == list(range(10))
        iterable.load_state_dict(state)
        assert list(iterable) == list(range(4, 10))


def test_items_stacked_when_a_pass_fails_are_not_delivered(
    spdl: sandgen.Plugin, isolation: str
) -> None:
    # Items 0..9, then the plugin fails: two whole batches, two items stacked.
    args = {"n": 100, "fail_at": 10, "message": "bad sample 10"}
    options = {"isolation": isolation, "batch_size": 4, "item_type": int}
    with spdl.iterable("fail_at", args, **options) as iterable:
        items = iter(iterable)
        taken = [plain(next(items)), plain(next(items))]
        with pytest.raises(sandgen.IterationFailedError, match="bad sample 10"):
            next(items)
        state = iterable.state_dict()
        # The pass handed over ten items; the two stacked were never delivered.
        assert json.loads(iterable._native.position())["delivered"] == [8]
        assert (state["pass"], state["delivered"]) == (0, [8])
    assert taken == [[0, 1, 2, 3], [4, 5, 6, 7]]
    # Resumed, the rest of the pass meets the failure again.
    with spdl.iterable("fail_at", args, **options) as again:
        again.load_state_dict(state)
        with pytest.raises(sandgen.IterationFailedError, match="bad sample 10"):
            list(again)
