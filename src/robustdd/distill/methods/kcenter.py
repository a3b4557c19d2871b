"""``kcenter``: per-class k-center greedy selection in feature space (Sener & Savarese,
ICLR 2018), the coreset baseline DeepCore calls ``kCenterGreedy`` (``balance=True``).

Per class, the first centre is a seeded random candidate; each next pick is the candidate
farthest (Euclidean) from its nearest chosen centre. Features come from the same seeded,
briefly trained network as ``herding`` (:func:`robustdd.distill.methods.herding.class_features`,
same presets), so the two selections differ only in the rule. Each step updates the candidates'
distance to the nearest centre with one batched distance computation.
"""

from __future__ import annotations

import torch

from robustdd.distill.base import DistillContext, register_method
from robustdd.distill.methods.herding import (
    PRESETS,
    HerdingConfig,
    class_features,
    selected_set,
)
from robustdd.distilled import DistilledSet


def kcenter_select(features: torch.Tensor, k: int, first: int) -> torch.Tensor:
    """Indices (in pick order) of ``k`` rows chosen by greedy k-center starting at ``first``;
    ties go to the lowest index."""
    n = features.shape[0]
    if not 0 <= k <= n:
        raise ValueError(f"cannot pick {k} of {n} rows")
    if k == 0:
        return torch.empty(0, dtype=torch.int64)
    feats = features.double()
    order = [int(first)]
    nearest = (feats - feats[first]).norm(dim=1)
    for _ in range(k - 1):
        i = int(torch.argmax(nearest))
        order.append(i)
        nearest = torch.minimum(nearest, (feats - feats[i]).norm(dim=1))
    return torch.tensor(order, dtype=torch.int64)


@register_method("kcenter", HerdingConfig, PRESETS,
                 description="per-class k-center greedy selection (Sener & Savarese 2018)")
def run_kcenter(ctx: DistillContext, config: HerdingConfig) -> DistilledSet:
    """Select ``ipc`` real images per class by k-center greedy on network features."""
    pools, feats, seconds = class_features(ctx, config, "kcenter")
    g = ctx.generator("kcenter-first")
    chosen = []
    for pool, f in zip(pools, feats, strict=True):
        first = int(torch.randint(0, pool.numel(), (1,), generator=g))
        chosen.append(pool[kcenter_select(f, ctx.ipc, first).cpu()])
    return selected_set(ctx, "kcenter", torch.cat(chosen), seconds)
