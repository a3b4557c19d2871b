"""``sre2l``: Squeeze, Recover, Relabel (Yin, Xing & Shen, NeurIPS 2023), CIFAR variant.

Reference: ``VILA-Lab/SRe2L``, ``*small_dataset/{squeeze,recover,relabel}_cifar.py``
(``reference/methods.md`` §8; GUARD's copy generalises it from CIFAR-100 to any class count).

* **Squeeze**: a teacher (ResNet-18 with a 3×3 stem, no max-pool, BatchNorm) trained on the real
  data with the shared trainer: SGD lr 0.1, momentum 0.9, weight decay 5e-4, per-epoch cosine
  schedule, batch 128, random crop (padding 4) + flip, 200 epochs. Cached (see
  :func:`squeeze_teacher`).
* **Recover**: IPC "slices", each one image per class initialised N(0, 1) in normalised space,
  optimised by Adam (lr 0.25, betas (0.5, 0.9)) with a per-iteration cosine lr for 1000
  iterations on CE(f(x_jit), y) + r_bn · Σ_l m_l (‖μ_l − μ_l^run‖₂ + ‖σ²_l − σ²_l^run‖₂) over the
  teacher's BatchNorm layers (eval mode; biased batch variance of each layer's input; m = 10 for
  the first layer, 1 for the others; r_bn 0.01), x_jit a circular shift by (u, v) ~ U{0..4}²,
  then a clamp to the valid normalised pixel range. The final iterate is kept, truncated to
  uint8 and passed through JPEG at quality 75 as the reference's saved files are.
* **Relabel**: online knowledge distillation from the teacher while the student trains; it is
  the set's evaluation protocol (``sre2l-kd``, :class:`robustdd.evaluate.protocol.KDProtocol`),
  so the teacher is stored with the set.

Batching. The reference recovers one slice per run. Here all slices are one tensor: the teacher
is in eval mode, so every image is processed on its own, the statistics and the CE are computed
per slice from the hooked BatchNorm inputs, the loss is the sum of the slice losses and Adam is
element-wise, so each slice follows exactly the trajectory of a separate run (tested).
"""

from __future__ import annotations

import hashlib
import io
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from pydantic import Field
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save as save_safetensors_bytes
from torch import nn

from robustdd.data import ImageDataset, sample_per_class
from robustdd.distill.base import DistillContext, MethodConfig, register_method
from robustdd.distill.checkpoint import generator_state, load_generator_state
from robustdd.distill.experts import data_digest
from robustdd.distilled import DistilledSet, TeacherNet
from robustdd.errors import CorruptDataError
from robustdd.nn import build_model
from robustdd.nn.kd import random_crop_flip
from robustdd.nn.train import Objective, TrainConfig, accuracy, train_model
from robustdd.progress import progress_bar
from robustdd.runtime import cache_dir, derive_seed, generator_for, open_atomic

TEACHER_FORMAT = "robustdd.sre2l-teacher"


class SRe2LConfig(MethodConfig):
    """SRe2L settings; defaults are the reference CIFAR scripts' (methods.md §8)."""

    # squeeze (squeeze_cifar.sh)
    teacher_arch: str = "resnet18bn"
    teacher_epochs: int = Field(200, ge=1)
    teacher_lr: float = Field(0.1, gt=0)
    teacher_momentum: float = Field(0.9, ge=0)
    teacher_weight_decay: float = Field(5e-4, ge=0)
    teacher_batch: int = Field(128, ge=1)
    teacher_train_per_class: int | None = Field(None, ge=1)  # None: the whole split
    teacher_seed: int = 0  # one teacher shared by every distillation seed, as the reference
    # recover (recover_cifar.sh)
    iterations: int = Field(1000, ge=0)
    lr: float = Field(0.25, gt=0)
    beta1: float = Field(0.5, ge=0, lt=1)
    beta2: float = Field(0.9, ge=0, lt=1)
    r_bn: float = Field(0.01, ge=0)
    first_bn_multiplier: float = Field(10.0, ge=0)
    jitter: int = Field(4, ge=0)
    jpeg_quality: int | None = Field(75, ge=1, le=95)  # None: keep float pixels
    # relabel / evaluation: the student architecture (None: the teacher's)
    student_arch: str | None = None


