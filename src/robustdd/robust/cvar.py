"""RDD's group CVaR objective (Vahidian et al., ICLR 2025): risk-averse training over clusters
of real data formed around the synthetic samples (``reference/methods.md`` §10).

* :func:`cvar` — the conditional value at risk of a loss sample, the mean of its worst tail,
  in the exact discrete Rockafellar–Uryasev form
  CVaR = min_η η + 1/(q·n) · Σ_i (ℓ_i − η)₊ with tail fraction q: the k = ⌊qn⌋ largest losses
  plus a (qn − k) share of the next one, divided by qn. Differentiable (gradients reach the
  tail's losses). ``convention="tail"`` reads α as the tail fraction (q = α, α = 0.8: the worst
  80 %); ``"confidence"`` reads it as the confidence level (q = 1 − α: the worst 20 %). The
  paper's convention could not be verified, so both are offered; ``tail`` is the default.
* :func:`group_cvar` — per-cluster CVaR of one batch, vectorised over clusters (padding, no
  Python loop over clusters); empty clusters are left out.
* :func:`rdd_objective` — CE + mean_k CVaR_k + max_k CVaR_k over the non-empty clusters.
* :func:`official_cvar` — the released ``utils.py::cvar_loss``: ascending sort (the *lowest*
  losses), n counting the zero padding, (nonzero-mean of the first k + sorted[k−1]·(α − k/n)) / α,
  and no gradient (the code copies the losses through NumPy). Kept for the ``faithful`` variant,
  whose network update is therefore plain CE (the CVaR only changes the logged value).
* :func:`assign_clusters` — nearest synthetic centre in a network's embedding space: per class
  among that class's centres (our default), or among all classes' centres pooled (the code).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["assign_clusters", "choose_centres", "cvar", "greedy_centres", "group_cvar",
           "official_cvar", "official_objective", "rdd_objective", "tail_fraction"]

Convention = Literal["tail", "confidence"]


def tail_fraction(alpha: float, convention: Convention = "tail") -> float:
    """The fraction q of worst losses CVaR averages under ``convention``."""
    if not 0 < alpha < 1 and not (convention == "tail" and alpha == 1):
        raise ValueError(f"alpha must lie in (0, 1) (1 is allowed under the 'tail' convention "
                         f"only), got {alpha} under {convention!r}")
    if convention == "tail":
        return float(alpha)
    if convention == "confidence":
        return 1.0 - float(alpha)
    raise ValueError(f"unknown CVaR convention {convention!r}; known: tail, confidence")


def _tail_mean(sorted_desc: Tensor, counts: Tensor, q: float) -> Tensor:
    """Row-wise exact discrete CVaR of rows sorted descending with ``counts`` valid entries."""
    qn = q * counts.to(sorted_desc.dtype)
    k = torch.floor(qn + 1e-9).long().clamp(max=sorted_desc.shape[-1])
    csum = torch.cat([torch.zeros_like(sorted_desc[..., :1]), sorted_desc.cumsum(-1)], -1)
    head = csum.gather(-1, k.unsqueeze(-1)).squeeze(-1)
    nxt = sorted_desc.gather(-1, k.clamp(max=sorted_desc.shape[-1] - 1).unsqueeze(-1))
    frac = (qn - k.to(qn.dtype)).clamp(min=0)
    return (head + frac * nxt.squeeze(-1)) / qn


def cvar(losses: Tensor, alpha: float = 0.8, convention: Convention = "tail") -> Tensor:
    """CVaR of a 1-D loss sample (see the module docstring)."""
    if losses.dim() != 1 or losses.numel() == 0:
        raise ValueError(f"cvar needs a non-empty 1-D tensor, got shape {tuple(losses.shape)}")
    q = tail_fraction(alpha, convention)
    counts = torch.tensor([losses.numel()], device=losses.device)
    return _tail_mean(losses.sort(descending=True).values.unsqueeze(0), counts, q)[0]


def _group_table(values: Tensor, groups: Tensor, num_groups: int,
                 fill: float) -> tuple[Tensor, Tensor]:
    """``values`` [N] laid out as a [G, largest group] matrix padded with ``fill``, and the
    group sizes [G] (differentiable in ``values``)."""
    counts = torch.bincount(groups, minlength=num_groups)
    width = int(counts.max()) if values.numel() else 1
    order = torch.argsort(groups, stable=True)  # position of each sample inside its group
    sorted_groups = groups[order]
    starts = torch.cumsum(counts, 0) - counts
    pos = torch.arange(values.numel(), device=values.device) - starts[sorted_groups]
    table = values.new_full((num_groups, max(width, 1)), fill)
    return table.index_put((sorted_groups, pos), values[order]), counts


def group_cvar(losses: Tensor, groups: Tensor, num_groups: int, alpha: float = 0.8,
               convention: Convention = "tail") -> tuple[Tensor, Tensor]:
    """Per-group CVaR of ``losses`` [N] with group ids ``groups`` [N] in [0, num_groups).

    Returns (cvar [G], non-empty mask [G]); empty groups get 0 and mask False.
    """
    q = tail_fraction(alpha, convention)
    table, counts = _group_table(losses, groups, num_groups, float("-inf"))
    desc = table.sort(dim=1, descending=True).values
    present = counts > 0
    safe = torch.where(torch.isfinite(desc), desc, torch.zeros_like(desc))
    values = _tail_mean(safe, counts.clamp(min=1), q)
    return torch.where(present, values, torch.zeros_like(values)), present


def rdd_objective(logits: Tensor, labels: Tensor, groups: Tensor, num_groups: int,
                  alpha: float = 0.8, convention: Convention = "tail") -> Tensor:
    """CE(mean) + mean_k CVaR_k + max_k CVaR_k of the per-sample CE over non-empty groups."""
    per_sample = F.cross_entropy(logits, labels, reduction="none")
    values, present = group_cvar(per_sample, groups, num_groups, alpha, convention)
    kept = values[present]
    return per_sample.mean() + kept.mean() + kept.max()


def official_cvar(rows: Tensor, alpha: float = 0.8) -> Tensor:
    """``utils.py::cvar_loss`` of the RDD code, for each zero-padded row of ``rows`` (the last
    dimension; no gradient): ascending sort, k = max(1, ⌊α·n⌋) with n counting the padding,
    (non-zero mean of the k lowest + sorted[k−1]·(α − k/n)) / α."""
    values = rows.detach().sort(dim=-1).values  # ascending: the *lowest* losses first
    n = values.shape[-1]
    k = max(1, int(alpha * n))
    head = values[..., :k]
    nonzero = (head != 0).sum(-1)
    mean = torch.where(nonzero > 0, head.sum(-1) / nonzero.clamp(min=1), 0.0)
    return (mean + values[..., k - 1] * (alpha - k / n)) / alpha


def choose_centres(syn_labels: Tensor, num_classes: int, per_class: int,
                   generator: torch.Generator) -> Tensor:
    """Indices of the synthetic samples used as centres: all of a class's samples when it has
    at most ``per_class``, else ``per_class`` of them drawn at random (the paper summary's rule:
    K = IPC below 10, else 10 random synthetic samples per class)."""
    out = []
    for c in range(num_classes):
        idx = torch.nonzero(syn_labels == c, as_tuple=True)[0]
        if idx.numel() > per_class:
            idx = idx[torch.randperm(idx.numel(), generator=generator)[:per_class].to(idx.device)]
        out.append(idx)
    return torch.cat(out)


def greedy_centres(samples: Tensor, count: int) -> Tensor:
    """Indices of ``count`` samples picked by the released RDD code's walk at IPC 50: start at
    index 0, then repeatedly take the remaining sample farthest (pixel L2) from the one picked
    last (``distill_rdd.py``, methods.md §10.2 c)."""
    flat = samples.detach().flatten(1)
    picked = [0]
    free = torch.ones(flat.shape[0], dtype=torch.bool, device=flat.device)
    free[0] = False
    while len(picked) < min(count, flat.shape[0]):
        dist = (flat - flat[picked[-1]]).norm(dim=1).masked_fill(~free, -1.0)
        nxt = int(dist.argmax())
        picked.append(nxt)
        free[nxt] = False
    return torch.tensor(picked, device=flat.device)


def official_objective(losses: Tensor, groups: Tensor, num_groups: int,
                       alpha: float = 0.8) -> float:
    """The released code's logged value: per cluster ``official_cvar`` of its zero-padded row
    (clusters × largest cluster), then the mean over clusters whose value is non-zero plus the
    max over clusters. A number, no gradient (the code's CVaR goes through NumPy)."""
    rows, _ = _group_table(losses.detach().flatten(), groups.flatten(), num_groups, 0.0)
    values = official_cvar(rows, alpha)
    nonzero = values[values != 0]
    return (float(nonzero.mean()) if nonzero.numel() else 0.0) + float(values.max())


@torch.no_grad()
def assign_clusters(net: nn.Module, real: Tensor, real_labels: Tensor, centres: Tensor,
                    centre_labels: Tensor, *, pooled: bool = False) -> Tensor:
    """Index (into ``centres``) of each real image's nearest centre in ``net.embed`` space.

    By default a real image only considers centres of its own class; ``pooled`` considers all
    centres, as the released code does. Eval mode for the embedding, restored afterwards.
    """
    was = net.training
    net.eval()
    try:
        er, ec = net.embed(real), net.embed(centres)
    finally:
        net.train(was)
    dist = torch.cdist(er, ec)
    if not pooled:
        other = real_labels.view(-1, 1) != centre_labels.view(1, -1)
        if bool(other.all(dim=1).any()):
            raise ValueError("a real image's class has no synthetic centre")
        dist = dist.masked_fill(other, float("inf"))
    return dist.argmin(dim=1)
