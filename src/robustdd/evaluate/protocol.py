"""The evaluation protocol: how models are trained on a distilled set, what they are tested on."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from robustdd.attacks import AttackSpec
from robustdd.nn.train import TrainConfig
from robustdd.profiles import Profile, get_profile


def _with_budget(cls: Any, prof: Profile, epochs: int, overrides: dict[str, Any],
                 what: str) -> Any:
    """``cls`` with the profile's epochs, K and test subsets, updated by ``overrides``."""
    values: dict[str, Any] = {"epochs": epochs, "num_models": prof.eval_models,
                              "test_examples": prof.test_examples,
                              "attack_examples": prof.attack_examples, **overrides}
    try:
        return cls(**values)
    except ValidationError as exc:
        raise ValueError(f"invalid {what}: {exc}") from exc


class EvalProtocol(BaseModel):
    """Standard DD protocol (``reference/methods.md`` §1.4), budgets taken from a profile.

    ConvNet-3 (or the dataset's default architecture), SGD lr 0.01, momentum 0.9, weight decay
    5e-4, ``epochs`` (+1) epochs, lr ×0.1 after epoch ``epochs // 2 + 1`` with momentum reset,
    batch 256, per-sample DSA; K freshly initialised models reported as mean ± std (population
    std, as the reference's ``np.std``).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = "dd-standard"
    arch: str | None = None
    epochs: int = Field(1000, ge=0)
    lr: float = Field(0.01, gt=0)
    momentum: float = Field(0.9, ge=0)
    weight_decay: float = Field(5e-4, ge=0)
    batch_size: int = Field(256, ge=1)
    augmentation: Literal["dsa", "none"] = "dsa"
    dsa_strategy: str | None = None
    num_models: int = Field(5, ge=1)
    test_examples: int | None = Field(None, ge=1)
    attack_examples: int | None = Field(None, ge=1)
    use_learned_lr: bool = True

    def train_config(self, lr: float | None = None) -> TrainConfig:
        return TrainConfig(epochs=self.epochs, lr=lr if lr is not None else self.lr,
                           momentum=self.momentum, weight_decay=self.weight_decay,
                           batch_size=self.batch_size)

    @classmethod
    def from_profile(cls, profile: str | Profile, **overrides: Any) -> EvalProtocol:
        """The protocol with a profile's budget, updated by ``overrides``."""
        prof = get_profile(profile) if isinstance(profile, str) else profile
        return _with_budget(cls, prof, prof.eval_epochs, overrides, "evaluation protocol")


class KDProtocol(BaseModel):
    """SRe2L's CIFAR relabel + evaluation protocol (``relabel_cifar.py``, methods.md §8).

    A fresh student (default: the set's teacher architecture, ResNet-18 with BatchNorm in the
    reference) trained ``epochs`` epochs by online knowledge distillation from the set's
    teacher: AdamW (lr 1e-3, weight decay 0.01), per-epoch cosine schedule, batch 128, random
    crop (padding 4) + horizontal flip, Mixup α 0.8, KL at temperature 30 without T². The
    hard labels of the set are not used. K students, mean ± population std.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Literal["sre2l-kd"] = "sre2l-kd"
    arch: str | None = None  # None: the teacher's architecture
    epochs: int = Field(400, ge=1)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    batch_size: int = Field(128, ge=1)
    temperature: float = Field(30.0, gt=0)
    mixup_alpha: float = Field(0.8, ge=0)
    crop_padding: int = Field(4, ge=0)
    flip: bool = True
    num_models: int = Field(5, ge=1)
    test_examples: int | None = Field(None, ge=1)
    attack_examples: int | None = Field(None, ge=1)

    def train_config(self, lr: float | None = None) -> TrainConfig:
        return TrainConfig(epochs=self.epochs, lr=lr if lr is not None else self.lr,
                           momentum=0.0, weight_decay=self.weight_decay,
                           batch_size=self.batch_size, decay=False, extra_epoch=False,
                           cosine=True, optimizer="adamw")

    @classmethod
    def from_profile(cls, profile: str | Profile, **overrides: Any) -> KDProtocol:
        """The protocol with a profile's budget (``kd_eval_epochs``, K, test subsets)."""
        prof = get_profile(profile) if isinstance(profile, str) else profile
        return _with_budget(cls, prof, prof.kd_eval_epochs, overrides, "KD evaluation protocol")


#: Protocols a distilled set may name in ``meta["protocol"]["name"]``.
PROTOCOLS = {"dd-standard": EvalProtocol, "sre2l-kd": KDProtocol}


def default_attacks(profile: str | Profile) -> list[AttackSpec]:
    """The attacks a profile evaluates by default: FGSM, PGD-L∞ untargeted and targeted.

    ε = 8/255 and step 2/255 in pixel units (BEARD's values, ``reference/rome-and-beard.md``
    §2.3, with the 2/225 typo corrected); targets (y + 1) mod C.
    """
    prof = get_profile(profile) if isinstance(profile, str) else profile
    steps = prof.attack_steps
    return [
        AttackSpec(name="fgsm", eps=8 / 255, steps=1, step_size=None),
        AttackSpec(name="pgd", eps=8 / 255, steps=steps, step_size=2 / 255),
        AttackSpec(name="fgsm", eps=8 / 255, steps=1, step_size=None, targeted=True),
        AttackSpec(name="pgd", eps=8 / 255, steps=steps, step_size=2 / 255, targeted=True),
    ]
