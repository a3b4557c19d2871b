"""DeepFool, L2 (Moosavi-Dezfooli et al. 2016), batched over the whole batch, untargeted.

Each step linearises the classifier at the current point x_k of every example that is still
classified correctly: with f_k the logit gaps Z_k − Z_y and w_k = ∇f_k, it takes the closest
linearised boundary l = argmin_{k≠y} |f_k| / ‖w_k‖₂ and the step r = |f_l| · w_l / ‖w_l‖²₂.
Examples stop as soon as they are misclassified (misclassified clean examples come back
unchanged); at most ``steps`` steps.

Two variants:

* ``"box"`` (default; the correct form in pixel space): the linearisation respects the [0, 1]
  box — gradient components that would push a pixel already at 0 or 1 further out are dropped
  before computing distances and steps, so the step reaches the linearised boundary with the
  pixels that can move — and, as in the original DeepFool code, the overshoot multiplies the
  accumulated perturbation: x_k = clip(x₀ + (1 + overshoot) · Σ r_i, 0, 1).
* ``"torchattacks"`` (torchattacks 3.5.1 ``DeepFool``, used by BEARD): no box awareness and
  x_{k+1} = clip(x_k + (1 + overshoot) · r, 0, 1). When the clipped steps keep falling short
  (images with saturated pixels, e.g. digits or MNIST) it creeps towards the boundary
  geometrically and ends *on* it, with logit ties that floating-point noise resolves either way.

Batching: the gradients of the C − 1 logit gaps of every active example are computed at once
with C − 1 backward passes through the batch (pass j back-propagates e_k − e_y for each
example's own j-th other class k; examples do not interact in an eval-mode model). torchattacks
loops over the examples and runs C backward passes for each. Like torchattacks, a step first
checks which examples are already fooled with a forward pass and computes gradients only for
the others.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from robustdd.attacks.gradient import eval_mode

DEEPFOOL_VARIANTS = ("box", "torchattacks")


def input_jacobian(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits [N, C] and their Jacobian [N, C, *x.shape[1:]] w.r.t. ``x``, by C backward passes.

    Valid for models whose output for one example does not depend on the others (eval mode).
    """
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        logits = model(x)
        num_classes = logits.shape[1]
        rows = []
        for k in range(num_classes):
            (grad,) = torch.autograd.grad(logits[:, k].sum(), x,
                                          retain_graph=k < num_classes - 1)
            rows.append(grad)
    return logits.detach(), torch.stack(rows, dim=1)


def deepfool(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *, steps: int = 50,
             overshoot: float = 0.02,
             variant: Literal["box", "torchattacks"] = "box") -> torch.Tensor:
    """DeepFool adversarial examples for true ``labels`` (untargeted, unbounded L2)."""
    return deepfool_with_steps(model, images, labels, steps=steps, overshoot=overshoot,
                               variant=variant)[0]


def deepfool_with_steps(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *,
                        steps: int = 50, overshoot: float = 0.02,
                        variant: Literal["box", "torchattacks"] = "box",
                        ) -> tuple[torch.Tensor, int, int]:
    """:func:`deepfool` plus the number of Jacobian steps the slowest example took, and C.

    Every Jacobian step costs C − 1 backward passes per active example (:func:`gap_jacobian`),
    so (C − 1) × steps is the count of the slowest example and an upper bound for every other
    one.
    """
    if variant not in DEEPFOOL_VARIANTS:
        raise ValueError(f"unknown DeepFool variant {variant!r} (known: {DEEPFOOL_VARIANTS})")
    box = variant == "box"
    x0 = images.detach()
    x = x0.clone()
    total = torch.zeros_like(x0)
    active = torch.arange(x0.shape[0], device=x0.device)
    taken, num_classes = 0, 0
    with eval_mode(model):
        for _ in range(steps):
            if active.numel() == 0:
                break
            y = labels[active]
            x_active, logits = _forward_with_graph(model, x[active])
            still = logits.detach().argmax(1) == y
            if not still.all():
                # Fooled examples stop here: rerunning the forward pass on the others is
                # cheaper than C − 1 backward passes through rows nobody needs.
                active, y = active[still], y[still]
                if active.numel() == 0:
                    break
                x_active, logits = _forward_with_graph(model, x[active])
            num_classes = logits.shape[1]
            taken += 1
            f_gap, w_gap = gap_jacobian(logits, x_active, y)               # [n, C-1], [n, C-1, ...]
            if box:
                here = x[active].unsqueeze(1)
                w_gap = w_gap.masked_fill(((here <= 0) & (w_gap < 0))
                                          | ((here >= 1) & (w_gap > 0)), 0.0)
            w_norm = w_gap.flatten(2).norm(p=2, dim=2)                     # [n, C-1]
            dist = f_gap.abs() / w_norm.clamp_min(1e-30)
            closest = dist.argmin(1)
            rows = torch.arange(y.numel(), device=y.device)
            w_l = w_gap[rows, closest]
            scale = f_gap[rows, closest].abs() / w_norm[rows, closest].pow(2).clamp_min(1e-30)
            step = scale.view(-1, *([1] * (w_l.dim() - 1))) * w_l
            if box:
                total[active] += step
                x[active] = (x0[active] + (1 + overshoot) * total[active]).clamp(0.0, 1.0)
            else:
                x[active] = (x[active] + (1 + overshoot) * step).clamp(0.0, 1.0)
    return x, taken, num_classes


def _forward_with_graph(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``x`` detached as a leaf that requires grad, and the model's logits with their graph."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        return x, model(x)


def gap_jacobian(logits: torch.Tensor, x: torch.Tensor, labels: torch.Tensor,
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Logit gaps f_k = Z_k − Z_y [N, C−1] and their input gradients w_k [N, C−1, *x.shape[1:]]
    over the C − 1 classes k ≠ y of every example, by C − 1 backward passes.

    ``logits`` must be ``model(x)`` with its graph, ``x`` requiring grad. Pass j
    back-propagates the cotangent e_k − e_y with k the j-th class other than y
    (:func:`other_classes`), so every example gets exactly its C − 1 gap gradients: one backward
    pass fewer than a full Jacobian, and no gradient of Z_y to subtract afterwards. Valid for
    models whose output for one example does not depend on the others (eval mode).
    """
    num_classes = logits.shape[1]
    if num_classes < 2:
        raise ValueError(f"DeepFool needs at least two classes, got {num_classes}")
    others = other_classes(labels, num_classes)                            # [N, C-1]
    true = torch.nn.functional.one_hot(labels, num_classes).to(logits.dtype)
    rows = []
    for j in range(num_classes - 1):
        toward = torch.nn.functional.one_hot(others[:, j], num_classes).to(logits.dtype)
        (grad,) = torch.autograd.grad(logits, x, toward - true,
                                      retain_graph=j < num_classes - 2)
        rows.append(grad)
    logits = logits.detach()
    gaps = logits.gather(1, others) - logits.gather(1, labels.view(-1, 1))
    return gaps, torch.stack(rows, dim=1)


def other_classes(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """[N, C−1]: every class but ``labels[n]``, in increasing order, for each example."""
    j = torch.arange(num_classes - 1, device=labels.device).expand(labels.numel(), -1)
    return j + (j >= labels.view(-1, 1)).long()
