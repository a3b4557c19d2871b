"""RDD: group distributionally robust dataset distillation (Vahidian et al., ICLR 2025).

The network a distillation method uses is trained on *real* data with a risk-averse loss over
clusters formed around the synthetic samples, so the synthetic set has to cover low-density
subgroups (``reference/methods.md`` §10; components in :mod:`robustdd.robust.cvar`):

* ``rdd-dc``: DC/DSA gradient matching whose inner-loop network update trains on fresh real
  batches (``real_per_class`` images of each class) instead of on S, with
  CE + mean_k CVaR_α(ℓ | c_k) + max_k CVaR_α(ℓ | c_k); c_k are the real images nearest (in the
  network's embedding) to centre k, the centres being a class's synthetic images (all of them
  when IPC < 10, else 10 random ones; Algorithm 1 and the paper summary), matched within the
  class. α = 0.8 read as the tail fraction by default (``cvar_convention``). Starts from real
  images (the paper's App. D).
* ``rdd-idm``: IDM whose model-pool training step uses the same objective, clusters formed
  around the current *decoded* synthetic images (the 4 quadrant images of each stored 2×2
  mosaic, which are what the pool sees), so the rule "all below 10, else 10 random" applies
  to 4·IPC images per class.

``variant="faithful"`` reproduces the released code (GLaD-DC base, ``distill_rdd.py``): the
update set is the augmented matching batch plus as many fresh real images per class; the
centres are all classes' augmented synthetic images pooled (10 per class by a greedy
farthest-from-the-last walk at IPC 50); its CVaR averages the *lowest* α-fraction through NumPy
and carries no gradient, so the network update is plain CE on the real data and the value is
only logged (recorded here as ``official_objective_*``, computed once per update before it);
it uses ``outer_loop = inner_loop = 2``, lr_img 1 (also this method's ``paper`` preset) and
noise initialisation (``shared_args.py``). The released code has no IDM variant; ``rdd-idm``
follows the authors' plug-in description and has no faithful form beyond plain IDM.
"""

from __future__ import annotations

import copy
from typing import Any, Literal, Self

import torch
from pydantic import BaseModel, Field, model_validator
from torch import Tensor, nn

from robustdd.distill.base import DistillContext, register_method
from robustdd.distill.methods.dc import DCConfig, run_gradient_matching
from robustdd.distill.methods.idm import PRESETS as IDM_PRESETS
from robustdd.distill.methods.idm import IDMConfig, IDMVariant, run_idm_family
from robustdd.distilled import DistilledSet
from robustdd.nn.dsa import DSA, DSAConfig, default_strategy
from robustdd.nn.train import TrainConfig, train_model
from robustdd.robust.cvar import (
    assign_clusters,
    choose_centres,
    greedy_centres,
    official_objective,
    rdd_objective,
    tail_fraction,
)

__all__ = ["RDDDCConfig", "RDDIDMConfig", "cvar_net_update", "rdd_pool_objective"]

#: Centres per class: all synthetic samples below 10 IPC, else 10 (methods.md §10.2).
MAX_CENTRES_PER_CLASS = 10


class _GroupCVaRSettings(BaseModel):
    """RDD's group-CVaR settings, shared by ``rdd-dc`` and ``rdd-idm``; a CVaR level its
    convention cannot use is refused when the settings are made."""

    alpha: float = Field(0.8, gt=0, le=1)
    cvar_convention: Literal["tail", "confidence"] = "tail"
    centres_per_class: int = Field(MAX_CENTRES_PER_CLASS, ge=1)

    @model_validator(mode="after")
    def check_tail_fraction(self) -> Self:
        tail_fraction(self.alpha, self.cvar_convention)
        return self


class RDDDCConfig(DCConfig, _GroupCVaRSettings):
    """DC's settings plus RDD's; defaults of the loop are ``shared_args.py``'s."""

    variant: Literal["paper", "faithful"] = "paper"
    real_per_class: int = Field(512, ge=1)  # paper variant's update set (the code's 256 + 256)
    # None: real images for the paper variant (RDD paper, App. D: "random initialization with
    # real samples"), noise for the faithful one (shared_args.py pix_init).
    init: Literal["real", "noise"] | None = None
    # shared_args.py: outer/inner 2/2 (get_loops is not used), lr_img 1, DSA.
    outer_loop: int | None = Field(2, ge=1)
    inner_loop: int | None = Field(2, ge=0)
    lr_img: float = Field(1.0, gt=0)
    iterations: int = Field(2000, ge=0)
    dsa: bool = True


class RDDIDMConfig(IDMConfig, _GroupCVaRSettings):
    """IDM's settings plus RDD's group-CVaR pool training."""


def _cluster_labels(net: nn.Module, real: Tensor, real_labels: Tensor, syn: Tensor,
                    syn_labels: Tensor, num_classes: int, per_class: int,
                    generator: torch.Generator) -> tuple[Tensor, int]:
    centres = choose_centres(syn_labels, num_classes, per_class, generator)
    groups = assign_clusters(net, real, real_labels, syn[centres], syn_labels[centres])
    return groups, int(centres.numel())


def _faithful_centres(matched_syn: Tensor, ipc: int) -> Tensor:
    """The released code's centres from this step's augmented synthetic batch [C, ipc, ...]:
    all of a class's images, except at IPC 50, where a greedy walk keeps 10."""
    if ipc != 50:
        return matched_syn.flatten(0, 1)
    return torch.cat([cls[greedy_centres(cls, MAX_CENTRES_PER_CLASS)] for cls in matched_syn])


