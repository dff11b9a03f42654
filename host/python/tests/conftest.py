"""Shared fixtures: the guests that tests/build.rs built from source (their
paths come from `cargo run -p sandgen-tests --bin sandgen-guests`, which
tests/python.sh exports as SANDGEN_TEST_GUESTS), both isolation modes, and a
watchdog so that no test can hang."""

from __future__ import annotations

import faulthandler
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

import sandgen

ROOT = Path(__file__).resolve().parents[3]


def _time_factor() -> float:
    text = os.environ.get("SANDGEN_TEST_TIME_FACTOR", "1")
    try:
        factor = float(text)
    except ValueError:
        factor = 0.0
    if not factor >= 1 or factor == float("inf"):
        raise pytest.UsageError(
            f"invalid SANDGEN_TEST_TIME_FACTOR {text!r}: give a number of at least 1 (such as 2.5)"
        )
    return factor


# Stretches every upper bound on time in these tests (deadlines of waits,
# limits of "promptly"), for a slow or loaded machine; lower bounds are not
# stretched. The same variable as the Rust tests'.
TIME_FACTOR = _time_factor()


def limit(seconds: float) -> float:
    """`seconds` stretched by SANDGEN_TEST_TIME_FACTOR: an upper bound on time."""
    return seconds * TIME_FACTOR


# Longer than any test needs; past it the run ends with every thread's stack.
WATCHDOG_SECONDS = limit(300)


def _guests() -> dict[str, str]:
    text = os.environ.get("SANDGEN_TEST_GUESTS")
    if text is None:
        text = subprocess.run(
            [
                "cargo",
                "run",
                "--quiet",
                "--locked",
                "-p",
                "sandgen-tests",
                "--bin",
                "sandgen-guests",
            ],
            cwd=ROOT,
            check=True,
            capture_output=True,
            text=True,
            timeout=1800,
        ).stdout
    return json.loads(text)


GUESTS = _guests()


def guest(name: str) -> str:
    """The path of guest `name` (`FIXTURE_SPDL`, `EXAMPLE_JSONL`, ...)."""
    return GUESTS[name]


@pytest.fixture(autouse=True)
def watchdog(request: pytest.FixtureRequest) -> Iterator[None]:
    """Ends the run, naming the test and showing every thread's stack, if a
    test runs past WATCHDOG_SECONDS. What it writes goes to the run's own
    stderr, past pytest's capture (which the exit would throw away); C's
    faulthandler is the backstop for a test that never lets Python run."""
    capture = request.config.pluginmanager.getplugin("capturemanager")

    def expire() -> None:
        with capture.global_and_fixture_disabled():
            sys.stderr.write(
                f"test watchdog: {request.node.nodeid} did not finish within "
                f"{WATCHDOG_SECONDS:.0f} s; ending the run\n"
            )
            faulthandler.dump_traceback(all_threads=True)
            sys.stderr.flush()
        os._exit(1)

    timer = threading.Timer(WATCHDOG_SECONDS, expire)
    timer.daemon = True
    timer.start()
    faulthandler.dump_traceback_later(WATCHDOG_SECONDS + 60, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()
    timer.cancel()


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One compile cache for the whole run (each plugin compiles once)."""
    return str(tmp_path_factory.mktemp("cache"))


_PLUGINS: dict[str, sandgen.Plugin] = {}


@pytest.fixture(scope="session")
def load(cache_dir: str):
    def load(name: str) -> sandgen.Plugin:
        if name not in _PLUGINS:
            _PLUGINS[name] = sandgen.load(guest(name), cache_dir=cache_dir)
        return _PLUGINS[name]

    return load


@pytest.fixture(scope="session")
def spdl(load) -> sandgen.Plugin:
    return load("FIXTURE_SPDL")


@pytest.fixture(params=["thread", "process"])
def isolation(request: pytest.FixtureRequest) -> str:
    """Each test that takes it runs in both isolation modes."""
    return request.param


def process_state(pid: int) -> str | None:
    """The state letter of process `pid` (`None` once it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None
    return stat.rsplit(")", 1)[1].split()[0]
