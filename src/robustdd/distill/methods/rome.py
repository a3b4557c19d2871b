"""``rome``: RObust dataset distillation via the InforMation BottlenEck (Zhou et al., ICML 2025).

ROME is IDM (:func:`robustdd.distill.methods.idm.run_idm_family`: model pool, 2×2 mosaics,
Siamese DSA, one image step per class) with

* a **robust prior**: the real batch of each class is replaced by x̂ = targeted PGD against the
  matching network f (:mod:`robustdd.robust.prior`), ε 8/255, 10 steps, target (y + 1) mod C;
* the loss (paper Eq. 12) ``(1 − α)·CE(y, f(x_syn)) + α·‖mean e(x_syn) − mean e(x̂)‖²`` per
  class, α = 0.2;
* f a **robust pretrained model** (RPM: a network adversarially trained on the full real data,
  :mod:`robustdd.robust.adversarial_training`, cached) or IDM's pool trained adversarially in
  the loop.

Two variants (``reference/rome-and-beard.md`` §1.4–1.7, §1.11):

* ``paper`` (default): PGD in pixel space with step 2/255 and targets (y + 1) mod C; squared L2
  distance; plain (1 − α)·CE; f = the RPM; the pool (when the RPM is switched off) is
  adversarially trained with the same pixel-space PGD.
* ``faithful``: the released ``ROME_cifar10.py``: PGD on normalised tensors with the [0, 1]
  clamp in normalised space, step 2/225, targets (y + 1) mod 10; the distance (½‖Δμ‖₁)²
  ("total_variation_2"); CE weighted by ``ce_weight`` (per-setting table) × (1 − α) × the pool
  net's running training accuracy in percent; f = IDM's pool, adversarially trained in the loop
  with that PGD (true labels, targeted examples). The code has no pretrained model.

Ablations (ROME Table 4, Figure 4): ``robust_pretrained`` (RPM on/off), ``adversarial_perturbation``
(AP on/off: x̂ = x when off), ``alpha``.
"""

from __future__ import annotations

from functools import partial
from typing import Any, Literal

from pydantic import Field, model_validator
from torch import Tensor

from robustdd.distill.base import DistillContext, register_method
from robustdd.distill.methods.bacon import BACON_TABLE
from robustdd.distill.methods.idm import PRESETS as IDM_PRESETS
from robustdd.distill.methods.idm import IDMConfig, IDMVariant, run_idm_family
from robustdd.distilled import DistilledSet
from robustdd.robust.adversarial_training import (
    AdversarialTrainingConfig,
    adversarially_trained_model,
)
from robustdd.robust.prior import LEGACY_PRIOR, PriorConfig, prior_hook

__all__ = ["PRESETS", "ROME_TABLE", "ROMEConfig", "rome_distance", "run_rome"]

#: ROME's ``command.txt`` equals IDM's plus ``--model_train_steps 50`` at CIFAR-100 IPC 50
#: (rome-and-beard.md §1.1), which is BACON's table.
ROME_TABLE = BACON_TABLE


def rome_distance(real: Tensor, syn: Tensor, kind: str, alpha: float) -> Tensor:
    """α · distance of the mean embeddings: ``l2sq`` = ‖Δμ‖₂², ``tv2`` = (½‖Δμ‖₁)²."""
    delta = syn.mean(-2) - real.mean(-2)
    if kind == "l2sq":
        return alpha * (delta ** 2).sum(-1)
    if kind == "tv2":
        return alpha * (0.5 * delta.abs().sum(-1)) ** 2
    raise ValueError(f"unknown ROME distance {kind!r}; known: l2sq, tv2")


