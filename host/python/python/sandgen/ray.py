"""sandgen generators as Ray Data datasets.

``read_generator`` returns a ``ray.data.Dataset`` read by Ray Data's
streaming executor, one read task per shard; each shard is one sandgen
iterable run inside a Ray worker process, streaming its items as Arrow
blocks. Install with ``pip install "./host/python[ray]"``; importing
``sandgen`` never imports Ray.

What travels, and what each node pays
    The plugin's bytes are put into Ray's object store once by the driver
    (``ray.put``); each read task carries a reference, and a node fetches the
    bytes once. No shared filesystem is needed. Each Ray worker process
    loads the plugin through the compile cache of its node
    (``$SANDGEN_CACHE_DIR`` or ``~/.cache/sandgen``, keyed by content), so a
    node compiles a plugin once, not once per task; a worker process keeps
    the loaded plugin for its later tasks. Per task: a sandgen iterable
    (start, initializer, ``create``); per row, the row itself in an Arrow
    block.

Rows and blocks
    A JSON-object item (or a dataclass item) becomes a row with its keys as
    columns; a tuple item becomes the columns ``item_0``, ``item_1``, ...;
    any other item becomes ``{"item": value}``; ``bytes`` become binary
    columns. Arrays (``item_type=numpy.ndarray``, alone or inside those
    items) become Arrow tensor columns (Ray's ``ArrowTensorArray``: one
    fixed-shape tensor column where every array of a block has the same
    dtype and shape, else variable-shaped), never Python lists; Ray's
    ``iter_batches`` hands them back as numpy arrays. ``batch_size`` is
    Ray's to set (``iter_batches``, ``map_batches``): it is refused here.
    Within a shard, items keep their order. A block is at most
    ``BLOCK_ROWS`` rows and about ``BLOCK_BYTES`` bytes: small enough for
    Ray's back-pressure to act (a block is its unit of memory
    accounting) and to keep the first rows flowing early, large enough that
    the per-block cost (an Arrow table, an object-store put) is spread over
    thousands of rows.

Failures and retries
    A failing shard fails the dataset with the sandgen error (the exception
    class of its kind), its text naming the shard (``shard 2 of 8``) and
    including the plugin's message. Read tasks run with
    ``retry_exceptions=False``: a plugin's error is deterministic, and
    retrying it would only repeat it, slower; Ray still retries a task whose
    worker process or node was lost (``max_retries=MAX_RETRIES``).

    ``on_failure="restart"`` or ``"skip"`` (with ``max_restarts``) acts
    inside each read task, below Ray: a sandboxed worker that dies, traps or
    fails is started again in the same task and resumed where it stood (or
    past the failed item), so the task goes on and Ray never sees the
    failure; the rows are exactly those of an undisturbed read (less the
    items skipped). Only a failure that spends the task's restarts reaches
    Ray, as a plugin error, which Ray does not retry. A task whose own Ray
    worker process or node is lost is Ray's to retry, as above: sandgen's
    restarts then start again with the task.

Stop and resume
    ``positions=True`` adds two columns to every row: ``sandgen_shard`` (the
    shard's index) and ``sandgen_position`` (the shard's position after that
    row, as JSON text: ``Iterable.state_dict``). A consumer feeds the batches
    it has used to a ``ShardPositions``, saves ``ShardPositions.state()``
    with its checkpoint, and after a stop reads the dataset again with
    ``resume=`` that state: each shard starts right after the last of its
    rows that was used (a shard with none used starts at its beginning), so
    the rows used before and those read after are exactly the dataset's rows,
    each shard's in its order. Rows must then reach the consumer in their
    shard's order: ``positions=True`` needs Ray Data's ``preserve_order``.
    A position binds to its shard (and to the
    plugin, generator, args and options): a state of another dataset is
    refused by name, in the read task. Ray's own retries compose with it: a
    read task that Ray runs again (its worker process or node lost) starts
    again from the same place (its ``resume`` position, or the start) and,
    the plugin being deterministic under its args and seed, makes the same
    rows again.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa
import ray
import ray.data
from ray.data.block import BlockMetadata
from ray.data.datasource import Datasource, ReadTask

from . import (
    Error,
    InvalidInputError,
    LoadError,
    PathLike,
    Plugin,
    _int,
    _iterable_options,
    _native,
    _path,
    _resumed,
    _with_defaults,
    load_bytes,
)

__all__ = ["BLOCK_BYTES", "BLOCK_ROWS", "MAX_RETRIES", "ShardPositions", "read_generator"]

BLOCK_ROWS = 4096
BLOCK_BYTES = 8 << 20
MAX_RETRIES = 2


def read_generator(
    plugin_path: PathLike,
    generator: str,
    *,
    shard_args: list[Any] | None = None,
    num_shards: int | None = None,
    args: Any = None,
    config: Any = None,
    cache_dir: PathLike | None = None,
    positions: bool = False,
    resume: list[Mapping[str, Any] | None] | None = None,
    **iterable_options: Any,
) -> ray.data.Dataset:
    """A dataset of ``generator``'s items, one read task per shard.

    Give ``shard_args`` (one read task per entry, each its own ``args``) or
    ``num_shards`` (that many tasks with the same ``args``; shard ``i``'s
    workers see ``SANDGEN_WORKER_ID`` and ``SANDGEN_NUM_WORKERS`` as if all
    the shards' workers were one group). ``iterable_options`` are those of
    ``sandgen.Plugin.iterable``. Everything is checked here, on the driver,
    before any task is scheduled: the plugin is loaded and its generators
    listed.

    ``positions=True`` gives every row its shard and the shard's position
    after it (``sandgen_shard``, ``sandgen_position``); ``resume`` (one
    entry per shard: a position from ``ShardPositions.state()``, or ``None``
    for the shard's start) reads each shard from there. See the module's
    "Stop and resume".

    >>> ds = sandgen.ray.read_generator(                     # doctest: +SKIP
    ...     "example_jsonl.wasm", "rows",
    ...     shard_args=[{"path": f"/data/{p}"} for p in parts],
    ...     dirs={"data": "/data"}, timeout=30.0)
    """
    if (shard_args is None) == (num_shards is None):
        raise InvalidInputError(
            "give exactly one of shard_args (one read task per entry) or num_shards "
            "(that many read tasks with the same args)"
        )
    if shard_args is not None:
        if not isinstance(shard_args, list | tuple) or not shard_args:
            raise InvalidInputError("shard_args must be a non-empty list: one args value per shard")
        if args is not None:
            raise InvalidInputError(
                "args goes with num_shards; with shard_args, each shard has its own"
            )
        shards = list(shard_args)
    else:
        shards = [args] * _int("num_shards", num_shards, 1)
    options = _with_defaults(
        {"config": config, **iterable_options},
        exclude=("worker_args", "shard", "batch_size", "drop_last"),
    )
    for index, shard in enumerate(shards):
        try:
            _iterable_options(generator, shard, options)
        except InvalidInputError as e:
            raise InvalidInputError(f"shard {index} of {len(shards)}: {e}") from None
    if not isinstance(positions, bool):
        raise InvalidInputError(f"positions must be a bool, not {positions!r}")
    if positions and not ray.data.DataContext.get_current().execution_options.preserve_order:
        # A shard's rows must reach the consumer in order, or its last row
        # used would not say that the rows before it were used.
        raise InvalidInputError(
            "positions=True needs each shard's rows in order: set "
            "ray.data.DataContext.get_current().execution_options.preserve_order = True"
        )
    starts = _starts(resume, len(shards))
    path = _path("plugin_path", plugin_path)
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise LoadError(f"cannot read plugin {path}: {e}", kind="load") from None
    name = Path(path).stem
    plugin = load_bytes(data, name=name, cache_dir=cache_dir)
    names = [known for known, _ in plugin.generators()]
    if generator not in names:
        raise InvalidInputError(
            f"plugin {path} has no generator {generator!r}; it has: {', '.join(names)}"
        )
    source = _SandgenDatasource(
        plugin=ray.put(data),
        digest=hashlib.sha256(data).hexdigest(),
        name=name,
        generator=generator,
        shards=shards,
        config=config,
        cache_dir=None if cache_dir is None else _path("cache_dir", cache_dir),
        options=iterable_options,
        positions=positions,
        starts=starts,
    )
    with warnings.catch_warnings():
        # Ray 2.60 deprecates `ray_remote_args` (to be removed in 2.64) but
        # has no named parameter yet for a read task's retries.
        warnings.filterwarnings("ignore", message=".*ray_remote_args.*")
        return ray.data.read_datasource(
            source,
            override_num_blocks=len(shards),
            ray_remote_args=_remote_args(),
        )


def _starts(resume: object, count: int) -> list[str | None]:
    """Each shard's start, as a position's JSON text (``None``: its
    beginning), checked as positions on the driver."""
    if resume is None:
        return [None] * count
    if not isinstance(resume, list | tuple) or len(resume) != count:
        raise InvalidInputError(
            f"resume must be a list of one position (or None) per shard, {count} in all, "
            f"as ShardPositions.state() gives: not {resume!r:.200}"
        )
    starts: list[str | None] = []
    for index, state in enumerate(resume):
        if state is None:
            starts.append(None)
            continue
        try:
            if not isinstance(state, Mapping):
                raise InvalidInputError(f"it is a {type(state).__name__}, not a position's dict")
            text = json.dumps(dict(state))
            _native.read_position(text)
        except (InvalidInputError, TypeError, ValueError) as e:
            raise InvalidInputError(f"resume[{index}], shard {index} of {count}: {e}") from None
        starts.append(text)
    return starts


class ShardPositions:
    """Where each shard of a dataset read with ``positions=True`` stands, from
    the rows a consumer has used: give it each batch (or row) once used, and
    save ``state()`` with the checkpoint; ``read_generator(..., resume=state)``
    reads the rest.

    >>> positions = sandgen.ray.ShardPositions(num_shards=4)   # doctest: +SKIP
    >>> for batch in ds.iter_batches(batch_size=256):          # doctest: +SKIP
    ...     train(batch)
    ...     positions.update(batch)
    """

    def __init__(self, num_shards: int) -> None:
        self._positions: list[str | None] = [None] * _int("num_shards", num_shards, 1)

    def update(self, rows: Mapping[str, Any]) -> None:
        """Takes the positions of used rows: a batch (a dict of columns, as
        ``iter_batches`` gives it) or one row (``iter_rows``)."""
        try:
            shards, texts = rows["sandgen_shard"], rows["sandgen_position"]
        except (KeyError, TypeError):
            raise InvalidInputError(
                "the rows have no sandgen_shard and sandgen_position columns: read the "
                "dataset with read_generator(..., positions=True)"
            ) from None
        if isinstance(texts, str):
            shards, texts = [shards], [texts]
        for shard, text in zip(shards, texts, strict=True):
            index = int(shard)
            if not 0 <= index < len(self._positions):
                raise InvalidInputError(
                    f"a row of shard {index}, beyond the {len(self._positions)} shards "
                    "this ShardPositions was made for"
                )
            # Within a shard, rows come in order: the last one used is latest.
            self._positions[index] = str(text)

    def state(self) -> list[dict[str, Any] | None]:
        """One position per shard (``None``: none of its rows used yet),
        JSON-serialisable: ``resume=`` of ``read_generator``."""
        return [None if text is None else json.loads(text) for text in self._positions]


def _remote_args() -> dict[str, Any]:
    """How Ray runs the read tasks: plugin errors are not retried."""
    return {"max_retries": MAX_RETRIES, "retry_exceptions": False}


class _SandgenDatasource(Datasource):
    """One read task per shard, each a sandgen iterable."""

    def __init__(
        self,
        *,
        plugin: ray.ObjectRef,
        digest: str,
        name: str,
        generator: str,
        shards: list[Any],
        config: Any,
        cache_dir: str | None,
        options: dict[str, Any],
        positions: bool,
        starts: list[str | None],
    ) -> None:
        self._plugin = plugin
        self._digest = digest
        self._name = name
        self._generator = generator
        self._shards = shards
        self._config = config
        self._cache_dir = cache_dir
        self._options = options
        self._positions = positions
        self._starts = starts

    def get_name(self) -> str:
        return f"sandgen({self._name}/{self._generator})"

    def estimate_inmemory_data_size(self) -> int | None:
        return None

    def get_read_tasks(
        self, parallelism: int, per_task_row_limit: int | None = None, data_context: Any = None
    ) -> list[ReadTask]:
        count = len(self._shards)
        return [
            ReadTask(
                functools.partial(
                    _read_shard,
                    plugin=self._plugin,
                    digest=self._digest,
                    name=self._name,
                    generator=self._generator,
                    shard=(index, count),
                    args=args,
                    config=self._config,
                    cache_dir=self._cache_dir,
                    options=self._options,
                    positions=self._positions,
                    start=self._starts[index],
                ),
                BlockMetadata(num_rows=None, size_bytes=None, input_files=None, exec_stats=None),
                per_task_row_limit=per_task_row_limit,
            )
            for index, args in enumerate(self._shards)
        ]


# Plugins this worker process loaded, by content digest.
_LOADED: dict[str, Plugin] = {}


def _read_shard(
    *,
    plugin: ray.ObjectRef,
    digest: str,
    name: str,
    generator: str,
    shard: tuple[int, int],
    args: Any,
    config: Any,
    cache_dir: str | None,
    options: dict[str, Any],
    positions: bool = False,
    start: str | None = None,
) -> Iterator[pa.Table]:
    """Runs one shard in a Ray worker, from `start` (a position's JSON) when
    given: its items as Arrow tables, with their positions if asked."""
    index, count = shard
    try:
        loaded = _LOADED.get(digest)
        if loaded is None:
            loaded = load_bytes(ray.get(plugin), name=name, cache_dir=cache_dir)
            _LOADED[digest] = loaded
        if start is None:
            iterable = loaded.iterable(generator, args, config=config, shard=shard, **options)
        else:
            given = dict(options, config=config, shard=shard)
            iterable = _resumed(loaded, generator, args, json.loads(start), given)
        with iterable:
            rows: list[dict[str, Any]] = []
            size = 0
            items = iter(iterable)
            running = iterable._running()
            for item in items:
                row = _row(item)
                if positions and running is not None:
                    row = dict(row, sandgen_shard=index, sandgen_position=running.state())
                rows.append(row)
                size += _size(row)
                if len(rows) >= BLOCK_ROWS or size >= BLOCK_BYTES:
                    yield _table(rows)
                    rows, size = [], 0
            if rows:
                yield _table(rows)
    except Error as e:
        raise type(e)(
            f"shard {index} of {count} of generator {generator} failed: {e}",
            kind=e.kind,
            plugin_message=e.plugin_message,
            guest_stderr=e.guest_stderr,
            backtrace=e.backtrace,
        ) from None


def _table(rows: list[dict[str, Any]]) -> pa.Table:
    """An Arrow table of the rows: arrays as tensor columns, an integer
    column with a value beyond int64 (a Rust u64) as uint64."""
    names = list(dict.fromkeys(key for row in rows for key in row))
    return pa.table({name: _column([row.get(name) for row in rows]) for name in names})


def _column(values: list[Any]) -> pa.Array:
    ndarray = _ndarray()
    if ndarray is not None and values and all(type(v) is ndarray for v in values):
        import numpy as np
        from ray.data.extensions import ArrowTensorArray

        first = values[0]
        if all(v.shape == first.shape and v.dtype == first.dtype for v in values):
            # One copy, into the block's tensor column.
            return ArrowTensorArray.from_numpy(np.stack(values))
        return ArrowTensorArray.from_numpy(values)
    try:
        return pa.array(values)
    except OverflowError:
        return pa.array(values, type=pa.uint64())


def _ndarray() -> type | None:
    """numpy's array type, if numpy was imported (items hold arrays only
    then)."""
    import sys

    numpy = sys.modules.get("numpy")
    return None if numpy is None else numpy.ndarray


def _row(item: Any) -> dict[str, Any]:
    if isinstance(item, dict) and all(isinstance(key, str) for key in item):
        return item
    if dataclasses.is_dataclass(item) and not isinstance(item, type):
        # Not dataclasses.asdict, which deep-copies every array.
        return {f.name: _plain(getattr(item, f.name)) for f in dataclasses.fields(item)}
    if type(item) is tuple:
        return {f"item_{i}": value for i, value in enumerate(item)}
    return {"item": item}


def _plain(value: Any) -> Any:
    """A nested dataclass as a dict (its arrays not copied)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    return value


def _size(row: dict[str, Any]) -> int:
    """About how many bytes a row takes in a block."""
    return sum(
        len(v) if isinstance(v, str | bytes) else getattr(v, "nbytes", 8) for v in row.values()
    )
