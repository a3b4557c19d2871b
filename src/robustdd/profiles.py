"""Budgets as configuration: the ``smoke``, ``small`` and ``paper`` profiles.

A profile sets the evaluation budget (training epochs, number of models K, test and attack
examples, attack steps). Distillation budgets (iterations, real batch size) are per-method
presets keyed by the same profile names (see each method's ``PRESETS``). Every value can be
overridden.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from robustdd.errors import UnknownNameError


class Profile(BaseModel):
    """Evaluation budget of a profile."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    description: str
    eval_epochs: int = Field(ge=0)
    eval_models: int = Field(ge=1)
    test_examples: int | None = Field(default=None, ge=1)
    attack_examples: int | None = Field(default=None, ge=1)
    attack_steps: int = Field(10, ge=1)
    # Student epochs of the SRe2L online-KD protocol (``reference/methods.md`` §8).
    kd_eval_epochs: int = Field(400, ge=1)


PROFILES: dict[str, Profile] = {
    "smoke": Profile(
        name="smoke", description="seconds: wiring checks for tests",
        eval_epochs=4, eval_models=2, test_examples=200, attack_examples=64, attack_steps=3,
        kd_eval_epochs=4),
    "small": Profile(
        name="small", description="minutes on a 2-core CPU",
        eval_epochs=300, eval_models=3, test_examples=2000, attack_examples=500,
        attack_steps=10, kd_eval_epochs=300),
    # The published protocol (reference/methods.md §1.4; BEARD §2.2): 1000 (+1) epochs, whole
    # test set attacked. DM's readme reports 5 models per set; we default to K = 5. The KD
    # protocol's 400 student epochs are relabel_cifar.sh's.
    "paper": Profile(
        name="paper", description="the published protocol; meant for a GPU",
        eval_epochs=1000, eval_models=5, test_examples=None, attack_examples=None,
        attack_steps=10, kd_eval_epochs=400),
}


def get_profile(name: str) -> Profile:
    """Look a profile up by name; unknown names list the known ones."""
    if name not in PROFILES:
        raise UnknownNameError("profile", name, list(PROFILES))
    return PROFILES[name]
