"""Pieces every distillation method shares: initial synthetic images, per-class real batches and
the final pixels of a set learned in normalised space."""

from __future__ import annotations

import torch

from robustdd.data import sample_per_class
from robustdd.distill.base import DistillContext


def normalisation(ctx: DistillContext) -> tuple[torch.Tensor, torch.Tensor]:
    """The dataset's mean and std as [1, C, 1, 1] tensors on the run's device."""
    mean = torch.tensor(ctx.data.mean, device=ctx.device).view(1, -1, 1, 1)
    std = torch.tensor(ctx.data.std, device=ctx.device).view(1, -1, 1, 1)
    return mean, std


def initial_images(ctx: DistillContext, init: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Class-major initial pixels and labels: real images of each class, or N(0,1) noise in
    normalised space (DC's noise init)."""
    labels = torch.arange(ctx.num_classes).repeat_interleave(ctx.ipc)
    if init == "real":
        idx = sample_per_class(ctx.data.labels, ctx.num_classes, ctx.ipc, ctx.generator("init"))
        return ctx.data.pixels(idx), labels
    shape = (labels.numel(), ctx.data.channels, ctx.data.image_size, ctx.data.image_size)
    z = torch.randn(shape, generator=ctx.generator("init"))
    mean = torch.tensor(ctx.data.mean).view(1, -1, 1, 1)
    std = torch.tensor(ctx.data.std).view(1, -1, 1, 1)
    return z * std + mean, labels


def per_class_indices(labels: torch.Tensor, num_classes: int) -> list[torch.Tensor]:
    """Indices of each class in ``labels``."""
    return [torch.nonzero(labels == c, as_tuple=True)[0] for c in range(num_classes)]


def sample_real_batches(class_idx: list[torch.Tensor], n: int,
                        generator: torch.Generator) -> torch.Tensor:
    """``n`` distinct indices per class (fewer if a class is smaller), class-major, [C, n]."""
    rows = [idx[torch.randperm(idx.numel(), generator=generator)[:n]] for idx in class_idx]
    return torch.stack(rows)


def refuse_diverged(pixels: torch.Tensor, method: str) -> torch.Tensor:
    """``pixels`` unchanged, or a FloatingPointError naming the method and the setting to lower
    when the learned images hold NaN/Inf."""
    if not torch.isfinite(pixels).all():
        raise FloatingPointError(f"{method} diverged: the synthetic images contain NaN/Inf; "
                                 "lower lr_img")
    return pixels


def synthetic_pixels(z: torch.Tensor, mean: torch.Tensor, std: torch.Tensor,
                     method: str) -> torch.Tensor:
    """Pixels (on the CPU) of synthetic images learned in normalised space, refused when they
    diverged (:func:`refuse_diverged`)."""
    return refuse_diverged((z.detach() * std + mean).cpu(), method)
