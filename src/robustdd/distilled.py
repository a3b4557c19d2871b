"""The distilled-set container (:class:`DistilledSet`), its on-disk format and legacy importers.

On disk a distilled set is a directory holding ``tensors.safetensors`` (or a tensors-only
``tensors.pt``) with ``images`` and ``labels``, plus ``meta.json`` (format ``robustdd.distilled``,
version 1) with every scalar field, the free-form ``meta`` dict, the tensor shapes and the
SHA-256 of the tensor file. Nothing is ever unpickled beyond what ``torch.load(weights_only=True)``
allows.

A set distilled on ZCA-whitened inputs (MTT ``--zca``) carries its whitening: the tensors
``zca.mean`` [D] and ``zca.transform`` [D, D] sit in the same tensor file (so the checksum covers
them) and ``meta.json`` describes them under ``"zca"``. Files without it load as before.

A set whose evaluation protocol needs a teacher network (SRe2L's online knowledge distillation)
carries it as a :class:`TeacherNet`: its state-dict tensors sit in the same tensor file under
``teacher.<name>`` (covered by the same checksum) and ``meta.json`` names its architecture under
``"teacher"``.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import pickle
import re
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from robustdd import __version__
from robustdd.data.registry import DatasetInfo, dataset_info
from robustdd.errors import CorruptDataError, IncompatibleError, RobustDDError
from robustdd.nn.zca import ZCAWhitening
from robustdd.runtime import usual_mode

FORMATIONS = ("none", "mosaic2x2")
FORMAT_NAME = "robustdd.distilled"
FORMAT_VERSION = 1
META_FILE = "meta.json"
ZCA_KEYS = {"mean": "zca.mean", "transform": "zca.transform"}
TEACHER_PREFIX = "teacher."
TENSOR_FILES = {"safetensors": "tensors.safetensors", "pt": "tensors.pt"}

__all__ = [
    "FORMATIONS",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "DistilledSet",
    "DistilledSetNotFoundError",
    "TeacherNet",
    "decode_mosaic2x2",
    "import_dc",
    "import_mtt",
    "make_mosaic2x2",
]


class DistilledSetNotFoundError(RobustDDError, FileNotFoundError):
    """A distilled set (or a file to import) does not exist at the given path."""


@dataclass(eq=False)
class TeacherNet:
    """A network stored with a distilled set: architecture name and state dict (CPU tensors).

    The architecture is a :func:`robustdd.nn.build_model` name; the model normalises its input
    with the set's mean/std, like every robustdd model.
    """

    arch: str
    state: dict[str, torch.Tensor]

    @classmethod
    def from_model(cls, arch: str, model: torch.nn.Module) -> TeacherNet:
        """Snapshot ``model`` (built by ``build_model(arch, ...)``)."""
        return cls(arch, {k: v.detach().cpu().clone().contiguous()
                          for k, v in model.state_dict().items()})

    def build(self, num_classes: int, channels: int, image_size: int, mean: Sequence[float],
              std: Sequence[float], device: torch.device | str = "cpu") -> torch.nn.Module:
        """The network with its stored weights, in eval mode on ``device``."""
        from robustdd.nn import build_model

        net = build_model(self.arch, num_classes, channels, image_size, mean=mean, std=std,
                          device=device)
        try:
            net.load_state_dict({k: v.to(device) for k, v in self.state.items()})
        except RuntimeError as exc:
            raise CorruptDataError(f"stored teacher does not fit architecture {self.arch!r}: "
                                   f"{exc}") from exc
        return net.eval()


@dataclass(eq=False, repr=False)
class DistilledSet:
    """A distilled dataset in pixel space, with the facts needed to train on and reproduce it.

    ``images`` are float32 N×C×H×W pixels (nominally [0, 1]; values may leave that range during
    optimisation, :meth:`clamped` is what exports use). ``labels`` are int64 [N] hard labels or
    float32 [N, num_classes] soft labels (probabilities or logits, as the method defines).
    ``ipc`` counts *stored* images per class: a ``mosaic2x2`` set with ipc 10 trains on 40
    images per class (see :meth:`decoded`). Images must be square. ``zca``, when set, is the
    whitening the set was distilled under: models trained on it must apply it inside their
    forward (:func:`robustdd.nn.zca.wrap_with_zca`). ``teacher``, when set, is the network the
    set's evaluation protocol distils from (SRe2L's online KD).
    """

    images: torch.Tensor
    labels: torch.Tensor
    num_classes: int
    dataset: str
    method: str
    ipc: int
    formation: str = "none"
    lr: float | None = None
    class_names: tuple[str, ...] = ()
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    meta: dict[str, Any] = field(default_factory=dict)
    zca: ZCAWhitening | None = None
    teacher: TeacherNet | None = None

    def __post_init__(self) -> None:
        self.class_names = tuple(str(c) for c in self.class_names)
        self.mean = tuple(float(m) for m in self.mean)
        self.std = tuple(float(s) for s in self.std)
        if isinstance(self.lr, torch.Tensor):
            if self.lr.numel() != 1:
                raise ValueError(f"lr must be a single number, got a tensor of shape "
                                 f"{tuple(self.lr.shape)}")
            self.lr = float(self.lr.detach().cpu().item())
        elif self.lr is not None:
            self.lr = float(self.lr)
        self._validate()

    def _validate(self) -> None:
        img, lab = self.images, self.labels
        if not isinstance(img, torch.Tensor) or not isinstance(lab, torch.Tensor):
            raise ValueError("images and labels must be torch tensors, got "
                             f"{type(img).__name__} and {type(lab).__name__}")
        if img.dtype != torch.float32:
            raise ValueError(f"images must be float32, got {img.dtype} (convert with .float())")
        if img.ndim != 4:
            raise ValueError(f"images must be N×C×H×W, got shape {tuple(img.shape)}")
        n, _, h, w = img.shape
        if n == 0:
            raise ValueError("a distilled set needs at least one image")
        if h != w:
            raise ValueError(f"images must be square, got {h}×{w}")
        if lab.device != img.device:
            raise ValueError(f"images are on {img.device} but labels on {lab.device}")
        for name, value in (("num_classes", self.num_classes), ("ipc", self.ipc)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        for name, value in (("dataset", self.dataset), ("method", self.method)):
            if not isinstance(value, str) or not value:
                raise ValueError(f"{name} must be a non-empty string, got {value!r}")
        if lab.ndim == 1:
            if lab.dtype != torch.int64:
                raise ValueError(f"hard labels must be int64, got {lab.dtype} (use .long())")
            if lab.shape[0] != n:
                raise ValueError(f"{n} images but {lab.shape[0]} labels")
            lo, hi = int(lab.min()), int(lab.max())
            if lo < 0 or hi >= self.num_classes:
                raise ValueError(f"labels must lie in [0, {self.num_classes}), "
                                 f"got values from {lo} to {hi}")
        elif lab.ndim == 2:
            if lab.dtype != torch.float32:
                raise ValueError(f"soft labels must be float32, got {lab.dtype}")
            if tuple(lab.shape) != (n, self.num_classes):
                raise ValueError(f"soft labels must have shape [N, num_classes] = "
                                 f"[{n}, {self.num_classes}], got {list(lab.shape)}")
            if not bool(torch.isfinite(lab).all()):
                raise CorruptDataError("soft labels contain NaN or Inf values")
        else:
            raise ValueError("labels must be int64 [N] (hard) or float32 [N, num_classes] "
                             f"(soft), got shape {tuple(lab.shape)}")
        if not bool(torch.isfinite(img).all()):
            bad = int((~torch.isfinite(img)).flatten(1).any(1).sum())
            raise CorruptDataError(f"images contain NaN or Inf values ({bad} of {n} images "
                                   "affected)")
        if self.formation not in FORMATIONS:
            raise ValueError(f"unknown formation {self.formation!r}; known: "
                             f"{', '.join(FORMATIONS)}")
        if self.formation == "mosaic2x2" and h % 2:
            raise ValueError(f"formation mosaic2x2 needs an even image size, got {h}")
        if self.lr is not None and not math.isfinite(self.lr):
            raise CorruptDataError(f"learned lr is not finite: {self.lr}")
        if self.class_names and len(self.class_names) != self.num_classes:
            raise ValueError(f"{len(self.class_names)} class names for "
                             f"{self.num_classes} classes")
        for name, stats in (("mean", self.mean), ("std", self.std)):
            if stats and len(stats) != img.shape[1]:
                raise ValueError(f"{name} has {len(stats)} values for {img.shape[1]} channels")
        if any(not s > 0 for s in self.std):
            raise ValueError(f"std values must be positive, got {self.std}")
        if not isinstance(self.meta, dict):
            raise ValueError(f"meta must be a dict, got {type(self.meta).__name__}")
        if self.zca is not None:
            if not isinstance(self.zca, ZCAWhitening):
                raise ValueError(f"zca must be a ZCAWhitening, got {type(self.zca).__name__}")
            if self.zca.dim != img[0].numel():
                raise ValueError(f"zca was fitted on {self.zca.dim}-dimensional images, the set "
                                 f"has {img[0].numel()} values per image")
        if self.teacher is not None and not isinstance(self.teacher, TeacherNet):
            raise ValueError(f"teacher must be a TeacherNet, got {type(self.teacher).__name__}")
        try:
            json.dumps(self.meta)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"meta must be JSON-serialisable: {exc}") from exc

    # -- properties ---------------------------------------------------------------------------

    @property
    def soft(self) -> bool:
        """Whether the labels are soft ([N, num_classes] floats)."""
        return self.labels.ndim == 2

    @property
    def channels(self) -> int:
        """Number of image channels."""
        return int(self.images.shape[1])

    @property
    def image_size(self) -> int:
        """Side length of the (square) stored images."""
        return int(self.images.shape[2])

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __repr__(self) -> str:
        kind = "soft" if self.soft else "hard"
        lr = "" if self.lr is None else f", lr={self.lr:.4g}"
        return (f"DistilledSet(method={self.method!r}, dataset={self.dataset!r}, ipc={self.ipc}, "
                f"images={list(self.images.shape)}, labels={kind}, "
                f"formation={self.formation!r}{lr})")

    def hard_labels(self) -> torch.Tensor:
        """Hard labels: the labels themselves, or the argmax of soft labels."""
        return self.labels.argmax(1) if self.soft else self.labels

    # -- transforms ---------------------------------------------------------------------------

    def decoded(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The training images and labels after applying the formation.

        ``none`` returns the stored tensors. ``mosaic2x2`` cuts each image into its four
        quadrants, upsamples each ×2 bilinearly (``align_corners=False``, as IDM's
        ``number_sign_augment``) and returns 4N images, quadrant-major: index ``q * N + i`` is
        quadrant ``q`` (0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right) of image ``i``;
        labels are tiled accordingly (``labels.repeat(4)``).
        """
        if self.formation == "none":
            return self.images, self.labels
        labels = self.labels.repeat(4, 1) if self.soft else self.labels.repeat(4)
        return decode_mosaic2x2(self.images), labels

    def to(self, device: torch.device | str) -> DistilledSet:
        """A copy with images and labels on ``device``."""
        return replace(self, images=self.images.to(device), labels=self.labels.to(device),
                       meta=copy.deepcopy(self.meta))

    def clamped(self) -> DistilledSet:
        """A copy with images clamped to [0, 1] (what exports and evaluation of exports use)."""
        return replace(self, images=self.images.detach().clamp(0.0, 1.0),
                       labels=self.labels.detach(), meta=copy.deepcopy(self.meta))

    def check_compatible(self, dataset: str | DatasetInfo | None,
                         num_classes: int | None = None, channels: int | None = None,
                         image_size: int | None = None) -> None:
        """Raise :class:`IncompatibleError` unless classes, channels and size fit the dataset.

        ``dataset`` is a registry name or a :class:`DatasetInfo`; explicit keyword values
        override its facts (e.g. for generated stand-ins). When all three are given the name
        is only used in the message and need not be registered; ``dataset=None`` is allowed.
        Only shapes are compared, not dataset names.
        """
        explicit = None not in (num_classes, channels, image_size)
        info = (dataset_info(dataset) if isinstance(dataset, str) and not explicit
                else dataset if isinstance(dataset, DatasetInfo) else None)
        given = {"classes": num_classes, "channels": channels, "image size": image_size}
        facts = {"classes": "num_classes", "channels": "channels", "image size": "image_size"}
        want = {k: v if v is not None else getattr(info, facts[k], None) for k, v in given.items()}
        have = {"classes": self.num_classes, "channels": self.channels,
                "image size": self.image_size}
        wrong = [f"{k} {have[k]} vs {v}" for k, v in want.items() if v is not None and v != have[k]]
        if wrong:
            target = dataset if isinstance(dataset, str) else \
                info.name if info is not None else "the requested shape"
            raise IncompatibleError(f"distilled set ({self.method}, {self.dataset}) does not fit "
                                    f"{target}: {'; '.join(wrong)} (set vs dataset)")

    # -- persistence --------------------------------------------------------------------------

    def save(self, directory: str | os.PathLike[str], *,
             tensor_format: str = "safetensors") -> Path:
        """Write the set to ``directory`` atomically and return the directory path.

        The set is written to a temporary directory beside the target and renamed into place,
        so readers see either the old complete set or the new one. An existing target is
        replaced only if it is empty or a robustdd distilled set. ``tensor_format`` is
        ``"safetensors"`` (default) or ``"pt"`` (tensors-only ``torch.save``).
        """
        if tensor_format not in TENSOR_FILES:
            raise ValueError(f"tensor_format must be one of {sorted(TENSOR_FILES)}, "
                             f"got {tensor_format!r}")
        self._validate()  # meta or tensors may have been mutated since construction
        target = Path(directory).absolute()
        check_replaceable(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        tensors = {"images": self.images.detach().cpu().contiguous(),
                   "labels": self.labels.detach().cpu().contiguous()}
        if self.zca is not None:
            state = self.zca.state_tensors()
            tensors.update({ZCA_KEYS[k]: v for k, v in state.items()})
        if self.teacher is not None:
            tensors.update({TEACHER_PREFIX + k: v.detach().cpu().contiguous()
                            for k, v in self.teacher.state.items()})
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
        usual_mode(tmp)
        try:
            tensor_path = tmp / TENSOR_FILES[tensor_format]
            if tensor_format == "safetensors":
                save_file(tensors, str(tensor_path))
            else:
                torch.save(tensors, tensor_path)
            _fsync(tensor_path)
            meta_path = tmp / META_FILE
            meta_path.write_text(json.dumps(self._meta_json(tensor_path), indent=2) + "\n",
                                 encoding="utf-8")
            _fsync(meta_path)
            _swap_into_place(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return target

    def _meta_json(self, tensor_path: Path) -> dict[str, Any]:
        return {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "writer": f"robustdd {__version__}",
            "dataset": self.dataset,
            "method": self.method,
            "ipc": self.ipc,
            "num_classes": self.num_classes,
            "channels": self.channels,
            "image_size": self.image_size,
            "num_images": len(self),
            "formation": self.formation,
            "label_kind": "soft" if self.soft else "hard",
            "lr": self.lr,
            "class_names": list(self.class_names),
            "mean": list(self.mean),
            "std": list(self.std),
            "tensors": {
                "file": tensor_path.name,
                "sha256": _sha256(tensor_path),
                "images": {"shape": list(self.images.shape), "dtype": "float32"},
                "labels": {"shape": list(self.labels.shape),
                           "dtype": "float32" if self.soft else "int64"},
            },
            "meta": self.meta,
            "zca": None if self.zca is None else {
                "kind": "zca-whitening", "eps": self.zca.eps, "dim": self.zca.dim,
                "tensors": dict(ZCA_KEYS),
                "applied": "whiten(x) = (flatten(x) - mean) @ transform, replacing mean/std "
                           "normalisation inside the model"},
            "teacher": None if self.teacher is None else {
                "arch": self.teacher.arch, "prefix": TEACHER_PREFIX,
                "num_tensors": len(self.teacher.state)},
        }

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> DistilledSet:
        """Read a set written by :meth:`save`, verifying format, checksum and shapes.

        Raises :class:`DistilledSetNotFoundError` if the directory does not exist and
        :class:`CorruptDataError` (with the reason) for anything missing, foreign or damaged.
        """
        root = Path(directory)
        if not root.exists():
            raise DistilledSetNotFoundError(f"no distilled set at {root}: the path does not exist")
        if not root.is_dir():
            raise CorruptDataError(f"{root}: a distilled set is a directory holding {META_FILE} "
                                   f"and {TENSOR_FILES['safetensors']}, got a file")
        meta_path = root / META_FILE
        if not meta_path.is_file():
            raise CorruptDataError(f"{root}: not a distilled set, {META_FILE} is missing")
        try:
            doc = json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CorruptDataError(f"{meta_path}: unreadable JSON ({exc})") from exc
        if not isinstance(doc, dict) or doc.get("format") != FORMAT_NAME:
            found = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
            raise CorruptDataError(f"{meta_path}: foreign file, format is {found!r}, "
                                   f"expected {FORMAT_NAME!r}")
        version = doc.get("format_version")
        if version != FORMAT_VERSION:
            hint = (" (written by a newer robustdd; upgrade it)"
                    if isinstance(version, int) and version > FORMAT_VERSION else "")
            raise CorruptDataError(f"{meta_path}: unsupported format_version {version!r}, "
                                   f"this robustdd reads version {FORMAT_VERSION}{hint}")
        try:
            return cls._from_doc(root, doc)
        except CorruptDataError:
            raise
        except (KeyError, TypeError, ValueError) as exc:
            reason = f"missing field {exc}" if isinstance(exc, KeyError) else str(exc)
            raise CorruptDataError(f"{root}: invalid distilled set: {reason}") from exc

    @classmethod
    def _from_doc(cls, root: Path, doc: dict[str, Any]) -> DistilledSet:
        spec = doc["tensors"]
        name = spec["file"]
        if name not in TENSOR_FILES.values():
            raise CorruptDataError(f"{root}: meta.json names tensor file {name!r}, expected one "
                                   f"of {sorted(TENSOR_FILES.values())}")
        tensor_path = root / name
        if not tensor_path.is_file():
            raise CorruptDataError(f"{root}: tensor file {name} is missing")
        digest = _sha256(tensor_path)
        if digest != spec["sha256"]:
            raise CorruptDataError(f"{tensor_path}: checksum mismatch (sha256 {digest[:12]}…, "
                                   f"meta.json records {str(spec['sha256'])[:12]}…): the file is "
                                   "truncated or corrupt; restore it or distil the set again")
        tensors = _read_tensor_file(tensor_path)
        for key in ("images", "labels"):
            if key not in tensors:
                raise CorruptDataError(f"{tensor_path}: tensor {key!r} is missing "
                                       f"(has {sorted(tensors)})")
            want = list(spec[key]["shape"])
            if list(tensors[key].shape) != want:
                raise CorruptDataError(f"{tensor_path}: {key} has shape "
                                       f"{list(tensors[key].shape)}, meta.json says {want}")
        zca = None
        if doc.get("zca") is not None:
            zspec = doc["zca"]
            names = zspec["tensors"]
            missing = [names.get(k) for k in ZCA_KEYS if names.get(k) not in tensors]
            if missing:
                raise CorruptDataError(f"{tensor_path}: ZCA tensor(s) {missing} named in "
                                       "meta.json are missing")
            zca = ZCAWhitening(tensors[names["mean"]], tensors[names["transform"]],
                               float(zspec["eps"]))
        teacher = None
        if doc.get("teacher") is not None:
            tspec = doc["teacher"]
            prefix = tspec["prefix"]
            state = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
            if len(state) != int(tspec["num_tensors"]):
                raise CorruptDataError(f"{tensor_path}: meta.json records "
                                       f"{tspec['num_tensors']} teacher tensors, the file holds "
                                       f"{len(state)}")
            teacher = TeacherNet(str(tspec["arch"]), state)
        return cls(
            images=tensors["images"], labels=tensors["labels"],
            num_classes=doc["num_classes"], dataset=doc["dataset"], method=doc["method"],
            ipc=doc["ipc"], formation=doc.get("formation", "none"), lr=doc.get("lr"),
            class_names=tuple(doc.get("class_names", ())), mean=tuple(doc.get("mean", ())),
            std=tuple(doc.get("std", ())), meta=doc.get("meta", {}), zca=zca, teacher=teacher,
        )


def decode_mosaic2x2(images: torch.Tensor) -> torch.Tensor:
    """Decode [N, C, H, W] 2×2 mosaics into their 4N quadrants upsampled ×2, quadrant-major.

    The one implementation of the ``mosaic2x2`` formation (``DistilledSet.decoded`` and the
    IDM-family matching loops both call it); differentiable with respect to ``images``.
    """
    if images.dim() != 4 or images.shape[-1] % 2 or images.shape[-2] % 2:
        raise ValueError(f"mosaic2x2 decoding needs [N, C, H, W] with even H and W, got "
                         f"{tuple(images.shape)}")
    n, c, h, w = images.shape
    quads = images.reshape(n, c, 2, h // 2, 2, w // 2).permute(2, 4, 0, 1, 3, 5)
    quads = quads.reshape(4 * n, c, h // 2, w // 2)
    return F.interpolate(quads, size=(h, w), mode="bilinear", align_corners=False)


def make_mosaic2x2(images: torch.Tensor) -> torch.Tensor:
    """Tile groups of four images into 2×2 mosaics (the inverse of ``mosaic2x2`` decoding).

    ``images`` has shape [N, 4, C, H, W] with H and W even; ``images[i, q]`` is downscaled ×0.5
    (bilinear, ``align_corners=False``, i.e. a 2×2 box average) and placed in quadrant ``q``
    (0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right) of output image ``i``. Returns
    [N, C, H, W]. Decoding the result gives back ``images[i, q]`` at index ``q * N + i``,
    up to the resolution lost by the ×0.5 / ×2 round trip.
    """
    if images.ndim != 5 or images.shape[1] != 4:
        raise ValueError(f"make_mosaic2x2 expects [N, 4, C, H, W], got {tuple(images.shape)}")
    n, _, c, h, w = images.shape
    if h % 2 or w % 2:
        raise ValueError(f"make_mosaic2x2 needs even H and W, got {h}×{w}")
    small = F.interpolate(images.reshape(4 * n, c, h, w), size=(h // 2, w // 2),
                          mode="bilinear", align_corners=False)
    small = small.reshape(n, 2, 2, c, h // 2, w // 2)  # [N, row, col, C, h, w]
    return small.permute(0, 3, 1, 4, 2, 5).reshape(n, c, h, w)


# -- importers ------------------------------------------------------------------------------------


def import_dc(path: str | os.PathLike[str], dataset: str, *, index: int = 0, method: str = "dc",
              mean: Sequence[float] | None = None,
              std: Sequence[float] | None = None) -> DistilledSet:
    """Import a DC/DSA/DM result file ``{'data': [(images, labels), ...], ...}``.

    The reference code stores normalised images ``(x - mean) / std``; they are converted back to
    pixels with ``mean``/``std`` (default: the registry's statistics for ``dataset``, which are
    the ones the reference code uses). ``index`` picks the experiment; ``ipc`` is inferred from
    the labels, which must give every class the same count.
    """
    path = Path(path)
    obj = _safe_torch_load(path)
    if not isinstance(obj, dict) or "data" not in obj:
        kind = f"a dict with keys {sorted(map(str, obj))}" if isinstance(obj, dict) else \
            type(obj).__name__
        raise CorruptDataError(f"{path}: not a DC/DSA/DM result file, expected a dict with "
                               f"'data' = [(images, labels), ...], got {kind}")
    data = obj["data"]
    if not isinstance(data, (list, tuple)) or not data:
        raise CorruptDataError(f"{path}: 'data' must be a non-empty list of (images, labels), "
                               f"got {type(data).__name__} of length {_len(data)}")
    if not -len(data) <= index < len(data):
        raise IndexError(f"{path}: index {index} out of range, the file holds {len(data)} "
                         "experiment(s)")
    entry = data[index]
    if not isinstance(entry, (list, tuple)) or len(entry) != 2:
        raise CorruptDataError(f"{path}: data[{index}] must be a pair (images, labels), got "
                               f"{type(entry).__name__} of length {_len(entry)}")
    images, labels = entry
    meta: dict[str, Any] = {"source": {"format": "dc", "file": str(path), "index": index,
                                       "experiments": len(data), "sha256": _sha256(path)}}
    accs = _jsonable(obj.get("accs_all_exps"))
    if accs is not None:
        meta["source"]["accs_all_exps"] = accs
    return _from_normalised(path, images, labels, dataset, method, mean, std, None, meta)


def import_mtt(images_path: str | os.PathLike[str], dataset: str, *,
               labels_path: str | os.PathLike[str] | None = None,
               lr_path: str | os.PathLike[str] | None = None, method: str = "mtt",
               mean: Sequence[float] | None = None,
               std: Sequence[float] | None = None) -> DistilledSet:
    """Import an MTT set: ``images_best.pt`` (a normalised N×C×H×W tensor) and its labels.

    ``labels_path`` defaults to the file beside the images with ``images`` replaced by
    ``labels`` in the name (``images_best.pt`` → ``labels_best.pt``). Labels may be int [N]
    or soft float [N, num_classes]. ``lr_path`` is an optional file holding the learned
    ``syn_lr`` (MTT does not save it with the images). Denormalisation is as in
    :func:`import_dc`.

    ZCA-whitened sets (MTT ``--zca``) are not pixels after denormalisation: importing one needs
    the dataset's ZCA transform, which is out of scope. The files carry no flag saying so, so
    make sure the run did not use ``--zca``.
    """
    images_path = Path(images_path)
    if labels_path is None:
        stem = images_path.name
        label_name = ("labels" + stem[len("images"):]) if stem.startswith("images") \
            else "labels_best.pt"
        labels_path = images_path.with_name(label_name)
    labels_path = Path(labels_path)
    images = _safe_torch_load(images_path)
    labels = _safe_torch_load(labels_path)
    for p, t in ((images_path, images), (labels_path, labels)):
        if not isinstance(t, torch.Tensor):
            raise CorruptDataError(f"{p}: expected a tensor (MTT saves images_best.pt and "
                                   f"labels_best.pt as bare tensors), got {type(t).__name__}")
    lr = None
    source: dict[str, Any] = {"format": "mtt", "images": str(images_path),
                              "labels": str(labels_path), "sha256": _sha256(images_path)}
    if lr_path is not None:
        lr_path = Path(lr_path)
        raw = _safe_torch_load(lr_path)
        if isinstance(raw, torch.Tensor) and raw.numel() == 1 and raw.is_floating_point():
            lr = float(raw.item())
        elif isinstance(raw, float):
            lr = raw
        else:
            raise CorruptDataError(f"{lr_path}: expected a single learned learning rate "
                                   f"(a float or a 1-element float tensor), got {_describe(raw)}")
        source["lr"] = str(lr_path)
    return _from_normalised(images_path, images, labels, dataset, method, mean, std, lr,
                            {"source": source})


def _from_normalised(path: Path, images: Any, labels: Any, dataset: str, method: str,
                     mean: Sequence[float] | None, std: Sequence[float] | None,
                     lr: float | None, meta: dict[str, Any]) -> DistilledSet:
    """Validate a normalised (images, labels) pair, convert it to pixels and wrap it."""
    info = dataset_info(dataset)
    if not isinstance(images, torch.Tensor) or not images.is_floating_point() or images.ndim != 4:
        raise CorruptDataError(f"{path}: images must be a float N×C×H×W tensor, got "
                               f"{_describe(images)}")
    if not isinstance(labels, torch.Tensor):
        raise CorruptDataError(f"{path}: labels must be a tensor, got {_describe(labels)}")
    n, c, h, w = images.shape
    if (c, h, w) != (info.channels, info.image_size, info.image_size):
        raise IncompatibleError(f"{path}: images are {c}×{h}×{w} but {info.name} is "
                                f"{info.channels}×{info.image_size}×{info.image_size}")
    if labels.ndim == 1 and not labels.is_floating_point() and labels.dtype != torch.bool:
        labels = labels.long()
    elif labels.ndim == 2 and labels.is_floating_point():
        if labels.shape[1] != info.num_classes:
            raise IncompatibleError(f"{path}: soft labels have {labels.shape[1]} columns but "
                                    f"{info.name} has {info.num_classes} classes")
        labels = labels.float()
    else:
        raise CorruptDataError(f"{path}: labels must be integer [N] or float [N, classes], got "
                               f"{_describe(labels)}")
    if labels.shape[0] != n:
        raise CorruptDataError(f"{path}: {n} images but {labels.shape[0]} labels")
    if not bool(torch.isfinite(images).all()):
        raise CorruptDataError(f"{path}: images contain NaN or Inf values")
    mean_t = torch.tensor(info.mean if mean is None else tuple(mean), dtype=torch.float32)
    std_t = torch.tensor(info.std if std is None else tuple(std), dtype=torch.float32)
    if mean_t.numel() != c or std_t.numel() != c:
        raise ValueError(f"mean and std need {c} values each, got {mean_t.numel()} and "
                         f"{std_t.numel()}")
    pixels = images.detach().float() * std_t.view(1, c, 1, 1) + mean_t.view(1, c, 1, 1)
    ipc = _infer_ipc(path, labels, info.num_classes)
    try:
        return DistilledSet(images=pixels.contiguous(), labels=labels.detach().contiguous(),
                            num_classes=info.num_classes, dataset=info.name, method=method,
                            ipc=ipc, lr=lr, class_names=info.class_names,
                            mean=tuple(mean_t.tolist()), std=tuple(std_t.tolist()), meta=meta)
    except (IncompatibleError, CorruptDataError):
        raise
    except ValueError as exc:
        raise CorruptDataError(f"{path}: {exc}") from exc


def _infer_ipc(path: Path, labels: torch.Tensor, num_classes: int) -> int:
    n = labels.shape[0]
    if labels.ndim == 2:  # soft labels: assume the usual class-balanced layout
        if n % num_classes:
            raise CorruptDataError(f"{path}: {n} images are not a whole number per class for "
                                   f"{num_classes} classes")
        return n // num_classes
    lo, hi = int(labels.min()), int(labels.max())
    if lo < 0 or hi >= num_classes:
        raise IncompatibleError(f"{path}: labels range from {lo} to {hi}, outside the "
                                f"{num_classes} classes of the dataset")
    counts = torch.bincount(labels, minlength=num_classes)
    if int(counts.min()) != int(counts.max()):
        raise CorruptDataError(f"{path}: classes have unequal image counts "
                               f"(min {int(counts.min())}, max {int(counts.max())}); "
                               "cannot infer images per class")
    return int(counts[0])


_GLOBAL_RE = re.compile(r"GLOBAL ([\w.]+)")


def _safe_torch_load(path: Path) -> Any:
    """``torch.load`` restricted to tensors and plain containers, with clear errors."""
    if not path.is_file():
        raise DistilledSetNotFoundError(f"{path}: file not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = _GLOBAL_RE.search(str(exc))
        what = f" (it references {found.group(1)})" if found else ""
        raise CorruptDataError(
            f"{path}: the file needs arbitrary code execution to load{what}; robustdd refuses "
            "to unpickle it. If you trust its source, load it yourself with "
            "torch.load(path, weights_only=False) and torch.save only plain tensors, lists and "
            "dicts (e.g. {'data': [(images, labels)]} for DC/DM, the bare images tensor for "
            "MTT), then import the re-saved file") from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise CorruptDataError(f"{path}: unreadable or truncated torch file ({exc})") from exc


def _read_tensor_file(path: Path) -> dict[str, torch.Tensor]:
    try:
        if path.suffix == ".safetensors":
            return load_file(str(path), device="cpu")
        obj = _safe_torch_load(path)
    except SafetensorError as exc:
        raise CorruptDataError(f"{path}: unreadable safetensors file ({exc})") from exc
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CorruptDataError(f"{path}: expected a dict of tensors, got {_describe(obj)}")
    return obj


def check_replaceable(target: str | os.PathLike[str]) -> None:
    """Raise unless ``target`` is absent, an empty directory or a robustdd distilled set."""
    target = Path(target)
    if not target.exists():
        return
    if not target.is_dir():
        raise FileExistsError(f"{target} exists and is not a directory; refusing to replace it")
    if any(target.iterdir()) and not _is_distilled_dir(target):
        raise FileExistsError(f"{target} exists and is not a robustdd distilled set; "
                              "refusing to replace it (choose another directory)")


def _is_distilled_dir(path: Path) -> bool:
    try:
        doc = json.loads((path / META_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(doc, dict) and doc.get("format") == FORMAT_NAME


def _swap_into_place(tmp: Path, target: Path) -> None:
    """Rename ``tmp`` to ``target``; an existing target is moved aside first, then deleted."""
    if not target.exists():
        os.replace(tmp, target)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
    os.replace(target, old / "set")
    try:
        os.replace(tmp, target)
    except BaseException:
        os.replace(old / "set", target)  # put the previous set back
        shutil.rmtree(old, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _fsync(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _jsonable(obj: Any) -> Any:
    """``obj`` with tensors turned into lists if the result is JSON-serialisable, else None."""
    if obj is None:
        return None

    def convert(x: Any) -> Any:
        if isinstance(x, torch.Tensor):
            return x.tolist()
        if isinstance(x, dict):
            return {str(k): convert(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [convert(v) for v in x]
        return x

    try:
        out = convert(obj)
        json.dumps(out)
    except (TypeError, ValueError):
        return None
    return out


def _len(obj: Any) -> str:
    return str(len(obj)) if hasattr(obj, "__len__") else "n/a"


def _describe(obj: Any) -> str:
    if isinstance(obj, torch.Tensor):
        return f"a {obj.dtype} tensor of shape {list(obj.shape)}"
    return type(obj).__name__