PRESETS = {
    # Wiring checks: a tiny teacher on 20 images per class, 5 recover steps.
    "smoke": {"teacher_arch": "convnetbn", "teacher_epochs": 1, "teacher_train_per_class": 20,
              "iterations": 5},
    # 2-core CPU budget. ResNet-18 trains at ~13 images/s on one such core, so the teacher and
    # the student are ConvNet-3 with BatchNorm (~10× faster; it has the BN layers the recover
    # loss needs), the teacher sees 500 images per class for 10 epochs, recovery runs 200 steps.
    "small": {"teacher_arch": "convnetbn", "teacher_epochs": 10, "teacher_train_per_class": 500,
              "iterations": 200},
    # The reference: ResNet-18 teacher 200 epochs on the whole split, 1000 recover iterations.
    "paper": {},
}


def teacher_train_config(config: SRe2LConfig) -> TrainConfig:
    """The squeeze recipe on the shared trainer (cosine, no +1 epoch, no step decay)."""
    return TrainConfig(epochs=config.teacher_epochs, lr=config.teacher_lr,
                       momentum=config.teacher_momentum,
                       weight_decay=config.teacher_weight_decay, batch_size=config.teacher_batch,
                       decay=False, extra_epoch=False, cosine=True)


def squeeze_teacher(data: ImageDataset, config: SRe2LConfig, device: torch.device, *,
                    objective: Objective | None = None,
                    objective_key: dict[str, Any] | None = None,
                    cache: Path | None = None, progress: bool = False
                    ) -> tuple[nn.Module, dict[str, Any]]:
    """The squeezed teacher for (``data``, config, ``teacher_seed``), trained or from the cache.

    ``objective`` replaces the cross-entropy of the squeeze (GUARD's curvature-regularised
    loss); ``objective_key`` describes it for the cache key. Cached as safetensors under
    ``cache_dir()/sre2l-teachers/`` keyed by the SHA-256 of the training data, the
    architecture, the squeeze settings and objective, the seed and the device type, with a JSON
    record beside it. A cache file that does not load is refused with the reason.
    """
    if (objective is None) != (objective_key is None):
        raise ValueError("give a squeeze objective together with its cache description")
    arch = config.teacher_arch
    key = {"format": TEACHER_FORMAT, "data": data_digest(data), "arch": arch,
           "train": teacher_train_config(config).to_dict(),
           "per_class": config.teacher_train_per_class, "seed": config.teacher_seed,
           "device": device.type}
    if objective_key is not None:
        key["objective"] = objective_key
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    folder = (cache if cache is not None else cache_dir()) / "sre2l-teachers"
    weights = folder / f"{data.name}-{arch}-{digest}.safetensors"
    record_path = weights.with_suffix(".json")
    model = build_model(arch, data.num_classes, data.channels, data.image_size, mean=data.mean,
                        std=data.std, seed=derive_seed(config.teacher_seed, "sre2l-teacher"),
                        device=device)
    if weights.exists() and record_path.exists():
        try:
            state = load_safetensors_bytes(weights.read_bytes())
            model.load_state_dict({k: v.to(device) for k, v in state.items()})
            record = json.loads(record_path.read_text())
        except Exception as exc:
            raise CorruptDataError(f"{weights}: unreadable SRe2L teacher cache entry ({exc}); "
                                   "delete it to train the teacher again") from exc
        return model.eval(), {**record, "from_cache": True}
    gen = generator_for(config.teacher_seed, "sre2l-squeeze")
    if config.teacher_train_per_class is None:
        idx = torch.arange(len(data))
    else:
        idx = sample_per_class(data.labels, data.num_classes, config.teacher_train_per_class, gen)
    train_cfg = teacher_train_config(config)
    with progress_bar(train_cfg.total_epochs, f"SRe2L squeeze {arch}", progress) as advance:
        stats = train_model(model, data.images[idx], data.labels[idx], train_cfg, gen,
                            augment=lambda x, g: random_crop_flip(x, g), objective=objective,
                            progress=advance)
    model.eval()
    record = {"key": key, "arch": arch, "train_examples": int(idx.numel()),
              "train_accuracy": accuracy(model, data.images[idx], data.labels[idx]),
              "train": {"seconds": stats.seconds, "steps": stats.steps,
                        "images_per_second": stats.images_per_second,
                        "final_loss": stats.final_loss}}
    folder.mkdir(parents=True, exist_ok=True)
    with open_atomic(weights, "wb") as handle:
        handle.write(save_safetensors_bytes(
            {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}))
    with open_atomic(record_path) as handle:
        json.dump(record, handle, indent=2)
    return model, {**record, "from_cache": False}


