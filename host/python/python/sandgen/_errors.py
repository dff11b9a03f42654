"""sandgen's exceptions: one base class, one subclass per error kind.

The native side makes them through ``_from_native``; ``kind`` is the Rust
``ErrorKind``'s name in snake case (``ErrorKind::name``, passed on by
``kind_name`` in ``src/errors.rs``).
"""

from __future__ import annotations

import builtins
import json

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
    "IterationFailedError",
    "LoadError",
    "LoadLimitError",
    "MemoryLimitError",
    "ProtocolError",
    "StackOverflowError",
    "TimeoutError",
    "TrapError",
    "WorkerDiedError",
]


class Error(Exception):
    """A sandgen error: ``str(e)`` is the library's message.

    ``kind`` names what failed ("timeout", "memory_limit", ...);
    ``plugin_message`` is the plugin's own words when it reported the error;
    ``guest_stderr`` is the tail of what the guest wrote to stderr and
    ``backtrace`` its wasm backtrace, when there are any.
    """

    kind: str = "error"

    def __init__(
        self,
        message: str,
        *,
        kind: str | None = None,
        plugin_message: str | None = None,
        guest_stderr: str | None = None,
        backtrace: str | None = None,
    ) -> None:
        super().__init__(message)
        if kind is None and plugin_message is guest_stderr is backtrace is None:
            # Made again from its text alone, as PyTorch's DataLoader
            # re-raises a worker's error: the note `_state_note` added
            # carries the attributes.
            state = _state_in(message)
            kind = state.get("kind")
            plugin_message = state.get("plugin_message")
            guest_stderr = state.get("guest_stderr")
            backtrace = state.get("backtrace")
        if isinstance(kind, str) and kind:
            self.kind = kind
        self.plugin_message = plugin_message
        self.guest_stderr = guest_stderr
        self.backtrace = backtrace

    def __reduce__(self) -> tuple[object, ...]:
        # Errors cross process boundaries (multiprocessing, Ray) intact.
        return (
            _from_native,
            (self.kind, str(self), self.plugin_message, self.guest_stderr, self.backtrace),
        )


class InvalidInputError(Error, ValueError):
    """Bad options or arguments, raised before any worker starts."""

    kind = "invalid_input"


class LoadError(Error):
    """The plugin could not be read, compiled or understood."""

    kind = "load"


class LoadLimitError(LoadError):
    """Compiling the plugin went past the load timeout or memory."""

    kind = "load_limit"


class IncompatibleError(Error):
    """The component does not implement sandgen's WIT world."""

    kind = "incompatible"


class InitializerFailedError(Error):
    """The plugin's initializer reported an error."""

    kind = "initializer_failed"


class CreateFailedError(Error):
    """The generator's ``create`` reported an error (bad args, unknown generator)."""

    kind = "create_failed"


class IterationFailedError(Error):
    """The generator reported an error while iterating."""

    kind = "iteration_failed"


class TrapError(Error):
    """The guest trapped (a panic, an unreachable, an exit)."""

    kind = "trap"


class StackOverflowError(Error):
    """The guest exhausted its stack."""

    kind = "stack_overflow"


class MemoryLimitError(Error):
    """The guest hit its memory cap (or holds too many instances, memories or tables)."""

    kind = "memory_limit"


class FuelExhaustedError(Error):
    """The guest ran out of fuel."""

    kind = "fuel_exhausted"


class TimeoutError(Error, builtins.TimeoutError):
    """No data from the worker within the inactivity timeout."""

    kind = "timeout"


class ProtocolError(Error):
    """The worker broke the protocol."""

    kind = "protocol"


class DecodeError(Error):
    """An item could not be decoded (the message names its index)."""

    kind = "decode"


class WorkerDiedError(Error):
    """The worker (thread or process) ended without reporting why."""

    kind = "worker_died"


class BusyError(Error):
    """Another pass over the iterable is still live."""

    kind = "busy"


class ClosedError(Error):
    """The iterable was closed, or its worker ended after an earlier error."""

    kind = "closed"


_CLASSES: dict[str, type[Error]] = {
    cls.kind: cls
    for cls in (
        InvalidInputError,
        LoadError,
        LoadLimitError,
        IncompatibleError,
        InitializerFailedError,
        CreateFailedError,
        IterationFailedError,
        TrapError,
        StackOverflowError,
        MemoryLimitError,
        FuelExhaustedError,
        TimeoutError,
        ProtocolError,
        DecodeError,
        WorkerDiedError,
        BusyError,
        ClosedError,
    )
}


# How a note of `_state_note` starts.
_STATE = "sandgen error attributes: "


def _state_note(error: Error) -> str:
    """A note (``add_note``) that carries ``error``'s attributes, one line of
    JSON, through a re-raise that keeps only the error's type and text
    (PyTorch's DataLoader formats its worker's traceback, notes included,
    and makes the error again from that text)."""
    state = {
        "kind": error.kind,
        "plugin_message": error.plugin_message,
        "guest_stderr": error.guest_stderr,
        "backtrace": error.backtrace,
    }
    return _STATE + json.dumps(state)


def _state_in(message: object) -> dict[str, str | None]:
    """The attributes a note of `_state_note` in ``message`` carries (the last
    one: the re-raised error's own); empty if there is none."""
    if not isinstance(message, str) or _STATE not in message:
        return {}
    line = message[message.rindex(_STATE) + len(_STATE) :].split("\n", 1)[0]
    try:
        state = json.loads(line)
    except ValueError:
        return {}
    if not isinstance(state, dict):
        return {}
    return {
        key: value
        for key, value in state.items()
        if key in ("kind", "plugin_message", "guest_stderr", "backtrace")
        and (value is None or isinstance(value, str))
    }


def _from_native(
    kind: str,
    message: str,
    plugin_message: str | None = None,
    guest_stderr: str | None = None,
    backtrace: str | None = None,
) -> Error:
    cls = _CLASSES.get(kind, Error)
    return cls(
        message,
        kind=kind,
        plugin_message=plugin_message,
        guest_stderr=guest_stderr,
        backtrace=backtrace,
    )
