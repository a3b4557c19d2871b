"""Gradient matching (DC/DSA, ``reference/methods.md`` §2): distances between parameter
gradients and the per-class matching loss of a network.

Distances (``DatasetCondensation/utils.py::match_loss, distance_wb``):

* ``ours`` (the reference default): layer-wise. Each weight gradient is reshaped to
  (out, rest) (conv out × in·k·k, linear as is, a 3-D LayerNorm weight C × H·W) and every row
  contributes ``1 − ⟨g_r, g_s⟩ / (‖g_r‖·‖g_s‖ + 1e-6)``. 1-D parameters (biases, norm affine
  parameters) contribute nothing.
* ``mse``: squared L2 distance of all gradients concatenated (1-D parameters included).
* ``cos``: ``1 − cos`` of all gradients concatenated, with the same +1e-6 in the denominator.

Batching. :func:`class_matching_losses` returns the loss of every class at once. Three ways
of computing it were timed on the project's 2-core CPU (one thread, ConvNet-3, CIFAR-10 shapes,
10 classes, 64 real and 10 synthetic images per class; forward, both gradients and the backward
to the images; the machine was shared, so ranges over three repeats):

* ``"loop"``, one forward/backward per class (the reference's order): 8.0–9.6 s;
* ``"vmap"``, ``torch.func.vmap`` over the class axis of ``torch.func.grad`` (one batched
  forward over the real images of all classes, one over the synthetic ones, per-class gradients
  without a Python loop): 17–23 s, because the per-class weight gradients become grouped
  convolutions, which are slow on CPU;
* one shared forward of all real images and ``autograd.grad`` per class with ``retain_graph``:
  59–70 s, since every call back-propagates through the whole concatenated batch (C full
  backward passes instead of C per-class ones). Not offered.

A fourth variant, one shared real forward + one backward with per-class weight gradients
assembled from hooked activations by grouped ``conv2d_weight``, was also slower than the loop
for the real side (12.9–14.5 s vs 9.6–13.0 s). So ``"loop"`` is the default; the distances of
all classes are still computed as one batched tensor expression. ``"vmap"`` stays available
(unmeasured on GPU, where fewer kernel launches may make it the faster one). The modes agree to
float rounding (``tests/test_gradient_matching.py``).

In ``"vmap"`` mode every sample must be processed independently of the others in the forward
pass (instance norm, no norm, layer norm, or batch norm in eval mode), so that a batched forward
gives each class the gradient of a forward over that class alone. ``"loop"`` forwards one class
at a time, as the reference does. For batch-norm models the reference freezes the statistics
before matching (:func:`freeze_batchnorm`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

Metric = Literal["ours", "mse", "cos"]
METRICS: tuple[str, ...] = ("ours", "mse", "cos")
_EPS = 1e-6  # the reference's constant in every cosine denominator


def _check_metric(metric: str) -> None:
    if metric not in METRICS:
        raise ValueError(f"unknown gradient distance {metric!r}; known: {', '.join(METRICS)}")


def _rows(g: Tensor, lead: int) -> Tensor | None:
    """Reshape a gradient with ``lead`` leading batch dims to (*lead, out, rest); None for 1-D."""
    shape = g.shape[lead:]
    if len(shape) <= 1:
        return None
    return g.reshape(*g.shape[:lead], shape[0], -1)


def _cosine_gap(a: Tensor, b: Tensor) -> Tensor:
    """``1 − ⟨a, b⟩ / (‖a‖·‖b‖ + 1e-6)`` along the last axis."""
    dot = (a * b).sum(-1)
    return 1 - dot / (a.norm(dim=-1) * b.norm(dim=-1) + _EPS)


def _distance(g_syn: Sequence[Tensor], g_real: Sequence[Tensor], metric: str,
              lead: int) -> Tensor:
    _check_metric(metric)
    if len(g_syn) != len(g_real):
        raise ValueError(f"{len(g_syn)} synthetic vs {len(g_real)} real gradient tensors")
    if metric == "ours":
        total: Tensor | None = None
        for gs, gr in zip(g_syn, g_real, strict=True):
            if gs.shape != gr.shape:
                raise ValueError(f"gradient shapes differ: {tuple(gs.shape)} vs {tuple(gr.shape)}")
            rs, rr = _rows(gs, lead), _rows(gr, lead)
            if rs is None or rr is None:
                continue
            term = _cosine_gap(rs, rr).sum(-1)
            total = term if total is None else total + term
        if total is None:
            return g_syn[0].new_zeros(g_syn[0].shape[:lead])
        return total
    vs = torch.cat([g.reshape(*g.shape[:lead], -1) for g in g_syn], dim=-1)
    vr = torch.cat([g.reshape(*g.shape[:lead], -1) for g in g_real], dim=-1)
    if metric == "mse":
        return ((vs - vr) ** 2).sum(-1)
    return _cosine_gap(vs, vr)


def gradient_distance(g_syn: Sequence[Tensor], g_real: Sequence[Tensor],
                      metric: Metric = "ours") -> Tensor:
    """The reference ``match_loss`` between two lists of parameter gradients (a scalar)."""
    return _distance(g_syn, g_real, metric, lead=0)


def batched_gradient_distance(g_syn: Sequence[Tensor], g_real: Sequence[Tensor],
                              metric: Metric = "ours") -> Tensor:
    """:func:`gradient_distance` for gradients stacked along a leading axis: returns [G]."""
    return _distance(g_syn, g_real, metric, lead=1)


def freeze_batchnorm(model: nn.Module, real: Tensor) -> None:
    """The reference's BN handling before matching: one training-mode forward of ``real``
    (it uses 16 real images per class) updates the running statistics, then every BatchNorm
    module is put in eval mode. A no-op for models without BatchNorm (instance-norm ConvNet)."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return
    model.train()
    with torch.no_grad():
        model(real)
    for m in bns:
        m.eval()


