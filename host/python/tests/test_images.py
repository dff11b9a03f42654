"""The image example (examples/images) from Python: PNG and JPEG files made
here with Pillow, decoded in the sandbox, through a real DataLoader into
tensors (examples/python-host/images.py), and a bad file's error in the
training loop."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

import sandgen
import sandgen.torch
from conftest import ROOT, guest

CLASSES = ["cat", "dog", "fish"]


def colour(c: int, j: int) -> tuple[int, int, int]:
    return (40 * c + 30 * j, 200 - 25 * j, 20 + 80 * c)


def make_dataset(root: Path, per_class: int) -> Path:
    """`per_class` solid images of several sizes and modes in each class."""
    for c, name in enumerate(CLASSES):
        folder = root / name
        folder.mkdir(parents=True)
        for j in range(per_class):
            size = (300 + 17 * j, 200 + 31 * c)
            image = Image.new("RGB", size, colour(c, j))
            if j % 3 == 0:
                image.save(folder / f"{j}.png")
            elif j % 3 == 1:
                image.convert("RGBA").save(folder / f"{j}.png")
            else:
                image.save(folder / f"{j}.jpg", quality=95)
    return root


def load_script() -> object:
    path = ROOT / "examples/python-host/images.py"
    spec = importlib.util.spec_from_file_location("images_example", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_script_feeds_a_dataloader_every_image_once_per_epoch(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = make_dataset(tmp_path / "images", 5)
    script = load_script()
    argv = [guest("EXAMPLE_IMAGES"), str(root), "--size", "32", "--batch-size", "4"]
    assert script.main([*argv, "--workers", "2", "--epochs", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(" (")[0] for line in lines] == [
        "epoch 0: 15 images of [(3, 32, 32)], labels [0, 1, 2]",
        "epoch 1: 15 images of [(3, 32, 32)], labels [0, 1, 2]",
    ]


def test_images_arrive_as_tensors_of_their_colour_and_label(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "images", 3)
    data = sandgen.torch.dataset(
        guest("EXAMPLE_IMAGES"),
        "images",
        {"dir": "/data", "size": 16},
        dirs={str(root): "/data"},
        encoding="bincode",
        item_type=tuple[np.ndarray, int],
        sharding="plugin",
    )
    items = list(DataLoader(data, batch_size=None))
    assert [label for _, label in items] == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    for i, (image, label) in enumerate(items):
        assert isinstance(image, torch.Tensor) and image.dtype == torch.uint8
        assert image.shape == (16, 16, 3)
        want = torch.tensor(colour(label, i % 3), dtype=torch.int16)
        # PNG exactly; JPEG (every third) within its loss.
        tolerance = 3 if i % 3 == 2 else 0
        assert (image.to(torch.int16) - want).abs().max() <= tolerance, (i, image[0, 0])


def test_a_truncated_file_stops_the_loop_with_its_name(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "images", 1)
    good = (root / "cat" / "0.png").read_bytes()
    (root / "cat" / "1.png").write_bytes(good[: len(good) // 2])
    data = sandgen.torch.dataset(
        guest("EXAMPLE_IMAGES"),
        "images",
        {"dir": "/data", "size": 16},
        dirs={str(root): "/data"},
        encoding="bincode",
        item_type=tuple[np.ndarray, int],
        sharding="plugin",
    )
    seen = []
    with pytest.raises(sandgen.IterationFailedError) as raised:
        for _, label in DataLoader(data, batch_size=None, num_workers=1):
            seen.append(int(label))
    assert seen == [0]
    assert "image /data/cat/1.png: cannot decode the PNG" in str(raised.value)
