"""Every error kind a Python user can meet, in both isolation modes where a
worker is involved: the right class, `.kind`, and the library's words."""

from __future__ import annotations

import builtins
import os
import pickle
import re
import signal
import time
from pathlib import Path

import pytest

import sandgen
from conftest import guest, limit, process_state


def first_error(iterable: sandgen.Iterable) -> sandgen.Error:
    with pytest.raises(sandgen.Error) as raised:
        for _ in iterable:
            pass
    return raised.value


def test_missing_and_corrupt_plugins_are_load_errors(tmp_path: Path) -> None:
    with pytest.raises(sandgen.LoadError, match=r"nope\.wasm") as missing:
        sandgen.load(tmp_path / "nope.wasm")
    assert missing.value.kind == "load"
    corrupt = tmp_path / "corrupt.wasm"
    corrupt.write_bytes(b"\0asm\x0d\x00\x01\x00garbage")
    with pytest.raises(sandgen.LoadError, match=r"corrupt\.wasm"):
        sandgen.load(corrupt)


def test_a_compile_past_the_load_limits_is_a_load_limit_error(tmp_path: Path) -> None:
    # A fresh cache: the Python fixture (19 MB) must compile, which takes
    # seconds; a tenth of a second is not enough.
    with pytest.raises(sandgen.LoadLimitError, match=r"load_timeout|load timeout") as raised:
        sandgen.load(guest("FIXTURE_PYTHON"), cache_dir=tmp_path, load_timeout=0.1)
    assert raised.value.kind == "load_limit"
    assert isinstance(raised.value, sandgen.LoadError)


def test_a_component_of_another_world_is_incompatible(load) -> None:
    with pytest.raises(sandgen.IncompatibleError) as raised:
        load("FIXTURE_WRONG_WORLD")
    assert raised.value.kind == "incompatible"


def test_plugin_errors_keep_the_plugins_words(spdl: sandgen.Plugin, isolation: str) -> None:
    with pytest.raises(sandgen.CreateFailedError) as created:
        spdl.iterable("create_fails", args="no such file", isolation=isolation)
    assert created.value.kind == "create_failed"
    assert created.value.plugin_message == "no such file"
    assert "no such file" in str(created.value)

    with pytest.raises(sandgen.InitializerFailedError) as initialized:
        spdl.iterable("range", args=1, config={"fail": "bad config"}, isolation=isolation)
    assert initialized.value.plugin_message == "bad config"

    it = spdl.iterable(
        "fail_at", args={"n": 5, "fail_at": 2, "message": "boom at 2"}, isolation=isolation
    )
    items = []
    with pytest.raises(sandgen.IterationFailedError) as failed:
        for item in it:
            items.append(item)
    assert items == [0, 1]
    assert failed.value.plugin_message == "boom at 2"
    # The worker is gone after an error: the next pass is closed.
    with pytest.raises(sandgen.ClosedError, match="earlier error"):
        iter(it)


def test_an_unknown_generator_fails_to_create(spdl: sandgen.Plugin) -> None:
    with pytest.raises(sandgen.CreateFailedError, match="nope"):
        spdl.iterable("nope")


def test_a_trap_keeps_the_guests_stderr_and_backtrace(spdl: sandgen.Plugin, isolation: str) -> None:
    error = first_error(
        spdl.iterable("panic_at", args={"at": 1, "message": "kaboom 42"}, isolation=isolation)
    )
    assert isinstance(error, sandgen.TrapError)
    assert error.kind == "trap"
    assert "kaboom 42" in str(error)
    assert error.guest_stderr is not None and "kaboom 42" in error.guest_stderr
    assert error.backtrace


def test_stack_overflow(spdl: sandgen.Plugin, isolation: str) -> None:
    error = first_error(spdl.iterable("recurse", isolation=isolation))
    assert isinstance(error, sandgen.StackOverflowError | sandgen.TrapError)
    assert error.kind in ("stack_overflow", "trap")
    assert "stack" in str(error)


def test_memory_limit(spdl: sandgen.Plugin, isolation: str) -> None:
    error = first_error(
        spdl.iterable("allocate", args=64, memory_limit_mib=16, isolation=isolation)
    )
    assert isinstance(error, sandgen.MemoryLimitError)
    assert "memory limit of 16 MiB" in str(error)
    # Within the cap, the same allocation works.
    assert list(spdl.iterable("allocate", args=8, memory_limit_mib=64, isolation=isolation)) == [
        8 << 20
    ]