class BNStatistics:
    """Forward hooks keeping the input of every BatchNorm layer of a model, in order."""

    def __init__(self, model: nn.Module):
        self.layers = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        if not self.layers:
            raise ValueError("SRe2L recovery needs a teacher with BatchNorm layers (e.g. "
                             "resnet18bn, convnetbn)")
        self.inputs: list[torch.Tensor | None] = [None] * len(self.layers)
        self._handles = [m.register_forward_hook(self._hook(i)) for i, m in enumerate(self.layers)]

    def _hook(self, i: int):
        def hook(_module: nn.Module, inputs: tuple[torch.Tensor, ...], _out: torch.Tensor) -> None:
            self.inputs[i] = inputs[0]
        return hook

    def remove(self) -> None:
        for h in self._handles:
            h.remove()


def bn_matching_loss(stats: BNStatistics, groups: int, first_multiplier: float) -> torch.Tensor:
    """Per-group Σ_l m_l (‖μ_l − μ_run‖₂ + ‖σ²_l − σ²_run‖₂), shape [groups].

    The hooked inputs [groups·B, C, H, W] are split into ``groups`` consecutive groups; mean and
    biased variance are taken over each group's batch and spatial positions (the reference's
    ``BNFeatureHook`` on one slice).
    """
    total = None
    for i, (layer, x) in enumerate(zip(stats.layers, stats.inputs, strict=True)):
        if x is None:
            raise RuntimeError("a BatchNorm layer was not reached by the forward pass")
        g = x.reshape(groups, -1, *x.shape[1:]).transpose(1, 2).flatten(2)  # [G, C, B·H·W]
        mean, var = g.mean(2), g.var(2, unbiased=False)
        term = ((var - layer.running_var).norm(dim=1)
                + (mean - layer.running_mean).norm(dim=1))
        term = term * (first_multiplier if i == 0 else 1.0)
        total = term if total is None else total + term
    assert total is not None
    return total


