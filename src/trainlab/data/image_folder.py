"""A folder of images, read as every image tool lays it out, decoded once into uint8 arrays.

Layouts (torchvision's `ImageFolder`, Keras' `image_dataset_from_directory`):

    ROOT/<class>/<image>                  every subfolder of ROOT is a class
    ROOT/train/<class>/<image>            the user's own split: ROOT's subfolders are all split
    ROOT/val/<class>/<image>              names (train, val, test; any case), with the same
    ROOT/test/<class>/<image>             classes in each; val joins train (data.val_fraction carves validation)
    ROOT/<list>.csv + images anywhere     data.file.image.list: a CSV of paths (relative to ROOT),
                                          labels and optionally a split column

An image is a file with suffix .png .jpg .jpeg .bmp .gif .webp .tif or .tiff (any case),
at any depth inside its class folder. Hidden files and folders (a leading dot) and other
files are ignored; folder symlinks are not followed.

- **channels** (`data.file.image.channels: auto`): gray when every image is grayscale (modes
  1, L, LA, I, I;16, F; a palette image counts as colour), else rgb (one colour image makes
  every image three channels).
  16-bit images are scaled to 8 bits; an alpha channel is dropped.
- **size** (`data.file.image.size`): [H, W], or null for the first image's (the first file
  of the first class). An image of another size is fitted by `resize`: `center_crop`
  (default: scale the short side to fit, cut the middle, as torchvision's Resize +
  CenterCrop) or `letterbox` (scale the long side to fit, pad with black). Bilinear, with
  Pillow's antialiasing when shrinking. EXIF orientation is not applied (as torchvision's).
- **streaming**: a first pass reads each file's header only (mode, size), then every file is
  decoded one at a time into one preallocated (n, C, H, W) uint8 array: memory is that
  array plus one image, whatever the number of files.
- **unreadable files**: one `DataError` naming the file, or (`skip_unreadable: true`) left
  out and counted in one line of prepare's output.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from trainlab.config.schema import ImageConfig
from trainlab.data.file_reading import TEST_NAMES, TRAIN_NAMES
from trainlab.errors import DataError, first_line

SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
GRAY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"})
SPLIT_FOLDERS = TRAIN_NAMES | TEST_NAMES
RESIZED = {"center_crop": "centre-cropped", "letterbox": "letterboxed"}


@dataclass
class ImageFolder:
    """The decoded folder: one row per readable image, in listing order."""

    x: np.ndarray                    # (n, C, H, W) uint8
    labels: np.ndarray               # the class folder's name per image
    split: np.ndarray | None         # the split folder's name per image (train/val/test layout), else None
    notes: list[str] = field(default_factory=list)


@dataclass
class _Listed:
    paths: list[Path]
    labels: list[str]
    split: list[str] | None
    unlabelled: int = 0      # rows of a CSV listing whose label is empty


def list_from_csv(root: Path, cfg: ImageConfig, label_column: str, split_column: str | None) -> _Listed:
    """The images a CSV inside `root` lists: paths relative to `root`, their labels and split.

    The CSV lives inside the folder so that the folder, a DVC dependency of prepare, covers
    the listing and every image: a path that leaves the folder is refused."""
    import pandas as pd

    listing = root / cfg.list
    if not listing.is_file():
        raise DataError(f"data.file.image.list: {listing} not found; name a CSV inside {root}")
    try:
        frame = pd.read_csv(listing, dtype=str, keep_default_na=False, na_values=[""])
    except Exception as err:   # a parser's own error: one line naming the file
        raise DataError(f"{listing}: could not be read: {str(err).splitlines()[0]}") from None
    needed = [cfg.path_column, label_column] + ([split_column] if split_column else [])
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise DataError(f"{listing}: missing column(s) {missing} (data.file.image.path_column, data.file.label"
                        f"{', data.file.split_column' if split_column else ''}); it has {list(frame.columns)[:10]}")
    labelled = frame[frame[label_column].notna() & frame[cfg.path_column].notna()]
    base = root.resolve()
    paths = []
    for row, relative in zip(labelled.index, labelled[cfg.path_column]):
        path = root / relative
        if not path.resolve().is_relative_to(base):
            raise DataError(f"{listing}: row {row + 2}: {relative} is outside {root}; list only images inside "
                            f"the folder (it is what DVC watches)")
        paths.append(path)
    if not paths:
        raise DataError(f"{listing}: lists no image with a label")
    split = None if split_column is None else [str(v).lower() for v in labelled[split_column]]
    return _Listed(paths, [str(v) for v in labelled[label_column]], split, len(frame) - len(labelled))


def read_image_folder(root: Path, cfg: ImageConfig, key: str, like: tuple[int, ...] | None = None,
                      label_column: str = "label", split_column: str | None = None) -> ImageFolder:
    """Decode every image under `root` (module docstring); `like`: force this sample shape
    ([C, H, W] or [H, W]), e.g. a source folder made to match the target data. With
    `cfg.list` the images are the rows of that CSV (its `label_column`, `split_column`)."""
    listed = (list_from_csv(root, cfg, label_column, split_column) if cfg.list else list_images(root, key))
    skipped: list[Path] = []
    headers = [_header(path, cfg, skipped) for path in listed.paths]
    readable = [i for i, h in enumerate(headers) if h is not None]
    if not readable:
        raise DataError(f"{root}: none of its {len(headers)} image file(s) could be read")
    channels, why = _channels(cfg, [headers[i][0] for i in readable], like)
    size = (tuple(like[-2:]) if like else cfg.size) or headers[readable[0]][1][::-1]
    height, width = size
    x = np.empty((len(readable), 1 if channels == "L" else 3, height, width), dtype=np.uint8)
    kept = []
    for i in readable:   # one image in memory at a time
        image = _decode(listed.paths[i], channels, (width, height), cfg.resize, cfg, skipped)
        if image is not None:
            x[len(kept)] = image
            kept.append(i)
    if not kept:
        raise DataError(f"{root}: none of its {len(headers)} image file(s) could be read")
    x = x[:len(kept)]
    sizes = [headers[i][1] for i in kept]
    # Same shape, another size: only scaled. Another shape: cropped or padded by `resize`.
    scaled = sum(size != (width, height) and size[0] * height == size[1] * width for size in sizes)
    fitted = sum(size[0] * height != size[1] * width for size in sizes)
    where = f"classes, listed in {cfg.list}" if cfg.list else "class folders"
    notes = [f"images: {len(kept)} in {len(set(listed.labels))} {where}"
             + (" (the folder's own train/test split)" if listed.split else "")
             + f"; {'gray' if channels == 'L' else 'rgb'} ({why}), {height}x{width} pixels"
             + (" (the first image's size)" if like is None and cfg.size is None else "")
             + (f"; {scaled} of another size scaled to it" if scaled else "")
             + (f"; {fitted} of another shape {RESIZED[cfg.resize]} to it" if fitted else "")]
    if listed.unlabelled:
        notes.append(f"{listed.unlabelled} listed image(s) without a label left out")
    if skipped:
        notes.append(f"skipped {len(skipped)} unreadable image(s), e.g. {skipped[0]}")
    return ImageFolder(x, np.asarray([listed.labels[i] for i in kept]),
                       None if listed.split is None else np.asarray([listed.split[i] for i in kept]), notes)


def list_images(root: Path, key: str) -> _Listed:
    """Every image file under `root`, its class and its split folder (or no split), sorted."""
    top = _subfolders(root)
    if not top:
        raise DataError(f"{key}: {root} has no class subfolders; put each class's images in {root}/<class>/")
    splits = [d for d in top if d.name.lower() in SPLIT_FOLDERS]
    if not splits:
        paths, labels = _classes(root, top)
        return _Listed(paths, labels, None)
    if len(splits) != len(top):
        others = [d.name for d in top if d not in splits]
        raise DataError(f"{root}: holds split folders ({', '.join(d.name for d in splits)}) and other folders "
                        f"({', '.join(others[:3])}); use ROOT/<class>/ or ROOT/train|val|test/<class>/, not both")
    paths, labels, split = [], [], []
    for folder in splits:
        classes = _subfolders(folder)
        if not classes:
            raise DataError(f"{folder}: no class subfolders; put each class's images in {folder}/<class>/")
        found, names = _classes(folder, classes)
        paths += found
        labels += names
        split += [folder.name.lower()] * len(found)
    return _Listed(paths, labels, split)


def _classes(parent: Path, folders: list[Path]) -> tuple[list[Path], list[str]]:
    paths, labels = [], []
    for folder in folders:
        found = _image_files(folder)
        if not found:
            raise DataError(f"{folder}: no image files ({', '.join(sorted(SUFFIXES))}); add images or remove "
                            f"the folder")
        paths += found
        labels += [folder.name] * len(found)
    return paths, labels


def _subfolders(folder: Path) -> list[Path]:
    try:
        entries = list(folder.iterdir())
    except OSError as err:
        raise DataError(f"{folder}: cannot be listed ({err.strerror})") from None
    return sorted((e for e in entries if e.is_dir() and not e.is_symlink() and not e.name.startswith(".")),
                  key=lambda p: natural(p.name))


def _image_files(folder: Path) -> list[Path]:
    def refuse(err: OSError) -> None:
        raise DataError(f"{err.filename}: cannot be listed ({err.strerror})")

    found = []
    for directory, subfolders, files in os.walk(folder, onerror=refuse):   # followlinks=False
        subfolders[:] = [d for d in subfolders if not d.startswith(".")]
        found += [Path(directory, f) for f in files
                  if not f.startswith(".") and Path(f).suffix.lower() in SUFFIXES]
    return sorted(found, key=lambda p: natural(str(p.relative_to(folder))))


def natural(text: str) -> tuple:
    """Sort key putting img2 before img10."""
    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", text))


def _header(path: Path, cfg: ImageConfig, skipped: list[Path]) -> tuple[str, tuple[int, int]] | None:
    """(mode, (width, height)) from the file's header, decoding no pixels; None: skipped."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            return image.mode, image.size
    except Exception as err:   # Pillow's plugins raise many types for a bad file: each is the file's
        return _unreadable(path, err, cfg, skipped)


