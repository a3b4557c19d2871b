"""GUARD's curvature regulariser (Xue et al., AAAI 2025), in the forms its paper and code use.

With z = h · ∇ₓℓ / ‖∇ₓℓ‖ per sample (detached), the penalty is the batch mean of
‖∇ₓℓ(x + z) − ∇ₓℓ(x)‖ in one of two forms (``reference/methods.md`` §9.1):

* the code (``pretrain_cifar.py``): ℓ is the batch-mean CE, so every per-sample gradient carries
  a 1/B factor, and the norm is not squared (``per_sample=False, squared=False``);
* the paper (Eq. 15, ℓ(x) + λ‖∇ℓ(x + hz) − ∇ℓ(x)‖²): per-sample losses, squared norm
  (``per_sample=True, squared=True``). With the code's 1/B factor the squared form would be
  B² times smaller and λ = 100 would make it vanish (measured: ~1e-10 at initialisation).

The gradients are taken with ``create_graph=True``, so the penalty back-propagates to the
network's parameters (double backward). When z is not given, ∇ₓℓ(x) is computed once, with its
graph, and serves both as the direction (detached) and as the second term of the difference. The
reference computes it twice (a plain backward for z, then again inside the difference); the
values are the same up to float rounding and the step is 12–16 % cheaper on a CPU
(``benchmarks/curvature_speed.py``).

Units of h. The reference works on mean/std-normalised tensors and h = 3 is in those units; a
robustdd model takes pixels and normalises inside, so by default the penalty is computed on the
model's inner network with normalised inputs (``space="normalised"``), which is the reference's
computation exactly. ``space="pixel"`` measures h in pixel units instead.

Mode. The penalty's forward passes should see BatchNorm in eval mode (running statistics), as
the reference switches ``net.eval()`` for it; :func:`curvature_objective` does that and restores
the training mode, for use as the shared trainer's objective (GUARD's squeeze step).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustdd.attacks.legacy import normalised_view
from robustdd.nn.train import Objective

__all__ = ["curvature_objective", "curvature_penalty", "gradient_direction", "modules_in_eval"]

_EPS = 1e-7  # the reference's constant in z = h (g + 1e-7) / (‖g‖ + 1e-7)


@contextmanager
def modules_in_eval(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode for a block (parameters stay trainable), then every module's mode restored."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, mode in modes:
            m.train(mode)


def _direction(g: Tensor, h: float) -> Tensor:
    """h · (g + 1e-7) / (‖g_i‖₂ + 1e-7) per sample, detached."""
    g = g.detach()
    norms = g.flatten(1).norm(dim=1).view(-1, *([1] * (g.dim() - 1)))
    return h * (g + _EPS) / (norms + _EPS)


def gradient_direction(net: nn.Module, x: Tensor, y: Tensor, h: float) -> Tensor:
    """z = h · (g + 1e-7) / (‖g_i‖₂ + 1e-7), g = ∇ₓ mean CE(net(x), y); detached."""
    with torch.enable_grad():
        xg = x.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(F.cross_entropy(net(xg), y), xg)
    return _direction(g, h)


def curvature_penalty(net: nn.Module, x: Tensor, y: Tensor, h: float = 3.0, *,
                      squared: bool = False, per_sample: bool = False,
                      z: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """(penalty, z): mean_i ‖∇ₓℓ(x + z)_i − ∇ₓℓ(x)_i‖ (``squared``: its square).

    ℓ is the batch-mean CE (the code) or, with ``per_sample``, each sample's own CE (the
    paper). ``net`` is applied to ``x`` as given (pass the normalised view for the reference's
    units); ``z`` defaults to :func:`gradient_direction` and is a constant either way. The
    penalty keeps its graph for a backward pass into ``net``'s parameters.
    """
    reduction = "sum" if per_sample else "mean"
    with torch.enable_grad():
        xg = x.detach().requires_grad_(True)
        (g0,) = torch.autograd.grad(F.cross_entropy(net(xg), y, reduction=reduction), xg,
                                    create_graph=True)
        if z is None:  # ∇ℓ(x) also gives the direction (module docstring)
            # z always follows the batch-mean loss's gradient: the sum's divided by B
            z = _direction(g0 / x.shape[0] if per_sample else g0, h)
        (g1,) = torch.autograd.grad(F.cross_entropy(net(xg + z), y, reduction=reduction), xg,
                                    create_graph=True)
    delta = g1 - g0
    norms = delta.flatten(1).norm(dim=1)
    return (norms ** 2 if squared else norms).mean(), z


def curvature_objective(weight: float = 100.0, h: float = 3.0, *, squared: bool = False,
                        per_sample: bool = False,
                        space: Literal["normalised", "pixel"] = "normalised") -> Objective:
    """The trainer objective of GUARD's squeeze: CE (train mode) + weight · penalty (eval mode)."""

    def objective(model: nn.Module, x: Tensor, y: Tensor, _g: torch.Generator) -> Tensor:
        loss = F.cross_entropy(model(x), y)
        if weight == 0:  # a zero weight is plain CE; skip the penalty's cost
            return loss
        with modules_in_eval(model):
            if space == "normalised":
                view = normalised_view(model)
                penalty, _ = curvature_penalty(view.net, view.to_normalised(x), y, h,
                                               squared=squared, per_sample=per_sample)
            else:
                penalty, _ = curvature_penalty(model, x, y, h, squared=squared,
                                               per_sample=per_sample)
        return loss + weight * penalty

    return objective
