"""sandgen's exceptions: one base class, one subclass per error kind.

The native side makes them through ``_from_native``; ``kind`` is the Rust
``ErrorKind``'s name in snake case (``ErrorKind::name``, passed on by
``kind_name`` in ``src/errors.rs``).
"""

from __future__ import annotations

import builtins

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
        if kind is not None:
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
