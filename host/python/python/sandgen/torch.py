"""sandgen generators as PyTorch datasets.

``dataset(...)`` returns a ``torch.utils.data.IterableDataset`` whose every
iteration is one epoch: one pass over a sandgen generator. ``torch`` is
imported only when ``dataset`` is called, so ``import sandgen`` never needs
it::

    from torch.utils.data import DataLoader
    import sandgen.torch

    data = sandgen.torch.dataset(
        "example_jsonl.wasm", "rows",
        args={"path": "/data/reviews.jsonl", "fields": ["id", "text"]},
        dirs={"/data": "/data"},
    )
    loader = DataLoader(data, batch_size=32, num_workers=2, persistent_workers=True)
    for epoch in range(3):
        data.set_epoch(epoch)
        for batch in loader:
            ...

Every sample once per epoch: by default (``sharding="items"``) each
DataLoader worker's sandgen workers run the whole stream as its only worker
and keep their share of its items (items ``i``, ``i + n``, ... of ``n``
workers in all), so a plugin that does not shard itself still gives each
sample exactly once per epoch across DataLoader workers and sandgen
workers. The cost: every worker runs the whole stream. A plugin that shards
itself by ``SANDGEN_WORKER_ID`` and ``SANDGEN_NUM_WORKERS`` is cheaper with
``sharding="plugin"``. The workers' random sources are one stream, of
``seed`` (or of one drawn when the dataset is made), so that each runs the
same stream.

A new order every epoch: each DataLoader worker keeps its sandgen iterable
(its sandboxed workers, and the plugin's state) across epochs when
``persistent_workers=True``, so epoch ``k`` is pass ``k`` of the plugin, and
a plugin that shuffles each pass anew gives each epoch its own order.
``set_epoch(k)`` (as ``DistributedSampler``'s) makes the next epoch pass
``k`` in fresh workers too: the workers run passes ``0..k`` without sending
their items (``Iterable.skip_passes``), so epoch ``k`` has the same items
with persistent workers and without. Call it before each epoch when the
workers are not persistent (a fresh worker cannot know the epoch
otherwise); persistent workers count their epochs themselves.

Checkpoints: the dataset has ``state_dict()`` and ``load_state_dict()``, so
torchdata's ``StatefulDataLoader`` saves where each DataLoader worker stands
(a sandgen position: ``Iterable.state_dict``) and a new loader over a new
dataset resumes with the batch after the last one it yielded, mid-epoch or
between epochs, with the seed the first dataset drew.

Tensors: where items hold arrays (``item_type=numpy.ndarray``, or a tuple,
dict or dataclass holding some) or come in batches (``batch_size=B``,
stacked in Rust), every numpy array becomes a ``torch.Tensor`` through
``torch.from_numpy``, which shares the array's memory (no copy; the arrays
are writable, so torch does not warn). With ``batch_size`` here, give the
DataLoader ``batch_size=None``::

    data = sandgen.torch.dataset(
        "images.wasm", "images", {"dir": "/data"}, dirs={"/data": "/data"},
        item_type=tuple[numpy.ndarray, int], batch_size=64,
    )
    for images, labels in DataLoader(data, batch_size=None, num_workers=2):
        ...  # images: uint8 [64, 224, 224, 3], labels: int64 [64]
"""

from __future__ import annotations

import dataclasses
import importlib
import itertools
import json
import os
import pickle
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from . import Iterable, PathLike, _iterable_options, _native, _resumed, _seed, load
from ._errors import BusyError, Error, InvalidInputError, _state_note
from ._types import describe

__all__ = ["dataset"]

Shard = Callable[[Any, int, int], Any]


