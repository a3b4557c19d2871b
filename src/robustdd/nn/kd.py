"""Online knowledge distillation, the training recipe of SRe2L's CIFAR relabel stage.

Reference: ``SRe2L/*small_dataset/relabel_cifar.py`` (``reference/methods.md`` §8). Each batch is
augmented (random crop with 4-pixel zero padding and horizontal flip), mixed with Mixup
(λ ~ Beta(0.8, 0.8), a random permutation of the batch; the labels are not used), the teacher
(eval mode, no gradient) labels the mixed batch, and the student minimises
KL(softmax(t/T) ‖ softmax(s/T)) with ``reduction="batchmean"`` and T = 30, **without** the
usual T² factor (as the reference). All randomness comes from the generator it is given.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from robustdd.nn.train import Objective

#: ``relabel_cifar.py`` defaults (methods.md §8).
KD_TEMPERATURE = 30.0
MIXUP_ALPHA = 0.8
CROP_PADDING = 4


def random_crop_flip(x: torch.Tensor, generator: torch.Generator, padding: int = CROP_PADDING,
                     flip: bool = True) -> torch.Tensor:
    """Batched ``RandomCrop(size, padding)`` + ``RandomHorizontalFlip`` with one draw per image.

    Zero padding as torchvision's default; offsets and flips are drawn on the CPU from
    ``generator`` so the result does not depend on the device.
    """
    n, _, h, w = x.shape
    if padding > 0:
        padded = F.pad(x, (padding, padding, padding, padding))
        oy = torch.randint(0, 2 * padding + 1, (n,), generator=generator).to(x.device)
        ox = torch.randint(0, 2 * padding + 1, (n,), generator=generator).to(x.device)
        rows = (oy[:, None] + torch.arange(h, device=x.device))[:, :, None]  # [n, h, 1]
        cols = (ox[:, None] + torch.arange(w, device=x.device))[:, None, :]  # [n, 1, w]
        batch = torch.arange(n, device=x.device)[:, None, None]
        x = padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)
    if flip:
        mask = (torch.rand(n, generator=generator) < 0.5).to(x.device).view(n, 1, 1, 1)
        x = torch.where(mask, x.flip(3), x)
    return x.contiguous()


def mixup(x: torch.Tensor, generator: torch.Generator,
          alpha: float = MIXUP_ALPHA) -> tuple[torch.Tensor, float, torch.Tensor]:
    """Mixup of a batch with a permutation of itself: (λx + (1 − λ)x[perm], λ, perm).

    λ ~ Beta(alpha, alpha) (torch's Beta sampler takes no generator, so λ comes from a NumPy
    generator seeded by ``generator``); ``alpha <= 0`` disables mixing (λ = 1).
    """
    perm = torch.randperm(x.shape[0], generator=generator).to(x.device)
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    lam = float(np.random.default_rng(seed).beta(alpha, alpha)) if alpha > 0 else 1.0
    return lam * x + (1.0 - lam) * x[perm], lam, perm


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
            temperature: float = KD_TEMPERATURE) -> torch.Tensor:
    """KL(softmax(t/T) ‖ softmax(s/T)), averaged over the batch, no T² factor (the reference)."""
    return F.kl_div(F.log_softmax(student_logits / temperature, dim=1),
                    F.softmax(teacher_logits / temperature, dim=1), reduction="batchmean")


def kd_objective(teacher: nn.Module, temperature: float = KD_TEMPERATURE,
                 mixup_alpha: float = MIXUP_ALPHA) -> Objective:
    """A :data:`~robustdd.nn.train.Objective` for :func:`~robustdd.nn.train.train_model`:
    Mixup the (augmented) batch, label it with ``teacher`` (eval mode, no grad), KD loss."""
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)

    def objective(model: nn.Module, x: torch.Tensor, _labels: torch.Tensor,
                  generator: torch.Generator) -> torch.Tensor:
        mixed, _, _ = mixup(x, generator, mixup_alpha)
        with torch.no_grad():
            target = teacher(mixed)
        return kd_loss(model(mixed), target, temperature)

    return objective
