"""Write sandgen plugins in Python: plain generator functions, exported through
sandgen's WIT contract (``wit/generator.wit``) with one call.

A plugin is a module that defines its generators and binds the result of
:func:`plugin` to the name ``Generator``, which is where componentize-py looks
for the implementation of the ``generator`` interface::

    import sandgen_guest

    def count(n: int):
        '''Yields 0..n.'''
        yield from range(n)

    Generator = sandgen_guest.plugin(count)

and is built into a component with componentize-py (version 0.25.1)::

    componentize-py -d wit -w resumable-plugin componentize -p guest-sdk/python -p . app -o app.wasm

What a generator is
    A *function* (usually a generator function, but anything that returns an
    iterable) is called afresh with the arguments for every pass. A *class* is
    instantiated once, when the caller creates the iterable, and iterated
    (``iter(obj)``) for every pass, so state kept in the object lives across
    passes (an epoch counter, a shuffle seed, a cache). The name is the
    function's or class's ``__name__`` and the description the first paragraph
    of its docstring; :func:`generator` sets either.

Arguments and config
    The caller's arguments are one value (JSON text, or bincode; see below).
    Absent arguments call the generator with none, so defaults apply. A
    generator with one parameter receives the whole value; one with several
    receives an object's members as keyword arguments (or an array's items as
    positional ones). The initializer (``plugin(..., initialize=f)``) receives
    the config by the same rules, once per instance, before anything else.

Encodings
    The caller chooses JSON or bincode. Items are encoded from their value:
    with JSON as ``json.dumps`` writes them (``bytes`` become arrays of
    numbers); with bincode exactly as Rust's ``serde_json::Value`` would be
    written by bincode 2's standard configuration, so a Rust caller decodes
    them into ``u64``, ``i64``, ``f64``, ``String``, ``bool``, ``Vec<T>``,
    ``HashMap<String, T>``; a ``tuple`` is written without a length, as Rust
    writes a tuple or a struct's fields in order, and ``bytes`` as a byte
    sequence (``serde_bytes``). An :func:`array` is written as the array
    record (``{"dtype", "shape", "data"}``: design section 13) in either
    encoding. bincode carries no type tags, so bincode
    arguments are read by the generator's parameter annotations: ``int``
    (unsigned), ``float``, ``str``, ``bool``, ``list[T]``, ``tuple[...]``,
    ``dict[str, T]`` and ``Optional[T]`` (read as ``T``).

Batching and errors
    Items are framed into batches of at most the host's ``max-items`` and
    ``max-bytes``; a batch also closes after about a millisecond, so the
    items of a slow generator reach the caller promptly. An exception ends
    the pass: the items produced before it reach the caller first, then the
    error, whose message is the exception's summary line followed by its
    Python traceback. ``sys.exit`` in a generator fails its pass the same way.

Output
    Anything the plugin prints goes to the host's log, never among items.
"""

import inspect
import itertools
import json
import struct
import sys
import time
import traceback
import typing

from wit_world import exports
from wit_world.exports import generator as _wit
from componentize_py_types import Err

__all__ = ["Array", "Generator", "WorkerInfo", "array", "generator", "plugin", "worker_info"]

class WorkerInfo(typing.NamedTuple):
    """This instance's place among the workers of its iterable: ``id`` (from
    0), ``count`` and the caller's ``seed`` (``None`` without one; the
    instance's random sources are then already seeded from it)."""

    id: int
    count: int
    seed: typing.Optional[int]

    def shard(self, items):
        """This worker's share of ``items``: every ``count``-th, from the
        ``id``-th (in the caller's default order, the workers' items then
        come in the order of ``items``)."""
        import itertools

        return itertools.islice(items, self.id, None, max(self.count, 1))


def worker_info():
    """This instance's :class:`WorkerInfo`, from the environment the host
    sets (``SANDGEN_WORKER_ID``, ``SANDGEN_NUM_WORKERS``, ``SANDGEN_SEED``);
    worker 0 of 1 when they are not set::

        def lines(path: str):
            with open(path) as f:
                yield from sandgen_guest.worker_info().shard(f)
    """
    import os

    def read(name):
        try:
            return int(os.environ[name])
        except (KeyError, ValueError):
            return None

    worker_id = read("SANDGEN_WORKER_ID")
    count = read("SANDGEN_NUM_WORKERS")
    return WorkerInfo(
        id=worker_id if worker_id is not None else 0,
        count=count if count else 1,
        seed=read("SANDGEN_SEED"),
    )


# --- arrays -----------------------------------------------------------------

