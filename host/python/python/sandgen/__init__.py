"""sandgen: iterate generator functions that run inside WebAssembly sandboxes.

A plugin (a wasm component written in Rust, Python or JavaScript against
sandgen's WIT contract) is loaded once and compiled into a cache; each
``Plugin.iterable`` starts a sandboxed worker (a thread, or a process of its
own) that runs one generator, with hard limits on memory, time and what it
may touch. Items stream back in batches, with back-pressure.

>>> import sandgen
>>> plugin = sandgen.load("plugin.wasm")                      # doctest: +SKIP
>>> with plugin.iterable("range", args=3) as it:              # doctest: +SKIP
...     print(list(it))
[0, 1, 2]
"""

from __future__ import annotations

import dataclasses
import inspect
import itertools
import json
import logging
import math
import os
import sys
import weakref
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Literal, Self

from . import _cli, _native
from ._errors import (
    BusyError,
    ClosedError,
    CreateFailedError,
    DecodeError,
    Error,
    FuelExhaustedError,
    IncompatibleError,
    InitializerFailedError,
    InvalidInputError,
    IterationFailedError,
    LoadError,
    LoadLimitError,
    MemoryLimitError,
    ProtocolError,
    StackOverflowError,
    TimeoutError,
    TrapError,
    WorkerDiedError,
)
from ._types import describe, f32, i64, type_name, u8

__all__ = [
    "BusyError",
    "ClosedError",
    "CreateFailedError",
    "DecodeError",
    "Error",
    "FuelExhaustedError",
    "IncompatibleError",
    "InitializerFailedError",
    "InvalidInputError",
    "Iterable",
    "IterationFailedError",
    "LoadError",
    "LoadLimitError",
    "MemoryLimitError",
    "Plugin",
    "ProtocolError",
    "StackOverflowError",
    "TimeoutError",
    "TrapError",
    "WorkerDiedError",
    "f32",
    "i64",
    "iterate",
    "load",
    "load_bytes",
    "u8",
]

__version__: str = _native.__version__


def __dir__() -> list[str]:
    # The public names only: not the modules and helpers this one imports
    # (os, json, Any, ...), which `dir(sandgen)` would otherwise list.
    return sorted(
        {
            *__all__,
            "__version__",
            "Encoding",
            "Isolation",
            "OnFailure",
            "OnOutput",
            "PathLike",
            "Sharding",
        }
    )


Isolation = Literal["thread", "process"]
Encoding = Literal["json", "bincode"]
Sharding = Literal["plugin", "items"]
OnFailure = Literal["stop", "restart", "skip"]
PathLike = str | os.PathLike[str]
OnOutput = Callable[[int, str, str], object]

# sandgen's own messages (a first load's compilation), and the plugins'
# output lines (by default, see `_LogOutput`).
_log = logging.getLogger("sandgen")
_plugin_log = logging.getLogger("sandgen.plugin")

# A worker process is the `sandgen` program the package ships (a native
# program: it starts in milliseconds). Without it (a build that left it
# out), this interpreter running the native module's worker entry point, in
# isolated mode (no site, no PYTHON* variables, no user paths), with SIGINT
# back at its default so that it ends like any worker.
_WORKER_CODE = (
    "import signal,sys,importlib.util as u;"
    "signal.signal(signal.SIGINT,signal.SIG_DFL);"
    "s=u.spec_from_file_location('sandgen._native',sys.argv[1]);"
    "m=u.module_from_spec(s);s.loader.exec_module(m);"
    "m._run_worker(sys.argv[2:])"
)


def _worker_command() -> list[str]:
    program = _cli.program()
    if program is not None:
        return [program]
    return [sys.executable or "python3", "-I", "-S", "-c", _WORKER_CODE, _native.__file__]


