"""Attack specifications: everything an attack result depends on, recorded with it."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

# Per-attack defaults that differ from the generic (L∞) ones below, applied to fields a spec does
# not set explicitly: BEARD's settings (reference/rome-and-beard.md §2.3) in pixel units.
ATTACK_DEFAULTS: dict[str, dict[str, Any]] = {
    "pgd-l2": {"norm": "l2", "eps": 128 / 255, "step_size": 15 / 255},
    "cw": {"norm": "l2", "steps": 100, "loss": "margin"},
    "deepfool": {"norm": "l2", "steps": 50},
    "square": {"loss": "margin", "steps": 0, "step_size": None},
    "spsa": {"loss": "margin", "steps": 1, "step_size": None},
    "autoattack": {"steps": 0, "step_size": None},
}


class AttackSpec(BaseModel):
    """One attack configuration. ε and step sizes are in [0, 1] pixel units.

    Fields a spec leaves unset take the attack's defaults from :data:`ATTACK_DEFAULTS` (e.g.
    ``AttackSpec(name="cw")`` is L2 with 100 steps and the CW margin loss), else the generic
    defaults below. ``c``, ``kappa`` and ``lr`` are CW's; ``overshoot`` is DeepFool's; ``decay``
    is MIM's momentum factor. CW and DeepFool are unbounded: they ignore ``eps``.
    ``batch_size`` is how many images one attack call sees (BEARD's test loaders use 256): it
    bounds memory, and CW's batch-wide early stop is decided per batch of that size.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    norm: Literal["linf", "l2"] = "linf"
    eps: float = Field(8 / 255, ge=0)
    steps: int = Field(10, ge=0)
    step_size: float | None = Field(2 / 255, ge=0)
    random_start: bool = False
    restarts: int = Field(1, ge=1)
    loss: Literal["ce", "margin"] = "ce"
    targeted: bool = False
    target_policy: str = "next"
    seed: int = 0
    c: float = Field(1.0, ge=0)
    kappa: float = Field(0.0, ge=0)
    lr: float = Field(0.01, gt=0)
    overshoot: float = Field(0.02, ge=0)
    decay: float = Field(1.0, ge=0)
    queries: int = Field(5000, ge=1)
    p_init: float = Field(0.8, gt=0, le=1)
    delta: float = Field(0.01, gt=0)
    samples: int = Field(128, ge=1)
    version: Literal["standard", "plus", "custom"] = "standard"
    components: tuple[str, ...] | None = None
    variant: str | None = None
    space: Literal["pixel", "normalised"] = "pixel"
    batch_size: int = Field(256, ge=1)

    @model_validator(mode="before")
    @classmethod
    def _attack_defaults(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("name") in ATTACK_DEFAULTS:
            return {**ATTACK_DEFAULTS[data["name"]], **data}
        return data

    @property
    def label(self) -> str:
        """Short display name, e.g. ``pgd-T`` for targeted PGD, ``legacy-pgd-T`` in the legacy
        normalised space."""
        prefix = "legacy-" if self.space == "normalised" else ""
        return f"{prefix}{self.name}{'-T' if self.targeted else ''}"