# Every dtype of the array record, with its element size in bytes.
_DTYPES = {
    "bool": 1,
    "uint8": 1,
    "int8": 1,
    "uint16": 2,
    "int16": 2,
    "uint32": 4,
    "int32": 4,
    "uint64": 8,
    "int64": 8,
    "float16": 2,
    "float32": 4,
    "float64": 8,
}


class Array:
    """An array item, made by :func:`array`: a dtype, a shape and the
    elements' bytes (a view of the buffer it was made from, not a copy)."""

    __slots__ = ("data", "dtype", "shape")

    def __init__(self, data, dtype, shape):
        self.data = data
        self.dtype = dtype
        self.shape = shape

    def __repr__(self):
        return f"Array(dtype={self.dtype!r}, shape={self.shape!r})"


def array(buffer, dtype, shape):
    """An n-dimensional array item over ``buffer``: ``bytes``, ``bytearray``,
    ``array.array``, ``memoryview`` or any C-contiguous buffer, holding the
    elements little-endian in C (row-major) order. ``dtype`` is one of
    ``bool``, ``uint8``, ``int8``, ``uint16``, ``int16``, ``uint32``,
    ``int32``, ``uint64``, ``int64``, ``float16``, ``float32``, ``float64``;
    ``shape`` the dimensions. Its byte length must be the product of the
    shape times the element size (``bool``: one byte, 0 or 1). A host reads
    it as a numpy array (``item_type=numpy.ndarray``); it may sit inside a
    tuple, list or dict item::

        import array as arr

        def images(n: int):
            for i in range(n):
                pixels = arr.array("B", [i % 256]) * (2 * 2 * 3)
                yield sandgen_guest.array(pixels, "uint8", (2, 2, 3)), i
    """
    if dtype not in _DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}: use one of {', '.join(_DTYPES)}")
    try:
        view = memoryview(buffer)
    except TypeError:
        raise TypeError(
            f"an array's data must be a buffer (bytes, bytearray, array.array, memoryview), "
            f"not {type(buffer).__name__}"
        ) from None
    if not view.c_contiguous:
        raise ValueError("an array's buffer must be C-contiguous")
    if view.format != "B" or view.ndim != 1:
        view = view.cast("B")
    try:
        shape = tuple(shape)
    except TypeError:
        raise TypeError(f"shape must be a sequence of ints, not {shape!r}") from None
    for d in shape:
        if isinstance(d, bool) or not isinstance(d, int) or not 0 <= d < 1 << 64:
            raise ValueError(f"shape must hold ints from 0 to 2**64 - 1, not {shape!r}")
    elements = 1
    for d in shape:
        elements *= d
    if elements * _DTYPES[dtype] != view.nbytes:
        raise ValueError(
            f"an array of dtype {dtype} and shape {list(shape)} holds "
            f"{elements * _DTYPES[dtype]} bytes, not {view.nbytes}"
        )
    if dtype == "bool" and view.tobytes().translate(None, b"\x00\x01"):
        raise ValueError("a bool array's bytes must be 0 or 1")
    return Array(view, dtype, shape)


# How long a batch may take before it is returned, in nanoseconds.
_BATCH_NS = 1_000_000
_FRAME = struct.Struct("<I")
_F64 = struct.Struct("<d")


def generator(obj=None, *, name=None, description=None):
    """Sets the name or description of a generator (function or class).

    Usable as ``@generator``, ``@generator(name="x")`` or
    ``generator(f, description="...")``.
    """

    def mark(target):
        if name is not None:
            target.__sandgen_name__ = name
        if description is not None:
            target.__sandgen_description__ = description
        return target

    return mark if obj is None else mark(obj)


def plugin(*generators, initialize=None):
    """Returns the implementation of sandgen's ``generator`` interface that
    exports ``generators`` (functions or classes) and runs ``initialize``
    (optional) with the config. Bind it to the name ``Generator``.

    Built for the world ``resumable-plugin`` (``wit/resume.wit``), it also
    binds ``Resume`` in the calling module: the fast path of resuming, which
    skips the items before a position with ``itertools.islice`` (without
    writing them) and lets a class generator with a method
    ``skip_passes(count) -> bool`` move on ``count`` passes at once."""
    entries = {}
    for target in generators:
        entry = _Entry(target)
        if entry.name in entries:
            raise ValueError(f"two generators are named {entry.name!r}")
        entries[entry.name] = entry
    init = _Callable(initialize, "the initializer") if initialize else None
    if _Resume is not None:
        # componentize-py finds each interface's class by name in the app.
        sys._getframe(1).f_globals.setdefault("Resume", _Resume)
    return type("Generator", (_Plugin,), {"_entries": entries, "_init": init})


