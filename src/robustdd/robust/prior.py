"""The adversarial robust prior: real images perturbed by PGD against a given network.

ROME (Zhou et al., ICML 2025) matches synthetic embeddings to those of x̂ = PGD(f, x), real
images pushed towards a target class ((y + 1) mod C) by L∞ PGD against the matching network f
(``reference/rome-and-beard.md`` §1.6). Two spaces:

* ``pixel`` (the default, the paper's intent): PGD on [0, 1] pixels of a model that normalises
  internally; ε and the step are pixel units; the [0, 1] clamp is in pixel space.
* ``normalised`` (ROME's released code): torchattacks called on mean/std-normalised tensors
  without registering the normalisation, so ε and the step are normalised units and the
  [0, 1] clamp happens in normalised space (every pixel ends between its channel mean and
  mean + 1 std). Reproduced through :mod:`robustdd.attacks.legacy`; the result is mapped back
  to pixels, exactly (those pixels already lie in [0, 1]).

The same perturbation serves as a :data:`~robustdd.distill.pool.Perturb` hook, for in-loop
adversarial training of a model pool (ROME trains IDM's pool on targeted PGD examples with the
true labels).
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn

from robustdd.attacks.gradient import eval_mode, pgd_linf
from robustdd.attacks.legacy import LEGACY_STEP, normalised_view
from robustdd.attacks.targets import choose_targets
from robustdd.batching import chunked_for

__all__ = ["LEGACY_PRIOR", "PriorConfig", "adversarial_prior", "prior_hook"]


class PriorConfig(BaseModel):
    """PGD settings of the robust prior (defaults: ROME's ε 8/255, 10 steps, targeted, with the
    2/225 step typo corrected to 2/255)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    eps: float = Field(8 / 255, ge=0)
    step_size: float = Field(2 / 255, gt=0)
    steps: int = Field(10, ge=1)
    random_start: bool = True
    targeted: bool = True
    target_policy: Literal["next", "random", "least-likely", "next-mod-10"] = "next"
    space: Literal["pixel", "normalised"] = "pixel"


#: ROME's released code: normalised space, step 2/225, targets (y + 1) mod 10.
LEGACY_PRIOR = PriorConfig(step_size=LEGACY_STEP, target_policy="next-mod-10",
                           space="normalised")


def adversarial_prior(net: nn.Module, images: Tensor, labels: Tensor, config: PriorConfig,
                      num_classes: int, generator: torch.Generator) -> Tensor:
    """x̂: ``images`` (pixels) perturbed by PGD against ``net`` as ``config`` says.

    Targets come from ``config.target_policy`` for ``num_classes`` classes; the random start
    (and random targets) from ``generator``. ``net`` runs in eval mode with frozen parameters
    and is restored afterwards. Returns detached pixels.
    """
    images = images.detach().clamp(0.0, 1.0)  # DSA colour jitter may leave [0, 1]
    goal = labels
    if config.targeted:
        logits = None
        if config.target_policy == "least-likely":
            with eval_mode(net), torch.no_grad():
                logits = net(images)
        goal = choose_targets(labels, num_classes, config.target_policy, logits=logits,
                              generator=generator)
    kwargs = {"eps": config.eps, "steps": config.steps, "step_size": config.step_size,
              "targeted": config.targeted, "random_start": config.random_start,
              "generator": generator}
    with eval_mode(net):
        if config.space == "pixel":
            return pgd_linf(chunked_for(net, images), images, goal, **kwargs).detach()
        view = normalised_view(net)
        adv = pgd_linf(chunked_for(view.net, images), view.to_normalised(images), goal,
                       **kwargs)
        return view.to_pixels(adv).detach()


def prior_hook(config: PriorConfig, num_classes: int):
    """``hook(net, images, labels, generator) -> x̂`` for the IDM loop and the model pool."""

    def hook(net: nn.Module, images: Tensor, labels: Tensor,
             generator: torch.Generator) -> Tensor:
        return adversarial_prior(net, images, labels, config, num_classes, generator)

    return hook