def load(
    path: PathLike,
    *,
    cache_dir: PathLike | None = None,
    load_timeout: float | None = None,
    load_memory_mib: int | None = None,
) -> Plugin:
    """Loads the plugin at ``path``, compiling it on the first load.

    Compiled plugins are kept in ``cache_dir`` (default: ``$SANDGEN_CACHE_DIR``,
    else ``$XDG_CACHE_HOME/sandgen``, else ``~/.cache/sandgen``), so only the
    first load on a machine pays for compilation. Compiling runs in a child
    process bounded by ``load_timeout`` seconds (default 120) and
    ``load_memory_mib`` (default 4096); past them, ``LoadLimitError``.
    Raises ``LoadError`` for a missing or broken plugin,
    ``IncompatibleError`` for a component that is not a sandgen plugin.
    """
    path = _path("path", path)
    native = _native.load(path, *_load_options(cache_dir, load_timeout, load_memory_mib))
    _log_compile(native)
    return Plugin(native)


def load_bytes(
    data: bytes,
    *,
    name: str = "plugin",
    cache_dir: PathLike | None = None,
    load_timeout: float | None = None,
    load_memory_mib: int | None = None,
) -> Plugin:
    """Loads a plugin from its bytes, as ``load`` loads a file (``name`` is
    what messages call it). The compile cache is keyed by content, so each
    machine compiles a plugin once however it gets it."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise _invalid(f"data must be the plugin's bytes, not {type(data).__name__}")
    if not isinstance(name, str) or not name:
        raise _invalid(f"name must be a non-empty str, not {name!r}")
    options = _load_options(cache_dir, load_timeout, load_memory_mib)
    native = _native.load_bytes(name, bytes(data), *options)
    _log_compile(native)
    return Plugin(native)


def _log_compile(plugin: _native.Plugin) -> None:
    # A first load on a machine compiles (seconds, for a Python plugin);
    # later loads come from the compile cache and say nothing.
    seconds = plugin.compile_time
    if seconds > 0:
        _log.info(
            "compiled plugin %s in %.2f s (kept in the compile cache: later loads are fast)",
            plugin.path,
            seconds,
        )


def _load_options(
    cache_dir: object, load_timeout: object, load_memory_mib: object
) -> tuple[str | None, list[str], float | None, int | None]:
    cache = None if cache_dir is None else _path("cache_dir", cache_dir)
    timeout = None if load_timeout is None else _seconds("load_timeout", load_timeout)
    memory = None if load_memory_mib is None else _int("load_memory_mib", load_memory_mib, 1)
    if memory is not None and memory > 1 << 24:
        raise _invalid(f"load_memory_mib is too large: {memory} MiB")
    return cache, _worker_command(), timeout, None if memory is None else memory << 20


class Plugin:
    """A loaded plugin: list its generators, create iterables of them."""

    __slots__ = ("_native",)

    def __init__(self, native: _native.Plugin) -> None:
        self._native = native

    @property
    def path(self) -> str:
        """The file the plugin was loaded from."""
        return self._native.path

    @property
    def name(self) -> str:
        """The plugin's name (its file name without extension)."""
        return self._native.name

    @property
    def compile_time(self) -> float:
        """The seconds this process spent compiling the plugin (0.0 when it
        came compiled from the cache, as after a machine's first load)."""
        return self._native.compile_time

    def __repr__(self) -> str:
        return f"<sandgen.Plugin {self.path!r}>"

    def generators(self) -> list[tuple[str, str]]:
        """``[(name, description), ...]``, in the plugin's order."""
        return self._native.generators()

    def iterable(
        self,
        generator: str,
        args: Any = None,
        *,
        config: Any = None,
        isolation: Isolation = "thread",
        buffer_size: int | None = None,
        timeout: float | None = None,
        memory_limit_mib: int = 1024,
        fuel: int | None = None,
        dirs: Mapping[PathLike, str] | list[PathLike] | None = None,
        env: Mapping[str, str] | None = None,
        encoding: Encoding = "json",
        item_type: Any = None,
        num_workers: int = 1,
        in_order: bool = True,
        seed: int | None = None,
        worker_args: list[Any] | None = None,
        shard: tuple[int, int] | None = None,
        sharding: Sharding = "plugin",
        on_output: OnOutput | None = None,
        max_item_mib: int | None = None,
        batch_size: int | None = None,
        drop_last: bool = False,
        on_failure: OnFailure = "stop",
        max_restarts: int = 3,
    ) -> Iterable:
        """Starts the workers running ``generator`` and returns its iterable.

        The plugin's initializer (with ``config``) and the generator's
        ``create`` (with ``args``) have run when this returns. ``args`` and
        ``config`` are JSON-serialisable values (``None``: none given).
        ``timeout`` is the inactivity timeout in seconds; ``dirs`` grants
        read-only directories (``{host: guest}``, or ``[host]`` at the same
        path); ``env`` sets the guest's environment (it sees none of the
        host's). Invalid options raise ``InvalidInputError`` (a
        ``ValueError``) before any worker starts.

        ``num_workers`` runs that many workers, each a full sandboxed worker
        that sees ``SANDGEN_WORKER_ID`` and ``SANDGEN_NUM_WORKERS`` (see
        ``sandgen_guest.worker_info()``), alive across passes; items come
        round-robin by worker (``in_order=True``) or as they are produced.
        ``worker_args`` gives each worker its own ``args`` instead. ``seed``
        (0 to 2**64 - 1) makes every random source of the guests a
        deterministic stream of the seed and the worker's index.
        ``shard=(index, count)`` makes the iterable one of ``count`` run by a
        scheduler above sandgen (``sandgen.ray``): its workers are numbered
        after those of the shards before it.

        ``sharding`` says who splits the stream among the workers (and
        shards): ``"plugin"`` (each worker sees its index and yields its
        share) or ``"items"`` (every worker runs the whole stream as the only
        worker and keeps every n-th item, so each item comes exactly once
        whether or not the plugin shards itself, at the cost of every worker
        running the whole stream; several shards then need a ``seed``).

        ``max_item_mib`` bounds the size of one item as the plugin encodes
        it (1 to 4095 MiB, default 1024): a larger item ends the pass with
        ``ProtocolError``. The Python objects an item decodes to take more
        memory than its encoding, often many times more (a JSON list of
        small ints: about 1 to 4 bytes each encoded, 36 as a Python list
        slot and int), so bound the encoded size well below the memory the
        decoded items may take.

        ``item_type`` says what each item is, for bincode (which carries no
        types) and for JSON items read into types: ``numpy.ndarray`` for an
        array item (``sandgen_guest.array``, Rust ``sandgen_guest::Array``),
        which arrives as a writable numpy array of the item's dtype and
        shape, its data copied once from the worker; arrays also decode
        inside tuples, dataclasses and dicts (``tuple[numpy.ndarray, int]``
        for an image and its label). See ``sandgen._types`` for every type.

        ``batch_size=B`` gives batches of ``B`` items instead of items,
        stacked in Rust without the GIL: arrays of one dtype and shape
        become one array with a new first axis, numbers and bools one 1-D
        array (integers as int64), tuples, dicts and dataclasses are stacked
        field by field, and strings, bytes, lists and ``None`` stay a list.
        The last batch may be short (``drop_last=True`` leaves it out). An
        item that does not stack with its batch's first ends the pass with
        ``InvalidInputError`` naming the item and the difference.

        ``on_failure`` says what a pass does when a worker fails:
        ``"stop"`` (the error ends the pass), ``"restart"`` (a worker that
        died, was killed, timed out, trapped, hit its memory or fuel limit or
        whose plugin raised is started afresh, a new process in process
        isolation, and resumed where it stood: no item is lost or repeated,
        and in order the sequence is that of an undisturbed pass) or
        ``"skip"`` (as restart, but past the item whose production failed,
        which is left out; the plugin must skip without producing: the
        Python and Rust SDKs' default skip does, unless producing an item is
        what fails). One pass restarts at most ``max_restarts`` times (all
        workers together; with ``sharding="items"`` every worker meets a bad
        item, so leaving it out costs one restart per worker); past that the
        pass ends with the error, which says how many restarts it made.
        ``Iterable.failures`` lists every restart. A restart runs on the
        thread that iterates, and in pass k first runs the k passes before
        it in the new worker without their items.

        ``on_output(worker, stream, line)`` is called for each line a guest
        prints (``stream`` is ``"stdout"`` or ``"stderr"``), on the thread
        that iterates, between batches. By default each line is a record
        of the ``logging`` logger ``"sandgen.plugin"`` (``INFO`` for stdout,
        ``WARNING`` for stderr) with ``worker``, ``stream`` and
        ``generator`` as extra fields, control characters escaped (a given
        ``on_output`` gets the raw line).
        """
        # The keyword options by name, as the signature spells them (see
        # `_ITERABLE_DEFAULTS`): locals() holds just the parameters here.
        given = locals()
        keywords = {name: given[name] for name in _ITERABLE_DEFAULTS}
        options = _iterable_options(generator, args, keywords)
        return Iterable(self._native.iterable(options), self._native, options)


