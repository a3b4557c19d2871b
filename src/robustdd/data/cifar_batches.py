"""Reader for the official CIFAR-10/100 python batches, without trusting their pickles.

The official files are Python pickles. They are read with :class:`RestrictedUnpickler`, which
only resolves the few globals a pickled numpy array needs; anything else (e.g. ``os.system`` in a
tampered file) is refused before it can run.
"""

from __future__ import annotations

import codecs
import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from robustdd.errors import CorruptDataError

# name -> (folder name inside the archive, train files, test files, meta file, label key,
#          class-name key)
_LAYOUT: dict[str, tuple[str, tuple[str, ...], tuple[str, ...], str, bytes, bytes]] = {
    "cifar10": ("cifar-10-batches-py", tuple(f"data_batch_{i}" for i in range(1, 6)),
                ("test_batch",), "batches.meta", b"labels", b"label_names"),
    "cifar100": ("cifar-100-python", ("train",), ("test",), "meta", b"fine_labels",
                 b"fine_label_names"),
}
_SIDE = 32
_ROW = 3 * _SIDE * _SIDE


def _allowed_globals() -> dict[tuple[str, str], Any]:
    """The globals a numpy array pickle refers to, under every module name numpy has used."""
    reconstruct = np.zeros(1).__reduce__()[0]  # numpy's own _reconstruct, whatever its module
    frombuffer = np.zeros(1).__reduce_ex__(5)[0]  # used by protocol-5 pickles
    allowed: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        # Python 3 writes bytes as _codecs.encode(str, "latin1") under protocols < 3.
        ("_codecs", "encode"): codecs.encode,
    }
    for core in ("numpy.core", "numpy._core"):
        allowed[(f"{core}.multiarray", "_reconstruct")] = reconstruct
        allowed[(f"{core}.numeric", "_frombuffer")] = frombuffer
    return allowed


_ALLOWED = _allowed_globals()


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that builds only plain containers, strings, numbers and numpy arrays."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise CorruptDataError(f"refused to load: the file wants class {module}.{name}, "
                                   "which a CIFAR batch never contains") from None


def restricted_load(path: Path) -> Any:
    """Unpickle ``path`` with :class:`RestrictedUnpickler` (``encoding='bytes'``, as the
    Python 2 originals need); raises :class:`CorruptDataError` on refusal or damage."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CorruptDataError(f"{path}: cannot read ({exc})") from exc
    try:
        return RestrictedUnpickler(io.BytesIO(data), encoding="bytes").load()
    except CorruptDataError as exc:
        raise CorruptDataError(f"{path}: {exc}") from None
    except Exception as exc:  # any failure inside pickle means a damaged or foreign file
        raise CorruptDataError(f"{path}: not a readable CIFAR batch "
                               f"({type(exc).__name__}: {exc})") from exc


def official_folder_name(name: str) -> str | None:
    """The folder the official archive of ``name`` extracts to (None if it has no batches)."""
    return _LAYOUT[name][0] if name in _LAYOUT else None


def batch_files(name: str, split: str) -> tuple[str, ...]:
    """The files of the official batch folder that ``split`` needs, the meta file included."""
    _, train_files, test_files, meta_file, *_ = _LAYOUT[name]
    return (*(train_files if split == "train" else test_files), meta_file)


def find_cifar_batches(name: str, base: Path) -> Path | None:
    """The extracted official batch folder of ``name`` under ``base``, or None.

    Looks for ``base/<name>/<official folder>`` then ``base/<official folder>``, e.g.
    ``base/cifar10/cifar-10-batches-py`` or ``base/cifar-100-python``.
    """
    if name not in _LAYOUT:
        return None
    official = _LAYOUT[name][0]
    for candidate in (base / name / official, base / official):
        if candidate.is_dir():
            return candidate
    return None


def _get(d: dict, key: bytes, path: Path) -> Any:
    """``d[key]`` accepting bytes or str keys (Python 2 vs re-pickled files)."""
    for k in (key, key.decode()):
        if k in d:
            return d[k]
    raise CorruptDataError(f"{path}: missing entry {key.decode()!r} (has {sorted(map(str, d))})")


def _read_batch(path: Path, label_key: bytes) -> tuple[np.ndarray, np.ndarray]:
    if not path.is_file():
        raise CorruptDataError(f"{path}: batch file missing; the extracted folder is incomplete, "
                               "extract the official archive again")
    batch = restricted_load(path)
    if not isinstance(batch, dict):
        raise CorruptDataError(f"{path}: expected a dict, got {type(batch).__name__}")
    data = _get(batch, b"data", path)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 \
            or data.shape[1] != _ROW:
        shape = getattr(data, "shape", None)
        raise CorruptDataError(f"{path}: 'data' must be a uint8 N×{_ROW} array, got "
                               f"{type(data).__name__} {getattr(data, 'dtype', '')} {shape}")
    raw = _get(batch, label_key, path)
    try:
        labels = np.asarray(raw)
    except Exception as exc:
        raise CorruptDataError(f"{path}: unreadable labels ({exc})") from exc
    if labels.ndim != 1 or labels.shape[0] != data.shape[0] \
            or not np.issubdtype(labels.dtype, np.integer):
        raise CorruptDataError(f"{path}: {label_key.decode()!r} must be {data.shape[0]} integers, "
                               f"got {labels.dtype} {labels.shape}")
    return data, labels.astype(np.int64)


def _class_names(path: Path, key: bytes) -> tuple[str, ...]:
    if not path.is_file():
        raise CorruptDataError(f"{path}: meta file missing; extract the official archive again")
    meta = restricted_load(path)
    if not isinstance(meta, dict):
        raise CorruptDataError(f"{path}: expected a dict, got {type(meta).__name__}")
    names = _get(meta, key, path)
    if not isinstance(names, list) or not all(isinstance(n, (bytes, str)) for n in names):
        raise CorruptDataError(f"{path}: {key.decode()!r} must be a list of strings")
    return tuple(n.decode("utf-8") if isinstance(n, bytes) else n for n in names)


def load_cifar_batches(name: str, folder: Path, split: str
                       ) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Read ``split`` of an official batch folder.

    Returns (images uint8 N×32×32×3, labels int64 [N], class names). CIFAR-10 train is
    ``data_batch_1..5`` in order, test is ``test_batch``; CIFAR-100 uses ``train``/``test`` with
    its ``fine_labels``. Rows are stored channel-major (3×32×32) and converted to H×W×C.
    """
    if name not in _LAYOUT:
        raise ValueError(f"no official python batches for dataset {name!r}")
    if split not in ("train", "test"):
        raise ValueError(f"unknown split {split!r}; expected 'train' or 'test'")
    _, train_files, test_files, meta_file, label_key, names_key = _LAYOUT[name]
    parts = [_read_batch(folder / f, label_key)
             for f in (train_files if split == "train" else test_files)]
    data = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    names = _class_names(folder / meta_file, names_key)
    images = data.reshape(-1, 3, _SIDE, _SIDE).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), labels, names
