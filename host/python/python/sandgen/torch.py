"""sandgen generators as PyTorch datasets.

``dataset(...)`` returns a ``torch.utils.data.IterableDataset`` whose every
iteration is one pass over a sandgen generator. ``torch`` is imported only
when ``dataset`` is called, so ``import sandgen`` never needs it.

The dataset holds only the plugin's path and the options, so ``DataLoader``
can pickle it into its worker processes; each DataLoader worker then runs
its own sandboxed sandgen worker. By default every DataLoader worker runs
the generator with the same ``args`` (so ``num_workers=N`` repeats the
stream N times, as for any IterableDataset); give ``shard(args, worker_id,
num_workers)`` to return each worker's own args instead::

    from torch.utils.data import DataLoader
    import sandgen.torch

    data = sandgen.torch.dataset(
        "example_jsonl.wasm", "rows",
        args={"path": "/data/reviews.jsonl", "fields": ["id", "text"]},
        dirs={"data": "/data"},
    )
    for batch in DataLoader(data, batch_size=32):
        ...

sandgen's own tests cannot install torch (it is too large for CI); they run
this class against a minimal stand-in of the parts of torch's protocol that
``DataLoader`` uses (``IterableDataset``, ``get_worker_info``), and say so.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from typing import Any

from . import PathLike, load

__all__ = ["dataset"]

Shard = Callable[[Any, int, int], Any]


def dataset(
    plugin_path: PathLike,
    generator: str,
    args: Any = None,
    *,
    shard: Shard | None = None,
    cache_dir: PathLike | None = None,
    **options: Any,
) -> Any:
    """A ``torch.utils.data.IterableDataset`` over ``generator``; ``options``
    are those of ``sandgen.Plugin.iterable``, checked now."""
    if shard is not None and not callable(shard):
        from ._errors import InvalidInputError

        raise InvalidInputError(
            f"shard must be a function (args, worker_id, num_workers) -> args, not {shard!r}"
        )
    data = importlib.import_module("torch.utils.data")
    cls = _dataset_class(data.IterableDataset)
    # Check the plugin, the generator and every option once, on the caller's
    # side, before any DataLoader worker starts.
    plugin = load(plugin_path, cache_dir=cache_dir)
    names = [name for name, _ in plugin.generators()]
    if generator not in names:
        from ._errors import InvalidInputError

        raise InvalidInputError(
            f"plugin {plugin.path} has no generator {generator!r}: it has {', '.join(names)}"
        )
    from . import _iterable_options

    _iterable_options(generator, args, options, exclude=("shard",))
    return cls(plugin.path, generator, args, shard, cache_dir, options)


_CLASSES: dict[type, type] = {}


def _rebuild(
    plugin_path: str,
    generator: str,
    args: Any,
    shard: Shard | None,
    cache_dir: PathLike | None,
    options: dict[str, Any],
) -> Any:
    data = importlib.import_module("torch.utils.data")
    cls = _dataset_class(data.IterableDataset)
    return cls(plugin_path, generator, args, shard, cache_dir, options)


def _dataset_class(base: type) -> type:
    """The dataset class, a subclass of torch's ``IterableDataset``, made once."""
    if base in _CLASSES:
        return _CLASSES[base]

    class SandgenDataset(base):  # type: ignore[misc, valid-type]
        """One pass over a sandgen generator per iteration."""

        def __init__(
            self,
            plugin_path: str,
            generator: str,
            args: Any,
            shard: Shard | None,
            cache_dir: PathLike | None,
            options: dict[str, Any],
        ) -> None:
            super().__init__()
            self.plugin_path = plugin_path
            self.generator = generator
            self.args = args
            self.shard = shard
            self.cache_dir = cache_dir
            self.options = options

        def __iter__(self) -> Iterator[Any]:
            data = importlib.import_module("torch.utils.data")
            info = data.get_worker_info()
            args = self.args
            options = dict(self.options)
            if info is not None:
                if self.shard is not None:
                    args = self.shard(args, info.id, info.num_workers)
                # Each DataLoader worker is a shard: its sandgen workers are
                # numbered after the others', and a seed gives each its own
                # streams.
                options["shard"] = (info.id, info.num_workers)
            plugin = load(self.plugin_path, cache_dir=self.cache_dir)
            iterable = plugin.iterable(self.generator, args, **options)
            with iterable:
                yield from iterable

        def __repr__(self) -> str:
            return f"<sandgen.torch dataset {self.generator!r} of {self.plugin_path!r}>"

        def __reduce__(self) -> tuple[object, ...]:
            # DataLoader pickles the dataset into its workers: rebuild it
            # there from its path and options.
            return (
                _rebuild,
                (
                    self.plugin_path,
                    self.generator,
                    self.args,
                    self.shard,
                    self.cache_dir,
                    self.options,
                ),
            )

    SandgenDataset.__module__ = __name__
    SandgenDataset.__qualname__ = "SandgenDataset"
    _CLASSES[base] = SandgenDataset
    return SandgenDataset
