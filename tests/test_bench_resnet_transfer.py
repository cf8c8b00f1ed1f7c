"""bench/resnet_transfer.py's data: the texture crops come from scikit-image's shipped photos,
the pretraining crops and the held-out crops from regions that do not overlap, and the digits
folder has the layout and split an image folder needs. Nothing is trained here."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from trainlab.testing import ROOT

BENCH = ROOT / "bench"


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(BENCH))   # the script imports _common and small_data as siblings
    spec = importlib.util.spec_from_file_location("resnet_transfer", BENCH / "resnet_transfer.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def pixels(folder: Path) -> list[np.ndarray]:
    return [np.asarray(Image.open(p)) for p in sorted(folder.glob("*.png"))]


def where(photo: np.ndarray, crop: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rows, cols) of every top-left corner at which `crop` lies in `photo`."""
    side = crop.shape[0]
    first_rows = np.lib.stride_tricks.sliding_window_view(photo, side, axis=1)   # (H, W - side + 1, side)
    places = [(r, c) for r, c in zip(*np.nonzero((first_rows == crop[0]).all(axis=-1)))
              if np.array_equal(photo[r:r + side, c:c + side], crop)]
    return np.array([r for r, _ in places], dtype=int), np.array([c for _, c in places], dtype=int)


def test_texture_crops_are_the_shipped_photos_and_held_out_ones_come_from_elsewhere(bench, tmp_path: Path) -> None:
    bench.texture_folders(tmp_path / "source", tmp_path / "target", per_class=5, target_per_class=3)
    for name in bench.TEXTURES:
        photo = np.asarray(Image.open(bench.skimage_data_dir() / f"{name}.png").convert("L"))
        assert photo.shape == (512, 512)
        crops = {"source": pixels(tmp_path / "source" / name),
                 "train": pixels(tmp_path / "target/train" / name), "test": pixels(tmp_path / "target/test" / name)}
        assert [len(c) for c in crops.values()] == [5, 3, 3]
        for part, found in crops.items():
            for crop in found:
                assert crop.shape == (bench.CROP, bench.CROP) and crop.dtype == np.uint8
                rows, cols = where(photo, crop)
                assert len(rows), f"{name} {part}: a crop that is not in the photo"
                if part == "source":
                    assert cols.max() + bench.CROP <= 384   # the left 3/4
                else:
                    assert cols.min() >= 384 and ((rows.max() + bench.CROP <= 256) if part == "train"
                                                  else rows.min() >= 256)


def test_the_digits_folder_has_a_train_and_a_test_split_of_ten_classes(bench, tmp_path: Path) -> None:
    bench.digits_folder(tmp_path / "digits", n=100)
    train, test = sorted((tmp_path / "digits/train").rglob("*.png")), sorted((tmp_path / "digits/test").rglob("*.png"))
    assert (len(train), len(test)) == (80, 20)
    assert {p.parent.name for p in train} == {str(d) for d in range(10)}
    image = np.asarray(Image.open(train[0]))
    assert image.shape == (28, 28) and image.dtype == np.uint8 and image.max() > 128
    assert not (tmp_path / "digits28.npz").exists()