def test_fuel(spdl: sandgen.Plugin, isolation: str) -> None:
    error = first_error(spdl.iterable("spin", args=0, fuel=1_000_000, isolation=isolation))
    assert isinstance(error, sandgen.FuelExhaustedError)
    assert error.kind == "fuel_exhausted"


def test_timeout_is_also_the_builtin_timeout_error(spdl: sandgen.Plugin, isolation: str) -> None:
    it = spdl.iterable("spin", args=0, timeout=0.3, isolation=isolation)
    started = time.monotonic()
    items = []
    with pytest.raises(builtins.TimeoutError) as raised:
        for item in it:
            items.append(item)
    assert time.monotonic() - started < limit(10)
    assert items == []
    assert isinstance(raised.value, sandgen.TimeoutError)
    assert raised.value.kind == "timeout"
    assert "timed out" in str(raised.value)


def test_a_killed_worker_process_is_reported(spdl: sandgen.Plugin) -> None:
    it = spdl.iterable("sleep", args={"ms": 50, "n": 1000}, isolation="process")
    pass_ = iter(it)
    assert next(pass_) == 0
    pid = it.worker_pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(sandgen.WorkerDiedError) as died:
        for _ in pass_:
            pass
    assert died.value.kind == "worker_died"
    assert "SIGKILL" in str(died.value) or "signal 9" in str(died.value)


def test_a_broken_frame_is_a_protocol_error(load, isolation: str) -> None:
    error = first_error(load("FIXTURE_RAW").iterable("overrun", isolation=isolation))
    assert isinstance(error, sandgen.ProtocolError)
    assert error.kind == "protocol"


def test_an_item_over_max_item_mib_is_a_protocol_error(
    spdl: sandgen.Plugin, isolation: str
) -> None:
    def sizes(size: int) -> list[int]:
        options = {"encoding": "bincode", "item_type": bytes, "max_item_mib": 1}
        args = {"n": 2, "size": size}
        with spdl.iterable("bytes", args, isolation=isolation, **options) as it:
            return [len(item) for item in it]

    # An item's encoding is its bytes and their length.
    assert sizes(1 << 19) == [1 << 19] * 2
    with pytest.raises(
        sandgen.ProtocolError,
        match=re.escape("more than the largest item allowed (1048576 bytes)"),
    ):
        sizes(1 << 20)


def test_an_undecodable_item_names_its_index(spdl: sandgen.Plugin, isolation: str) -> None:
    # Item 0 (byte 0) reads as the empty string; item 1 claims one byte more.
    it = spdl.iterable("range", args=5, encoding="bincode", item_type=str, isolation=isolation)
    items = []
    with pytest.raises(sandgen.DecodeError, match="item 1 of generator range as item_type str"):
        for item in it:
            items.append(item)
    assert items == [""]
    it = spdl.iterable("range", args=1000, encoding="bincode", item_type=bool, isolation=isolation)
    with pytest.raises(sandgen.DecodeError, match="item 2 of generator range"):
        list(it)


def test_json_that_is_not_json_is_a_decode_error(load, isolation: str) -> None:
    error = first_error(load("FIXTURE_RAW").iterable("not_json", isolation=isolation))
    assert isinstance(error, sandgen.DecodeError)
    assert "item 0" in str(error)


def test_a_closed_iterable_ends_its_live_pass(spdl: sandgen.Plugin, isolation: str) -> None:
    it = spdl.iterable("sleep", args={"ms": 20, "n": 1000}, isolation=isolation)
    pass_ = iter(it)
    assert next(pass_) == 0
    pid = it.worker_pid
    it.close()
    with pytest.raises(sandgen.ClosedError, match="was closed"):
        for _ in pass_:
            pass
    if pid is not None:
        assert process_state(pid) is None


def test_errors_pickle_with_their_fields(spdl: sandgen.Plugin) -> None:
    error = first_error(spdl.iterable("panic_at", args={"at": 0, "message": "kaboom"}))
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error)
    assert (copy.kind, str(copy), copy.guest_stderr, copy.backtrace) == (
        error.kind,
        str(error),
        error.guest_stderr,
        error.backtrace,
    )


