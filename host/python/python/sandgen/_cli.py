"""The ``sandgen`` command that the package installs: the CLI itself (the
program the wheel ships in ``sandgen/_bin``), run in place of this
interpreter, so that its options, output, signals and exit statuses are
those of ``cargo run -p sandgen``."""

from __future__ import annotations

import os
import sys
from pathlib import Path

# The program, beside the extension (see build_backend/sandgen_build.py).
PROGRAM = Path(__file__).resolve().parent / "_bin" / "sandgen"


def program() -> str | None:
    """The path of the `sandgen` program, if this installation has one."""
    return str(PROGRAM) if os.access(PROGRAM, os.X_OK) else None


def main() -> None:
    path = program()
    if path is None:
        sys.exit(
            f"sandgen: the sandgen program is missing from this installation ({PROGRAM}): "
            "reinstall the package (pip install ./host/python)"
        )
    os.execv(path, ["sandgen", *sys.argv[1:]])
