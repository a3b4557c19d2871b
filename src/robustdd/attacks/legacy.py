"""The legacy BEARD/ROME attack semantics, reproduced on purpose (never a default).

BEARD's evaluation and ROME's robust prior call torchattacks 3.5.1 on *normalised* tensors
without registering the normalisation (``reference/rome-and-beard.md`` §1.6, §2.3). The
consequences this module reproduces, so that published numbers can be compared like for like:

* ε and step sizes are in normalised units (8/255 normalised ≈ 1.6/255 of a CIFAR pixel);
* every [0, 1] clamp of the attacks happens in normalised space: an adversarial pixel ends up
  between its channel mean and mean + 1 std;
* PGD's step is 2/225 (a typo for 2/255), targets are (y + 1) mod 10 whatever the number of
  classes (target policy ``next-mod-10``), DeepFool is torchattacks' algorithm, AutoAttack runs
  10 iterations, and the targeted DeepFool/AutoAttack runs evaluate the clean images.

An attack spec with ``space="normalised"`` runs on the model's inner network (the part after
its :class:`~robustdd.nn.normalize.Normalize`) with the normalised images as its input; its
adversarial images are mapped back to pixels so that everything downstream is unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

LEGACY_STEP = 2 / 225  # sic: BEARD/ROME's typo for 2/255
LEGACY_CLEAN_PASS = ("deepfool", "autoattack")


@dataclass
class NormalisedView:
    """A pixel-space model seen as (inner network, normalisation) — the legacy attack space."""

    net: nn.Module
    mean: torch.Tensor
    std: torch.Tensor

    def to_normalised(self, pixels: torch.Tensor) -> torch.Tensor:
        return (pixels - self.mean) / self.std

    def to_pixels(self, normalised: torch.Tensor) -> torch.Tensor:
        return (normalised * self.std + self.mean).clamp(0.0, 1.0)


def normalised_view(model: nn.Module) -> NormalisedView:
    """Split a model that normalises internally (``NormalizedModel``) for legacy attacks."""
    norm = getattr(model, "normalize", None)
    net = getattr(model, "net", None)
    if net is None or norm is None or not hasattr(norm, "mean") or not hasattr(norm, "std"):
        raise ValueError("legacy (normalised-space) attacks need a model that normalises its "
                         "input internally (robustdd's NormalizedModel, with .normalize and "
                         f".net); got {type(model).__name__}")
    return NormalisedView(net, norm.mean, norm.std)