class ROMEConfig(IDMConfig):
    """IDM's settings plus ROME's. ``None`` fields take the variant's value (module docstring)."""

    variant: Literal["paper", "faithful"] = "paper"
    alpha: float = Field(0.2, ge=0, le=1)
    distance: Literal["l2sq", "tv2"] | None = None
    robust_pretrained: bool | None = None  # RPM: paper True, faithful False
    adversarial_perturbation: bool = True  # AP
    adversarial_pool: bool = True  # train the pool on PGD examples (when it is used)
    accuracy_weighted_ce: bool | None = None  # paper False, faithful True
    prior_eps: float = Field(8 / 255, ge=0)
    prior_steps: int = Field(10, ge=1)
    prior_step_size: float | None = Field(None, gt=0)  # paper 2/255, faithful 2/225
    # The prior's attack mode (the paper and the code: targeted, random start).
    prior_targeted: bool = True
    prior_random_start: bool = True
    prior_target_policy: Literal["next", "random", "least-likely", "next-mod-10"] | None = None
    # The robust pretrained model (trained once per dataset/seed/config and cached).
    rpm_method: Literal["pgd", "fgsm-rs"] = "pgd"
    rpm_epochs: int = Field(100, ge=0)
    rpm_steps: int = Field(7, ge=1)
    rpm_train_examples: int | None = Field(None, ge=1)
    rpm_seed: int = 0

    @model_validator(mode="after")
    def _rpm_without_accuracy_weighted_ce(self) -> ROMEConfig:
        # Checked here, not only when the loop is built, so the error comes before the RPM's
        # (up to 101-epoch) adversarial training.
        r = self.resolved()
        if r["robust_pretrained"] and r["accuracy_weighted_ce"]:
            raise ValueError(
                "the robust pretrained model (RPM) cannot be combined with accuracy-weighted CE, "
                "which uses the pool nets' running accuracies; set robust_pretrained: false "
                "(the faithful variant's default) or accuracy_weighted_ce: false")
        return self

    def resolved(self) -> dict[str, Any]:
        """The variant-dependent settings after filling ``None`` fields."""
        faithful = self.variant == "faithful"
        base = LEGACY_PRIOR if faithful else PriorConfig()
        return {
            "distance": self.distance or ("tv2" if faithful else "l2sq"),
            "robust_pretrained": (not faithful) if self.robust_pretrained is None
            else self.robust_pretrained,
            "accuracy_weighted_ce": faithful if self.accuracy_weighted_ce is None
            else self.accuracy_weighted_ce,
            "prior": base.model_copy(update={
                "eps": self.prior_eps, "steps": self.prior_steps,
                "step_size": self.prior_step_size or base.step_size,
                "targeted": self.prior_targeted, "random_start": self.prior_random_start,
                "target_policy": self.prior_target_policy or base.target_policy}),
        }


PRESETS: dict[str, dict[str, Any]] = {
    "smoke": {**IDM_PRESETS["smoke"], "prior_steps": 2, "rpm_method": "fgsm-rs",
              "rpm_epochs": 1, "rpm_train_examples": 256},
    # IDM's small budget; PGD-5 instead of PGD-10 for the prior and the pool (the prior runs
    # per class and iteration, the dominant cost on a CPU); a fast-AT RPM on 5,000 images.
    "small": {**IDM_PRESETS["small"], "prior_steps": 5, "rpm_method": "fgsm-rs",
              "rpm_epochs": 10, "rpm_train_examples": 5000},
    # ROME's commands (20,000 iterations, PGD-10); the RPM is PGD-7 AT for 100 (+1) epochs on
    # the whole split (our recipe: the paper does not say how its robust model was trained).
    "paper": {**IDM_PRESETS["paper"]},
}


@register_method("rome", ROMEConfig, PRESETS,
                 description="ROME: robust DD via the information bottleneck (Zhou et al. 2025)")
def run_rome(ctx: DistillContext, config: ROMEConfig) -> DistilledSet:
    """Run ROME (variant ``config.variant``) and return 2×2-mosaic images in pixel space."""
    r = config.resolved()
    C = ctx.num_classes
    prior: PriorConfig = r["prior"]
    hook = prior_hook(prior, C)
    ce_weight = config.ce_weight
    if ce_weight is None and not r["accuracy_weighted_ce"]:
        ce_weight = 1.0  # paper: (1 − α)·CE, no table weight
    config = config.model_copy(update={"ce_weight": ce_weight})
    rpm, rpm_record = None, None
    if r["robust_pretrained"]:
        at = AdversarialTrainingConfig(method=config.rpm_method, eps=prior.eps,
                                       steps=config.rpm_steps, epochs=config.rpm_epochs,
                                       train_examples=config.rpm_train_examples, arch=ctx.arch)
        rpm, rpm_record = adversarially_trained_model(ctx.data, at, seed=config.rpm_seed,
                                                      device=ctx.device, progress=ctx.progress)
    variant = IDMVariant(
        "rome",
        class_loss=partial(rome_distance, kind=r["distance"], alpha=config.alpha),
        table=ROME_TABLE, ce_scale=1.0 - config.alpha,
        accuracy_weighted_ce=r["accuracy_weighted_ce"],
        real_transform=hook if config.adversarial_perturbation else None,
        pool_perturb=hook if (config.adversarial_pool and rpm is None) else None,
        matching_net=rpm,
        meta={"rome": {"variant": config.variant, "alpha": config.alpha,
                       "distance": r["distance"], "robust_pretrained": r["robust_pretrained"],
                       "adversarial_perturbation": config.adversarial_perturbation,
                       "adversarial_pool": config.adversarial_pool and rpm is None,
                       "accuracy_weighted_ce": r["accuracy_weighted_ce"],
                       "prior": prior.model_dump(),
                       "robust_model": rpm_record}})
    return run_idm_family(ctx, config, variant)