def cvar_net_update(config: RDDDCConfig, num_classes: int, dsa: DSA | None,
                    log: dict[str, Any]):
    """The RDD-DC inner-loop network update (see the module docstring); the faithful form
    appends the released code's (gradient-free) CVaR objective value to ``log["values"]``.
    ``log["centres_used"]`` records how many centres (all classes) the last update used."""
    faithful = config.variant == "faithful"

    def update(net: nn.Module, real_batch, syn: Tensor, syn_labels: Tensor,
               inner: TrainConfig, g: torch.Generator, matched_real: Tensor,
               matched_syn: Tensor) -> None:
        if faithful:
            # distill_rdd.py: the augmented matching batch plus as many fresh real images per
            # class; clusters around all classes' augmented synthetic images (pooled).
            real = torch.cat([matched_real, real_batch(matched_real.shape[1])], dim=1)
        else:
            real = real_batch(config.real_per_class)  # [C, n, ...]
        n = real.shape[1]
        x = real.flatten(0, 1)
        y = torch.arange(num_classes, device=x.device).repeat_interleave(n)
        if faithful:
            centres = _faithful_centres(matched_syn, matched_syn.shape[1])
            log["centres_used"] = int(centres.shape[0])
            per = centres.shape[0] // num_classes
            centre_labels = torch.arange(num_classes, device=x.device).repeat_interleave(per)
            groups = assign_clusters(net, x, y, centres, centre_labels, pooled=True)
            with torch.no_grad():
                losses = nn.functional.cross_entropy(net(x), y, reduction="none")
            log["values"].append(official_objective(losses, groups, centres.shape[0],
                                                    config.alpha))
            # The code's CVaR carries no gradient: the update itself is CE on the real data.
            train_model(net, x, y, inner, g, augment=dsa)
            return
        groups, k = _cluster_labels(net, x, y, syn, syn_labels, num_classes,
                                    config.centres_per_class, g)
        log["centres_used"] = k
        # Labels carry (class, cluster) through the shared trainer's batching.
        both = torch.stack([y, groups], dim=1)

        def objective(model: nn.Module, xb: Tensor, yb: Tensor, _g: torch.Generator) -> Tensor:
            return rdd_objective(model(xb), yb[:, 0], yb[:, 1], k, config.alpha,
                                 config.cvar_convention)

        train_model(net, x, both, inner, g, augment=dsa, objective=objective)

    return update


def rdd_pool_objective(config: RDDIDMConfig, num_classes: int, log: dict[str, Any]):
    """RDD-IDM's pool training loss: CE + group CVaR around the current synthetic images (the
    decoded ones the pool sees, 4 per stored 2×2 mosaic); ``log["centres_used"]`` records how
    many centres (all classes) the clustering used."""

    def objective(net: nn.Module, logits: Tensor, x: Tensor, y: Tensor, syn: Tensor,
                  syn_labels: Tensor, g: torch.Generator) -> Tensor:
        groups, k = _cluster_labels(net, x, y, syn, syn_labels, num_classes,
                                    config.centres_per_class, g)
        log["centres_used"] = k
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
    faithful = config.variant == "faithful"
    strategy = config.dsa_strategy or default_strategy(ctx.data.name)
    dsa = (DSA(DSAConfig(strategy=strategy), mean=ctx.data.mean, std=ctx.data.std)
           if config.dsa else None)
    smallest = int(torch.bincount(ctx.data.labels, minlength=ctx.num_classes).min())
    init = config.init or ("noise" if faithful else "real")
    config = config.model_copy(update={"real_per_class": min(config.real_per_class, smallest),
                                       "init": init})
    log: dict[str, Any] = {"values": []}
    update = cvar_net_update(config, ctx.num_classes, dsa, log)
    if faithful:
        centres = ctx.ipc if ctx.ipc != 50 else MAX_CENTRES_PER_CLASS
    else:
        centres = min(config.centres_per_class, ctx.ipc)
    info: dict[str, Any] = {
        "variant": config.variant, "alpha": config.alpha, "init": init,
        "cvar_convention": "official" if faithful else config.cvar_convention,
        "centres_per_class": centres, "clusters": "pooled" if faithful else "within class",
        "update_set_per_class": (2 * min(config.batch_real, smallest) if faithful
                                 else config.real_per_class),
        "cvar_gradient": not faithful}
    result = run_gradient_matching(ctx, config, "rdd-dc", net_update=update,
                                   meta={"rdd": info}, stream="dc")
    if "centres_used" in log:  # absent when this run made no network update
        info["centres_used"] = log["centres_used"]
    if faithful and log["values"]:  # the code's logged CVaR objective, over this run's updates
        values = log["values"]
        info.update(official_objective_first=values[0], official_objective_last=values[-1],
                    official_objective_mean=sum(values) / len(values))
    return result


@register_method("rdd-idm", RDDIDMConfig, RDD_IDM_PRESETS,
                 description="RDD: group-CVaR model-pool training in IDM (2025)")
def run_rdd_idm(ctx: DistillContext, config: RDDIDMConfig) -> DistilledSet:
    """IDM whose pool nets train with CE + group CVaR around the synthetic images."""
    log: dict[str, Any] = {"alpha": config.alpha, "cvar_convention": config.cvar_convention,
                           "centres_per_class": config.centres_per_class}
    variant = IDMVariant("rdd-idm",
                         pool_objective=rdd_pool_objective(config, ctx.num_classes, log),
                         meta={"rdd": log})
    return run_idm_family(ctx, config, variant)