class Iterable:
    """A generator's iterable: iterate it any number of times, one pass at a time.

    Each ``iter()`` starts a full pass over the same guest object. A second
    live pass raises ``BusyError``; leaving a ``for`` loop early stops the
    worker's pass at once. ``close()`` (or leaving a ``with`` block) ends the
    worker; so does dropping the iterable.

    ``state_dict()`` says where the run stands, and ``load_state_dict`` of
    it, on this iterable or on another of the same plugin, generator, args
    and options (in another process, after a crash), gives exactly the
    items an uninterrupted run would have given from there on.
    """

    __slots__ = ("_native", "_options", "_pass", "_plugin")

    def __init__(
        self, native: _native.Iterable, plugin: _native.Plugin, options: _IterableOptions
    ) -> None:
        self._native = native
        # What made it: `load_state_dict` makes it again, resumed.
        self._plugin = plugin
        self._options = options
        # The native pass of the last `iter()`, while it lives.
        self._pass: weakref.ref[_native.Pass] | None = None

    def __iter__(self) -> Iterator[Any]:
        running = self._native.start()
        self._pass = weakref.ref(running)
        # The native pass yields whole batches (list iterators); chaining
        # them in C keeps the per-item cost of a `for` loop at that of a
        # list's.
        return itertools.chain.from_iterable(running)

    def _running(self) -> _native.Pass | None:
        """The live pass, if any."""
        running = None if self._pass is None else self._pass()
        return running if running is not None and running.live else None

    def state_dict(self) -> dict[str, Any]:
        """Where the run stands, as a JSON-serialisable dict (a sandgen
        position): during a pass, after the items the loop has taken so far;
        between passes, before the next one; after a pass that failed, where
        it failed. It binds to the plugin's content, the generator, its args
        and config, the seed, ``num_workers``, ``in_order``, ``sharding`` and
        ``shard``. Take it on the thread that iterates, inside the loop:
        leaving a ``for`` loop (``break``, an exception, Ctrl-C) stops its
        pass, and the state is then at the start of the next pass."""
        running = None if self._pass is None else self._pass()
        text = self._native.position() if running is None else running.state()
        state: dict[str, Any] = json.loads(text)
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Moves the iterable to ``state`` (from ``state_dict()``): the next
        ``iter()`` gives the rest of the pass it was taken in, and later
        passes follow it. The workers start afresh and run the plugin up to
        that point without sending its items.

        A state of another plugin, generator, args, config, seed, number of
        workers, order or sharding raises ``InvalidInputError`` naming what
        differs, as does an edited or damaged one (the iterable is then as it
        was); ``BusyError`` while a pass is live; ``ClosedError`` once
        closed."""
        if self._native.closed:
            raise ClosedError(
                f"cannot load a state into the iterable of generator {self.generator!r}: it is "
                "closed; load it into a new iterable",
                kind="closed",
            )
        if self._running() is not None:
            raise BusyError(
                f"cannot load a state into the iterable of generator {self.generator!r} while "
                "one of its passes is live: finish or close the pass (leave its loop) first",
                kind="busy",
            )
        if not isinstance(state, Mapping):
            raise _invalid(
                f"state must be a dict from state_dict(), not {type(state).__name__} {state!r}"
            )
        try:
            text = json.dumps(dict(state))
        except (TypeError, ValueError) as e:
            raise _invalid(f"state is not a sandgen position: it is not JSON data ({e})") from e
        # The new workers first: a state that does not fit leaves this
        # iterable as it was.
        native = self._plugin.iterable(self._options, text)
        old, self._native, self._pass = self._native, native, None
        old.close()

    def skip_passes(self, count: int = 1) -> None:
        """Runs the next ``count`` passes in the workers without sending their
        items: what the plugin carries from pass to pass (a shuffle drawn
        anew each pass) moves on as if they had been read, so the next
        ``iter()`` gives pass ``count`` (epoch ``count`` of a training run
        that starts there). The workers still produce those passes; nothing
        crosses to Python. Errors as in a pass; ``BusyError`` while a pass
        lives."""
        count = _int("count", count, 0)
        for _ in range(count):
            self._native.skip_pass()

    def close(self) -> None:
        """Ends the worker; later passes raise ``ClosedError``."""
        self._native.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        return self._native.closed

    @property
    def generator(self) -> str:
        return self._native.generator

    @property
    def isolation(self) -> str:
        return self._native.isolation

    @property
    def encoding(self) -> str:
        return self._native.encoding

    @property
    def worker_pid(self) -> int | None:
        """The (first) worker process's id in process isolation, else ``None``."""
        return self._native.worker_pid

    @property
    def worker_pids(self) -> list[int]:
        """Every worker process's id, by worker index (empty for threads)."""
        return self._native.worker_pids

    @property
    def num_workers(self) -> int:
        return self._native.num_workers

    @property
    def failures(self) -> list[dict[str, Any]]:
        """The failures the passes survived (``on_failure="restart"`` or
        ``"skip"``), oldest first, one dict each: ``worker`` (its index),
        ``pass`` (counted from 0), ``position`` (the items that worker had
        delivered in the pass when it failed), ``skipped`` (with skip, the
        index of the item left out in the worker's stream, else ``None``),
        ``kind`` (as ``SandgenError.kind``), ``action`` (``"restart"`` or
        ``"skip"``) and ``message`` (one line, control characters escaped).
        A state loaded with ``load_state_dict`` starts a new list."""
        return self._native.failures

    def __repr__(self) -> str:
        state = "closed" if self.closed else self.isolation
        return f"<sandgen.Iterable {self.generator!r} ({state})>"