# --- The WIT interface ------------------------------------------------------


class _Plugin(exports.Generator):
    _entries = {}
    _init = None
    # The encoding chosen by `initialize`; shared by every call.
    _encoding = None

    def generators(self):
        return [_wit.GeneratorInfo(e.name, e.description) for e in self._entries.values()]

    def initialize(self, encoding, config):
        if _Plugin._encoding is not None:
            raise Err("`initialize` was called twice; it runs once per instance")
        _Plugin._encoding = encoding
        if self._init is None:
            if config:
                raise Err("this plugin takes no config, but one was given")
            return
        try:
            args, kwargs = self._init.decode(encoding, bytes(config), "config")
            self._init.bind(args, kwargs, "config")
            self._init.target(*args, **kwargs)
        except Err:
            raise
        except BaseException as e:
            raise Err(f"the initializer failed: {_describe(e)}") from None

    def create(self, name, args):
        encoding = _Plugin._encoding
        if encoding is None:
            raise Err("`create` was called before `initialize`")
        entry = self._entries.get(name)
        if entry is None:
            known = ", ".join(self._entries) or "none"
            raise Err(f"this plugin has no generator named `{name}`; it has: {known}")
        json_items = encoding == _wit.Encoding.JSON
        try:
            a, kw = entry.decode(encoding, bytes(args), f"arguments for generator {name}")
            entry.bind(a, kw, f"arguments for generator {name}")
            if entry.is_class:
                obj = entry.target(*a, **kw)
                return _Iterable(lambda: obj, json_items, obj)
            target = entry.target
            return _Iterable(lambda: target(*a, **kw), json_items)
        except Err:
            raise
        except BaseException as e:
            raise Err(f"creating generator {name} failed: {_describe(e)}") from None


class _Iterable:
    """The WIT `iterable` resource: one per `create`."""

    def __init__(self, source, json_items, obj=None):
        self._source = source
        self._json = json_items
        # A class generator's object (its `skip_passes`, if it has one).
        self._obj = obj

    def skip_passes(self, count):
        method = getattr(self._obj, "skip_passes", None)
        if method is None:
            return False
        try:
            return bool(method(count))
        except BaseException as e:
            raise Err(_describe(e)) from None

    def iter(self):
        try:
            return _Iterator(iter(self._source()), self._json)
        except BaseException as e:
            raise Err(_describe(e)) from None


class _Iterator:
    """The WIT `iterator` resource: one pass."""

    def __init__(self, items, json_items):
        self._items = items
        self._json = json_items
        self._error = None
        self._over = False
        self._index = 0

    def next(self, max_items, max_bytes):
        if self._error is not None:
            error, self._error = self._error, "the pass already failed; its iterator is dead"
            raise Err(error)
        if self._over:
            return b""
        if max_items == 0:
            raise Err("`next` was called with max-items 0; it must be at least 1")
        encode = _encode_json if self._json else _encode_bincode
        pack = _FRAME.pack
        clock = time.monotonic_ns
        buf = bytearray()
        count = 0
        deadline = clock() + _BATCH_NS
        try:
            for item in self._items:
                try:
                    data = encode(item)
                except Exception as e:
                    kind = "JSON" if self._json else "bincode"
                    self._error = f"item {self._index + count} of the pass cannot be written as {kind}: {e}"
                    break
                buf += pack(len(data))
                buf += data
                count += 1
                if count >= max_items or len(buf) >= max_bytes or clock() >= deadline:
                    break
            else:
                self._over = True
        except BaseException as e:
            # Also SystemExit: a generator that exits fails its pass.
            self._error = _describe(e)
        self._index += count
        if self._error is not None:
            self._over = True
            if count == 0:
                error, self._error = self._error, "the pass already failed; its iterator is dead"
                raise Err(error)
        return bytes(buf)


    def skip(self, count):
        """Drops up to ``count`` items unwritten, in steps of 1, 2, 4, ...
        for about a batch's time: how many (0 once the pass is over)."""
        if self._error is not None:
            error, self._error = self._error, "the pass already failed; its iterator is dead"
            raise Err(error)
        if self._over:
            return 0
        clock = time.monotonic_ns
        deadline = clock() + _BATCH_NS
        dropped, step = 0, 1
        try:
            while dropped < count:
                take = min(step, count - dropped)
                got = sum(1 for _ in itertools.islice(self._items, take))
                dropped += got
                if got < take:
                    self._over = True
                    break
                step *= 2
                if clock() >= deadline:
                    break
        except BaseException as e:
            self._error = _describe(e)
            self._over = True
        self._index += dropped
        if self._error is not None and dropped == 0:
            error, self._error = self._error, "the pass already failed; its iterator is dead"
            raise Err(error)
        return dropped


