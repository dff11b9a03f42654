"""sandgen with what Python users already use: an SPDL pipeline, PyTorch (its
DataLoader in test_torch.py), and the example script."""

from __future__ import annotations

import subprocess
import sys

import pytest

import sandgen
from conftest import ROOT, guest


def test_a_sandgen_iterable_is_the_source_of_an_spdl_pipeline(
    spdl: sandgen.Plugin, isolation: str
) -> None:
    from spdl.pipeline import PipelineBuilder

    with spdl.iterable("range", args=200, isolation=isolation) as source:
        pipeline = (
            PipelineBuilder()
            .add_source(source)
            .pipe(lambda x: x * x, concurrency=4, output_order="input")
            .add_sink(16)
            .build(num_threads=4)
        )
        with pipeline.auto_stop():
            squares = list(pipeline.get_iterator(timeout=60))
    assert squares == [x * x for x in range(200)]


# --- PyTorch (test_torch.py runs sandgen.torch with a real DataLoader) -------


def test_importing_sandgen_does_not_import_torch() -> None:
    out = subprocess.run(
        [sys.executable, "-c", "import sandgen, sandgen.torch, sys; print('torch' in sys.modules)"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert out.strip() == "False"


@pytest.mark.parametrize("isolation", ["thread", "process"])
def test_the_example_script_runs(isolation: str) -> None:
    out = subprocess.run(
        [
            sys.executable,
            str(ROOT / "examples/python-host/preprocess.py"),
            guest("EXAMPLE_JSONL"),
            "--isolation",
            isolation,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    assert out.splitlines()[0].startswith("generator rows: yields the rows")
    assert "en: " in out
