"""The `sandgen` command the package installs: the CLI itself, with the same
output and exit statuses as the workspace's binary; and the same program as
the worker processes of `isolation="process"`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import sandgen
from conftest import ROOT, guest, limit, process_state

# The command pip put beside this interpreter, and the workspace's binary.
COMMAND = Path(sys.executable).parent / "sandgen"
BINARY = ROOT / "target/debug/sandgen"


def run(program: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(program), *args], capture_output=True, text=True, timeout=120, check=False
    )


def test_the_command_runs_list_and_run_like_the_binary() -> None:
    spdl = guest("FIXTURE_SPDL")
    for args in (
        ["list", spdl],
        ["run", spdl, "range", "--args", "5"],
        ["run", spdl, "range", "--args", "4", "--workers", "2", "--isolation", "process"],
    ):
        ours, theirs = run(COMMAND, *args), run(BINARY, *args)
        assert (ours.returncode, ours.stdout) == (theirs.returncode, theirs.stdout), args
        assert ours.returncode == 0, ours.stderr
    assert run(COMMAND, "run", spdl, "range", "--args", "3").stdout == "0\n1\n2\n"


def test_the_command_exits_as_the_binary_does() -> None:
    spdl = guest("FIXTURE_SPDL")
    failing = ["run", spdl, "fail_at", "--args", '{"n": 5, "fail_at": 2, "message": "no"}']
    for args, status in ((["run"], 2), (["list", "/no/such.wasm"], 2), (failing, 1)):
        ours, theirs = run(COMMAND, *args), run(BINARY, *args)
        assert ours.returncode == theirs.returncode == status, (args, ours.stderr)
        assert ours.stdout == theirs.stdout
    assert run(COMMAND, "--version").stdout == f"sandgen {sandgen.__version__}\n"


def test_worker_processes_are_the_native_program(spdl: sandgen.Plugin) -> None:
    installed = Path(sandgen.__file__).parent / "_bin" / "sandgen"
    with spdl.iterable("range", 3, isolation="process", num_workers=2) as it:
        assert list(it) == [0, 0, 1, 1, 2, 2]
        for pid in it.worker_pids:
            assert Path(os.readlink(f"/proc/{pid}/exe")) == installed.resolve()


def test_without_the_program_workers_are_this_interpreter(
    cache_dir: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An installation without the program (built by hand, without the
    # package's build backend) still runs worker processes: this
    # interpreter, loading the extension.
    monkeypatch.setattr(sandgen._cli, "program", lambda: None)
    plugin = sandgen.load(guest("FIXTURE_SPDL"), cache_dir=cache_dir)
    with plugin.iterable("range", 3, isolation="process") as it:
        assert list(it) == [0, 1, 2]
        exe = Path(os.readlink(f"/proc/{it.worker_pid}/exe"))
        assert exe == Path(sys.executable).resolve()
        # Isolated mode, without `site`: nothing of the user's environment
        # (PYTHON* variables, user site-packages, the current directory)
        # runs in a worker.
        argv = Path(f"/proc/{it.worker_pid}/cmdline").read_bytes().split(b"\0")
        assert argv[1:3] == [b"-I", b"-S"], argv


def test_a_compiling_process_dies_with_the_interpreter(tmp_path: Path) -> None:
    """An interpreter killed (`kill -9`) while a plugin compiles takes its
    compiling process with it at once, though the load timeout is far away
    (the compilation would go on for seconds more)."""
    code = "import sys, sandgen; sandgen.load(sys.argv[1], cache_dir=sys.argv[2], load_timeout=100)"
    python = subprocess.Popen(
        [sys.executable, "-c", code, guest("FIXTURE_PYTHON"), str(tmp_path / "cache")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        child = _child_running(python.pid, "__sandgen-compile", deadline=60)
        # Confined once it has read the component: compiling from then on.
        until = time.monotonic() + limit(60)
        while _status(child, "Seccomp:") != "2":
            assert time.monotonic() < until, "the compiling process never started compiling"
            time.sleep(0.02)
        python.kill()
        python.wait(timeout=30)
        until = time.monotonic() + limit(2)
        while process_state(child) not in (None, "Z"):
            if time.monotonic() > until:
                os.kill(child, signal.SIGKILL)
                pytest.fail(f"the compiling process {child} outlived the interpreter")
            time.sleep(0.02)
    finally:
        python.kill()
        python.wait(timeout=30)


def _status(pid: int, name: str) -> str | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return None
    return next((x.split()[1] for x in status.splitlines() if x.startswith(name)), None)


def _child_running(parent: int, word: str, deadline: float) -> int:
    """The child of `parent` whose command line holds `word`."""
    until = time.monotonic() + limit(deadline)
    while True:
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or _status(int(entry.name), "PPid:") != str(parent):
                continue
            try:
                if word in (entry / "cmdline").read_bytes().decode(errors="replace"):
                    return int(entry.name)
            except FileNotFoundError:
                continue
        assert time.monotonic() < until, f"no child of {parent} running {word}"
        time.sleep(0.02)