BAD_OPTIONS = [
    ({"isolation": "vm"}, "unknown isolation 'vm'"),
    ({"isolation": 1}, "unknown isolation"),
    ({"encoding": "xml"}, "unknown encoding 'xml'"),
    ({"buffer_size": 0}, "buffer_size must be at least 1"),
    ({"buffer_size": "8"}, "buffer_size must be an int"),
    ({"buffer_size": True}, "buffer_size must be an int"),
    ({"timeout": -1}, "timeout must be a positive"),
    ({"timeout": 0}, "timeout must be a positive"),
    ({"timeout": float("nan")}, "timeout must be a positive"),
    ({"timeout": "1s"}, "timeout must be a number"),
    ({"memory_limit_mib": 0}, "memory_limit_mib must be at least 1"),
    ({"memory_limit_mib": 1.5}, "memory_limit_mib must be an int"),
    ({"fuel": -5}, "fuel must be at least 1"),
    ({"dirs": "/tmp"}, "dirs must be a dict"),
    ({"dirs": {"/tmp": 3}}, "guest path"),
    ({"env": {"A=B": "1"}}, "invalid variable name"),
    ({"env": {"A": 1}}, "the value of A"),
    ({"env": ["A"]}, "env must be a dict"),
    ({"encoding": "bincode", "item_type": complex}, "item_type complex cannot be decoded"),
    ({"encoding": "bincode", "item_type": dict[int, int]}, "dict keys must be str"),
    ({"encoding": "bincode", "item_type": int | str}, "one type and None"),
    ({"args": object()}, "args is not JSON-serialisable"),
    ({"args": float("inf")}, "args is not JSON-serialisable"),
    ({"config": {1j}}, "config is not JSON-serialisable"),
    ({"max_item_mib": 0}, "max_item_mib must be at least 1"),
    ({"max_item_mib": 4096}, "max_item_mib must be at most 4095"),
    ({"max_item_mib": "1"}, "max_item_mib must be an int"),
]


class _NoWorkers:
    """A native plugin that fails the test if a worker is asked for."""

    def iterable(self, *args: object, **kwargs: object) -> None:
        raise AssertionError("a worker was started for invalid options")


@pytest.mark.parametrize(("options", "words"), BAD_OPTIONS)
def test_bad_options_are_invalid_input_before_any_worker(
    spdl: sandgen.Plugin, options: dict, words: str
) -> None:
    for plugin in [spdl, sandgen.Plugin(_NoWorkers())]:  # type: ignore[arg-type]
        with pytest.raises(sandgen.InvalidInputError, match=re.escape(words)) as raised:
            plugin.iterable("range", **({"args": 3} | options))
        assert isinstance(raised.value, ValueError)
        assert raised.value.kind == "invalid_input"


def test_a_missing_directory_is_invalid_input(spdl: sandgen.Plugin, isolation: str) -> None:
    with pytest.raises(sandgen.InvalidInputError, match="/definitely/not/here"):
        spdl.iterable("range", args=3, dirs=["/definitely/not/here"], isolation=isolation)


def test_bad_arguments_to_load() -> None:
    with pytest.raises(sandgen.InvalidInputError, match="path must be a non-empty path"):
        sandgen.load("")
    with pytest.raises(sandgen.InvalidInputError, match="path must be"):
        sandgen.load(3)  # type: ignore[arg-type]
    with pytest.raises(sandgen.InvalidInputError, match="cache_dir must be"):
        sandgen.load(guest("FIXTURE_SPDL"), cache_dir=b"x")  # type: ignore[arg-type]
    with pytest.raises(sandgen.InvalidInputError, match="load_timeout must be a positive"):
        sandgen.load(guest("FIXTURE_SPDL"), load_timeout=0)
    with pytest.raises(sandgen.InvalidInputError, match="load_memory_mib must be at least 1"):
        sandgen.load(guest("FIXTURE_SPDL"), load_memory_mib=0)


def test_every_kind_has_its_class() -> None:
    kinds = {
        "invalid_input": sandgen.InvalidInputError,
        "load": sandgen.LoadError,
        "load_limit": sandgen.LoadLimitError,
        "incompatible": sandgen.IncompatibleError,
        "initializer_failed": sandgen.InitializerFailedError,
        "create_failed": sandgen.CreateFailedError,
        "iteration_failed": sandgen.IterationFailedError,
        "trap": sandgen.TrapError,
        "stack_overflow": sandgen.StackOverflowError,
        "memory_limit": sandgen.MemoryLimitError,
        "fuel_exhausted": sandgen.FuelExhaustedError,
        "timeout": sandgen.TimeoutError,
        "protocol": sandgen.ProtocolError,
        "decode": sandgen.DecodeError,
        "worker_died": sandgen.WorkerDiedError,
        "busy": sandgen.BusyError,
        "closed": sandgen.ClosedError,
    }
    for kind, cls in kinds.items():
        assert cls.kind == kind
        assert issubclass(cls, sandgen.Error)
    assert issubclass(sandgen.TimeoutError, builtins.TimeoutError)
    assert issubclass(sandgen.InvalidInputError, ValueError)
