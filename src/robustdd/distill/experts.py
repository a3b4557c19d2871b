"""MTT expert trajectories: networks trained on the real data, snapshotted every epoch.

Reference: ``buffer.py`` of GeorgeCazenavette/mtt-distillation (``methods.md`` §5.1). Each expert
is a freshly initialised network trained with the shared trainer
(:func:`robustdd.nn.train.train_model`) by plain SGD, lr 0.01, **no momentum, no weight decay,
no lr decay**, batch 256, with per-sample DSA augmentation, for ``epochs`` epochs (no extra +1
epoch). Its flat parameter vector is recorded at the start and after every epoch
(``epochs + 1`` snapshots).

With ZCA the expert is ``net(zca(x))`` on pixels and DSA acts on the whitened tensors (through
:func:`robustdd.nn.zca.whitened_space_augment`), which is the reference's pre-whitened data
pipeline; without ZCA it is the usual mean/std-normalising model with DSA in normalised space.

Cache. Experts are expensive and shared across distillation runs, so they are stored in the
derived cache (``$ROBUSTDD_CACHE`` or ``~/.cache/robustdd/derived``, as the Cluster-min
assignment is) under ``mtt-experts/<dataset>-<arch>-<zca|nozca>-<key hash>/``, one safetensors
file per expert (``expert-0000.safetensors``; never pickle), written atomically. The key holds
the SHA-256 of the training images and labels, the architecture, the expert config (except the
number of experts: expert k depends only on the key and k, so a buffer of 10 is a prefix of one
of 100), the expert seed and the device type. Each epoch snapshot is a separate tensor with its
own SHA-256 in the file's metadata, so a snapshot is read (memory-mapped) and verified on its
own: memory stays at one snapshot, not a 65 MB trajectory, per read. A file that is truncated,
altered or foreign is refused with :class:`~robustdd.errors.CorruptDataError`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save as save_safetensors_bytes

from robustdd.data import ImageDataset, sample_per_class
from robustdd.distill.losses.trajectory import FlatParams
from robustdd.errors import CorruptDataError
from robustdd.nn import build_model
from robustdd.nn.dsa import DSA, DSAConfig, default_strategy
from robustdd.nn.train import TrainConfig, train_model
from robustdd.nn.zca import DEFAULT_ZCA_EPS, ZCAWhitening, whitened_space_augment, wrap_with_zca
from robustdd.progress import progress_bar
from robustdd.runtime import cache_dir, derive_seed, generator_for, open_atomic, write_json_atomic

__all__ = [
    "EXPERT_FORMAT",
    "ExpertBuffer",
    "ExpertConfig",
    "data_digest",
    "dataset_zca",
    "expert_buffer",
    "train_expert",
]

EXPERT_FORMAT = "robustdd.mtt-expert"
EXPERT_VERSION = 1
ZCA_FORMAT = "robustdd.zca"


@dataclass(frozen=True)
class ExpertConfig:
    """How experts are trained; defaults are ``buffer.py``'s (methods.md §5.1).

    ``images_per_class`` trains on a fixed class-balanced subset (a budget knob for CPU
    profiles; ``None`` = the whole training split, as the reference).
    """

    num_experts: int = 100
    epochs: int = 50
    lr: float = 0.01
    momentum: float = 0.0
    weight_decay: float = 0.0
    batch_size: int = 256
    dsa: bool = True
    dsa_strategy: str | None = None  # None: the dataset's default strategy
    zca: bool = False
    zca_eps: float = DEFAULT_ZCA_EPS
    images_per_class: int | None = None

    def __post_init__(self) -> None:
        if self.num_experts < 1 or self.epochs < 1 or self.batch_size < 1:
            raise ValueError(f"num_experts, epochs and batch_size must be ≥ 1: {self}")
        if self.lr <= 0 or self.zca_eps <= 0:
            raise ValueError(f"lr and zca_eps must be positive: {self}")
        if self.images_per_class is not None and self.images_per_class < 1:
            raise ValueError(f"images_per_class must be ≥ 1 or None: {self}")

    def train_config(self) -> TrainConfig:
        """The shared trainer's settings: constant lr, no +1 epoch (``buffer.py``)."""
        return TrainConfig(epochs=self.epochs, lr=self.lr, momentum=self.momentum,
                           weight_decay=self.weight_decay, batch_size=self.batch_size,
                           decay=False, extra_epoch=False)


