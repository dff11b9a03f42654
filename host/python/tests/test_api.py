"""The Python API: load, generators, iterables, passes, encodings."""

from __future__ import annotations

import dataclasses

import pytest

import sandgen
from conftest import ROOT, guest

# The `count` generator of each SDK's fixture (Rust: `range`).
SDKS = [("FIXTURE_SPDL", "range"), ("FIXTURE_PYTHON", "count"), ("FIXTURE_JS", "count")]


def test_generators_are_listed_in_the_plugins_order(spdl: sandgen.Plugin) -> None:
    generators = spdl.generators()
    assert generators[0] == ("range", "yields 0..n on every pass, from the argument n")
    assert [name for name, _ in generators][:4] == [
        "range",
        "fail_at",
        "iter_fails",
        "create_fails",
    ]
    assert spdl.name == "fixture_spdl"
    assert spdl.path == guest("FIXTURE_SPDL")


@pytest.mark.parametrize(("plugin", "generator"), SDKS)
def test_every_sdk_iterates_in_both_modes(
    load, isolation: str, plugin: str, generator: str
) -> None:
    with load(plugin).iterable(generator, args=5, isolation=isolation) as it:
        assert list(it) == [0, 1, 2, 3, 4]
        assert it.isolation == isolation
        assert (it.worker_pid is None) == (isolation == "thread")


def test_an_iterable_is_re_iterable_and_keeps_its_state(
    spdl: sandgen.Plugin, isolation: str
) -> None:
    with spdl.iterable("shuffle", args=4, isolation=isolation) as it:
        assert list(it) == [1, 2, 3, 0]
        assert list(it) == [2, 3, 0, 1]
        assert list(it) == [3, 0, 1, 2]


def test_config_reaches_the_initializer_once(spdl: sandgen.Plugin, isolation: str) -> None:
    with spdl.iterable("config_echo", config={"announce": "hi"}, isolation=isolation) as it:
        assert list(it) == [[1, "hi"]]
        assert list(it) == [[1, "hi"]]


def test_json_items_are_python_objects(load, isolation: str) -> None:
    expected = [7, -3, 1.5, "hé", True, None, [1, 2, 3], {"a": 1}, [300, "x"]]
    for plugin in ["FIXTURE_KINDS", "FIXTURE_PYTHON", "FIXTURE_JS"]:
        with load(plugin).iterable("kinds", isolation=isolation) as it:
            items = list(it)
        # JavaScript's ninth item is a BigInt, not a pair.
        count = 8 if plugin == "FIXTURE_JS" else 9
        assert items[:count] == expected[:count], plugin
        assert [type(i) for i in items[:count]] == [type(e) for e in expected[:count]], plugin


def test_json_objects_keep_their_key_order(load, isolation: str) -> None:
    config = {"zeta": 1, "alpha": {"y": 2, "b": 3}}
    with load("FIXTURE_PYTHON").iterable("echo_config", config=config, isolation=isolation) as it:
        (echoed,) = list(it)
    assert echoed == config
    assert list(echoed) == ["zeta", "alpha"]
    assert list(echoed["alpha"]) == ["y", "b"]


def test_bincode_items_are_raw_bytes_without_item_type(
    spdl: sandgen.Plugin, isolation: str
) -> None:
    items = list(spdl.iterable("range", args=3, encoding="bincode", isolation=isolation))
    assert items == [b"\x00", b"\x01", b"\x02"]


def test_bincode_items_decode_by_item_type(spdl: sandgen.Plugin, isolation: str) -> None:
    it = spdl.iterable("range", args=300, encoding="bincode", item_type=int, isolation=isolation)
    assert list(it) == list(range(300))
    it = spdl.iterable(
        "bytes",
        args={"n": 3, "size": 70_000},
        encoding="bincode",
        item_type=bytes,
        isolation=isolation,
    )
    assert list(it) == [bytes([i]) * 70_000 for i in range(3)]
    it = spdl.iterable(
        "config_echo",
        config={"announce": "x"},
        encoding="bincode",
        item_type=tuple[int, str | None],
        isolation=isolation,
    )
    assert list(it) == [(1, "x")]


@dataclasses.dataclass
class Echo:
    calls: int
    announce: str | None


def test_a_dataclass_decodes_like_a_rust_struct(spdl: sandgen.Plugin, isolation: str) -> None:
    it = spdl.iterable("config_echo", encoding="bincode", item_type=Echo, isolation=isolation)
    assert list(it) == [Echo(1, None)]


