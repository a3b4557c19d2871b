"""RDD: group distributionally robust dataset distillation (Vahidian et al., ICLR 2025).

The network a distillation method uses is trained on *real* data with a risk-averse loss over
clusters formed around the synthetic samples, so the synthetic set has to cover low-density
subgroups (``reference/methods.md`` §10; components in :mod:`robustdd.robust.cvar`):

* ``rdd-dc``: DC/DSA gradient matching whose inner-loop network update trains on fresh real
  batches (``real_per_class`` images of each class) instead of on S, with
  CE + mean_k CVaR_α(ℓ | c_k) + max_k CVaR_α(ℓ | c_k); c_k are the real images nearest (in the
  network's embedding) to centre k, the centres being a class's synthetic images (all of them
  when IPC < 10, else 10 random ones; Algorithm 1 and the paper summary), matched within the
  class. α = 0.8 read as the tail fraction by default (``cvar_convention``).
* ``rdd-idm``: IDM whose model-pool training step uses the same objective, clusters formed
  around the current decoded synthetic images.

``variant="faithful"`` reproduces the released code (GLaD-DC base, ``distill_rdd.py``): its CVaR
is computed through NumPy and carries no gradient, so its network update is plain CE on the
real data (clustered or not makes no difference to training); it uses ``outer_loop = inner_loop
= 2``, lr_img 1 and noise initialisation (``shared_args.py``), which are also the ``paper``
preset of ``rdd-dc`` here. The released code has no IDM variant; ``rdd-idm`` follows the
authors' plug-in description and has no faithful form beyond plain IDM.
"""

from __future__ import annotations

import copy
from typing import Any, Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from robustdd.distill.base import DistillContext, register_method
from robustdd.distill.methods.dc import DCConfig, run_gradient_matching
from robustdd.distill.methods.idm import PRESETS as IDM_PRESETS
from robustdd.distill.methods.idm import IDMConfig, IDMVariant, run_idm_family
from robustdd.distilled import DistilledSet
from robustdd.nn.dsa import DSA, DSAConfig, default_strategy
from robustdd.nn.train import TrainConfig, train_model
from robustdd.robust.cvar import assign_clusters, choose_centres, rdd_objective

__all__ = ["RDDDCConfig", "RDDIDMConfig", "cvar_net_update", "rdd_pool_objective"]

#: Centres per class: all synthetic samples below 10 IPC, else 10 (methods.md §10.2).
MAX_CENTRES_PER_CLASS = 10


class RDDDCConfig(DCConfig):
    """DC's settings plus RDD's; defaults of the loop are ``shared_args.py``'s."""

    variant: Literal["paper", "faithful"] = "paper"
    alpha: float = Field(0.8, gt=0, le=1)
    cvar_convention: Literal["tail", "confidence"] = "tail"
    centres_per_class: int = Field(MAX_CENTRES_PER_CLASS, ge=1)
    real_per_class: int = Field(512, ge=1)  # the code's update set: 256 + 256 per class
    # shared_args.py: outer/inner 2/2 (get_loops is not used), lr_img 1, noise init, DSA.
    outer_loop: int | None = Field(2, ge=1)
    inner_loop: int | None = Field(2, ge=0)
    lr_img: float = Field(1.0, gt=0)
    iterations: int = Field(2000, ge=0)
    dsa: bool = True


class RDDIDMConfig(IDMConfig):
    """IDM's settings plus RDD's group-CVaR pool training."""

    alpha: float = Field(0.8, gt=0, le=1)
    cvar_convention: Literal["tail", "confidence"] = "tail"
    centres_per_class: int = Field(MAX_CENTRES_PER_CLASS, ge=1)


def _cluster_labels(net: nn.Module, real: Tensor, real_labels: Tensor, syn: Tensor,
                    syn_labels: Tensor, num_classes: int, per_class: int,
                    generator: torch.Generator) -> tuple[Tensor, int]:
    centres = choose_centres(syn_labels, num_classes, per_class, generator)
    groups = assign_clusters(net, real, real_labels, syn[centres], syn_labels[centres])
    return groups, int(centres.numel())


