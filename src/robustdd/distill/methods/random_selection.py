"""``random``: real training images drawn uniformly per class with a seeded generator."""

from __future__ import annotations

from robustdd.data import sample_per_class
from robustdd.distill.base import DistillContext, MethodConfig, register_method
from robustdd.distilled import DistilledSet


class RandomConfig(MethodConfig):
    """No knobs: the seed decides which images are drawn."""


@register_method("random", RandomConfig, presets={},
                 description="real images drawn uniformly at random per class")
def run_random(ctx: DistillContext, config: RandomConfig) -> DistilledSet:
    """Pick ``ipc`` distinct real images of each class."""
    idx = sample_per_class(ctx.data.labels, ctx.num_classes, ctx.ipc, ctx.generator("random"))
    return DistilledSet(
        images=ctx.data.pixels(idx), labels=ctx.data.labels[idx].clone(),
        num_classes=ctx.num_classes, dataset=ctx.data.name, method="random", ipc=ctx.ipc,
        class_names=ctx.data.class_names, mean=ctx.data.mean, std=ctx.data.std,
        meta={"source_indices": idx.tolist()})