if hasattr(exports, "Resume"):

    class _Resume(exports.Resume):
        """The WIT `resume` interface (``wit/resume.wit``)."""

        def skip(self, it, count):
            return it.skip(count)

        def skip_passes(self, it, count):
            return it.skip_passes(count)

else:
    # Built for the world `plugin`: resumed by replay.
    _Resume = None


def _describe(error):
    """The error's message: its summary line, then its Python traceback
    without the helper's own frames."""
    summary = "".join(traceback.format_exception_only(error)).strip()
    tb = error.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename == _HERE:
        tb = tb.tb_next
    lines = traceback.format_exception(type(error), error, tb)
    return f"{summary}\n{''.join(lines).rstrip()}"


_HERE = _describe.__code__.co_filename


# --- Generators and their arguments -----------------------------------------


class _Callable:
    """A function or class with its signature, ready to take decoded values."""

    def __init__(self, target, what):
        if not callable(target):
            raise TypeError(f"{what} must be a function or a class, not {target!r}")
        self.target = target
        self.what = what
        self.is_class = inspect.isclass(target)
        self.signature = inspect.signature(target)
        try:
            hints = typing.get_type_hints(target.__init__ if self.is_class else target)
        except Exception:
            hints = {}
        params = list(self.signature.parameters.values())
        self.params = [
            p for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        ]
        self.hints = {p.name: hints.get(p.name) for p in self.params}

    def decode(self, encoding, data, what):
        """The positional and keyword arguments that `data` holds."""
        if not data:
            return (), {}
        if encoding == _wit.Encoding.JSON:
            try:
                value = json.loads(data)
            except (ValueError, UnicodeDecodeError) as e:
                raise Err(f"invalid {what}: not JSON: {e}") from None
            if len(self.params) == 1:
                return (value,), {}
            if isinstance(value, dict):
                return (), value
            if isinstance(value, list):
                return tuple(value), {}
            if value is None:
                return (), {}
            raise Err(
                f"invalid {what}: expected an object or an array for "
                f"{len(self.params)} parameters, got {type(value).__name__}"
            )
        reader = _Reader(data, what)
        if len(self.params) == 1:
            param = self.params[0]
            value = reader.read(self._hint(param.name, what), param.name)
            reader.finish()
            return (value,), {}
        kwargs = {}
        for _ in range(reader.varint()):
            key = reader.string()
            if key not in self.hints:
                raise Err(f"invalid {what}: there is no parameter named {key!r}")
            kwargs[key] = reader.read(self._hint(key, what), key)
        reader.finish()
        return (), kwargs

    def _hint(self, name, what):
        hint = self.hints.get(name)
        if hint is None:
            raise Err(
                f"invalid {what}: bincode carries no types, so parameter {name!r} "
                f"needs a type annotation (int, float, str, bool, list[...], "
                f"dict[str, ...]); or ask for the JSON encoding"
            )
        return hint

    def bind(self, args, kwargs, what):
        try:
            self.signature.bind(*args, **kwargs)
        except TypeError as e:
            raise Err(f"invalid {what}: {e}") from None


class _Entry(_Callable):
    def __init__(self, target):
        name = getattr(target, "__sandgen_name__", None) or getattr(target, "__name__", None)
        if not name:
            raise TypeError(f"cannot tell the name of generator {target!r}; use generator(name=...)")
        super().__init__(target, f"generator {name}")
        self.name = name
        doc = getattr(target, "__sandgen_description__", None) or inspect.getdoc(target) or ""
        self.description = " ".join(doc.strip().split("\n\n")[0].split())


# --- JSON -------------------------------------------------------------------


def _json_default(value):
    if isinstance(value, Array):
        # The record's fields in the order Rust's serde_json writes them.
        return {"dtype": value.dtype, "shape": list(value.shape), "data": list(value.data)}
    if isinstance(value, (bytes, bytearray, memoryview)):
        return list(bytes(value))
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"an item of type {type(value).__name__} cannot be written as JSON")


_dumps = json.JSONEncoder(separators=(",", ":"), default=_json_default, allow_nan=False).encode


def _encode_json(item):
    return _dumps(item).encode()


# --- bincode (2, standard configuration) ------------------------------------


