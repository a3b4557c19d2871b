"""Digests that prove a dataset is intact (the values ``datasets/*/SOURCE.md`` publish)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from robustdd.data.dataset import ImageDataset
from robustdd.errors import CorruptDataError

_CHUNK_BYTES = 1 << 20
_CHUNK_ROWS = 4096


def file_digest(path: Path, algorithm: str = "sha256") -> str:
    """Hex digest of a file's bytes, read in chunks."""
    # usedforsecurity=False: MD5 only checks a download's integrity (and works under FIPS).
    h = hashlib.new(algorithm, usedforsecurity=False)
    with open(path, "rb") as f:
        while block := f.read(_CHUNK_BYTES):
            h.update(block)
    return h.hexdigest()


def sha256_file(path: Path) -> str:
    """SHA-256 (hex) of a file's bytes."""
    return file_digest(path, "sha256")


def split_digests(dataset: ImageDataset) -> tuple[str, str]:
    """SHA-256 of a split as the cache stores it: (images, labels).

    Images are hashed as the C-order bytes of uint8 N×H×W×C (the dataset holds N×C×H×W, so rows
    are permuted back, a chunk at a time), labels as little-endian int64.
    """
    h = hashlib.sha256()
    for lo in range(0, len(dataset), _CHUNK_ROWS):
        chunk = dataset.images[lo:lo + _CHUNK_ROWS].permute(0, 2, 3, 1).contiguous()
        h.update(chunk.numpy().tobytes())
    labels = dataset.labels.numpy().astype("<i8", copy=False)
    return h.hexdigest(), hashlib.sha256(labels.tobytes()).hexdigest()


def verify_split(dataset: ImageDataset, sha256_images: str, sha256_labels: str) -> None:
    """Raise :class:`CorruptDataError` unless the split's array digests are the expected ones."""
    got_images, got_labels = split_digests(dataset)
    bad = [f"{what}: expected sha256 {want}, got {got}"
           for what, want, got in (("images", sha256_images.lower(), got_images),
                                   ("labels", sha256_labels.lower(), got_labels))
           if want != got]
    if bad:
        raise CorruptDataError(f"{dataset.name} {dataset.split} does not match its published "
                               f"digests ({'; '.join(bad)}); delete it and prepare it again")


def array_sha256(array: np.ndarray) -> str:
    """SHA-256 of an array's C-order bytes."""
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()
