"""Attack specifications: everything an attack result depends on, recorded with it."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class AttackSpec(BaseModel):
    """One attack configuration. ε and step sizes are in [0, 1] pixel units."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    norm: Literal["linf", "l2"] = "linf"
    eps: float = Field(8 / 255, ge=0)
    steps: int = Field(10, ge=0)
    step_size: float | None = Field(2 / 255, ge=0)
    random_start: bool = False
    restarts: int = Field(1, ge=1)
    loss: Literal["ce"] = "ce"
    targeted: bool = False
    target_policy: str = "next"
    seed: int = 0

    @property
    def label(self) -> str:
        """Short display name, e.g. ``pgd-T`` for targeted PGD."""
        return f"{self.name}{'-T' if self.targeted else ''}"
