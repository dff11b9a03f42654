# Types of the native half of the package (src/lib.rs).

from collections.abc import Iterator
from typing import Any

DEFAULT_MEMORY_LIMIT: int
DEFAULT_BUFFER_SIZE: int
MAX_WORKERS: int

def load(
    path: str,
    cache_dir: str | None,
    worker_command: list[str],
    load_timeout: float | None,
    load_memory: int | None,
) -> Plugin: ...
def load_bytes(
    name: str,
    data: bytes,
    cache_dir: str | None,
    worker_command: list[str],
    load_timeout: float | None,
    load_memory: int | None,
) -> Plugin: ...
def _run_worker(args: list[str]) -> None: ...

class Plugin:
    @property
    def path(self) -> str: ...
    @property
    def name(self) -> str: ...
    def generators(self) -> list[tuple[str, str]]: ...
    def iterable(
        self,
        generator: str,
        *,
        encoding: str,
        args: str | None,
        config: str | None,
        isolation: str,
        buffer_size: int | None,
        timeout: float | None,
        memory_limit: int,
        fuel: int | None,
        dirs: list[tuple[str, str]],
        env: list[tuple[str, str]],
        item_shape: object,
        item_type_name: str,
        num_workers: int,
        in_order: bool,
        seed: int | None,
        worker_args: list[str] | None,
        shard: tuple[int, int] | None,
    ) -> Iterable: ...

class Iterable:
    def start(self) -> Pass: ...
    def close(self) -> None: ...
    @property
    def closed(self) -> bool: ...
    @property
    def generator(self) -> str: ...
    @property
    def isolation(self) -> str: ...
    @property
    def encoding(self) -> str: ...
    @property
    def worker_pid(self) -> int | None: ...
    @property
    def worker_pids(self) -> list[int]: ...
    @property
    def num_workers(self) -> int: ...

class Pass(Iterator[list[Any]]):
    def __iter__(self) -> Pass: ...
    def __next__(self) -> list[Any]: ...
    def close(self) -> None: ...