def _resumed(
    plugin: Plugin, generator: str, args: Any, state: Mapping[str, Any], options: dict[str, Any]
) -> Iterable:
    """An iterable of ``generator`` started at ``state`` (``state_dict()``):
    its workers start once, already there (``sandgen.torch``, ``sandgen.ray``)."""
    try:
        text = json.dumps(dict(state))
    except (TypeError, ValueError) as e:
        raise _invalid(f"the state is not a sandgen position: it is not JSON data ({e})") from e
    checked = _iterable_options(generator, args, options)
    return Iterable(plugin._native.iterable(checked, text), plugin._native, checked)


def iterate(
    path: PathLike,
    generator: str,
    args: Any = None,
    *,
    cache_dir: PathLike | None = None,
    **options: Any,
) -> Iterator[Any]:
    """One pass over ``generator`` of the plugin at ``path``, then the worker ends.

    Loads the plugin and starts the worker now (so bad options and a broken
    plugin raise here); the items come as the returned iterator is consumed.
    ``options`` are those of ``Plugin.iterable``.
    """
    iterable = load(path, cache_dir=cache_dir).iterable(generator, args, **options)
    return _one_pass(iterable)


def _one_pass(iterable: Iterable) -> Iterator[Any]:
    with iterable:
        yield from iterable


