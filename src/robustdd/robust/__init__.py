"""Reusable robust components: adversarially trained networks (and, later, the robust prior,
curvature penalty and group-CVaR objective that robust distillation methods compose)."""

from robustdd.robust.adversarial_training import (
    AT_PRESETS,
    AdversarialTrainingConfig,
    adversarial_batch_hook,
    adversarially_trained_model,
    at_config,
)

__all__ = ["AT_PRESETS", "AdversarialTrainingConfig", "adversarial_batch_hook",
           "adversarially_trained_model", "at_config"]
