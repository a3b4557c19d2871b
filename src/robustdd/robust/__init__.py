"""Reusable robust components that robust distillation methods compose: adversarially trained
networks, the adversarial robust prior (ROME), the curvature penalty (GUARD) and the group-CVaR
objective (RDD)."""

from robustdd.robust.adversarial_training import (
    AT_PRESETS,
    AdversarialTrainingConfig,
    adversarial_batch_hook,
    adversarially_trained_model,
    at_config,
)
from robustdd.robust.curvature import curvature_objective, curvature_penalty
from robustdd.robust.cvar import cvar, group_cvar, rdd_objective
from robustdd.robust.prior import PriorConfig, adversarial_prior

__all__ = ["AT_PRESETS", "AdversarialTrainingConfig", "PriorConfig", "adversarial_batch_hook",
           "adversarial_prior", "adversarially_trained_model", "at_config",
           "curvature_objective", "curvature_penalty", "cvar", "group_cvar", "rdd_objective"]