# --- options: each check names the option and what it accepts ---------------


# The keyword options of `Plugin.iterable` (those after `args`) with their
# defaults, read off its signature: the one list of them, for
# `Plugin.iterable` itself and for the callers that take them as keyword
# arguments and check them up front (`sandgen.torch`, `sandgen.ray`).
def _keyword_defaults(function: Any) -> dict[str, Any]:
    """The keyword-only parameters of ``function`` and their defaults; each
    must have one (an option without a default would be left out)."""
    defaults = {}
    for name, parameter in inspect.signature(function).parameters.items():
        if parameter.kind is inspect.Parameter.KEYWORD_ONLY:
            if parameter.default is inspect.Parameter.empty:
                raise TypeError(f"option {name} of {function.__qualname__} needs a default")
            defaults[name] = parameter.default
    return defaults


_ITERABLE_DEFAULTS: dict[str, Any] = _keyword_defaults(Plugin.iterable)


@dataclasses.dataclass(frozen=True, slots=True)
class _IterableOptions:
    """The options of one iterable, checked, in the units the library takes.

    Made by ``_iterable_options`` only; the native ``Plugin.iterable`` takes
    it whole and reads every field by its name (``IterableOptions`` in
    ``src/options.rs``).
    """

    generator: str
    encoding: str
    args: str | None  # JSON text; None: none given
    config: str | None  # JSON text; None: none given
    isolation: str
    buffer_size: int | None
    timeout: float | None  # seconds
    memory_limit: int  # bytes
    fuel: int | None
    dirs: list[tuple[str, str]]  # (host, guest)
    env: list[tuple[str, str]]  # (name, value)
    item_shape: object  # `describe(item_type)`; None: no item_type
    item_type_name: str  # "": no item_type
    num_workers: int
    in_order: bool
    seed: int | None
    worker_args: list[str] | None  # JSON text, one per worker
    shard: tuple[int, int] | None  # (index, count)
    sharding: str
    on_output: OnOutput  # called with (worker, stream, line)
    max_item_bytes: int | None  # None: the library's default
    batch_size: int | None  # None: items one by one
    drop_last: bool
    on_failure: str  # "stop", "restart" or "skip"
    max_restarts: int


