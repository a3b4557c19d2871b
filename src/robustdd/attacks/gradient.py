"""White-box gradient attacks in pixel space: FGSM and PGD-L∞.

Models take [0, 1] pixels and normalise internally, so ε = 8/255 means 8/255 of a pixel. The
model is put in eval mode for the attack (and restored afterwards); only the input gets
gradients. Everything is batched.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Run a block with ``model`` in eval mode and its parameters frozen, then restore both."""
    # Flags are only written where they differ: on a GPU a cheap attack (FGSM on a small
    # batch) takes a few milliseconds, and setting and resetting every module's and parameter's
    # flag through nn.Module's attribute machinery was a third of that.
    modes = [(m, m.training) for m in model.modules()]  # e.g. BN frozen inside a training net
    flags = [(p, p.requires_grad) for p in model.parameters()]
    if any(mode for _, mode in modes):
        model.eval()
    for p, flag in flags:
        if flag:
            p.requires_grad_(False)
    try:
        yield model
    finally:
        for p, flag in flags:
            if p.requires_grad != flag:
                p.requires_grad_(flag)
        for m, mode in modes:
            if m.training != mode:
                m.training = mode


def _loss_gradient(model: nn.Module, x: torch.Tensor, labels: torch.Tensor,
                   targeted: bool) -> torch.Tensor:
    """Gradient of the attack objective; its ascent direction increases the attack's success."""
    with torch.enable_grad():  # attacks may be called from no_grad evaluation code
        x = x.detach().requires_grad_(True)
        loss = F.cross_entropy(model(x), labels, reduction="sum")
        (grad,) = torch.autograd.grad(-loss if targeted else loss, x)
    return grad


def fgsm(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *, eps: float,
         targeted: bool = False) -> torch.Tensor:
    """Fast Gradient Sign Method: one signed step of size ε. ``labels`` are targets if targeted."""
    with eval_mode(model):
        grad = _loss_gradient(model, images, labels, targeted)
        return torch.add(images, grad.sign(), alpha=eps).clamp_(0.0, 1.0).detach()


def pgd_linf(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *, eps: float,
             steps: int, step_size: float, targeted: bool = False, random_start: bool = False,
             generator: torch.Generator | None = None, restarts: int = 1) -> torch.Tensor:
    """Projected gradient descent in the L∞ ball of radius ε around ``images``, within [0, 1].

    ``random_start`` draws a uniform start in the ball from ``generator`` (on the CPU, so the
    same seed gives the same start on every device). With ``restarts`` > 1 the attack is run
    again from new random starts on the examples it has not yet fooled (untargeted: still
    classified as ``labels``; targeted: not yet classified as the target ``labels``).
    """
    def run(x: torch.Tensor, y: torch.Tensor, start: bool) -> torch.Tensor:
        return _pgd_run(model, x, y, eps, steps, step_size, targeted, start, generator)

    return with_restarts(run, model, images, labels, targeted=targeted, restarts=restarts,
                         random_start=random_start)


def with_restarts(run: Callable[[torch.Tensor, torch.Tensor, bool], torch.Tensor],
                  model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *,
                  targeted: bool, restarts: int, random_start: bool) -> torch.Tensor:
    """``run(images, labels, random_start)``, then re-run from random starts (``restarts`` − 1
    times) on the examples not yet fooled (untargeted: still classified as ``labels``;
    targeted: not yet classified as the target ``labels``)."""
    best = run(images, labels, random_start)
    for _ in range(restarts - 1):
        with eval_mode(model), torch.no_grad():
            pred = model(best).argmax(1)
        open_ = pred != labels if targeted else pred == labels
        if not bool(open_.any()):
            break
        idx = torch.nonzero(open_, as_tuple=True)[0]
        best[idx] = run(images[idx], labels[idx], True)
    return best


def _pgd_run(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, eps: float,
             steps: int, step_size: float, targeted: bool, random_start: bool,
             generator: torch.Generator | None) -> torch.Tensor:
    x0 = images.detach()
    x = x0.clone()
    if random_start:
        noise = torch.rand(x0.shape, generator=generator, dtype=x0.dtype).to(x0.device)
        x = (x0 + (2 * noise - 1) * eps).clamp(0.0, 1.0)
    # Project onto the ε-ball, then clamp to [0, 1] (in that order: the legacy suite runs this
    # on normalised tensors, which may lie outside [0, 1]). Ball bounds computed once and
    # in-place updates: fewer kernels per step, which is what a small batch costs on a GPU.
    lower, upper = x0 - eps, x0 + eps
    with eval_mode(model):
        for _ in range(steps):
            grad = _loss_gradient(model, x, labels, targeted)
            x = torch.add(x, grad.sign(), alpha=step_size)
            x = torch.minimum(torch.maximum(x, lower, out=x), upper, out=x).clamp_(0.0, 1.0)
    return x.detach()
