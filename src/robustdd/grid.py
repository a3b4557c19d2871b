"""Image grids of distilled sets: one row per class, written as PNG."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from robustdd.distilled import DistilledSet
from robustdd.runtime import open_atomic

__all__ = ["grid_array", "save_grid"]


def grid_array(distilled: DistilledSet, *, max_per_class: int = 10, decoded: bool = False,
               scale: int = 1, padding: int = 1, pad_value: float = 1.0) -> np.ndarray:
    """Arrange a set's images as a uint8 grid: row ``k`` holds up to ``max_per_class`` images of
    class ``k`` (soft labels use their argmax), in stored order.

    Images are clamped to [0, 1] and enlarged ``scale`` times (nearest neighbour); cells are
    separated and surrounded by ``padding`` pixels of ``pad_value``, which also fills the cells
    of classes with fewer images. ``decoded`` shows the training images after the formation
    (4N images for ``mosaic2x2``). Returns H×W (one channel) or H×W×C. The size is
    ``rows * (s + padding) + padding`` by ``cols * (s + padding) + padding`` with
    ``s = image_size * scale``, ``rows = num_classes`` and ``cols`` the largest number of images
    shown for one class.
    """
    if max_per_class < 1 or scale < 1 or padding < 0:
        raise ValueError(f"need max_per_class >= 1, scale >= 1, padding >= 0; got "
                         f"{max_per_class}, {scale}, {padding}")
    images, labels = distilled.decoded() if decoded else (distilled.images, distilled.labels)
    images = images.detach().to("cpu", torch.float32).clamp(0.0, 1.0)
    labels = labels.detach().cpu()
    if labels.ndim == 2:
        labels = labels.argmax(1)
    n, c, h, w = images.shape
    order = torch.argsort(labels, stable=True)
    sorted_labels = labels[order]
    # rank of each image within its class: position minus the position of the class's first image
    first = torch.searchsorted(sorted_labels, sorted_labels, right=False)
    rank = torch.arange(n) - first
    keep = rank < max_per_class
    rows = distilled.num_classes
    cols = int(rank[keep].max()) + 1
    cells = torch.full((rows, cols, c, h, w), float(pad_value))
    cells[sorted_labels[keep], rank[keep]] = images[order[keep]]
    if scale > 1:
        cells = cells.repeat_interleave(scale, dim=3).repeat_interleave(scale, dim=4)
        h, w = h * scale, w * scale
    cells = F.pad(cells, (0, padding, 0, padding), value=float(pad_value))
    grid = cells.permute(2, 0, 3, 1, 4).reshape(c, rows * (h + padding), cols * (w + padding))
    grid = F.pad(grid, (padding, 0, padding, 0), value=float(pad_value))
    array = (grid * 255.0).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return array[:, :, 0] if c == 1 else array


def save_grid(distilled: DistilledSet, path: str | os.PathLike[str], *, max_per_class: int = 10,
              decoded: bool = False, scale: int = 1, padding: int = 1) -> Path:
    """Write :func:`grid_array` of ``distilled`` to ``path`` as a PNG, atomically.

    One-channel sets are saved as greyscale, three-channel sets as RGB. Returns the path.
    """
    if distilled.channels not in (1, 3):
        raise ValueError(f"can only draw 1- or 3-channel images, got {distilled.channels}")
    array = grid_array(distilled, max_per_class=max_per_class, decoded=decoded, scale=scale,
                       padding=padding)
    with open_atomic(path, "wb") as fh:
        Image.fromarray(array).save(fh, format="PNG")
    return Path(path)