def _iterable_options(
    generator: object,
    args: object,
    options: Mapping[str, object],
    *,
    exclude: tuple[str, ...] = (),
) -> _IterableOptions:
    """Checks the arguments of a call of ``Plugin.iterable``: ``options`` are
    its keyword options, by name; missing ones take their defaults, unknown
    ones (and those in ``exclude``, which the caller sets itself) raise.
    Anything invalid raises ``InvalidInputError``, before any worker starts."""
    given = _with_defaults(options, exclude=exclude)
    if not isinstance(generator, str) or not generator:
        raise _invalid(f"generator must be a non-empty str, not {generator!r}")
    isolation = given["isolation"]
    if isolation not in ("thread", "process"):
        raise _invalid(f"unknown isolation {isolation!r}: use 'thread' or 'process'")
    encoding = given["encoding"]
    if encoding not in ("json", "bincode"):
        raise _invalid(f"unknown encoding {encoding!r}: use 'json' or 'bincode'")
    buffer_size = given["buffer_size"]
    if buffer_size is not None:
        buffer_size = _int("buffer_size", buffer_size, 1)
    timeout = given["timeout"]
    if timeout is not None:
        timeout = _seconds("timeout", timeout)
    memory_limit = _int("memory_limit_mib", given["memory_limit_mib"], 1)
    if memory_limit > 1 << 24:
        raise _invalid(f"memory_limit_mib is too large: {memory_limit} MiB")
    fuel = given["fuel"]
    if fuel is not None:
        fuel = _int("fuel", fuel, 1)
    dirs = _dirs(given["dirs"])
    env = _env(given["env"])
    workers = _int("num_workers", given["num_workers"], 1)
    if workers > _native.MAX_WORKERS:
        raise _invalid(f"num_workers must be at most {_native.MAX_WORKERS}, not {workers}")
    in_order = given["in_order"]
    if not isinstance(in_order, bool):
        raise _invalid(f"in_order must be a bool, not {in_order!r}")
    sharding = given["sharding"]
    if sharding not in ("plugin", "items"):
        raise _invalid(f"unknown sharding {sharding!r}: use 'plugin' or 'items'")
    seed = _seed(given["seed"])
    worker_args = _worker_args(given["worker_args"], workers, args)
    shard = _shard(given["shard"], workers)
    max_item = given["max_item_mib"]
    if max_item is not None:
        max_item = _int("max_item_mib", max_item, 1)
        if max_item > 4095:
            raise _invalid(f"max_item_mib must be at most 4095 (4 GiB - 1 MiB), not {max_item}")
        max_item <<= 20
    on_output = given["on_output"]
    if on_output is None:
        on_output = _LogOutput(generator)
    elif not callable(on_output):
        raise _invalid(
            f"on_output must be a function (worker, stream, line) -> None, not {on_output!r}"
        )
    item_type, item_shape = given["item_type"], None
    if item_type is not None:
        item_shape = describe(item_type)
    batch_size = given["batch_size"]
    if batch_size is not None:
        batch_size = _int("batch_size", batch_size, 1)
    drop_last = given["drop_last"]
    if not isinstance(drop_last, bool):
        raise _invalid(f"drop_last must be a bool, not {drop_last!r}")
    if drop_last and batch_size is None:
        raise _invalid("drop_last=True needs a batch_size (it drops a short last batch)")
    on_failure = given["on_failure"]
    if on_failure not in ("stop", "restart", "skip"):
        raise _invalid(f"unknown on_failure {on_failure!r}: use 'stop', 'restart' or 'skip'")
    max_restarts = _int("max_restarts", given["max_restarts"], 0)
    if max_restarts > 2**32 - 1:
        raise _invalid(f"max_restarts must be at most {2**32 - 1}, not {max_restarts}")
    return _IterableOptions(
        generator=generator,
        encoding=encoding,
        args=_json("args", args),
        config=_json("config", given["config"]),
        isolation=isolation,
        buffer_size=buffer_size,
        timeout=timeout,
        memory_limit=memory_limit << 20,
        fuel=fuel,
        dirs=dirs,
        env=env,
        item_shape=item_shape,
        item_type_name="" if item_type is None else type_name(item_type),
        num_workers=workers,
        in_order=in_order,
        sharding=sharding,
        seed=seed,
        worker_args=worker_args,
        shard=shard,
        on_output=on_output,
        max_item_bytes=max_item,
        batch_size=batch_size,
        drop_last=drop_last,
        on_failure=on_failure,
        max_restarts=max_restarts,
    )


