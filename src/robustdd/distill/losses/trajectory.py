"""Trajectory matching, the MTT objective (Cazenavette et al., CVPR 2022; ``methods.md`` §5.2).

A student network starts at an expert's parameters θ*_t and takes N SGD steps with a learned
step size α on minibatches of the synthetic set:

    θ̂_0 = θ*_t,   θ̂_{n+1} = θ̂_n − α ∇_θ CE(f(A(S_{b_n}); θ̂_n), y_{b_n})

and the loss is ‖θ̂_N − θ*_{t+M}‖² / ‖θ*_t − θ*_{t+M}‖². The unrolled steps run *functionally*
over one flat parameter vector (``torch.func.functional_call`` on the parameters reshaped into
the module's shapes), with ``create_graph=True``, so the loss is differentiable with respect to
the synthetic images and α, as the reference's ``ReparamModule`` does.

Memory is O(N · batch_syn · activations): every inner step's graph is kept for the final
backward, so ``batch_syn`` (synthetic images per inner step, chunks of a shuffled set that cycle
as the reference does) is what bounds memory at IPC 50, not the set size.

Numerical guards (the reference has none; issues #6, #16, #20, #42 report NaN losses and
negative or exploding α):

* α stays positive by **projection**: after each optimiser step it is clamped to at least
  ``min_lr`` (:func:`clamp_syn_lr_`). A log-parametrisation would multiply α's gradient by α
  (≈ 1e-2) and make the published ``lr_lr`` values meaningless; the projection leaves the
  reference's dynamics untouched whenever α would have stayed positive anyway.
* A step whose loss is non-finite or above a ceiling, or whose gradients are non-finite, is
  **skipped and recorded** (:func:`step_problem` says why); the caller raises once too many
  steps in a row are skipped (see ``methods/mtt.py``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

__all__ = [
    "FlatParams",
    "clamp_syn_lr_",
    "functional_forward",
    "minibatch_schedule",
    "step_problem",
    "trajectory_matching_loss",
    "unroll_student",
]

StepAugment = Callable[[Tensor, int], Tensor]


class FlatParams:
    """The layout of a module's parameters as one flat vector (``module.parameters()`` order,
    which is also the order MTT flattens expert snapshots in)."""

    def __init__(self, module: nn.Module):
        named = list(module.named_parameters())
        if not named:
            raise ValueError(f"{type(module).__name__} has no parameters")
        self.names = [n for n, _ in named]
        self.shapes = [tuple(p.shape) for _, p in named]
        self.numels = [p.numel() for _, p in named]

    @property
    def num_params(self) -> int:
        """Length of the flat vector."""
        return sum(self.numels)

    @staticmethod
    def flatten(module: nn.Module) -> Tensor:
        """The module's current parameters as one detached flat vector."""
        return torch.cat([p.detach().reshape(-1) for p in module.parameters()])

    def unflatten(self, flat: Tensor) -> dict[str, Tensor]:
        """Views of ``flat`` shaped like the parameters, keyed by name (differentiable)."""
        if flat.ndim != 1 or flat.numel() != self.num_params:
            raise ValueError(f"expected a flat vector of {self.num_params} parameters, got "
                             f"shape {list(flat.shape)}")
        return {name: chunk.view(shape) for name, chunk, shape in
                zip(self.names, flat.split(self.numels), self.shapes, strict=True)}


def functional_forward(module: nn.Module, layout: FlatParams, flat: Tensor, x: Tensor) -> Tensor:
    """``module(x)`` with its parameters taken from ``flat`` (its buffers are its own)."""
    return functional_call(module, layout.unflatten(flat), (x,))


def minibatch_schedule(n_syn: int, steps: int, batch_syn: int | None,
                       generator: torch.Generator) -> list[Tensor]:
    """Index batches for ``steps`` inner steps: chunks of ``batch_syn`` from a random
    permutation of the ``n_syn`` synthetic images, a fresh permutation when one is used up.
    ``batch_syn`` None (or ≥ ``n_syn``) uses the whole set, in a random order, every step."""
    size = n_syn if batch_syn is None else max(1, min(int(batch_syn), n_syn))
    out: list[Tensor] = []
    pending: list[Tensor] = []
    for _ in range(steps):
        if not pending:
            pending = list(torch.randperm(n_syn, generator=generator).split(size))
        out.append(pending.pop(0))
    return out


def _cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    if targets.dtype == torch.int64:
        return F.cross_entropy(logits, targets)
    return -(targets * F.log_softmax(logits, dim=1)).sum(1).mean()


def unroll_student(module: nn.Module, layout: FlatParams, start: Tensor, images: Tensor,
                   labels: Tensor, syn_lr: Tensor, batches: Sequence[Tensor],
                   augment: StepAugment | None = None) -> Tensor:
    """θ̂_N after ``len(batches)`` functional SGD steps from ``start`` (see the module doc).

    ``images`` are the tensors the module takes (the optimised synthetic set, in the module's
    input space), ``labels`` hard int64 or soft [N, C]; ``augment(x, step)`` is applied to each
    minibatch. The result stays attached to the graph of ``images`` and ``syn_lr``.
    """
    theta = start.detach().clone().requires_grad_(True)
    for step, idx in enumerate(batches):
        idx = idx.to(images.device)
        x = images[idx]
        if augment is not None:
            x = augment(x, step)
        loss = _cross_entropy(functional_forward(module, layout, theta, x), labels[idx])
        grad = torch.autograd.grad(loss, theta, create_graph=True)[0]
        theta = theta - syn_lr * grad
    return theta


def trajectory_matching_loss(student_end: Tensor, start: Tensor, target: Tensor) -> Tensor:
    """‖θ̂_N − θ*_{t+M}‖² / ‖θ*_t − θ*_{t+M}‖² (the reference's two 1/num_params cancel)."""
    denom = (start.detach() - target.detach()).pow(2).sum()
    if float(denom) == 0.0:
        raise ValueError("the expert did not move between the start and target epochs "
                         "(‖θ*_t − θ*_{t+M}‖ = 0); the trajectory cannot be matched")
    return (student_end - target.detach()).pow(2).sum() / denom


def step_problem(loss: Tensor, grads: Iterable[Tensor | None], max_loss: float) -> str | None:
    """Why an outer step must be skipped (non-finite or exploding loss, non-finite gradient),
    or ``None`` when it is safe to apply."""
    value = float(loss.detach())
    if not math.isfinite(value):
        return f"non-finite loss ({value})"
    if value > max_loss:
        return f"loss {value:.4g} above max_loss {max_loss:.4g} (the student exploded)"
    for g in grads:
        if g is not None and not bool(torch.isfinite(g).all()):
            return "non-finite gradient"
    return None


@torch.no_grad()
def clamp_syn_lr_(syn_lr: Tensor, min_lr: float) -> bool:
    """Project the learned step size onto [``min_lr``, ∞) in place; True if it was clamped."""
    if bool(syn_lr >= min_lr):  # compared in syn_lr's dtype, so a clamped value stays put
        return False
    syn_lr.fill_(min_lr)
    return True