def dataset(
    plugin_path: PathLike,
    generator: str,
    args: Any = None,
    *,
    shard: Shard | None = None,
    cache_dir: PathLike | None = None,
    sharding: str = "items",
    **options: Any,
) -> Any:
    """A ``torch.utils.data.IterableDataset`` over ``generator``.

    ``options`` are those of ``sandgen.Plugin.iterable``, checked now,
    before any DataLoader worker starts. ``sharding`` defaults to
    ``"items"`` here (see the module's documentation); without a ``seed``
    one is drawn now, shared by every DataLoader worker. ``shard(args,
    worker_id, num_workers)`` gives each DataLoader worker its own args
    instead, for a plugin that does not shard by worker itself (with
    ``sharding="plugin"`` only: by items, every worker must run the same
    stream). The dataset has ``set_epoch(k)`` and, in the process that
    iterates it, ``worker_pids``.
    """
    if shard is not None and not callable(shard):
        raise _invalid(
            f"shard must be a function (args, worker_id, num_workers) -> args, not {shard!r}"
        )
    if sharding not in ("plugin", "items"):
        raise _invalid(f"unknown sharding {sharding!r}: use 'items' or 'plugin'")
    if shard is not None and sharding == "items":
        raise _invalid(
            "shard= gives each DataLoader worker its own args, but sharding='items' needs every "
            "worker to run the same stream: use sharding='plugin' with shard="
        )
    options = dict(options, sharding=sharding)
    seed_drawn = sharding == "items" and options.get("seed") is None
    if seed_drawn:
        # Every DataLoader worker must run the same stream: one seed for all.
        options["seed"] = int.from_bytes(os.urandom(8), "little")
    data = importlib.import_module("torch.utils.data")
    cls = _dataset_class(data.IterableDataset)
    # Check the plugin, the generator and every option once, on the caller's
    # side, before any DataLoader worker starts.
    plugin = load(plugin_path, cache_dir=cache_dir)
    names = [name for name, _ in plugin.generators()]
    if generator not in names:
        raise _invalid(
            f"plugin {plugin.path} has no generator {generator!r}: it has {', '.join(names)}"
        )
    _iterable_options(generator, args, options, exclude=("shard",))
    return cls(plugin.path, generator, args, shard, cache_dir, options, None, seed_drawn)


def _holds_arrays(shape: object) -> bool:
    """Whether an item of this shape (``describe``'s) holds an array."""
    if shape == "ndarray":
        return True
    if isinstance(shape, tuple):
        return any(_holds_arrays(part) for part in shape[1:] if not isinstance(part, type))
    if isinstance(shape, list):
        return any(_holds_arrays(part) for part in shape)
    return False


