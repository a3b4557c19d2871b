"""Put datasets into the data root: download official archives, verify them, convert them.

``robustdd data prepare NAME`` calls :func:`prepare_dataset`, ``robustdd data list`` calls
:func:`list_datasets`. Everything ends in the cache format read by
:func:`robustdd.data.load_dataset`: ``<root>/<name>/<split>-KKofNN.npz``.
"""

from __future__ import annotations

import http.client
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

import numpy as np

from robustdd.data.checksums import file_digest
from robustdd.data.cifar_batches import (
    batch_files,
    find_cifar_batches,
    load_cifar_batches,
    official_folder_name,
)
from robustdd.data.loaders import SPLITS, data_root
from robustdd.data.npz import SHARD_RE, find_shards, write_shards
from robustdd.data.registry import Archive, DatasetInfo, dataset_info, dataset_names
from robustdd.errors import CorruptDataError, DatasetNotFoundError

DOWNLOADS = "downloads"
ROWS_PER_SHARD = 25_000  # CIFAR train -> train-00of02, train-01of02 (as in datasets/cifar10)
_BLOCK = 1 << 20

ProgressFn = Callable[[int, int | None], None]
"""``progress(bytes_done, bytes_total_or_None)``, called while downloading."""

# How to get datasets that have no official archive in the registry.
_MANUAL: dict[str, str] = {
    "fashion-mnist": (
        "download the four IDX files (train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
        "t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz) from "
        "https://github.com/zalandoresearch/fashion-mnist and convert them with "
        "robustdd.data.npz.write_shards (images uint8 [N,28,28,1], labels int64 [N]). In this "
        "project's checkout a converted copy is kept beside it: set "
        "ROBUSTDD_DATA=../shared/datasets (relative to the project root)"),
    "mnist": (
        "download the four IDX files (train-images-idx3-ubyte.gz, ..., "
        "t10k-labels-idx1-ubyte.gz) of MNIST and convert them with "
        "robustdd.data.npz.write_shards (images uint8 [N,28,28,1], labels int64 [N])"),
    "svhn": (
        "download train_32x32.mat and test_32x32.mat from "
        "http://ufldl.stanford.edu/housenumbers/, read them with scipy.io.loadmat, transpose "
        "X from [32,32,3,N] to [N,32,32,3], map label 10 to 0, and write them with "
        "robustdd.data.npz.write_shards"),
    "tiny-imagenet": (
        "download tiny-imagenet-200.zip (http://cs231n.stanford.edu/tiny-imagenet-200.zip), "
        "arrange it as <folder>/train/<wnid>/*.JPEG and <folder>/test/<wnid>/*.JPEG (the val "
        "images sorted into class folders with val/val_annotations.txt), load each split with "
        "robustdd.data.image_folder.load_image_folder and write it with "
        "robustdd.data.npz.write_shards (images uint8 [N,64,64,3])"),
}


def official_archive(name: str) -> Archive | None:
    """The registry's official archive for ``name`` (None if it has none)."""
    info = dataset_info(name)
    return info.archives[0] if info.archives else None


def _cache_splits(folder: Path) -> tuple[dict[str, bool], str | None]:
    """Which splits have a complete set of shards in ``folder``, and any problem found."""
    splits, problem = {}, None
    for split in SPLITS:
        try:
            splits[split] = folder.is_dir() and bool(find_shards(folder, split))
        except CorruptDataError as exc:
            splits[split], problem = False, str(exc)
    return splits, problem


def list_datasets(root: str | os.PathLike | None = None) -> list[dict[str, Any]]:
    """One row per registered dataset: what it is and whether the data root holds it.

    Keys: ``name``, ``classes``, ``shape`` (C, H, W), ``available`` (both splits present),
    ``source`` ("cache", "official batches", "embedded" or None), ``splits`` ({split: bool}),
    ``folder`` (where it was looked for; None for embedded data), ``problem`` (an incomplete or
    inconsistent cache, else None), ``downloadable`` (``prepare`` can fetch it) and ``notes``.
    Shards are only listed here, not opened.
    """
    base = data_root(root)
    rows = []
    for name in dataset_names():
        info = dataset_info(name)
        folder = base / info.name
        row: dict[str, Any] = {
            "name": info.name, "classes": info.num_classes,
            "shape": (info.channels, info.image_size, info.image_size),
            "available": False, "source": None, "splits": dict.fromkeys(SPLITS, False),
            "folder": str(folder), "problem": None, "downloadable": bool(info.archives),
            "notes": info.notes,
        }
        if info.embedded:
            row.update(available=True, source="embedded", splits=dict.fromkeys(SPLITS, True),
                       folder=None)
        else:
            splits, problem = _cache_splits(folder)
            row.update(splits=splits, problem=problem)
            if any(splits.values()):
                row["source"] = "cache"
            elif (batches := find_cifar_batches(info.name, base)) is not None:
                row.update(source="official batches", folder=str(batches), splits={
                    s: all((batches / f).is_file() for f in batch_files(info.name, s))
                    for s in SPLITS})
            row["available"] = all(row["splits"].values())
        rows.append(row)
    return rows


