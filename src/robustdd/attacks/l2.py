"""PGD in the L2 ball, in pixel space (Madry et al. 2018; torchattacks ``PGDL2`` semantics).

Each step moves by ``step_size`` along the per-example L2-normalised loss gradient, projects the
perturbation back onto the L2 ball of radius ε around the clean image and clamps to [0, 1]. The
optional random start is uniform in the ball (torchattacks draws the radius uniformly, which puts
most starts near the centre in high dimension; we draw radius ε·U^(1/d)).
"""

from __future__ import annotations

import torch
from torch import nn

from robustdd.attacks.gradient import _loss_gradient, eval_mode, with_restarts


def _flat_norms(t: torch.Tensor) -> torch.Tensor:
    """Per-example L2 norms, shaped to broadcast against ``t``."""
    return t.flatten(1).norm(p=2, dim=1).view(-1, *([1] * (t.dim() - 1)))


def project_l2(delta: torch.Tensor, eps: float) -> torch.Tensor:
    """Scale each example's ``delta`` into the L2 ball of radius ``eps`` (unchanged if inside)."""
    norms = _flat_norms(delta)
    factor = torch.where(norms > eps, eps / norms.clamp_min(1e-30), torch.ones_like(norms))
    return delta * factor


def random_l2_start(images: torch.Tensor, eps: float,
                    generator: torch.Generator | None = None) -> torch.Tensor:
    """A point drawn uniformly from the L2 ball of radius ``eps`` around each image, in [0, 1].

    Drawn on the CPU from ``generator`` so the same seed gives the same start on every device.
    Clamping to [0, 1] only moves points closer to the (in-range) image, so they stay in the ball.
    """
    n, d = images.shape[0], images[0].numel()
    direction = torch.randn(images.shape, generator=generator, dtype=images.dtype)
    radius = torch.rand(n, generator=generator, dtype=images.dtype) ** (1.0 / max(d, 1))
    direction = direction / _flat_norms(direction).clamp_min(1e-30)
    delta = (eps * radius.view(-1, *([1] * (images.dim() - 1))) * direction).to(images.device)
    return (images + delta).clamp(0.0, 1.0)


def pgd_l2(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *, eps: float,
           steps: int, step_size: float, targeted: bool = False, random_start: bool = False,
           generator: torch.Generator | None = None, restarts: int = 1) -> torch.Tensor:
    """Projected gradient descent in the L2 ball of radius ε around ``images``, within [0, 1].

    ``labels`` are the targets if ``targeted``. With ``restarts`` > 1 the attack is re-run from
    new random starts on the examples it has not yet fooled (as :func:`pgd_linf` does).
    """
    def run(x: torch.Tensor, y: torch.Tensor, start: bool) -> torch.Tensor:
        return _pgd_l2_run(model, x, y, eps, steps, step_size, targeted, start, generator)

    return with_restarts(run, model, images, labels, targeted=targeted, restarts=restarts,
                         random_start=random_start)


def _pgd_l2_run(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, eps: float,
                steps: int, step_size: float, targeted: bool, random_start: bool,
                generator: torch.Generator | None) -> torch.Tensor:
    x0 = images.detach()
    x = random_l2_start(x0, eps, generator) if random_start else x0.clone()
    with eval_mode(model):
        for _ in range(steps):
            grad = _loss_gradient(model, x, labels, targeted)
            norms = _flat_norms(grad)
            unit = torch.where(norms > 0, grad / norms.clamp_min(1e-30), torch.zeros_like(grad))
            x = x + step_size * unit
            x = (x0 + project_l2(x - x0, eps)).clamp(0.0, 1.0).detach()
    return x
