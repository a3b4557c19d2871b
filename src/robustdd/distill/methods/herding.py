"""``herding``: per-class greedy mean matching in feature space (Welling, ICML 2009), the coreset
baseline of the DC/DSA/DM papers.

For each class, with features φ(x) of every candidate image and their mean μ, pick images one at
a time so that the running mean of the picked features stays closest to μ: the k-th pick is the
unpicked x minimising ‖k·μ − Σ_{picked} φ − φ(x)‖.

Feature network. The default embeds with a ConvNet (the run's architecture) first trained on the
real training data with the shared trainer, as DeepCore's ``herding`` does (Guo, Zhao & Bai
2022; an ``EarlyTrain`` method: the selection network is trained on the real set before
embedding, ``--selection_epochs`` 40 by default). ``features="random"``
embeds with the untrained, seeded network instead (DM's view: random networks already give
useful feature means). Training uses the evaluation protocol's SGD settings (lr 0.01, momentum
0.9, weight decay 5e-4, batch 256; ``reference/methods.md`` §1.4) at a constant lr, without
augmentation.

Difference from DeepCore: its ``herding.py`` takes the ``argmax`` of ``euclidean_dist`` to the
target at each step; we take the ``argmin`` of Welling's and iCaRL's herding (the image that
keeps the running mean closest to μ). Budget presets may train on, and select from, a seeded
random subset of each class.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from robustdd.distill.base import DistillContext, MethodConfig, register_method
from robustdd.distill.common import per_class_indices
from robustdd.distilled import DistilledSet
from robustdd.nn import build_model
from robustdd.nn.train import TrainConfig, train_model
from robustdd.runtime import derive_seed


class HerdingConfig(MethodConfig):
    """Herding settings; see the module docstring for where the defaults come from."""

    features: Literal["trained", "random"] = "trained"
    train_epochs: int = Field(40, ge=0)  # DeepCore --selection_epochs
    train_per_class: int | None = Field(None, ge=1)  # None: the whole training set
    pool_per_class: int | None = Field(None, ge=1)  # candidates per class; None: all
    lr: float = Field(0.01, gt=0)
    momentum: float = Field(0.9, ge=0)
    weight_decay: float = Field(5e-4, ge=0)
    batch_size: int = Field(256, ge=1)
    embed_batch: int = Field(1024, ge=1)


PRESETS = {
    "smoke": {"train_epochs": 1, "train_per_class": 30, "pool_per_class": 60},
    # CIFAR-10 on a 2-core CPU: 2 epochs on 500 images per class and herding over 1000
    # candidates per class take a few minutes (a full-data epoch alone would take several).
    "small": {"train_epochs": 2, "train_per_class": 500, "pool_per_class": 1000},
    "paper": {"train_epochs": 40},
}


def herding_select(features: torch.Tensor, k: int) -> torch.Tensor:
    """Indices (in pick order) of ``k`` rows of ``features`` [n, d] chosen by greedy herding.

    Step j (1-based) picks the unpicked row f minimising ‖j·μ − s − f‖², s the sum of the rows
    picked so far; ties go to the lowest index.
    """
    n = features.shape[0]
    if not 0 <= k <= n:
        raise ValueError(f"cannot pick {k} of {n} rows")
    feats = features.double()  # the running sums are differences of large numbers
    mu = feats.mean(0)
    sq = (feats * feats).sum(1)
    picked = torch.zeros(n, dtype=torch.bool, device=features.device)
    total = torch.zeros_like(mu)
    order = []
    for j in range(1, k + 1):
        target = j * mu - total
        # ‖t − f‖² = ‖t‖² − 2⟨t, f⟩ + ‖f‖²; ‖t‖² is the same for every candidate.
        score = sq - 2 * feats @ target
        score = score.masked_fill(picked, float("inf"))
        i = int(torch.argmin(score))
        picked[i] = True
        total = total + feats[i]
        order.append(i)
    return torch.tensor(order, dtype=torch.int64)


@torch.no_grad()
def _embed(net: torch.nn.Module, images: torch.Tensor, batch: int) -> torch.Tensor:
    return torch.cat([net.embed(images[lo:lo + batch].float().div_(255.0))
                      for lo in range(0, images.shape[0], batch)])


def _subsample(class_idx: list[torch.Tensor], n: int | None,
               generator: torch.Generator) -> list[torch.Tensor]:
    if n is None:
        return class_idx
    return [idx[torch.randperm(idx.numel(), generator=generator)[:n]].sort().values
            for idx in class_idx]


def class_features(ctx: DistillContext, config: HerdingConfig, name: str
                   ) -> tuple[list[torch.Tensor], list[torch.Tensor], float]:
    """Per class: candidate indices, their features (eval-mode ``net.embed``) and the feature
    network's training seconds. The network is seeded from the run's seed and ``name``."""
    data, dev, C = ctx.data, ctx.device, ctx.num_classes
    net = build_model(ctx.arch, C, data.channels, data.image_size, mean=data.mean, std=data.std,
                      seed=derive_seed(ctx.seed, f"{name}-net"), device=dev)
    class_idx = per_class_indices(data.labels, C)
    train_seconds = 0.0
    if config.features == "trained" and config.train_epochs > 0:
        train_idx = torch.cat(_subsample(class_idx, config.train_per_class,
                                         ctx.generator(f"{name}-train-subset")))
        train_cfg = TrainConfig(epochs=config.train_epochs, lr=config.lr,
                                momentum=config.momentum, weight_decay=config.weight_decay,
                                batch_size=config.batch_size, decay=False, extra_epoch=False)
        stats = train_model(net, data.images[train_idx], data.labels[train_idx], train_cfg,
                            ctx.generator(f"{name}-train"))
        train_seconds = stats.seconds
    net.eval()
    pools = _subsample(class_idx, config.pool_per_class, ctx.generator(f"{name}-pool"))
    if min(int(p.numel()) for p in pools) < ctx.ipc:
        raise ValueError(f"pool_per_class={config.pool_per_class} is smaller than ipc={ctx.ipc}")
    feats = [_embed(net, data.images[pool].to(dev), config.embed_batch) for pool in pools]
    return pools, feats, train_seconds


def selected_set(ctx: DistillContext, method: str, idx: torch.Tensor,
                 train_seconds: float) -> DistilledSet:
    """The real images ``idx`` as a distilled set (indices kept in ``meta``)."""
    data = ctx.data
    return DistilledSet(
        images=data.pixels(idx), labels=data.labels[idx].clone(), num_classes=ctx.num_classes,
        dataset=data.name, method=method, ipc=ctx.ipc, class_names=data.class_names,
        mean=data.mean, std=data.std,
        meta={"source_indices": idx.tolist(), "feature_net_train_seconds": train_seconds})


@register_method("herding", HerdingConfig, PRESETS,
                 description="per-class feature-space herding selection (Welling 2009)")
def run_herding(ctx: DistillContext, config: HerdingConfig) -> DistilledSet:
    """Select ``ipc`` real images per class by herding on network features."""
    pools, feats, seconds = class_features(ctx, config, "herding")
    idx = torch.cat([pool[herding_select(f, ctx.ipc).cpu()]
                     for pool, f in zip(pools, feats, strict=True)])
    return selected_set(ctx, "herding", idx, seconds)
