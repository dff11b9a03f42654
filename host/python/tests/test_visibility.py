"""What the sandbox shows a Python user: the guests' output lines (to
`on_output`, by default the `sandgen.plugin` logger), a message when a load
compiles, a hint when a plugin cannot see a file that was not granted, and
passes skipped to reach an epoch."""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import sandgen
from conftest import guest, limit


def write(stream: str, text: str, items: int = 3) -> dict[str, Any]:
    """Args of the probe's `write`: `text` on `stream` each pass, then 0..items."""
    return {"stream": stream, "bytes": list(text.encode()), "times": 1, "items": items}


def test_on_output_gets_each_line_with_its_worker_and_stream(load, isolation: str) -> None:
    lines: list[tuple[int, str, str]] = []
    probe = load("FIXTURE_PROBE")
    with probe.iterable(
        "write",
        write("stderr", "one\ntwo\n"),
        num_workers=2,
        isolation=isolation,
        on_output=lambda *line: lines.append(line),
    ) as it:
        assert sorted(it) == [0, 0, 1, 1, 2, 2]
        assert sorted(lines) == [
            (0, "stderr", "one"),
            (0, "stderr", "two"),
            (1, "stderr", "one"),
            (1, "stderr", "two"),
        ]
        lines.clear()
    # The lines of a pass come with it, in order.
    with probe.iterable(
        "write", write("stdout", "a\nb\nc\n"), on_output=lambda *x: lines.append(x)
    ) as it:
        list(it)
    assert lines == [(0, "stdout", "a"), (0, "stdout", "b"), (0, "stdout", "c")]


def test_output_goes_to_logging_by_default(
    load, isolation: str, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.INFO, logger="sandgen.plugin")
    probe = load("FIXTURE_PROBE")
    with probe.iterable("write", write("stdout", "hello\n"), isolation=isolation) as it:
        list(it)
    with probe.iterable("write", write("stderr", "careful\n"), isolation=isolation) as it:
        list(it)
    records = [r for r in caplog.records if r.name == "sandgen.plugin"]
    assert [(r.levelno, r.getMessage()) for r in records] == [
        (logging.INFO, "hello"),
        (logging.WARNING, "careful"),
    ]
    assert [(r.worker, r.stream, r.generator) for r in records] == [  # type: ignore[attr-defined]
        (0, "stdout", "write"),
        (0, "stderr", "write"),
    ]
    # Nothing raw on the process's own streams.
    out, err = capfd.readouterr()
    assert "hello" not in out + err