def prepare_dataset(name: str, root: str | os.PathLike | None = None, *, download: bool = True,
                    timeout: float = 30.0, archive: Archive | None = None,
                    progress: ProgressFn | None = None) -> Path | None:
    """Make dataset ``name`` available in the cache format under the data root.

    Returns the dataset folder (``<root>/<name>``), or None for embedded datasets (nothing to do).
    Returns at once if both splits are already cached. Otherwise converts extracted official
    batches if present in the root, else uses the official archive (``archive``, by default the
    registry's): taken from ``<root>/downloads/`` when present there, else downloaded (unless
    ``download`` is False) with ``timeout`` seconds per network operation. The archive's MD5 is
    always verified. Raises :class:`DatasetNotFoundError` (with instructions for a manual copy)
    when the data cannot be obtained and :class:`CorruptDataError` when a file is wrong.
    """
    info = dataset_info(name)
    if info.embedded:
        return None
    base = data_root(root)
    folder = base / info.name
    if all(_cache_splits(folder)[0].values()):
        return folder
    batches = find_cifar_batches(info.name, base)
    if batches is not None:
        _convert_batches(info, batches, folder)
        return folder
    archive = archive or official_archive(info.name)
    if archive is None or official_folder_name(info.name) is None:
        raise DatasetNotFoundError(
            f"dataset {info.name!r} is not in the data root {base} (looked for {folder} with "
            f"train-KKofNN.npz and test-KKofNN.npz shards) and cannot be downloaded "
            f"automatically. To get it: {_MANUAL.get(info.name, info.notes)}; "
            f"or point ROBUSTDD_DATA at a folder that holds {info.name}/ in the cache format.")
    path = fetch_archive(archive, base / DOWNLOADS, download=download, timeout=timeout,
                         progress=progress, manual=_manual_download(info, base, archive))
    with tempfile.TemporaryDirectory(prefix=f".extract-{info.name}-", dir=path.parent) as tmp:
        safe_extract(path, Path(tmp))
        batches = find_cifar_batches(info.name, Path(tmp))
        if batches is None:
            raise CorruptDataError(f"{path}: archive does not contain the folder "
                                   f"{official_folder_name(info.name)}/")
        _convert_batches(info, batches, folder)
    return folder


def _manual_download(info: DatasetInfo, base: Path, archive: Archive) -> str:
    target = base / DOWNLOADS / archive.filename
    return (f"Data root searched: {base} (expected {base / info.name}/train-KKofNN.npz and "
            f"test-KKofNN.npz shards, or the extracted official folder "
            f"{official_folder_name(info.name)}/, or the archive {target}). To install it by "
            f"hand: download {archive.url} (md5 {archive.md5}) where there is internet access, "
            f"copy it to {target} and run `robustdd data prepare {info.name}` again; or point "
            f"ROBUSTDD_DATA at a folder that holds {info.name}/ in the cache format.")