class _LogOutput:
    """The default ``on_output``: each line a record of the ``sandgen.plugin``
    logger, ``INFO`` for stdout and ``WARNING`` for stderr, with ``worker``,
    ``stream`` and ``generator`` as extra fields. The line is escaped
    (control characters, bidi controls: ``\\x1b``, ``\\u{202e}``), so that a
    plugin cannot drive the terminal a log is shown on; a handler given as
    ``on_output`` gets the raw line."""

    __slots__ = ("generator",)

    def __init__(self, generator: str) -> None:
        self.generator = generator

    def __call__(self, worker: int, stream: str, line: str) -> None:
        level = logging.INFO if stream == "stdout" else logging.WARNING
        if _plugin_log.isEnabledFor(level):
            extra = {"worker": worker, "stream": stream, "generator": self.generator}
            _plugin_log.log(level, "%s", _native.escape_text(line), extra=extra)


def _with_defaults(
    options: Mapping[str, object], *, exclude: tuple[str, ...] = ()
) -> dict[str, Any]:
    """``options`` of ``Plugin.iterable`` completed with the defaults; unknown
    ones (and those in ``exclude``, which the caller sets itself) raise."""
    known = set(_ITERABLE_DEFAULTS) - set(exclude)
    unknown = set(options) - known
    if unknown:
        raise _invalid(f"unknown option(s): {', '.join(sorted(unknown))}")
    return {**_ITERABLE_DEFAULTS, **options}