#: ``real_loss(model, x, y, syn, syn_y) -> scalar``: the real-side loss whose parameter gradient
#: is the matching target (default: mean cross-entropy; GUARD-DC: its curvature-regularised
#: loss). It also sees the class's synthetic batch (detached), which GUARD's Algorithm 1 reads.
RealLoss = Callable[[nn.Module, Tensor, Tensor, Tensor, Tensor], Tensor]


def class_matching_losses(model: nn.Module, real: Tensor, real_labels: Tensor, syn: Tensor,
                          syn_labels: Tensor, metric: Metric = "ours",
                          mode: Literal["loop", "vmap"] = "loop",
                          real_loss: RealLoss | None = None) -> Tensor:
    """Per-group gradient-matching losses ``D(∇θ CE(syn_g), ∇θ CE(real_g))``, shape [G].

    ``real`` is [G, B, ...] and ``syn`` [G, S, ...] (one group per class), with int64 labels
    [G, B] and [G, S]. Cross-entropy is the mean over each group. Real gradients are detached;
    synthetic gradients keep their graph (``create_graph``), so the result back-propagates to
    ``syn``. ``model``'s parameters are read, never accumulated into (``.grad`` is untouched).
    ``real_loss`` replaces the real side's cross-entropy (``loop`` mode only).
    """
    _check_metric(metric)
    if real.shape[0] != syn.shape[0]:
        raise ValueError(f"{real.shape[0]} real groups but {syn.shape[0]} synthetic groups")
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    names = list(params)
    if not names:
        raise ValueError("the model has no trainable parameters to match gradients of")
    if mode == "loop":
        g_real: list[list[Tensor]] = []
        g_syn: list[tuple[Tensor, ...]] = []
        for g in range(real.shape[0]):
            loss_r = (F.cross_entropy(model(real[g]), real_labels[g]) if real_loss is None
                      else real_loss(model, real[g], real_labels[g], syn[g].detach(),
                                     syn_labels[g]))
            g_real.append([t.detach() for t in torch.autograd.grad(loss_r, list(params.values()))])
            loss_s = F.cross_entropy(model(syn[g]), syn_labels[g])
            g_syn.append(torch.autograd.grad(loss_s, list(params.values()), create_graph=True))
        stacked_syn = [torch.stack(t) for t in zip(*g_syn, strict=True)]
        stacked_real = [torch.stack(t) for t in zip(*g_real, strict=True)]
        return batched_gradient_distance(stacked_syn, stacked_real, metric)
    if mode != "vmap":
        raise ValueError(f"unknown mode {mode!r}; known: vmap, loop")
    if real_loss is not None:
        raise ValueError("a custom real-side loss needs matching mode 'loop'")
    buffers = dict(model.named_buffers())

    def group_loss(p: dict[str, Tensor], x: Tensor, y: Tensor) -> Tensor:
        return F.cross_entropy(functional_call(model, (p, buffers), (x,)), y)

    per_group = vmap(grad(group_loss), in_dims=(None, 0, 0))
    detached = {n: p.detach() for n, p in params.items()}
    with torch.no_grad():
        g_real = per_group(detached, real, real_labels)
    g_syn = per_group(detached, syn, syn_labels)
    return batched_gradient_distance([g_syn[n] for n in names], [g_real[n] for n in names],
                                     metric)