def fetch_archive(archive: Archive, downloads: Path, *, download: bool = True,
                  timeout: float = 30.0, progress: ProgressFn | None = None,
                  manual: str = "") -> Path:
    """Return ``downloads/<archive.filename>`` with a verified MD5, downloading it if absent.

    The download goes to a ``.part`` file that is renamed only once its MD5 matches. A present
    file with the wrong MD5 is an error (it is not replaced: it may be a manual copy).
    ``manual`` is appended to the error raised when the file cannot be obtained.
    """
    target = downloads / archive.filename
    if target.is_file():
        _check_md5(target, archive)
        return target
    if not download:
        raise DatasetNotFoundError(f"{target} is not present and downloading is disabled. "
                                   f"{manual}".strip())
    downloads.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    try:
        with urllib.request.urlopen(archive.url, timeout=timeout) as resp, \
                open(part, "wb") as out:
            length = getattr(resp, "headers", {}).get("Content-Length")
            total = int(length) if length and str(length).isdigit() else None
            done = 0
            while block := resp.read(_BLOCK):
                out.write(block)
                done += len(block)
                if progress is not None:
                    progress(done, total)
    except (OSError, http.client.HTTPException) as exc:  # URLError, timeouts, refused, ...
        part.unlink(missing_ok=True)
        raise DatasetNotFoundError(f"could not download {archive.url}: {exc}. {manual}".strip()
                                   ) from exc
    try:
        _check_md5(part, archive)
    except CorruptDataError:
        part.unlink(missing_ok=True)
        raise
    part.replace(target)
    return target


def _check_md5(path: Path, archive: Archive) -> None:
    actual = file_digest(path, "md5")
    if actual != archive.md5.lower():
        raise CorruptDataError(f"{path}: md5 is {actual}, expected {archive.md5} for "
                               f"{archive.url}; the file is damaged or not the official archive. "
                               "Delete it and prepare the dataset again (or copy in the official "
                               "file).")


def _unsafe_reason(member: tarfile.TarInfo) -> str | None:
    name = member.name
    if (name.startswith(("/", "\\")) or PurePosixPath(name).is_absolute()
            or PureWindowsPath(name).drive):
        return "an absolute path"
    if ".." in PurePosixPath(name.replace("\\", "/")).parts:
        return "a '..' component"
    if not (member.isfile() or member.isdir()):
        return "not a plain file or folder (link, device or fifo)"
    return None


def safe_extract(archive_path: Path, dest: Path) -> None:
    """Extract a tar archive into ``dest``, refusing members that could escape it.

    Every member must be a plain file or folder with a relative path without ``..``; tarfile's
    ``data`` filter is applied as a second line of defence where Python has it.
    """
    try:
        with tarfile.open(archive_path, "r:*") as tar:
            members = tar.getmembers()
            for member in members:
                reason = _unsafe_reason(member)
                if reason is not None:
                    raise CorruptDataError(f"{archive_path}: refused to extract member "
                                           f"{member.name!r}: {reason}")
            if hasattr(tarfile, "data_filter"):
                tar.extractall(dest, members=members, filter="data")
            else:  # pragma: no cover - Python without extraction filters
                tar.extractall(dest, members=members)  # members were checked above
    except (tarfile.TarError, EOFError, zlib.error) as exc:
        raise CorruptDataError(f"{archive_path}: unreadable archive ({exc})") from exc


def _convert_batches(info: DatasetInfo, batches: Path, folder: Path) -> None:
    """Convert official batches to shards in ``folder`` (staged, then moved into place)."""
    staging = folder.with_name(f".{folder.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    for split in SPLITS:
        images, labels, names = load_cifar_batches(info.name, batches, split)
        _check_against_registry(info, images, labels, names, f"{batches} ({split})")
        write_shards(staging, split, images, labels, names, rows_per_shard=ROWS_PER_SHARD)
    folder.mkdir(parents=True, exist_ok=True)
    # The cache here was incomplete (prepare returns early otherwise): drop its shards so no
    # stale shard of another count survives next to the new ones.
    for old in folder.iterdir():
        m = SHARD_RE.match(old.name)
        if m and m.group("split") in SPLITS:
            old.unlink()
    for new in sorted(staging.iterdir()):
        new.replace(folder / new.name)
    staging.rmdir()


def _check_against_registry(info: DatasetInfo, images: np.ndarray, labels: np.ndarray,
                            names: tuple[str, ...], origin: str) -> None:
    expected = (info.image_size, info.image_size, info.channels)
    if images.shape[1:] != expected:
        raise CorruptDataError(f"{origin}: images are {images.shape[1:]}, expected {expected}")
    if len(names) != info.num_classes or (info.class_names and names != info.class_names):
        raise CorruptDataError(f"{origin}: class names {names[:5]}... (count {len(names)}) do "
                               f"not match the registry's {info.num_classes} classes")
    if labels.size and (labels.min() < 0 or labels.max() >= info.num_classes):
        raise CorruptDataError(f"{origin}: labels outside 0..{info.num_classes - 1}")
