"""How a model is trained on a distilled set: the one place that reads a set's protocol needs.

A set is evaluated with the protocol it names in ``meta["protocol"]["name"]`` (default
``dd-standard``):

* ``dd-standard`` (:class:`EvalProtocol`): the dataset's ConvNet, SGD, DSA. A set carrying a ZCA
  whitening (MTT ``--zca``) is trained as MTT evaluates it: the model is ``net(zca(x))`` and DSA
  acts on the whitened images (``whitened_space_augment``); a learned lr (MTT) replaces the
  protocol's unless ``use_learned_lr`` is off.
* ``sre2l-kd`` (:class:`KDProtocol`): online KD from the teacher stored with the set (SRe2L).

:func:`evaluate` and the transfer matrix both train through :func:`recipe_for_set`, so a model
trained on a set is the same model whichever evaluation asks for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from robustdd.data import ImageDataset, dataset_info
from robustdd.distilled import DistilledSet
from robustdd.errors import UnknownNameError
from robustdd.evaluate.protocol import PROTOCOLS, EvalProtocol, KDProtocol
from robustdd.nn import build_model
from robustdd.nn.dsa import DSA, DSAConfig, default_strategy
from robustdd.nn.kd import kd_objective, random_crop_flip
from robustdd.nn.train import Augment, Objective, TrainConfig
from robustdd.nn.zca import ZCAWhitening, whitened_space_augment, wrap_with_zca
from robustdd.profiles import Profile


@dataclass
class TrainingRecipe:
    """Everything needed to train one evaluation model, and its description for records."""

    protocol: EvalProtocol | KDProtocol
    arch: str
    train_config: TrainConfig
    augment: Augment | None
    objective: Objective | None
    zca: ZCAWhitening | None
    details: dict[str, Any]

    def build(self, test: ImageDataset, seed: int, device: torch.device) -> nn.Module:
        """A freshly initialised model (seeded) for ``test``'s shapes, normalising its input."""
        model = build_model(self.arch, test.num_classes, test.channels, test.image_size,
                            mean=test.mean, std=test.std, seed=seed, device=device)
        return wrap_with_zca(model, self.zca) if self.zca is not None else model

    def record(self) -> dict[str, Any]:
        """The protocol as stored in result records."""
        return {**self.protocol.model_dump(), "arch": self.arch, **self.details,
                "train": self.train_config.to_dict()}


def default_arch(dataset: str) -> str:
    """The dataset's evaluation architecture (ConvNet-3 for unregistered names)."""
    try:
        return dataset_info(dataset).default_arch
    except UnknownNameError:
        return "convnet"


def standard_recipe(protocol: EvalProtocol, test: ImageDataset, lr: float | None = None,
                    zca: ZCAWhitening | None = None) -> TrainingRecipe:
    """The ``dd-standard`` recipe (optionally under a ZCA whitening)."""
    arch = protocol.arch or default_arch(test.name)
    strategy = protocol.dsa_strategy or default_strategy(test.name)
    augment: Augment | None = None
    if protocol.augmentation == "dsa":
        if zca is None:
            augment = DSA(DSAConfig(strategy=strategy), mean=test.mean, std=test.std)
        else:  # MTT: DSA on the whitened images, no mean/std
            augment = whitened_space_augment(DSA(DSAConfig(strategy=strategy)), zca)
    details: dict[str, Any] = {"dsa_strategy": strategy, "zca": zca is not None}
    return TrainingRecipe(protocol, arch, protocol.train_config(lr), augment, None, zca, details)


def recipe_for_set(dset: DistilledSet, test: ImageDataset, profile: Profile,
                   device: torch.device, **overrides: Any) -> TrainingRecipe:
    """The recipe the set's protocol asks for, with ``profile``'s budget and ``overrides``."""
    stored = dset.meta.get("protocol") or {}
    name = stored.get("name", "dd-standard")
    if name not in PROTOCOLS:
        raise ValueError(f"distilled set names evaluation protocol {name!r}; known: "
                         f"{', '.join(PROTOCOLS)}")
    if name == "dd-standard":
        protocol = EvalProtocol.from_profile(profile, **overrides)
        lr = dset.lr if (protocol.use_learned_lr and dset.lr is not None) else None
        return standard_recipe(protocol, test, lr, dset.zca)
    kd = KDProtocol.from_profile(profile, **{"arch": stored.get("arch"), **overrides})
    if dset.teacher is None:
        raise ValueError("the sre2l-kd protocol distils from the set's teacher, but this set "
                         "carries none (distil it again with robustdd)")
    teacher = dset.teacher.build(test.num_classes, test.channels, test.image_size, test.mean,
                                 test.std, device)
    arch = kd.arch or dset.teacher.arch

    def augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        return random_crop_flip(x, g, kd.crop_padding, kd.flip)

    return TrainingRecipe(kd, arch, kd.train_config(), augment,
                          kd_objective(teacher, kd.temperature, kd.mixup_alpha), None,
                          {"augmentation": "random crop + flip, mixup",
                           "teacher_arch": dset.teacher.arch})
