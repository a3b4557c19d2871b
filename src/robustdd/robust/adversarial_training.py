"""Adversarially trained networks on the full real data, trained once and cached.

Used as transfer-attack surrogates (ROME Table 2: "adversarial examples generated from an
adversarially trained model") and as ROME's robust pretrained model. Training is the shared
routine (:func:`robustdd.nn.train.train_model`) with a batch hook that replaces every
(augmented) batch by its adversarial version:

* ``pgd`` — PGD adversarial training (Madry et al., ICLR 2018): L∞ PGD from a uniform random
  start, ``steps`` steps of ``step_size``; CIFAR defaults ε 8/255, 7 steps of 2/255 (Madry's
  CIFAR-10 setting).
* ``fgsm-rs`` — "fast" adversarial training (Wong, Rice & Kolter, ICLR 2020): one FGSM step of
  1.25·ε from a uniform random start; about 4× cheaper than PGD-7, used by the CPU-sized
  profiles.

Adversarial examples are crafted with the model in eval mode (robustdd's attack convention;
identical for instance-norm ConvNets, a documented choice for batch-norm nets), all in pixel
space, drawing only from the hook's own generator. The trained weights are cached as
safetensors under ``cache_dir()/robust-nets`` keyed by dataset contents, architecture, seed and
the full configuration; a corrupt cache file is refused with a warning naming it and the
reason, then retrained and overwritten (never unpickled).
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from safetensors.torch import load_file, save
from torch import nn

from robustdd.attacks.gradient import eval_mode, pgd_linf
from robustdd.batching import chunked_for
from robustdd.data import ImageDataset, dataset_info
from robustdd.data.checksums import file_digest
from robustdd.errors import CorruptDataError, UnknownNameError
from robustdd.nn import build_model
from robustdd.nn.train import BatchHook, TrainConfig, train_model
from robustdd.progress import progress_bar
from robustdd.runtime import cache_dir, derive_seed, environment, generator_for, open_atomic


class AdversarialTrainingConfig(BaseModel):
    """How the robust network is trained (defaults: Madry's PGD-7 at ε 8/255)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    method: Literal["pgd", "fgsm-rs"] = "pgd"
    eps: float = Field(8 / 255, ge=0)
    step_size: float = Field(2 / 255, gt=0)
    steps: int = Field(7, ge=1)
    epochs: int = Field(100, ge=0)
    train_examples: int | None = Field(None, ge=1)  # None: the whole training split
    lr: float = Field(0.01, gt=0)
    batch_size: int = Field(256, ge=1)
    arch: str | None = None  # None: the dataset's default evaluation architecture


# Budgets per profile. paper: full data, PGD-7, 100 (+1) epochs of the shared schedule — our
# choice (ROME does not state its adversarially trained model's recipe). small/smoke: fast AT
# on a seeded subset so that a 2-core CPU finishes in minutes/seconds.
AT_PRESETS: dict[str, dict[str, Any]] = {
    "smoke": {"method": "fgsm-rs", "epochs": 1, "train_examples": 512},
    "small": {"method": "fgsm-rs", "epochs": 10, "train_examples": 5000},
    "paper": {"method": "pgd", "steps": 7, "epochs": 100},
}


def at_config(profile: str, **overrides: Any) -> AdversarialTrainingConfig:
    """The adversarial-training budget of ``profile`` updated by ``overrides``."""
    if profile not in AT_PRESETS:
        raise ValueError(f"no adversarial-training preset for profile {profile!r} "
                         f"(known: {list(AT_PRESETS)})")
    return AdversarialTrainingConfig(**{**AT_PRESETS[profile], **overrides})


def adversarial_batch_hook(config: AdversarialTrainingConfig,
                           generator: torch.Generator) -> BatchHook:
    """A :data:`BatchHook` replacing each batch by PGD / FGSM-RS adversarial examples."""
    if config.method == "pgd":
        steps, step = config.steps, config.step_size
    else:
        steps, step = 1, 1.25 * config.eps

    def hook(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with eval_mode(model):  # (eval mode: the examples do not interact, so chunking is exact)
            adv = pgd_linf(chunked_for(model, x), x, y, eps=config.eps, steps=steps,
                           step_size=step, random_start=True, generator=generator)
        return adv.detach()

    return hook


def train_subset(train: ImageDataset, config: AdversarialTrainingConfig,
                 seed: int) -> torch.Tensor:
    """Indices of the training examples used (all, or a seeded class-agnostic subset)."""
    n = len(train)
    if config.train_examples is None or config.train_examples >= n:
        return torch.arange(n)
    order = torch.randperm(n, generator=generator_for(seed, "at-subset"))
    return order[: config.train_examples].sort().values


def adversarially_trained_model(train: ImageDataset, config: AdversarialTrainingConfig, *,
                                seed: int = 0, device: torch.device | str = "cpu",
                                cache: Path | None = None, use_cache: bool = True,
                                progress: bool = False) -> tuple[nn.Module, dict[str, Any]]:
    """The robust network for (``train``, ``config``, ``seed``) and its provenance record.

    Loaded from the cache when present, else trained and cached. The record holds the config,
    seed, cache key, training statistics (when trained here) and clean training-set accuracy.
    """
    arch = config.arch or _default_arch(train.name)
    key = _cache_key(train, config, seed, arch)
    folder = (cache if cache is not None else cache_dir()) / "robust-nets"
    weights, meta_path = folder / f"{key}.safetensors", folder / f"{key}.json"
    model = build_model(arch, train.num_classes, train.channels, train.image_size,
                        mean=train.mean, std=train.std, seed=derive_seed(seed, "at-model"),
                        device=device)
    if use_cache and weights.exists() and meta_path.exists():
        try:
            record = json.loads(meta_path.read_text())
            expected = record.get("weights_sha256")  # entries before 2026-12-04 have none
            if expected is not None and file_digest(weights) != expected:
                raise CorruptDataError("weights do not match their recorded SHA-256")
            model.load_state_dict(load_file(str(weights), device=str(torch.device(device))))
            record["from_cache"] = True
            model.eval()
            return model, record
        except Exception as exc:  # corrupt/foreign cache entry: say why, retrain, overwrite
            warnings.warn(f"robust-network cache entry {weights} refused ({type(exc).__name__}: "
                          f"{exc}); retraining it", RuntimeWarning, stacklevel=2)
            model = build_model(arch, train.num_classes, train.channels, train.image_size,
                                mean=train.mean, std=train.std,
                                seed=derive_seed(seed, "at-model"), device=device)
    idx = train_subset(train, config, seed)
    train_cfg = TrainConfig(epochs=config.epochs, lr=config.lr, batch_size=config.batch_size)
    hook = adversarial_batch_hook(config, generator_for(seed, "at-attack"))
    with progress_bar(train_cfg.total_epochs, f"adversarial training ({config.method})",
                      progress) as advance:
        stats = train_model(model, train.images[idx], train.labels[idx], train_cfg,
                            generator_for(seed, "at-train"), batch_hook=hook, progress=advance)
    model.eval()
    record = {"config": config.model_dump(), "arch": arch, "seed": seed, "cache_key": key,
              "dataset": train.name, "train_examples": int(idx.numel()),
              "train": {"seconds": stats.seconds, "steps": stats.steps,
                        "images_per_second": stats.images_per_second,
                        "final_loss": stats.final_loss},
              "environment": environment(device), "from_cache": False}
    if use_cache:
        folder.mkdir(parents=True, exist_ok=True)
        blob = _safetensors_bytes(model)
        record["weights_sha256"] = hashlib.sha256(blob).hexdigest()
        with open_atomic(weights, "wb") as handle:
            handle.write(blob)
        with open_atomic(meta_path) as handle:
            json.dump(record, handle, indent=2)
    return model, record


def _safetensors_bytes(model: nn.Module) -> bytes:
    """The state dict serialised in memory, so it can be written atomically."""
    return save({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()})


def _cache_key(train: ImageDataset, config: AdversarialTrainingConfig, seed: int,
               arch: str) -> str:
    digest = hashlib.sha256(train.images.contiguous().numpy().tobytes())
    digest.update(train.labels.numpy().tobytes())
    # The arch left to the dataset's default and the same arch named explicitly are one network
    # (ROME names it, the transfer surrogate does not): key on the resolved name.
    resolved = config.model_copy(update={"arch": arch}).model_dump()
    ident = json.dumps({"config": resolved, "seed": seed, "arch": arch,
                        "data": digest.hexdigest()}, sort_keys=True)
    return f"{train.name}-{arch}-{hashlib.sha256(ident.encode()).hexdigest()[:20]}"


def _default_arch(name: str) -> str:
    try:
        return dataset_info(name).default_arch
    except UnknownNameError:
        return "convnet"
