"""Target-class policies for targeted attacks, valid for any number of classes."""

from __future__ import annotations

import torch

from robustdd.errors import UnknownNameError

TARGET_POLICIES = ("next", "random", "least-likely")  # valid for any number of classes
LEGACY_TARGET_POLICIES = ("next-mod-10",)  # the legacy suite's reference rule only


def choose_targets(labels: torch.Tensor, num_classes: int, policy: str = "next", *,
                   logits: torch.Tensor | None = None,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """Pick one target class per example, never the true class.

    * ``next``: ``(y + 1) mod C`` (BEARD/ROME's rule, with the real C instead of a fixed 10);
    * ``random``: uniform over the C − 1 other classes (needs ``generator``);
    * ``least-likely``: the class with the lowest logit other than y (needs ``logits``);
    * ``next-mod-10``: ``(y + 1) mod 10`` whatever C is — BEARD/ROME's hard-coded rule, kept
      only for the legacy suite; with C < 10 it would name classes that do not exist, so it
      refuses, and with C > 10 it differs from ``next`` (class 9 targets 0, and so does 19).
    """
    if num_classes < 2:
        raise ValueError("targeted attacks need at least two classes")
    if policy == "next":
        return (labels + 1) % num_classes
    if policy == "next-mod-10":
        if num_classes < 10:
            raise ValueError(f"target policy 'next-mod-10' (the legacy (y + 1) mod 10 rule) "
                             f"needs at least 10 classes, the model has {num_classes}")
        return (labels + 1) % 10
    if policy == "random":
        if generator is None:
            raise ValueError("target policy 'random' needs a generator")
        offset = torch.randint(1, num_classes, labels.shape, generator=generator)
        return (labels + offset.to(labels.device)) % num_classes
    if policy == "least-likely":
        if logits is None:
            raise ValueError("target policy 'least-likely' needs the clean logits")
        masked = logits.detach().clone()
        masked.scatter_(1, labels.view(-1, 1), float("inf"))
        return masked.argmin(dim=1)
    raise UnknownNameError("target policy", policy,
                           [*TARGET_POLICIES, *LEGACY_TARGET_POLICIES])
