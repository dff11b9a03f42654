"""sandgen's build backend: maturin's, after it builds the `sandgen` program
that the wheel ships inside the package (``sandgen/_bin/sandgen``).

One program, three jobs: the ``sandgen`` command that the package installs
(``sandgen._cli``), the worker program of worker processes (a native
process starts in milliseconds, where a Python interpreter loading the
extension takes tens), and the child that compiles a plugin. It is built
with the same cargo profile as the extension (maturin's ``--profile``, from
``MATURIN_PEP517_ARGS``, the ``maturin.build-args`` config setting or
``[tool.maturin]`` in pyproject.toml), in the same target directory, so
that both share one build of their dependencies.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import maturin
from maturin import (  # noqa: F401 (the rest of the PEP 517 interface, as maturin has it)
    build_sdist,
    get_requires_for_build_editable,
    get_requires_for_build_sdist,
    get_requires_for_build_wheel,
    prepare_metadata_for_build_editable,
    prepare_metadata_for_build_wheel,
)

HERE = Path(__file__).resolve().parent.parent
PROGRAM = HERE / "python" / "sandgen" / "_bin" / "sandgen"


def _profile(config_settings: Mapping[str, Any] | None) -> str:
    args = maturin.get_maturin_pep517_args(config_settings)
    for i, arg in enumerate(args):
        if arg == "--profile" and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith("--profile="):
            return arg.split("=", 1)[1]
        if arg in ("-r", "--release"):
            return "release"
    return str(maturin.get_config().get("profile", "release"))


def _build_program(config_settings: Mapping[str, Any] | None) -> None:
    profile = _profile(config_settings)
    command = [
        "cargo",
        "build",
        "--locked",
        "-p",
        "sandgen",
        "--bin",
        "sandgen",
        "--profile",
        profile,
        "--message-format=json-render-diagnostics",
    ]
    print(f"building the sandgen program: {' '.join(command)}", file=sys.stderr)
    built = subprocess.run(command, cwd=HERE, stdout=subprocess.PIPE, text=True, check=False)
    if built.returncode != 0:
        raise SystemExit(f"building the sandgen program failed (cargo exit {built.returncode})")
    executable = None
    for line in built.stdout.splitlines():
        message = json.loads(line) if line.startswith("{") else {}
        if message.get("reason") == "compiler-artifact" and message.get("executable"):
            if message["target"]["name"] == "sandgen":
                executable = message["executable"]
    if executable is None:
        raise SystemExit("building the sandgen program failed: cargo named no executable")
    PROGRAM.parent.mkdir(exist_ok=True)
    partial = PROGRAM.with_suffix(".partial")
    shutil.copyfile(executable, partial)
    os.chmod(partial, 0o755)
    os.replace(partial, PROGRAM)


def build_wheel(
    wheel_directory: str,
    config_settings: Mapping[str, Any] | None = None,
    metadata_directory: str | None = None,
) -> str:
    _build_program(config_settings)
    return maturin.build_wheel(wheel_directory, config_settings, metadata_directory)


def build_editable(
    wheel_directory: str,
    config_settings: Mapping[str, Any] | None = None,
    metadata_directory: str | None = None,
) -> str:
    _build_program(config_settings)
    return maturin.build_editable(wheel_directory, config_settings, metadata_directory)