def _decode(path: Path, mode: str, size: tuple[int, int], resize: str, cfg: ImageConfig,
            skipped: list[Path]) -> np.ndarray | None:
    """One file as (C, H, W) uint8 (`decode_image`); None: unreadable and skipped."""
    try:
        return decode_image(path, (1 if mode == "L" else 3, size[1], size[0]), resize, str(path))
    except DataError as err:
        return _unreadable(path, err.__cause__ or err, cfg, skipped)


def decode_image(source: Path | bytes, shape: tuple[int, ...], resize: str, name: str) -> np.ndarray:
    """An encoded image file (a path, or its bytes as a served model gets them) as (C, H, W)
    uint8 of `shape` ([C, H, W] or [H, W]): decoded in full (a truncated file fails here),
    converted to gray or rgb, fitted by `resize`. Prepare and the served model both call it,
    so a served image is what the model was trained on. A file Pillow cannot read raises
    DataError naming `name` (the error Pillow raised is its __cause__)."""
    import io

    from PIL import Image, ImageOps

    mode = "L" if len(shape) == 2 or shape[0] == 1 else "RGB"
    size = (int(shape[-1]), int(shape[-2]))   # Pillow's (width, height)
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as image:
            image.load()
            image = _eight_bit(image).convert(mode)
    except Exception as err:   # Pillow's plugins raise many types for a bad file: each is the file's
        raise DataError(f"{name}: not a readable image ({_reason(err)})") from err
    if image.size != size:
        fit = ImageOps.fit if resize == "center_crop" else ImageOps.pad
        image = fit(image, size, method=Image.Resampling.BILINEAR)
    pixels = np.asarray(image, dtype=np.uint8)
    return pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)