def data_digest(data: ImageDataset) -> str:
    """SHA-256 of a split's uint8 images and labels."""
    h = hashlib.sha256(data.images.contiguous().numpy().tobytes())
    h.update(data.labels.contiguous().numpy().tobytes())
    return h.hexdigest()


def _tensor_sha(t: torch.Tensor) -> str:
    return hashlib.sha256(t.detach().cpu().contiguous().numpy().tobytes()).hexdigest()


def _key_hash(key: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


# -- ZCA --------------------------------------------------------------------------------------


def dataset_zca(data: ImageDataset, eps: float = DEFAULT_ZCA_EPS, *,
                cache: Path | None = None) -> ZCAWhitening:
    """The ZCA whitening fitted on all of ``data`` (MTT: the whole training split in [0, 1]),
    cached as safetensors keyed by the data's SHA-256 and ``eps``. An unreadable or foreign
    cache file is ignored and rewritten (refitting is cheap next to training experts)."""
    digest = data_digest(data)
    folder = (cache if cache is not None else cache_dir()) / "zca"
    path = folder / f"zca-{data.name}-{data.split}-{digest[:16]}-eps{eps:g}.safetensors"
    if path.exists():
        try:
            blob = path.read_bytes()
            with safe_open(str(path), framework="pt") as fh:
                meta = fh.metadata() or {}
            tensors = load_safetensors_bytes(blob)
            if (meta.get("format") == ZCA_FORMAT and meta.get("data_sha256") == digest
                    and float(meta.get("eps", "nan")) == eps
                    and meta.get("mean_sha256") == _tensor_sha(tensors["mean"])
                    and meta.get("transform_sha256") == _tensor_sha(tensors["transform"])):
                return ZCAWhitening(tensors["mean"], tensors["transform"], eps)
        except (OSError, SafetensorError, KeyError, ValueError):
            pass  # corrupt or foreign: refit and overwrite
    zca = ZCAWhitening.fit(data.images, eps)
    state = zca.state_tensors()
    meta = {"format": ZCA_FORMAT, "data_sha256": digest, "eps": repr(float(eps)),
            "dataset": data.name, "split": data.split,
            "mean_sha256": _tensor_sha(state["mean"]),
            "transform_sha256": _tensor_sha(state["transform"])}
    with open_atomic(path, "wb") as fh:
        fh.write(save_safetensors_bytes(state, metadata=meta))
    return zca


# -- expert buffer ----------------------------------------------------------------------------


class ExpertBuffer:
    """A complete on-disk set of expert trajectories; reads one snapshot at a time."""

    def __init__(self, directory: Path, key: dict[str, Any], num_experts: int, epochs: int,
                 num_params: int):
        self.directory = directory
        self.key = key
        self.key_sha256 = _key_hash(key)
        self.num_experts = num_experts
        self.epochs = epochs
        self.num_params = num_params
        self._hashes: dict[int, list[str]] = {}

    def path(self, expert: int) -> Path:
        """File of expert ``expert``."""
        return self.directory / f"expert-{expert:04d}.safetensors"

    def _check(self, expert: int) -> list[str]:
        """Validate the header of an expert file once; return its per-epoch hashes."""
        if expert in self._hashes:
            return self._hashes[expert]
        if not 0 <= expert < self.num_experts:
            raise IndexError(f"expert {expert} out of range (buffer has {self.num_experts})")
        path = self.path(expert)
        hashes = _read_header(path, self.key_sha256, expert, self.epochs, self.num_params)
        self._hashes[expert] = hashes
        return hashes

    def snapshot(self, expert: int, epoch: int) -> torch.Tensor:
        """Flat parameters of ``expert`` after ``epoch`` epochs (0 = initialisation), verified
        against the SHA-256 recorded when it was written."""
        hashes = self._check(expert)
        if not 0 <= epoch <= self.epochs:
            raise IndexError(f"epoch {epoch} out of range 0..{self.epochs}")
        path = self.path(expert)
        try:
            with safe_open(str(path), framework="pt") as fh:
                t = fh.get_tensor(f"epoch_{epoch:04d}")
        except (OSError, SafetensorError) as exc:
            raise CorruptDataError(f"{path}: unreadable expert file ({exc}); delete it to "
                                   "retrain that expert") from exc
        if _tensor_sha(t) != hashes[epoch]:
            raise CorruptDataError(f"{path}: snapshot {epoch} fails its SHA-256 check (the file "
                                   "is corrupt); delete it to retrain that expert")
        return t

    def trajectory(self, expert: int) -> torch.Tensor:
        """All ``epochs + 1`` snapshots of one expert, [epochs + 1, P]."""
        return torch.stack([self.snapshot(expert, e) for e in range(self.epochs + 1)])


def _read_header(path: Path, key_sha: str, expert: int, epochs: int,
                 num_params: int) -> list[str]:
    if not path.is_file():
        raise CorruptDataError(f"{path}: expert file is missing")
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
            names = set(fh.keys())
            shapes = {n: fh.get_slice(n).get_shape() for n in names}
    except (OSError, SafetensorError) as exc:
        raise CorruptDataError(f"{path}: unreadable expert file ({exc}); delete it to retrain "
                               "that expert") from exc
    if meta.get("format") != EXPERT_FORMAT or meta.get("key_sha256") != key_sha \
            or meta.get("index") != str(expert):
        raise CorruptDataError(f"{path}: not expert {expert} of this buffer (foreign or stale "
                               "file); delete it to retrain that expert")
    try:
        hashes = json.loads(meta["sha256"])
    except (KeyError, ValueError) as exc:
        raise CorruptDataError(f"{path}: expert metadata lacks its checksums") from exc
    want = {f"epoch_{e:04d}" for e in range(epochs + 1)}
    if names != want or len(hashes) != epochs + 1 or \
            any(list(s) != [num_params] for s in shapes.values()):
        raise CorruptDataError(f"{path}: expected {epochs + 1} snapshots of {num_params} "
                               "parameters; delete it to retrain that expert")
    return [str(h) for h in hashes]


def _buffer_key(data: ImageDataset, arch: str, config: ExpertConfig, seed: int,
                device: torch.device) -> dict[str, Any]:
    expert_cfg = {k: v for k, v in asdict(config).items() if k != "num_experts"}
    expert_cfg["dsa_strategy"] = config.dsa_strategy or default_strategy(data.name)
    return {"format": EXPERT_FORMAT, "version": EXPERT_VERSION, "dataset": data.name,
            "split": data.split, "data_sha256": data_digest(data),
            "num_classes": data.num_classes, "channels": data.channels,
            "image_size": data.image_size, "mean": list(data.mean), "std": list(data.std),
            "arch": arch.lower(), "expert": expert_cfg, "seed": int(seed),
            "device_type": device.type}


def train_expert(data: ImageDataset, arch: str, config: ExpertConfig, *, seed: int,
                 index: int, device: torch.device | str = "cpu",
                 zca: ZCAWhitening | None = None) -> torch.Tensor:
    """Train expert ``index`` and return its trajectory [epochs + 1, P] (CPU float32)."""
    device = torch.device(device)
    if config.zca and zca is None:
        raise ValueError("config.zca is set: pass the dataset's ZCA (dataset_zca)")
    model = build_model(arch, data.num_classes, data.channels, data.image_size, mean=data.mean,
                        std=data.std, seed=derive_seed(seed, "mtt-expert", index), device=device)
    strategy = config.dsa_strategy or default_strategy(data.name)
    augment = None
    net: torch.nn.Module = model
    if config.zca:
        assert zca is not None
        net = wrap_with_zca(model, zca)
        if config.dsa:
            augment = whitened_space_augment(DSA(DSAConfig(strategy=strategy)), zca)
    elif config.dsa:
        augment = DSA(DSAConfig(strategy=strategy), mean=data.mean, std=data.std)
    images, labels = data.images, data.labels
    if config.images_per_class is not None:
        idx = sample_per_class(labels, data.num_classes, config.images_per_class,
                               generator_for(seed, "mtt-expert-subset"))
        images, labels = images[idx], labels[idx]
    snapshots = [FlatParams.flatten(net).cpu()]

    def record(epoch: int, m: torch.nn.Module) -> None:
        snapshots.append(FlatParams.flatten(m).cpu())

    train_model(net, images, labels, config.train_config(),
                generator_for(seed, "mtt-expert-train", index), augment=augment,
                on_epoch_end=record)
    traj = torch.stack(snapshots)
    if not bool(torch.isfinite(traj).all()):
        raise FloatingPointError(f"expert {index} diverged (NaN/Inf parameters); lower the "
                                 "expert lr")
    return traj


def _write_expert(path: Path, traj: torch.Tensor, key_sha: str, index: int) -> None:
    tensors = {f"epoch_{e:04d}": traj[e].contiguous() for e in range(traj.shape[0])}
    meta = {"format": EXPERT_FORMAT, "key_sha256": key_sha, "index": str(index),
            "sha256": json.dumps([_tensor_sha(t) for t in tensors.values()])}
    with open_atomic(path, "wb") as fh:
        fh.write(save_safetensors_bytes(tensors, metadata=meta))


def expert_buffer(data: ImageDataset, arch: str, config: ExpertConfig, *, seed: int = 0,
                  device: torch.device | str = "cpu", zca: ZCAWhitening | None = None,
                  cache: Path | None = None, progress: bool = False) -> ExpertBuffer:
    """The buffer of ``config.num_experts`` experts for (data, arch, config, seed, device
    type): experts already cached are checked (header) and reused, missing ones are trained
    one at a time and written atomically. ``zca`` is required when ``config.zca``."""
    device = torch.device(device)
    if config.zca and zca is None:
        zca = dataset_zca(data, config.zca_eps, cache=cache)
    key = _buffer_key(data, arch, config, seed, device)
    key_sha = _key_hash(key)
    tag = "zca" if config.zca else "nozca"
    directory = (cache if cache is not None else cache_dir()) / "mtt-experts" / \
        f"{data.name}-{arch.lower()}-{tag}-{key_sha[:16]}"
    directory.mkdir(parents=True, exist_ok=True)
    if not (directory / "buffer.json").exists():
        write_json_atomic(directory / "buffer.json", key)
    probe = build_model(arch, data.num_classes, data.channels, data.image_size, seed=0)
    num_params = FlatParams(probe).num_params
    buffer = ExpertBuffer(directory, key, config.num_experts, config.epochs, num_params)
    missing = [k for k in range(config.num_experts) if not buffer.path(k).exists()]
    for k in range(config.num_experts):
        if k not in missing:
            buffer._check(k)  # refuse a corrupt or foreign file before any work is done
    if missing:
        desc = f"MTT experts {data.name} ({len(missing)} to train)"
        with progress_bar(len(missing), desc, progress) as advance:
            for k in missing:
                traj = train_expert(data, arch, config, seed=seed, index=k, device=device,
                                    zca=zca)
                _write_expert(buffer.path(k), traj, key_sha, k)
                advance(1)
    return buffer
