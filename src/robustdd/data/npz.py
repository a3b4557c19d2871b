"""Loader for the npz-shard cache format (``<split>-KKofNN.npz``)."""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

import numpy as np

from robustdd.errors import CorruptDataError

SHARD_RE = re.compile(r"^(?P<split>[a-z0-9_]+)-(?P<k>\d{2})of(?P<n>\d{2})\.npz$")


def find_shards(folder: Path, split: str) -> list[Path]:
    """The shards of ``split`` in ``folder`` in name order; checks that none is missing."""
    shards = sorted(p for p in folder.glob(f"{split}-*of*.npz") if SHARD_RE.match(p.name))
    if not shards:
        return []
    counts = {SHARD_RE.match(p.name).group("n") for p in shards}  # type: ignore[union-attr]
    if len(counts) != 1:
        raise CorruptDataError(f"{folder}: shards of split {split!r} disagree on their count: "
                               f"{[p.name for p in shards]}")
    total = int(counts.pop())
    have = [int(SHARD_RE.match(p.name).group("k")) for p in shards]  # type: ignore[union-attr]
    if have != list(range(total)):
        missing = sorted(set(range(total)) - set(have))
        raise CorruptDataError(f"{folder}: split {split!r} should have {total} shards, "
                               f"missing shard numbers {missing}")
    return shards


def read_shards(shards: list[Path]) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Concatenate shards into (images uint8 N×H×W×C, labels int64 [N], class_names).

    Every shard is validated: readable, the expected arrays present with the right dtypes and
    shapes, consistent class names, and ``shard_offset`` (when present) continuous.
    """
    images, labels, names = [], [], None
    offset = 0
    for path in shards:
        try:
            # allow_pickle=False: an object array in a shard is refused, never unpickled.
            with np.load(path, allow_pickle=False) as z:
                missing = {"images", "labels"} - set(z.files)
                if missing:
                    raise CorruptDataError(f"{path}: not a robustdd shard, missing arrays "
                                           f"{sorted(missing)} (has {sorted(z.files)})")
                img, lab = z["images"], z["labels"]
                cls = tuple(str(s) for s in z["class_names"]) if "class_names" in z.files else ()
                shard_offset = int(z["shard_offset"]) if "shard_offset" in z.files else None
        except (zipfile.BadZipFile, EOFError, OSError, ValueError) as exc:
            if isinstance(exc, CorruptDataError):
                raise
            raise CorruptDataError(f"{path}: unreadable or truncated shard ({exc}); "
                                   "delete it and prepare the dataset again") from exc
        if img.dtype != np.uint8 or img.ndim != 4:
            raise CorruptDataError(f"{path}: images must be uint8 N×H×W×C, "
                                   f"got {img.dtype} {img.shape}")
        if lab.ndim != 1 or lab.shape[0] != img.shape[0] or not np.issubdtype(lab.dtype,
                                                                               np.integer):
            raise CorruptDataError(f"{path}: labels must be integer [N] matching {img.shape[0]} "
                                   f"images, got {lab.dtype} {lab.shape}")
        if shard_offset is not None and shard_offset != offset:
            raise CorruptDataError(f"{path}: shard_offset {shard_offset} but the previous shards "
                                   f"hold {offset} rows (a shard is missing or out of order)")
        if names is not None and cls and cls != names:
            raise CorruptDataError(f"{path}: class_names differ from the first shard's")
        names = names or cls
        images.append(img)
        labels.append(lab.astype(np.int64))
        offset += img.shape[0]
    if images and any(i.shape[1:] != images[0].shape[1:] for i in images):
        raise CorruptDataError(f"shards {shards} hold images of different shapes")
    return np.concatenate(images), np.concatenate(labels), names or ()


def write_shards(folder: Path, split: str, images: np.ndarray, labels: np.ndarray,
                 class_names: tuple[str, ...] | list[str], rows_per_shard: int = 25_000
                 ) -> list[Path]:
    """Write a split in the cache format, atomically per shard (tmp file, then rename)."""
    folder.mkdir(parents=True, exist_ok=True)
    n = images.shape[0]
    count = max(1, -(-n // rows_per_shard))
    paths = []
    for k in range(count):
        lo, hi = k * rows_per_shard, min(n, (k + 1) * rows_per_shard)
        path = folder / f"{split}-{k:02d}of{count:02d}.npz"
        tmp = path.with_suffix(".tmp.npz")
        np.savez_compressed(tmp, images=np.ascontiguousarray(images[lo:hi], dtype=np.uint8),
                            labels=labels[lo:hi].astype(np.int64),
                            class_names=np.array(list(class_names), dtype=str),
                            shard_offset=np.int64(lo))
        tmp.replace(path)
        paths.append(path)
    return paths
