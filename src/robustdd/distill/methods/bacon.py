"""``bacon``: Bayesian Optimal CONdensation (Zhou et al., arXiv 2406.01112), reference
``zhouzhengqd/BACON`` ``Code/BACON_cifar10.py`` / ``BACON_cifar100.py``.

The reference is IDM's script with the per-class matching term replaced (``reference/methods.md``
§7), so this method is :func:`robustdd.distill.methods.idm.run_idm_family` with BACON's term:

``L_c = NLL + 0.8·TV + 0.2·clip + ce_weight · acc(%) · CE``

NLL is the Gaussian negative log-likelihood of the synthetic mean embedding under the real
one with per-dimension scale exp(std of the real embeddings); TV is ½‖Δμ‖₁; the "clip" term is
~0 as the reference computes it (see :func:`robustdd.distill.losses.distribution.bacon_clip`).
Everything else (model pool, 2×2 mosaics, accuracy-weighted CE, per-class image steps, the
per-IPC table) is IDM's; ``command.txt`` differs only in adding ``--model_train_steps 50`` to
CIFAR-100 IPC 50.
"""

from __future__ import annotations

import copy
from functools import partial
from typing import Any

from pydantic import Field

from robustdd.distill.base import DistillContext, register_method
from robustdd.distill.losses.distribution import (
    BACON_CLIP_WEIGHT,
    BACON_TV_WEIGHT,
    bacon_loss,
)
from robustdd.distill.methods.idm import IDM_TABLE, IDMConfig, IDMVariant, run_idm_family
from robustdd.distill.methods.idm import PRESETS as IDM_PRESETS
from robustdd.distilled import DistilledSet

__all__ = ["BACON_TABLE", "PRESETS", "BACONConfig", "run_bacon"]

#: IDM's table with BACON's one change (CIFAR-100 IPC 50: 50 pool training steps).
BACON_TABLE = {name: dict(rows) for name, rows in IDM_TABLE.items()}
BACON_TABLE["cifar100"][50] = IDM_TABLE["cifar100"][50]._replace(model_train_steps=50)


class BACONConfig(IDMConfig):
    """IDM's hyperparameters plus the weights of BACON's TV and clip terms."""

    batch_real: int | None = Field(None, ge=2)  # the likelihood uses an unbiased std
    tv_weight: float = Field(BACON_TV_WEIGHT, ge=0)
    clip_weight: float = Field(BACON_CLIP_WEIGHT, ge=0)


# IDM's budgets (BACON's one per-IPC difference lives in BACON_TABLE).
PRESETS: dict[str, dict[str, Any]] = copy.deepcopy(IDM_PRESETS)


@register_method("bacon", BACONConfig, PRESETS,
                 description="Bayesian Optimal Condensation (Zhou et al. 2024)")
def run_bacon(ctx: DistillContext, config: BACONConfig) -> DistilledSet:
    """Run BACON and return 2×2-mosaic synthetic images in pixel space."""
    loss = partial(bacon_loss, tv_weight=config.tv_weight, clip_weight=config.clip_weight)
    return run_idm_family(ctx, config, IDMVariant("bacon", class_loss=loss, table=BACON_TABLE))