def _invalid(message: str) -> InvalidInputError:
    return InvalidInputError(message, kind="invalid_input")


def _path(name: str, value: object) -> str:
    if isinstance(value, str | os.PathLike):
        path = os.fspath(value)
        if isinstance(path, str) and path:
            return path
    raise _invalid(f"{name} must be a non-empty path (str or os.PathLike), not {value!r}")


def _int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _invalid(f"{name} must be an int, not {type(value).__name__} {value!r}")
    if value < minimum:
        raise _invalid(f"{name} must be at least {minimum}, not {value}")
    if value >= 2**63:
        raise _invalid(f"{name} is too large: {value}")
    return value


def _seconds(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _invalid(f"{name} must be a number of seconds, not {value!r}")
    if not math.isfinite(value) or value <= 0 or value > 1e9:
        raise _invalid(f"{name} must be a positive, finite number of seconds, not {value}")
    return float(value)


def _json(name: str, value: object) -> str | None:
    if value is None:
        return None
    try:
        return json.dumps(value, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as e:
        raise _invalid(f"{name} is not JSON-serialisable: {e}") from e


def _dirs(dirs: object) -> list[tuple[str, str]]:
    """``dirs`` as ``(host, guest)`` pairs."""
    grants: list[tuple[str, str]] = []
    if isinstance(dirs, Mapping):
        for host, guest in dirs.items():
            if not isinstance(guest, str) or not guest:
                raise _invalid(f"dirs: the guest path of {host!r} must be a non-empty str")
            grants.append((_path("dirs", host), guest))
    elif isinstance(dirs, list | tuple):
        for host in dirs:
            path = _path("dirs", host)
            grants.append((path, path))
    elif dirs is not None:
        raise _invalid(f"dirs must be a dict {{host: guest}} or a list of paths, not {dirs!r}")
    return grants


def _env(env: object) -> list[tuple[str, str]]:
    """``env`` as ``(name, value)`` pairs."""
    variables: list[tuple[str, str]] = []
    if isinstance(env, Mapping):
        for key, value in env.items():
            if not isinstance(key, str) or not key or "=" in key or "\0" in key:
                raise _invalid(f"env: invalid variable name {key!r}")
            if not isinstance(value, str) or "\0" in value:
                raise _invalid(f"env: the value of {key} must be a str without NUL, not {value!r}")
            variables.append((key, value))
    elif env is not None:
        raise _invalid(f"env must be a dict of str to str, not {env!r}")
    return variables


def _seed(seed: object) -> int | None:
    if seed is None:
        return None
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise _invalid(f"seed must be an int, not {type(seed).__name__} {seed!r}")
    if not 0 <= seed < 2**64:
        raise _invalid(f"seed must be from 0 to 2**64 - 1 (it must fit 64 bits), not {seed}")
    return seed


def _worker_args(worker_args: object, workers: int, args: object) -> list[str] | None:
    """``worker_args`` as JSON text, one per worker."""
    if worker_args is None:
        return None
    if not isinstance(worker_args, list | tuple):
        raise _invalid(
            f"worker_args must be a list of one args value per worker, not {worker_args!r}"
        )
    if len(worker_args) != workers:
        raise _invalid(
            f"worker_args has {len(worker_args)} values for {workers} worker(s); "
            "give exactly one per worker"
        )
    if args is not None:
        raise _invalid(
            "give either args (for every worker) or worker_args (one per worker), not both"
        )
    return [_json(f"worker_args[{i}]", value) or "null" for i, value in enumerate(worker_args)]


def _shard(shard: object, workers: int) -> tuple[int, int] | None:
    if shard is None:
        return None
    if (
        not isinstance(shard, tuple)
        or len(shard) != 2
        or not all(isinstance(n, int) and not isinstance(n, bool) for n in shard)
        or not 0 <= shard[0] < shard[1] <= 2**32 // workers
    ):
        raise _invalid(f"shard must be (index, count) with 0 <= index < count, not {shard!r}")
    return shard[0], shard[1]