def jitter_slices(x: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """Roll slice s of ``x`` [S, B, C, H, W] circularly by ``offsets[s]`` = (dy, dx)."""
    return torch.stack([torch.roll(x[s], shifts=(int(offsets[s, 0]), int(offsets[s, 1])),
                                   dims=(2, 3)) for s in range(x.shape[0])])


def jpeg_round_trip(pixels: torch.Tensor, quality: int) -> torch.Tensor:
    """What the reference's saved files hold: ``uint8(x·255)`` (truncation) through JPEG."""
    out = []
    for img in pixels.clamp(0, 1).cpu():
        arr = (img.permute(1, 2, 0).numpy() * 255).astype(np.uint8)
        pil = Image.fromarray(arr[:, :, 0] if arr.shape[2] == 1 else arr)
        buf = io.BytesIO()
        pil.save(buf, format="JPEG", quality=quality)
        back = np.asarray(Image.open(io.BytesIO(buf.getvalue())), dtype=np.float32) / 255.0
        back = back[:, :, None] if back.ndim == 2 else back
        out.append(torch.from_numpy(back).permute(2, 0, 1))
    return torch.stack(out)


def recover(teacher: nn.Module, ctx: DistillContext, config: SRe2LConfig) -> tuple[
        torch.Tensor, list[float], int]:
    """Recover ``ctx.ipc`` slices of one image per class; returns pixels [ipc, C, ...], the
    mean slice loss per iteration and the iteration it resumed from (checkpointed through
    ``ctx.checkpoint``)."""
    dev, data, C, S = ctx.device, ctx.data, ctx.num_classes, ctx.ipc
    mean = torch.tensor(data.mean, device=dev).view(1, 1, -1, 1, 1)
    std = torch.tensor(data.std, device=dev).view(1, 1, -1, 1, 1)
    g = ctx.generator("sre2l-recover")
    shape = (S, C, data.channels, data.image_size, data.image_size)
    z = torch.randn(shape, generator=g).to(dev).requires_grad_(True)
    optimizer = torch.optim.Adam([z], lr=config.lr, betas=(config.beta1, config.beta2), eps=1e-8)
    lo, hi = -mean / std, (1 - mean) / std
    targets = torch.arange(C, device=dev).repeat(S)
    losses: list[float] = []
    start = 0
    if (saved := ctx.checkpoint.restore()) is not None:
        with torch.no_grad():
            z.copy_(saved["z"].to(dev))
        optimizer.load_state_dict(saved["optimizer"])
        load_generator_state(g, saved["generator"])
        losses, start = list(saved["losses"]), int(saved["iteration"])

    def state() -> dict[str, Any]:
        return {"z": z.detach().cpu(), "optimizer": optimizer.state_dict(),
                "generator": generator_state(g), "losses": losses}

    hooks = BNStatistics(teacher)
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    try:
        with progress_bar(config.iterations, f"SRe2L recover {data.name} IPC {S}",
                          ctx.progress) as advance:
            advance(start)
            for it in range(start, config.iterations):
                for group in optimizer.param_groups:  # lr_cosine_policy, no warm-up
                    group["lr"] = 0.5 * (1 + math.cos(math.pi * it / config.iterations)) \
                        * config.lr
                offsets = torch.randint(0, config.jitter + 1, (S, 2), generator=g)
                x = jitter_slices(z, offsets) * std + mean  # pixels for the normalising model
                logits = teacher(x.flatten(0, 1))
                ce = F.cross_entropy(logits, targets, reduction="none").view(S, C).mean(1)
                bn = bn_matching_loss(hooks, S, config.first_bn_multiplier)
                loss = (ce + config.r_bn * bn).sum()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                with torch.no_grad():
                    z.copy_(torch.maximum(torch.minimum(z, hi), lo))
                losses.append(float(loss.detach()) / S)
                ctx.checkpoint.step(it, config.iterations, state)
                advance(1)
    finally:
        hooks.remove()
    return (z.detach() * std + mean).cpu(), losses, start


@register_method("sre2l", SRe2LConfig, PRESETS,
                 description="Squeeze, Recover, Relabel (Yin et al. 2023), CIFAR variant")
def run_sre2l(ctx: DistillContext, config: SRe2LConfig) -> DistilledSet:
    """Squeeze a teacher, recover IPC slices, return them with the teacher for KD evaluation."""
    return run_sre2l_family(ctx, config, "sre2l")


def run_sre2l_family(ctx: DistillContext, config: SRe2LConfig, method: str, *,
                     objective: Objective | None = None,
                     objective_key: dict[str, Any] | None = None) -> DistilledSet:
    """SRe2L's three stages; ``objective`` changes the squeeze loss (GUARD)."""
    data, C, S = ctx.data, ctx.num_classes, ctx.ipc
    teacher, record = squeeze_teacher(data, config, ctx.device, objective=objective,
                                      objective_key=objective_key, progress=ctx.progress)
    pixels, losses, start = recover(teacher, ctx, config)
    if not torch.isfinite(pixels).all():
        raise FloatingPointError("SRe2L recovery diverged (NaN/Inf images); lower lr")
    pixels = pixels.clamp(0, 1)
    if config.jpeg_quality is not None:
        pixels = jpeg_round_trip(pixels.flatten(0, 1), config.jpeg_quality).view_as(pixels)
    images = pixels.transpose(0, 1).flatten(0, 1).contiguous()  # class-major
    labels = torch.arange(C).repeat_interleave(S)
    student = config.student_arch or config.teacher_arch
    return DistilledSet(
        images=images, labels=labels, num_classes=C, dataset=data.name, method=method, ipc=S,
        class_names=data.class_names, mean=data.mean, std=data.std,
        teacher=TeacherNet.from_model(config.teacher_arch, teacher),
        meta={"protocol": {"name": "sre2l-kd", "arch": student},
              "teacher": {k: v for k, v in record.items() if k != "key"},
              "loss_first": losses[0] if losses else None,
              "loss_last": losses[-1] if losses else None,
              "resumed_from_iteration": start})
