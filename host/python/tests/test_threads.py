"""The GIL, threads and signals: waits release the GIL, several threads each
iterate their own iterable, a shared iterable refuses a second live pass,
and Ctrl-C interrupts any wait."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

import sandgen
from conftest import guest, limit, process_state


def test_waiting_for_items_releases_the_gil(spdl: sandgen.Plugin, isolation: str) -> None:
    ticks = 0
    stop = threading.Event()

    def count() -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            time.sleep(0.001)

    counter = threading.Thread(target=count)
    counter.start()
    try:
        # Five items 100 ms apart: half a second of waiting for the worker.
        items = list(spdl.iterable("sleep", args={"ms": 100, "n": 5}, isolation=isolation))
    finally:
        stop.set()
        counter.join(timeout=10)
    assert items == [0, 1, 2, 3, 4]
    # The other thread ran all along (it would not have run at all had the
    # GIL been held; 1 ms sleeps give hundreds of ticks in half a second).
    assert ticks > 50


def test_threads_iterate_their_own_iterables(spdl: sandgen.Plugin, isolation: str) -> None:
    results: dict[int, list[int]] = {}
    errors: list[BaseException] = []

    def run(n: int) -> None:
        try:
            with spdl.iterable("range", args=1000 + n, isolation=isolation, buffer_size=8) as it:
                results[n] = list(it)
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors
    assert all(not thread.is_alive() for thread in threads)
    assert results == {n: list(range(1000 + n)) for n in range(4)}


def test_a_shared_iterable_refuses_a_second_live_pass_from_another_thread(
    spdl: sandgen.Plugin,
) -> None:
    with spdl.iterable("range", args=100) as it:
        first = iter(it)
        assert next(first) == 0
        seen: list[BaseException] = []

        def second() -> None:
            try:
                iter(it)
            except BaseException as e:
                seen.append(e)

        thread = threading.Thread(target=second)
        thread.start()
        thread.join(timeout=10)
        assert len(seen) == 1 and isinstance(seen[0], sandgen.BusyError)
        assert list(first) == list(range(1, 100))


def test_a_worker_that_prints_never_deadlocks(spdl: sandgen.Plugin, isolation: str) -> None:
    # `announce` writes a stderr line per item; the caller holds the GIL
    # between items.
    with spdl.iterable("announce", args=2000, isolation=isolation, buffer_size=4) as it:
        assert sum(1 for _ in it) == 2000


INTERRUPTED = """
import signal, sys, time
signal.signal(signal.SIGINT, signal.default_int_handler)
import sandgen
plugin = sandgen.load(sys.argv[1], cache_dir=sys.argv[2])
mode, isolation = sys.argv[3], sys.argv[4]
try:
    if mode == "iterate":
        it = plugin.iterable("spin", args=0, isolation=isolation)
        print("ready", it.worker_pid, flush=True)
        for _ in it:
            pass
    else:
        print("ready", None, flush=True)
        plugin.iterable("range", args=1, config={"spin": True}, isolation=isolation)
except KeyboardInterrupt:
    print("interrupted", flush=True)
    sys.exit(3)