def encode_png(pixels: np.ndarray) -> str:
    """(C, H, W) or (H, W) uint8 as a PNG file in base64 text: a served model's input example."""
    import base64
    import io

    from PIL import Image

    pixels = np.asarray(pixels, dtype=np.uint8)
    pixels = pixels[0] if pixels.ndim == 3 and pixels.shape[0] == 1 else pixels
    image = Image.fromarray(pixels.transpose(1, 2, 0) if pixels.ndim == 3 else pixels)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _eight_bit(image):
    """16- and 32-bit grayscale as 8 bits: Pillow's own convert("L") clips them at 255."""
    from PIL import Image

    if image.mode != "F" and not image.mode.startswith("I"):
        return image
    values = np.asarray(image, dtype=np.float64)
    if image.mode != "F":
        values = values / 257.0   # 65535 -> 255
    return Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8), "L")


def _reason(err: BaseException) -> str:
    from PIL import UnidentifiedImageError

    if isinstance(err, UnidentifiedImageError):   # its text repeats the path
        return "not a format Pillow knows, or a damaged header"
    return first_line(err)


def _unreadable(path: Path, err: BaseException, cfg: ImageConfig, skipped: list[Path]) -> None:
    reason = _reason(err)
    if not cfg.skip_unreadable:
        raise DataError(f"{path}: not a readable image ({reason}); remove it or set "
                        f"data.file.image.skip_unreadable: true")
    skipped.append(path)
    return None


def _channels(cfg: ImageConfig, modes: list[str], like: tuple[int, ...] | None) -> tuple[str, str]:
    """Pillow's mode every image is converted to (L or RGB), and why."""
    if like is not None:
        if len(like) == 2 or like[0] == 1:
            return "L", "as the target data"
        if like[0] == 3:
            return "RGB", "as the target data"
        raise DataError(f"data.file.source_path: the target data's samples have shape {list(like)}; "
                        f"an image folder gives 1 (gray) or 3 (rgb) channels")
    if cfg.channels != "auto":
        return ("L" if cfg.channels == "gray" else "RGB"), f"data.file.image.channels: {cfg.channels}"
    if all(mode in GRAY_MODES for mode in modes):
        return "L", "auto: every image is grayscale"
    colour = sum(mode not in GRAY_MODES for mode in modes)
    return "RGB", "auto: " + ("every image" if colour == len(modes) else f"{colour} of {len(modes)} images") + " in colour"