def cvar_net_update(config: RDDDCConfig, num_classes: int, dsa: DSA | None):
    """The RDD-DC inner-loop network update (see the module docstring)."""
    faithful = config.variant == "faithful"

    def update(net: nn.Module, real_batch, syn: Tensor, syn_labels: Tensor,
               inner: TrainConfig, g: torch.Generator) -> None:
        real = real_batch(config.real_per_class)  # [C, n, ...]
        n = real.shape[1]
        x = real.flatten(0, 1)
        y = torch.arange(num_classes, device=x.device).repeat_interleave(n)
        if faithful:  # the code's CVaR has no gradient: the update is CE on real data
            train_model(net, x, y, inner, g, augment=dsa)
            return
        groups, k = _cluster_labels(net, x, y, syn, syn_labels, num_classes,
                                    config.centres_per_class, g)
        # Labels carry (class, cluster) through the shared trainer's batching.
        both = torch.stack([y, groups], dim=1)

        def objective(model: nn.Module, xb: Tensor, yb: Tensor, _g: torch.Generator) -> Tensor:
            return rdd_objective(model(xb), yb[:, 0], yb[:, 1], k, config.alpha,
                                 config.cvar_convention)

        train_model(net, x, both, inner, g, augment=dsa, objective=objective)

    return update


def rdd_pool_objective(config: RDDIDMConfig, num_classes: int):
    """RDD-IDM's pool training loss: CE + group CVaR around the current synthetic images."""

    def objective(net: nn.Module, logits: Tensor, x: Tensor, y: Tensor, syn: Tensor,
                  syn_labels: Tensor, g: torch.Generator) -> Tensor:
        groups, k = _cluster_labels(net, x, y, syn, syn_labels, num_classes,
                                    config.centres_per_class, g)
        return rdd_objective(logits, y, groups, k, config.alpha, config.cvar_convention)

    return objective


RDD_DC_PRESETS: dict[str, dict[str, Any]] = {
    "smoke": {"iterations": 3, "batch_real": 8, "real_per_class": 16},
    # A 2-core CPU: DC's small budget (10 iterations, 32 real images per class, real
    # initialisation, as `dc` at small) with a 64-image-per-class update set.
    "small": {"iterations": 10, "batch_real": 32, "real_per_class": 64, "init": "real"},
    "paper": {},  # shared_args.py (the config defaults above)
}
RDD_IDM_PRESETS: dict[str, dict[str, Any]] = copy.deepcopy(IDM_PRESETS)


@register_method("rdd-dc", RDDDCConfig, RDD_DC_PRESETS,
                 description="RDD: group-CVaR network training in gradient matching (2025)")
def run_rdd_dc(ctx: DistillContext, config: RDDDCConfig) -> DistilledSet:
    """Gradient matching whose network trains on clustered real data with the CVaR objective."""
    strategy = config.dsa_strategy or default_strategy(ctx.data.name)
    dsa = (DSA(DSAConfig(strategy=strategy), mean=ctx.data.mean, std=ctx.data.std)
           if config.dsa else None)
    smallest = int(torch.bincount(ctx.data.labels, minlength=ctx.num_classes).min())
    config = config.model_copy(update={"real_per_class": min(config.real_per_class, smallest)})
    update = cvar_net_update(config, ctx.num_classes, dsa)
    info = {"variant": config.variant, "alpha": config.alpha,
            "cvar_convention": config.cvar_convention,
            "centres_per_class": min(config.centres_per_class, ctx.ipc),
            "real_per_class": config.real_per_class,
            "cvar_gradient": config.variant == "paper"}
    return run_gradient_matching(ctx, config, "rdd-dc", net_update=update,
                                 meta={"rdd": info}, stream="dc")


@register_method("rdd-idm", RDDIDMConfig, RDD_IDM_PRESETS,
                 description="RDD: group-CVaR model-pool training in IDM (2025)")
def run_rdd_idm(ctx: DistillContext, config: RDDIDMConfig) -> DistilledSet:
    """IDM whose pool nets train with CE + group CVaR around the synthetic images."""
    variant = IDMVariant(
        "rdd-idm", pool_objective=rdd_pool_objective(config, ctx.num_classes),
        meta={"rdd": {"alpha": config.alpha, "cvar_convention": config.cvar_convention,
                      "centres_per_class": config.centres_per_class}})
    return run_idm_family(ctx, config, variant)