def _varint(n, out):
    if n < 251:
        out.append(n)
    elif n < 1 << 16:
        out.append(251)
        out += n.to_bytes(2, "little")
    elif n < 1 << 32:
        out.append(252)
        out += n.to_bytes(4, "little")
    elif n < 1 << 64:
        out.append(253)
        out += n.to_bytes(8, "little")
    else:
        raise OverflowError(f"{n} does not fit in 64 bits")


def _write(value, out):
    # Ordered by how often items hold them; bool before int (a subclass).
    if isinstance(value, bool):
        out.append(1 if value else 0)
    elif isinstance(value, int):
        if value >= 0:
            _varint(value, out)
        elif value >= -(1 << 63):
            _varint(-2 * value - 1, out)  # zigzag, as for an i64
        else:
            raise OverflowError(f"{value} does not fit in 64 bits")
    elif isinstance(value, str):
        data = value.encode()
        _varint(len(data), out)
        out += data
    elif isinstance(value, (bytes, bytearray, memoryview)):
        if isinstance(value, memoryview) and (value.format != "B" or value.ndim != 1):
            value = value.cast("B")  # its length in bytes, not elements
        _varint(len(value), out)
        out += value
    elif isinstance(value, Array):
        _write(value.dtype, out)
        _varint(len(value.shape), out)
        for d in value.shape:
            _varint(d, out)
        _varint(len(value.data), out)
        out += value.data
    elif isinstance(value, float):
        out += _F64.pack(value)
    elif isinstance(value, list):
        _varint(len(value), out)
        for v in value:
            _write(v, out)
    elif isinstance(value, tuple):
        for v in value:
            _write(v, out)
    elif isinstance(value, dict):
        _varint(len(value), out)
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError(f"a map key must be a str, not {type(k).__name__}")
            _write(k, out)
            _write(v, out)
    elif value is None:
        pass
    else:
        raise TypeError(f"an item of type {type(value).__name__} cannot be written as bincode")


def _encode_bincode(item):
    if type(item) is int and 0 <= item < 251:
        return bytes((item,))
    if type(item) is bytes:
        out = bytearray()
        _varint(len(item), out)
        out += item
        return out
    out = bytearray()
    _write(item, out)
    return out


class _Reader:
    """Reads bincode of a JSON value by a type annotation."""

    def __init__(self, data, what):
        self.data = data
        self.pos = 0
        self.what = what

    def fail(self, message):
        raise Err(f"invalid {self.what}: {message}")

    def take(self, n):
        end = self.pos + n
        if end > len(self.data):
            self.fail("unexpected end of input")
        chunk = self.data[self.pos : end]
        self.pos = end
        return chunk

    def varint(self):
        first = self.take(1)[0]
        if first < 251:
            return first
        if first > 253:
            self.fail(f"invalid integer tag {first}")
        return int.from_bytes(self.take({251: 2, 252: 4, 253: 8}[first]), "little")

    def string(self):
        try:
            return self.take(self.varint()).decode()
        except UnicodeDecodeError as e:
            self.fail(f"a string is not UTF-8: {e}")

    def read(self, hint, name):
        origin = typing.get_origin(hint)
        params = typing.get_args(hint)
        if origin is typing.Union:
            rest = [p for p in params if p is not type(None)]
            if len(rest) == 1:
                return self.read(rest[0], name)
        elif hint is bool:
            flag = self.take(1)[0]
            if flag > 1:
                self.fail(f"{name}: invalid bool {flag}")
            return flag == 1
        elif hint is int:
            return self.varint()
        elif hint is float:
            return _F64.unpack(self.take(8))[0]
        elif hint is str:
            return self.string()
        elif origin is list or hint is list:
            item = params[0] if params else None
            return [self.read(item, f"{name}[{i}]") for i in range(self.varint())]
        elif origin is tuple and params and params[-1] is not Ellipsis:
            n = self.varint()
            if n != len(params):
                self.fail(f"{name}: expected {len(params)} values, got {n}")
            return tuple(self.read(p, f"{name}[{i}]") for i, p in enumerate(params))
        elif origin is tuple:
            item = params[0] if params else None
            return tuple(self.read(item, f"{name}[{i}]") for i in range(self.varint()))
        elif origin is dict and params and params[0] is str:
            return {
                (key := self.string()): self.read(params[1], f"{name}[{key!r}]")
                for _ in range(self.varint())
            }
        self.fail(
            f"{name}: cannot read type {hint!r} from bincode; use int, float, str, "
            f"bool, list[...], tuple[...], dict[str, ...] or Optional[...]"
        )

    def finish(self):
        if self.pos != len(self.data):
            self.fail(f"{len(self.data) - self.pos} trailing bytes after the value")
