"""Loader for image folders laid out as ``<path>/<split>/<class_name>/<image file>``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from robustdd.data.dataset import ImageDataset
from robustdd.errors import CorruptDataError, DatasetNotFoundError

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp"})
_GREY_MODES = frozenset({"1", "L", "LA"})
_LAYOUT_HINT = ("expected <folder>/<split>/<class_name>/<image>.png|jpg|jpeg|bmp, "
                "e.g. <folder>/train/cat/0001.png")


def _class_folders(split_dir: Path) -> list[str]:
    return sorted(p.name for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))


def _list_images(split_dir: Path, class_names: list[str]) -> tuple[list[Path], list[int]]:
    files, labels = [], []
    for label, cls in enumerate(class_names):
        cls_dir = split_dir / cls
        if not cls_dir.is_dir():
            continue  # a class with no examples in this split
        for f in sorted(cls_dir.iterdir()):
            if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES and not f.name.startswith("."):
                files.append(f)
                labels.append(label)
    return files, labels


def _decode(files: list[Path], channels: int | None = None) -> np.ndarray:
    """Decode ``files`` into uint8 N×H×W×C; all must share one size.

    ``channels`` forces 1 (greyscale) or 3 (RGB); by default C=1 if every image is grey.
    """
    size, grey = None, True
    for f in files:  # headers only: check sizes and pick the mode before decoding anything
        try:
            with Image.open(f) as im:
                im_size, im_mode = im.size, im.mode
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
            raise CorruptDataError(f"{f}: cannot decode image ({exc})") from exc
        if size is None:
            size = im_size
        elif im_size != size:
            raise CorruptDataError(f"{f}: image is {im_size[0]}×{im_size[1]} (W×H) but the "
                                   f"first image is {size[0]}×{size[1]}; all must match")
        grey = grey and im_mode in _GREY_MODES
    if channels is not None:
        grey = channels == 1
    mode = "L" if grey else "RGB"
    out = np.empty((len(files), size[1], size[0], 1 if grey else 3), dtype=np.uint8)
    for i, f in enumerate(files):
        try:
            with Image.open(f) as im:
                arr = np.asarray(im.convert(mode))
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
            raise CorruptDataError(f"{f}: cannot decode image ({exc})") from exc
        out[i] = arr.reshape(out.shape[1:])
    return out


def _check_split_dir(path: Path, split: str) -> Path:
    split_dir = path / split
    if not path.is_dir():
        raise DatasetNotFoundError(f"image folder {path} does not exist; {_LAYOUT_HINT}")
    if not split_dir.is_dir():
        raise DatasetNotFoundError(f"image folder {path} has no {split!r} split "
                                   f"(no folder {split_dir}); {_LAYOUT_HINT}")
    return split_dir


def _load_split(path: Path, split: str, channels: int | None = None
                ) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    split_dir = _check_split_dir(path, split)
    # Class names come from train when it exists so that labels agree between splits.
    train_dir = path / "train"
    class_names = _class_folders(train_dir if train_dir.is_dir() else split_dir)
    extra = sorted(set(_class_folders(split_dir)) - set(class_names))
    if extra:
        raise CorruptDataError(f"{split_dir}: class folders {extra} do not exist in {train_dir}")
    files, labels = _list_images(split_dir, class_names)
    if not files:
        raise DatasetNotFoundError(f"no images found under {split_dir}; {_LAYOUT_HINT}")
    return _decode(files, channels), np.asarray(labels, dtype=np.int64), tuple(class_names)


def channel_stats(images: np.ndarray, chunk: int = 4096
                  ) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and (population) std of uint8 N×H×W×C images, in [0, 1] units."""
    c = images.shape[-1]
    total, sq = np.zeros(c), np.zeros(c)
    for lo in range(0, images.shape[0], chunk):
        x = images[lo:lo + chunk].reshape(-1, c).astype(np.float64)
        total += x.sum(axis=0)
        sq += np.square(x).sum(axis=0)
    n = max(1, images.shape[0] * images.shape[1] * images.shape[2])
    mean = total / n
    std = np.sqrt(np.maximum(sq / n - mean**2, 0.0))
    return tuple(float(m) / 255 for m in mean), tuple(float(s) / 255 for s in std)


def load_image_folder(path: Path, split: str) -> ImageDataset:
    """Load ``<path>/<split>/<class>/<image>`` as an :class:`ImageDataset` named ``path.name``.

    Class names are the sorted class sub-folders of ``<path>/train`` (of ``<path>/<split>`` when
    there is no train split). Files ending in png/jpg/jpeg/bmp are read in sorted order; all must
    have one size. If every train image is greyscale the dataset has 1 channel, else all are
    converted to RGB; other splits follow train's choice. ``mean``/``std`` are the per-channel
    statistics of the *train* split (so loading ``test`` also decodes ``train``), or of
    ``split`` itself when there is no train split.
    """
    path = Path(path)
    _check_split_dir(path, split)
    train = None
    if split != "train" and (path / "train").is_dir():
        train = _load_split(path, "train")[0]
    images, labels, class_names = _load_split(path, split,
                                              None if train is None else train.shape[-1])
    if train is not None and train.shape[1:] != images.shape[1:]:
        raise CorruptDataError(f"{path}: {split} images are {images.shape[1:]} (H×W×C) but "
                               f"train images are {train.shape[1:]}")
    mean, std = channel_stats(images if train is None else train)
    tensor = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
    return ImageDataset(path.name, split, tensor, torch.from_numpy(labels), class_names,
                        mean, std)