def test_logged_lines_cannot_drive_a_terminal(
    load, isolation: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Screen clear, a clipboard write (OSC 52), NUL, a bidi override.
    raw = "\x1b[2J\x1b]52;c;cGF3bmVk\x07\x00\u202eevil"
    caplog.set_level(logging.INFO, logger="sandgen.plugin")
    lines: list[str] = []
    probe = load("FIXTURE_PROBE")
    with probe.iterable("write", write("stdout", raw + "\n"), isolation=isolation) as it:
        list(it)
    with probe.iterable(
        "write", write("stdout", raw + "\n"), on_output=lambda *x: lines.append(x[2])
    ) as it:
        list(it)
    [record] = [r for r in caplog.records if r.name == "sandgen.plugin"]
    assert record.getMessage() == r"\x1b[2J\x1b]52;c;cGF3bmVk\x07\x00\u{202e}evil"
    # A handler of the embedder's own gets the line as the plugin wrote it.
    assert lines == [raw]


def test_a_failing_on_output_does_not_stop_the_items(
    spdl: sandgen.Plugin, monkeypatch: pytest.MonkeyPatch
) -> None:
    reported: list[BaseException | None] = []
    monkeypatch.setattr(sys, "unraisablehook", lambda u: reported.append(u.exc_value))

    def broken(worker: int, stream: str, line: str) -> None:
        raise RuntimeError(f"handler broke on {line}")

    # `announce` prints `produced i` to stderr for each item.
    with spdl.iterable("announce", 3, on_output=broken) as it:
        assert list(it) == [0, 1, 2]
    assert [str(e) for e in reported] == [f"handler broke on produced {i}" for i in range(3)]


def test_on_output_must_be_callable(spdl: sandgen.Plugin) -> None:
    with pytest.raises(sandgen.InvalidInputError, match="on_output must be a function"):
        spdl.iterable("range", 3, on_output="stderr")


def test_a_first_load_says_that_it_compiled(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="sandgen")
    first = sandgen.load(guest("FIXTURE_KINDS"), cache_dir=tmp_path)
    assert first.compile_time > 0
    [record] = [r for r in caplog.records if r.name == "sandgen"]
    assert record.getMessage().startswith(f"compiled plugin {first.path} in ")
    caplog.clear()
    again = sandgen.load(guest("FIXTURE_KINDS"), cache_dir=tmp_path)
    assert again.compile_time == 0.0
    assert [r for r in caplog.records if r.name == "sandgen"] == []


def test_a_file_outside_the_granted_directories_gets_a_hint(load, tmp_path: Path) -> None:
    jsonl = load("EXAMPLE_JSONL")
    data = tmp_path / "data"
    data.mkdir()
    (data / "rows.jsonl").write_text('{"id": 1}\n')
    args = {"path": f"{data}/rows.jsonl", "fields": ["id"]}
    # Not granted: the file exists on the host, the plugin cannot see it.
    with pytest.raises(sandgen.IterationFailedError) as caught:
        list(jsonl.iterable("rows", args))
    message = str(caught.value)
    assert f"no directory is granted to the plugin, so it cannot see {data}/rows.jsonl" in message
    assert "dirs=" in message
    # Another directory granted: named.
    with pytest.raises(sandgen.IterationFailedError, match="no granted directory covers"):
        list(jsonl.iterable("rows", args, dirs={str(tmp_path): "/elsewhere"}))
    # Granted: it reads; a file really missing there gets no hint.
    assert list(jsonl.iterable("rows", args, dirs=[str(data)])) == [{"id": 1}]
    missing = {**args, "path": f"{data}/missing.jsonl"}
    with pytest.raises(sandgen.IterationFailedError) as really:
        list(jsonl.iterable("rows", missing, dirs=[str(data)]))
    assert "No such file" in str(really.value)
    assert "granted" not in str(really.value)


def test_skipped_passes_move_the_plugin_on(spdl: sandgen.Plugin, isolation: str) -> None:
    def rotated(epoch: int) -> list[int]:
        return [(i + epoch + 1) % 10 for i in range(10)]

    with spdl.iterable("shuffle", 10, isolation=isolation, num_workers=2, sharding="items") as it:
        it.skip_passes(0)
        assert list(it) == rotated(0)
        it.skip_passes(2)
        assert list(it) == rotated(3)
        it.skip_passes()
        assert list(it) == rotated(5)
        live = iter(it)
        next(live)
        with pytest.raises(sandgen.BusyError):
            it.skip_passes(1)
        del live
        for bad in (-1, 1.5, True):
            with pytest.raises(sandgen.InvalidInputError, match="count"):
                it.skip_passes(bad)  # type: ignore[arg-type]


def test_lines_waiting_for_the_caller_are_bounded_by_bytes_and_counted() -> None:
    """A guest that prints 8 MiB while its caller reads no items: at most
    4 MiB of its lines wait for the caller (the rest are dropped and
    counted in one message), and every line is either handed on or counted."""
    probe = sandgen.load(guest("FIXTURE_PROBE"))
    lines: list[str] = []
    line = "y" * 1023
    times = 8192
    args = {"stream": "stdout", "bytes": list((line + "\n").encode()), "times": times, "items": 1}
    with probe.iterable(
        "write", args, isolation="process", on_output=lambda *x: lines.append(x[2])
    ) as it:
        before = _read()
        pass_ = iter(it)
        started = len(lines)
        # The caller's thread stays out of sandgen until the worker's lines
        # have all been read from its pipe by the caller's reader thread
        # (this process's read count, from /proc), so none is handed on
        # meanwhile.
        deadline = time.monotonic() + limit(60)
        while _read() - before < times * len(line):
            assert time.monotonic() < deadline, "the worker did not write its lines"
            time.sleep(0.01)
        assert list(pass_) == [0]
    note = [i for i, text in enumerate(lines) if text.startswith("sandgen: ")]
    assert len(note) == 1, lines[-3:]
    dropped = int(lines[note[0]].split()[1])
    assert lines[note[0]] == (
        f"sandgen: {dropped} more output line(s) of the plugin were dropped: more than "
        "10000 lines or 4194304 bytes were waiting while no items were read"
    )
    waited = lines[started : note[0]]
    assert 0 < sum(len(text) for text in waited) <= 4 << 20
    assert all(text == line for i, text in enumerate(lines) if i != note[0])
    assert len(lines) - 1 + dropped == times


def _read() -> int:
    """The bytes this process has read so far (`rchar` of /proc/self/io)."""
    io = Path("/proc/self/io").read_text()
    return int(next(x for x in io.splitlines() if x.startswith("rchar:")).split()[1])
