"""``load_dataset``: find a dataset in the data root and load it as an :class:`ImageDataset`."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from robustdd.data.dataset import ImageDataset
from robustdd.data.npz import find_shards, read_shards
from robustdd.data.registry import DatasetInfo, dataset_info
from robustdd.errors import CorruptDataError, DatasetNotFoundError

SPLITS = ("train", "test")


def data_root(root: str | os.PathLike | None = None) -> Path:
    """The data root: ``root`` if given, else ``$ROBUSTDD_DATA``, else ``~/.cache/robustdd``."""
    if root is not None:
        return Path(root).expanduser()
    env = os.environ.get("ROBUSTDD_DATA")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "robustdd"


def load_dataset(name: str, split: str = "train",
                 root: str | os.PathLike | None = None) -> ImageDataset:
    """Load split ``split`` of dataset ``name``.

    ``name`` is a registered dataset (see ``robustdd data list``) or the path of an image folder
    laid out as ``<path>/<split>/<class>/<image>``. Registered datasets are read from the cache
    format under the data root (:func:`data_root`); CIFAR-10/100 are also read from the official
    python batches (``cifar-10-batches-py``) if those are found there. The embedded ``digits``
    dataset needs no files.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    if os.sep in name or name.startswith("."):
        from robustdd.data.image_folder import load_image_folder
        return load_image_folder(Path(name), split)
    info = dataset_info(name)
    if info.embedded:
        from robustdd.data.digits import load_digits_split
        return load_digits_split(split)
    base = data_root(root)
    folder = base / info.name
    shards = find_shards(folder, split) if folder.is_dir() else []
    if shards:
        images, labels, names = read_shards(shards)
        return _to_dataset(info, split, images, labels, names, origin=str(folder))
    from robustdd.data.cifar_batches import find_cifar_batches, load_cifar_batches
    batches = find_cifar_batches(info.name, base)
    if batches is not None:
        images, labels, names = load_cifar_batches(info.name, batches, split)
        return _to_dataset(info, split, images, labels, names, origin=str(batches))
    raise DatasetNotFoundError(missing_message(info, base, split, root_given=root is not None))


def missing_message(info: DatasetInfo, base: Path, split: str, root_given: bool = False) -> str:
    """Explain where a dataset was looked for, the layout expected and how to get it."""
    how = (f"run `robustdd data prepare {info.name}` (downloads the official archive and "
           "verifies its checksum)" if info.archives else
           f"convert the official files to the cache format (robustdd.data.npz.write_shards) "
           f"into {base / info.name}")
    origin = ("given explicitly" if root_given else "from $ROBUSTDD_DATA"
              if os.environ.get("ROBUSTDD_DATA") else "the default ~/.cache/robustdd")
    return (f"dataset {info.name!r} (split {split!r}) not found. Looked in {base / info.name} "
            f"(data root {origin}). "
            f"Expected shards {split}-00of01.npz, ... holding images uint8 [N,H,W,C], "
            "labels int64 [N], "
            f"class_names. To get it: {how}; or point ROBUSTDD_DATA at a folder that holds "
            f"{info.name}/.")


def _to_dataset(info: DatasetInfo, split: str, images: np.ndarray, labels: np.ndarray,
                names: tuple[str, ...], origin: str) -> ImageDataset:
    """Check a loaded array pair against the registry and wrap it."""
    expected = (info.image_size, info.image_size, info.channels)
    if images.shape[1:] != expected:
        raise CorruptDataError(f"{origin}: {info.name} images should be H×W×C = {expected}, "
                               f"got {images.shape[1:]}")
    if labels.size and (labels.min() < 0 or labels.max() >= info.num_classes):
        raise CorruptDataError(f"{origin}: labels outside 0..{info.num_classes - 1}")
    class_names = names or info.class_names or tuple(str(i) for i in range(info.num_classes))
    if len(class_names) != info.num_classes:
        raise CorruptDataError(f"{origin}: {len(class_names)} class names, expected "
                               f"{info.num_classes}")
    tensor = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
    return ImageDataset(info.name, split, tensor, torch.from_numpy(labels.astype(np.int64)),
                        tuple(class_names), info.mean, info.std)
