"""Distribution-matching losses on embeddings: DM's mean distance and BACON's objective.

Every function takes real embeddings ``real`` of shape [..., n, d] and synthetic embeddings
``syn`` of shape [..., m, d] and returns one value per leading index (shape [...]): pass [n, d]
and [m, d] for one class, or [C, n, d] and [C, m, d] for all classes at once. The real side is
treated as a constant (callers pass it detached); gradients flow into ``syn``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = [
    "BACON_CLIP_WEIGHT",
    "BACON_TV_WEIGHT",
    "bacon_clip",
    "bacon_loss",
    "bacon_nll",
    "mean_embedding_distance",
    "total_variation",
]

#: BACON's weights of the TV and "clip" terms (``BACON_cifar10.py``; methods.md §7).
BACON_TV_WEIGHT = 0.8
BACON_CLIP_WEIGHT = 0.2

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


def _check(real: Tensor, syn: Tensor) -> None:
    if real.dim() < 2 or syn.dim() < 2:
        raise ValueError(f"embeddings must be [..., n, d], got {tuple(real.shape)} and "
                         f"{tuple(syn.shape)}")
    if real.shape[:-2] != syn.shape[:-2] or real.shape[-1] != syn.shape[-1]:
        raise ValueError(f"real {tuple(real.shape)} and synthetic {tuple(syn.shape)} embeddings "
                         "differ in their leading (class) dimensions or feature size")


def mean_embedding_distance(real: Tensor, syn: Tensor) -> Tensor:
    """DM/IDM: ``‖mean(real) − mean(syn)‖²`` over the feature dimension (methods.md §4, §6)."""
    _check(real, syn)
    return ((real.mean(-2) - syn.mean(-2)) ** 2).sum(-1)


def total_variation(real: Tensor, syn: Tensor) -> Tensor:
    """BACON's ``total_variation``: ``0.5 · Σ_d |mean(syn)_d − mean(real)_d|``."""
    _check(real, syn)
    return 0.5 * (syn.mean(-2) - real.mean(-2)).abs().sum(-1)


def bacon_nll(real: Tensor, syn: Tensor) -> Tensor:
    """BACON's ``negative_log_likelihood``: ``−Σ_d log N(μ_syn,d; μ_real,d, s_d²)`` with
    ``s_d = exp(σ_d)``, σ_d the unbiased std of the real embeddings over the batch.

    Computed in log space, ``Σ_d [½ log 2π + σ_d + ½ (Δ_d / s_d)²]``. The reference takes the
    log of the density itself, which underflows to ``log 0 = −inf`` once ``|Δ_d| / s_d`` exceeds
    about 13 in float32; the two agree wherever the reference is finite.
    """
    _check(real, syn)
    if real.shape[-2] < 2:
        raise ValueError("BACON's likelihood needs at least 2 real embeddings per class (it uses "
                         "their unbiased std)")
    log_s = real.std(-2)  # log of s_d = exp(σ_d)
    z = (syn.mean(-2) - real.mean(-2)) * torch.exp(-log_s)
    return (_HALF_LOG_2PI + log_s + 0.5 * z ** 2).sum(-1)


def bacon_clip(real: Tensor, syn: Tensor) -> Tensor:
    """BACON's ``clip_function(softmax(μ_syn), softmax(μ_real))``, as the reference computes it.

    The reference applies its per-dimension formula to two 1-D softmax vectors, so its "means"
    are scalars that both equal 1/d: the standardised difference is rounding noise and the term
    is ~0 (methods.md §7). It is kept, computed exactly that way, so the total loss matches the
    reference's value (except that a uniform real softmax gives 0 where the reference gives
    NaN); weight it 0 to drop it.
    """
    _check(real, syn)
    p_syn = torch.softmax(syn.mean(-2), dim=-1)
    p_real = torch.softmax(real.mean(-2), dim=-1)
    spread = p_real.std(-1)
    # A uniform softmax (spread 0) makes the reference divide 0 by 0; the difference is then
    # exactly what it always is, ~0, so it is divided by 1 instead of producing NaN.
    u = (p_syn.mean(-1) - p_real.mean(-1)) / torch.where(spread > 0, spread,
                                                         torch.ones_like(spread))
    return (u - u.clamp(0.0, 1.0)) ** 2


def bacon_loss(real: Tensor, syn: Tensor, tv_weight: float = BACON_TV_WEIGHT,
               clip_weight: float = BACON_CLIP_WEIGHT) -> Tensor:
    """BACON's matching term: ``NLL + 0.8·TV + 0.2·clip`` (methods.md §7)."""
    loss = bacon_nll(real, syn) + tv_weight * total_variation(real, syn)
    if clip_weight:
        loss = loss + clip_weight * bacon_clip(real, syn)
    return loss
