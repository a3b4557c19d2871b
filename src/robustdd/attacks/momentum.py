"""Momentum iterative FGSM (MI-FGSM / MIM, Dong et al. 2018), L∞, in pixel space.

torchattacks ``MIFGSM`` semantics: each step normalises the loss gradient by its mean absolute
value per example (an L1 mean), accumulates it into a momentum buffer g ← μ·g + ∇/mean|∇|, moves
by ``step_size``·sign(g), projects onto the L∞ ball of radius ε and clamps to [0, 1].
"""

from __future__ import annotations

import torch
from torch import nn

from robustdd.attacks.gradient import _loss_gradient, eval_mode


def mim(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *, eps: float, steps: int,
        step_size: float, decay: float = 1.0, targeted: bool = False) -> torch.Tensor:
    """MI-FGSM: ``steps`` momentum sign steps of ``step_size`` in the L∞ ε-ball, within [0, 1].

    ``labels`` are the targets if ``targeted``. With ``decay`` = 0 this is PGD-L∞ without a
    random start. An all-zero gradient contributes nothing (torchattacks would divide by zero).
    """
    x0 = images.detach()
    x = x0.clone()
    momentum = torch.zeros_like(x0)
    with eval_mode(model):
        for _ in range(steps):
            grad = _loss_gradient(model, x, labels, targeted)
            scale = grad.abs().flatten(1).mean(1).view(-1, *([1] * (grad.dim() - 1)))
            grad = torch.where(scale > 0, grad / scale.clamp_min(1e-30), torch.zeros_like(grad))
            momentum = decay * momentum + grad
            x = x + step_size * momentum.sign()
            x = torch.min(torch.max(x, x0 - eps), x0 + eps).clamp(0.0, 1.0).detach()
    return x