def _tensors(torch: Any, ndarray: type, value: Any) -> Any:
    """``value`` with every numpy array in it a tensor sharing its memory."""
    kind = type(value)
    if kind is ndarray:
        return torch.from_numpy(value)
    if kind is tuple:
        return tuple(_tensors(torch, ndarray, v) for v in value)
    if kind is dict:
        return {k: _tensors(torch, ndarray, v) for k, v in value.items()}
    if kind is list:
        return [_tensors(torch, ndarray, v) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {
            f.name: _tensors(torch, ndarray, getattr(value, f.name))
            for f in dataclasses.fields(value)
        }
        return kind(**fields)
    return value


def _invalid(message: str) -> InvalidInputError:
    return InvalidInputError(message, kind="invalid_input")


class _Live:
    """The sandgen iterable a process runs for the dataset, kept across
    epochs, and where it is."""

    __slots__ = ("end_state", "epochs", "failed", "iterable", "passes", "pid", "running")

    def __init__(self, iterable: Iterable) -> None:
        self.iterable = iterable
        # Passes started on it (read, skipped or cut short).
        self.passes = 0
        # Epochs handed out by `iter()` (an iterator dropped unread counts:
        # torchdata makes one for the epoch a state finished, then the next).
        self.epochs = 0
        # The process it belongs to (a forked child must not use it).
        self.pid = os.getpid()
        # The native pass of the current epoch, if one is live.
        self.running: Any = None
        # A pass failed: its workers ended.
        self.failed = False
        # The position at the end of the last pass, read to its end (a
        # DataLoader worker's state once its share of the epoch is out).
        self.end_state: str | None = None

    def stop(self) -> None:
        if self.running is not None:
            self.running.close()
            self.running = None


# Iterables that a forked child found in its copy of a dataset: they belong
# to the parent, and are kept (never closed or dropped) so that nothing of
# the parent's workers is touched from the child.
_INHERITED: list[_Live] = []

_CLASSES: dict[type, type] = {}


def _rebuild(
    plugin_path: str,
    generator: str,
    args: Any,
    shard: Shard | None,
    cache_dir: PathLike | None,
    options: dict[str, Any],
    epoch: int | None = None,
    seed_drawn: bool = False,
) -> Any:
    data = importlib.import_module("torch.utils.data")
    cls = _dataset_class(data.IterableDataset)
    return cls(plugin_path, generator, args, shard, cache_dir, options, epoch, seed_drawn)


def _dataset_class(base: type) -> type:
    """The dataset class, a subclass of torch's ``IterableDataset``, made once."""
    if base in _CLASSES:
        return _CLASSES[base]

    class SandgenDataset(base):  # type: ignore[misc, valid-type]
        """One epoch, one pass over a sandgen generator, per iteration."""

        def __init__(
            self,
            plugin_path: str,
            generator: str,
            args: Any,
            shard: Shard | None,
            cache_dir: PathLike | None,
            options: dict[str, Any],
            epoch: int | None,
            seed_drawn: bool = False,
        ) -> None:
            super().__init__()
            self.plugin_path = plugin_path
            self.generator = generator
            self.args = args
            self.shard = shard
            self.cache_dir = cache_dir
            self.options = options
            # The epoch the next iteration gives, when set_epoch said so.
            self._epoch = epoch
            # The seed was drawn by `dataset`: a resumed run takes its state's.
            self._seed_drawn = seed_drawn
            # The position the next iteration starts at (load_state_dict).
            self._resume: str | None = None
            self._live: _Live | None = None
            # Items hold numpy arrays, made tensors on the way out.
            item_type = options.get("item_type")
            self._arrays = options.get("batch_size") is not None or (
                item_type is not None and _holds_arrays(describe(item_type))
            )

        def set_epoch(self, epoch: int) -> None:
            """Makes the next iteration epoch ``epoch`` (pass ``epoch`` of the
            plugin), in this process and in DataLoader workers started after
            this call; later iterations go on from there."""
            if isinstance(epoch, bool) or not isinstance(epoch, int):
                raise _invalid(f"set_epoch takes an int, not {type(epoch).__name__} {epoch!r}")
            if epoch < 0:
                raise _invalid(f"the epoch must be at least 0, not {epoch}")
            self._epoch = epoch
            self._resume = None

        def state_dict(self) -> dict[str, Any]:
            """Where this process's share of the epoch stands (torchdata's
            ``StatefulDataLoader`` keeps one per DataLoader worker):
            ``{"position": ...}``, a sandgen position (``Iterable.state_dict``)
            after the items taken so far; ``{"epoch": k}`` after
            ``set_epoch(k)``; ``{}`` before anything ran."""
            # A drawn seed goes with every state: a resumed run's later
            # epochs need it (the position holds it too).
            seed = {"seed": self.options["seed"]} if self._seed_drawn else {}
            if self._resume is not None:
                return {"position": json.loads(self._resume)}
            live = self._current()
            running = None if live is None else live.running
            if running is None and self._epoch is not None:
                return {"epoch": self._epoch, **seed}
            if live is None:
                return seed
            if running is not None:
                text = running.state()
            elif live.end_state is not None:
                text = live.end_state
            else:
                text = live.iterable._native.position()
            return {"position": json.loads(text)}

        def load_state_dict(self, state: Mapping[str, Any]) -> None:
            """Makes the next iteration continue from ``state`` (from
            ``state_dict()`` in the same DataLoader worker of an earlier run):
            the rest of that epoch, then the epochs after it. A state of
            other args or options, or an edited one, raises
            ``InvalidInputError`` naming what differs; ``BusyError`` while
            an epoch is being read."""
            live = self._current()
            if live is not None and live.running is not None and live.running.live:
                raise BusyError(
                    f"cannot load a state into the dataset of generator {self.generator!r} "
                    "while an epoch is being read: load it before iterating",
                    kind="busy",
                )
            if not isinstance(state, Mapping) or not set(state) <= {"position", "epoch", "seed"}:
                raise _invalid(
                    "state must be a dict from the dataset's state_dict() ({}, {'epoch': k} or "
                    f"{{'position': ...}}), not {state!r:.200}"
                )
            seed = state.get("seed")
            if "position" in state:
                try:
                    text = json.dumps(state["position"])
                except (TypeError, ValueError) as e:
                    raise _invalid(f"the state's position is not JSON data ({e})") from e
                # Checked now: a damaged state fails here, not in a worker.
                _, seed = _native.read_position(text)
                self._resume, self._epoch = text, None
            elif "epoch" in state:
                self.set_epoch(state["epoch"])
            else:
                self._resume = self._epoch = None
            if self._seed_drawn and seed is not None:
                # The run's seed, drawn by the dataset the state was taken
                # of: this dataset's epochs from here on are that run's.
                self.options = dict(self.options, seed=_seed(seed))

        @property
        def worker_pids(self) -> list[int]:
            """The worker processes of the iterable this process runs for the
            dataset (empty for worker threads, before the first epoch, and in
            a DataLoader's main process when its workers iterate)."""
            live = self._current()
            return [] if live is None else live.iterable.worker_pids

        def _current(self) -> _Live | None:
            live = self._live
            if live is not None and live.pid != os.getpid():
                # A forked copy: the iterable is the parent's.
                _INHERITED.append(live)
                self._live = live = None
            return live

        def _start(self, resume: str | None = None) -> _Live:
            data = importlib.import_module("torch.utils.data")
            info = data.get_worker_info()
            args = self.args
            options = dict(self.options)
            if info is not None:
                if self.shard is not None:
                    args = self.shard(args, info.id, info.num_workers)
                # Each DataLoader worker is a shard: its sandgen workers are
                # numbered after the others' (and by items, keep their share).
                options["shard"] = (info.id, info.num_workers)
            plugin = load(self.plugin_path, cache_dir=self.cache_dir)
            if resume is None:
                return _Live(plugin.iterable(self.generator, args, **options))
            passes, _ = _native.read_position(resume)
            state = json.loads(resume)
            live = _Live(_resumed(plugin, self.generator, args, state, options))
            live.passes = live.epochs = passes
            return live

        def __iter__(self) -> Iterator[Any]:
            live = self._current()
            if live is not None:
                live.stop()
                live.end_state = None
            resume, self._resume = self._resume, None
            if resume is not None:
                # A new iterable, at the loaded position (a state that does
                # not fit leaves the live one as it was).
                resumed = self._start(resume)
                if live is not None:
                    live.iterable.close()
                self._epoch = None
                self._live = live = resumed
                live.epochs += 1
                return self._epoch_items(live)
            epoch, self._epoch = self._epoch, None
            if epoch is None:
                # The epoch after the last one this process ran.
                epoch = 0 if live is None else live.epochs
            if live is not None and (epoch < live.passes or live.failed):
                # An earlier epoch than the iterable has run, or its workers
                # ended with an error: a new iterable, moved on to the epoch.
                live.iterable.close()
                self._live = live = None
            if live is None:
                self._live = live = self._start()
            if epoch > live.passes:
                live.iterable.skip_passes(epoch - live.passes)
                live.passes = epoch
            live.epochs = epoch + 1
            return self._epoch_items(live)

        def _epoch_items(self, live: _Live) -> Iterator[Any]:
            live.passes += 1
            running = live.iterable._native.start()
            live.running = running
            in_worker = importlib.import_module("torch.utils.data").get_worker_info() is not None
            try:
                items = itertools.chain.from_iterable(running)
                if self._arrays:
                    torch = importlib.import_module("torch")
                    ndarray = importlib.import_module("numpy").ndarray
                    items = (_tensors(torch, ndarray, item) for item in items)
                yield from items
                # Its position at its end, for a state taken before the next.
                live.end_state = running.state()
            except Error as error:
                live.failed = True
                if in_worker:
                    # DataLoader re-raises a worker's error in the main
                    # process from its type and text: the note carries its
                    # attributes there.
                    error.add_note(_state_note(error))
                raise
            finally:
                if live.running is running:
                    live.running = None
                running.close()

        def __repr__(self) -> str:
            return f"<sandgen.torch dataset {self.generator!r} of {self.plugin_path!r}>"

        def __reduce__(self) -> tuple[object, ...]:
            # DataLoader pickles the dataset into its workers (start methods
            # 'spawn' and 'forkserver'): rebuild it there from its path and
            # options, and say which option cannot go.
            state = (
                self.plugin_path,
                self.generator,
                self.args,
                self.shard,
                self.cache_dir,
                self.options,
                self._epoch,
                self._seed_drawn,
            )
            named = {"args": self.args, "shard": self.shard, **self.options}
            for name, value in named.items():
                try:
                    pickle.dumps(value)
                except Exception as e:
                    raise _invalid(
                        f"{name}= cannot be pickled into the DataLoader's worker processes "
                        f"({type(e).__name__}: {e}): with the 'spawn' and 'forkserver' start "
                        "methods, give a function defined at a module's top level"
                    ) from e
            return (_rebuild, state)

    SandgenDataset.__module__ = __name__
    SandgenDataset.__qualname__ = "SandgenDataset"
    _CLASSES[base] = SandgenDataset
    return SandgenDataset