def test_nested_item_types(load) -> None:
    tokenize = load("EXAMPLE_TOKENIZE")
    args = {"text": "a b c d e f", "window": 2}
    typed = list(tokenize.iterable("windows", args=args, encoding="bincode", item_type=list[int]))
    assert typed == list(tokenize.iterable("windows", args=args))
    assert typed and all(len(w) == 2 for w in typed)
    jsonl = load("EXAMPLE_JSONL")
    options = {
        "args": {"path": "/data/reviews.jsonl", "fields": ["id", "stars"]},
        "dirs": {str(ROOT / "examples/data"): "/data"},
    }
    typed = list(jsonl.iterable("rows", encoding="bincode", item_type=dict[str, int], **options))
    assert typed == list(jsonl.iterable("rows", **options))


def test_args_in_bincode_are_bincode_of_their_json(load) -> None:
    python = load("FIXTURE_PYTHON")
    args = {"n": 3, "name": "héllo", "ratio": 0.5, "flags": [True, False], "opts": {"b": 2, "a": 1}}
    for encoding in ["json", "bincode"]:
        it = python.iterable(
            "typed", args, encoding=encoding, item_type=str if encoding == "bincode" else None
        )
        assert list(it) == ["3|héllo|0.5|[True, False]|[('a', 1), ('b', 2)]"], encoding


def test_with_closes_the_worker(spdl: sandgen.Plugin, isolation: str) -> None:
    with spdl.iterable("range", args=3, isolation=isolation) as it:
        assert list(it) == [0, 1, 2]
    assert it.closed
    with pytest.raises(sandgen.ClosedError, match="was closed"):
        iter(it)
    it.close()  # closing twice is fine


def test_iterate_is_one_pass_then_closed(isolation: str, cache_dir: str) -> None:
    items = sandgen.iterate(
        guest("FIXTURE_SPDL"), "range", args=4, isolation=isolation, cache_dir=cache_dir
    )
    assert list(items) == [0, 1, 2, 3]
    # Bad options raise at the call, before any item is asked for.
    with pytest.raises(sandgen.InvalidInputError):
        sandgen.iterate(guest("FIXTURE_SPDL"), "range", args=4, isolation="vm")


def test_leaving_a_pass_early_lets_the_next_start_at_once(
    spdl: sandgen.Plugin, isolation: str
) -> None:
    # Far more items than the worker may run ahead (4): it is busy with the
    # pass when it is left.
    with spdl.iterable("range", args=10_000, buffer_size=4, isolation=isolation) as it:
        for item in it:
            if item == 10:
                break
        assert list(zip(range(3), it, strict=False)) == [(0, 0), (1, 1), (2, 2)]
        assert sum(1 for _ in it) == 10_000


def test_a_second_live_pass_is_busy(spdl: sandgen.Plugin, isolation: str) -> None:
    with spdl.iterable("range", args=10, isolation=isolation) as it:
        first = iter(it)
        assert next(first) == 0
        with pytest.raises(sandgen.BusyError, match="already in progress") as busy:
            iter(it)
        assert busy.value.kind == "busy"
        assert list(first) == list(range(1, 10))
        del first
        assert list(it) == list(range(10))


def test_the_package_is_typed() -> None:
    from pathlib import Path

    package = Path(sandgen.__file__).parent
    assert (package / "py.typed").exists()
    assert (package / "_native.pyi").exists()


def test_jsonable_args_round_trip(spdl: sandgen.Plugin) -> None:
    message = 'ünïcode "quoted" \\ and\nnewline'
    with pytest.raises(sandgen.CreateFailedError) as failed:
        spdl.iterable("create_fails", args=message)
    assert failed.value.plugin_message == message


def test_one_version_for_the_crates_and_the_package() -> None:
    import importlib.metadata
    import tomllib

    workspace = tomllib.loads((ROOT / "Cargo.toml").read_text())
    version = workspace["workspace"]["package"]["version"]
    assert sandgen.__version__ == version
    assert importlib.metadata.version("sandgen") == version


def test_every_option_of_plugin_iterable_reaches_the_native_options() -> None:
    # One list of options: the signature of `Plugin.iterable`. Each keyword
    # option must become a field of the options object the extension reads
    # (a keyword added to the signature alone would be silently ignored).
    from sandgen import _ITERABLE_DEFAULTS, _IterableOptions  # type: ignore[attr-defined]

    renamed = {
        "memory_limit_mib": {"memory_limit"},
        "max_item_mib": {"max_item_bytes"},
        "item_type": {"item_shape", "item_type_name"},
    }
    expected = {"generator", "args"}
    for name in _ITERABLE_DEFAULTS:
        expected |= renamed.get(name, {name})
    assert {field.name for field in dataclasses.fields(_IterableOptions)} == expected
    assert "memory_limit_mib" in _ITERABLE_DEFAULTS and "num_workers" in _ITERABLE_DEFAULTS


def test_the_module_lists_its_public_names_only() -> None:
    names = dir(sandgen)
    assert set(sandgen.__all__) <= set(names)
    assert "__version__" in names and "Sharding" in names
    for private in ("os", "json", "Any", "itertools", "dataclasses", "_native"):
        assert private not in names
    assert all(hasattr(sandgen, name) for name in names)