"""


def _cpu_ticks(pid: int) -> int:
    """The CPU time (clock ticks) process `pid` and its children have used."""
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if int(entry.name) == pid or int(fields[1]) == pid:
            total += int(fields[11]) + int(fields[12])
    return total


@pytest.mark.parametrize("mode", ["iterate", "build"])
def test_ctrl_c_interrupts_a_wait(isolation: str, mode: str, cache_dir: str) -> None:
    # The child resets SIGINT to raise KeyboardInterrupt itself: an ignored
    # SIGINT inherited from whoever runs the tests must not make this hang.
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(INTERRUPTED),
            guest("FIXTURE_SPDL"),
            cache_dir,
            mode,
            isolation,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        ready = child.stdout.readline().split()
        assert ready[:1] == ["ready"], child.stderr.read() if child.stderr else ""
        # Interrupted only once the guest spins (100 ms of CPU time in the
        # child or its worker process since it was ready): the caller is then
        # waiting inside sandgen for it.
        start = _cpu_ticks(child.pid)
        deadline = time.monotonic() + limit(30)
        while _cpu_ticks(child.pid) < start + 10:
            assert time.monotonic() < deadline, "the guest never spun"
            time.sleep(0.01)
        child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(timeout=10)
    assert child.returncode == 3, err
    assert "interrupted" in out
    if ready[1] != "None":
        deadline = time.monotonic() + limit(10)
        while process_state(int(ready[1])) not in (None, "Z") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert process_state(int(ready[1])) in (None, "Z")


def test_no_panic_crosses_into_python(spdl: sandgen.Plugin) -> None:
    # Odd but well-typed values reach the native side and come back as
    # sandgen errors, never as pyo3's PanicException.
    odd = [
        {"args": "\0\uffff"},
        {"args": [[[[[]]]]] * 1000},
        {"args": 2**64},
        {"args": -(2**63)},
        {"env": {"K": "é" * 10_000}},
        {"dirs": {"/": "relative/guest"}},
        {"buffer_size": 2**62},
        {"memory_limit_mib": 1 << 24},
        {"fuel": 2**62},
        {"timeout": 1e300},
        {"encoding": "bincode", "item_type": list[list[dict[str, tuple[int, bytes | None]]]]},
    ]
    for options in odd:
        try:
            with spdl.iterable("range", **({"args": 2} | options)) as it:
                list(it)
        except sandgen.Error:
            pass
        except BaseException as e:  # pragma: no cover - the failure being tested
            pytest.fail(f"{options}: {type(e).__module__}.{type(e).__name__}: {e}")
    for name in ["", "\0", "x" * 100_000, "range\n"]:
        with pytest.raises(sandgen.Error):
            spdl.iterable(name, args=1)
    # Nothing broke: the same plugin still runs.
    with spdl.iterable("range", args=3) as it:
        assert list(it) == [0, 1, 2]


FORKED = """
import os, sys
import sandgen
plugin = sandgen.load(sys.argv[1], cache_dir=sys.argv[2])
isolation = sys.argv[3]
# The parent runs plugins first (its worker threads and epoch clock start),
# then forks, as a PyTorch DataLoader forks its workers.
assert list(plugin.iterable("range", args=3, isolation=isolation)) == [0, 1, 2]
# An iterable made before the fork and not iterated yet, without a timeout:
# its worker is the parent's.
kept = plugin.iterable("range", args=4, isolation=isolation)
pid = os.fork()
if pid == 0:
    code = 0
    try:
        # The parent's iterable fails at once in the child, saying why,
        try:
            list(kept)
            code = 6
        except sandgen.WorkerDiedError as e:
            assert "forked" in str(e), str(e)
        # and is let go without waiting for a thread the child does not
        # have, nor touching the child's epoch clock, nor stopping the
        # parent's worker process.
        kept.close()
        del kept
        # A new iterable in the child runs (on a worker of the child's own)
        assert list(plugin.iterable("range", args=5, isolation=isolation)) == list(range(5))
        # and a spinning guest is still interrupted by its timeout (the
        # child's own epoch clock).
        try:
            list(plugin.iterable("spin", args=0, timeout=0.3))
            code = 4
        except sandgen.TimeoutError:
            pass
    except BaseException as e:
        print("child failed:", repr(e), flush=True)
        code = 5
    os._exit(code)
_, status = os.waitpid(pid, 0)
print("child", os.waitstatus_to_exitcode(status), flush=True)
assert list(plugin.iterable("range", args=2)) == [0, 1]
# The parent's own copy is untouched by the child's.
assert list(kept) == [0, 1, 2, 3]
"""


def test_a_forked_child_runs_plugins_after_its_parent_did(cache_dir: str, isolation: str) -> None:
    # In a session of its own, so that a forked child left hanging by a
    # failure is killed with its parent.
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(FORKED),
            guest("FIXTURE_SPDL"),
            cache_dir,
            isolation,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = child.communicate(timeout=60)
    finally:
        try:
            os.killpg(child.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        child.wait(timeout=10)
    assert child.returncode == 0, err
    assert out.splitlines()[-1] == "child 0", out + err
