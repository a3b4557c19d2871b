"""Attacks by name, each with its runner and its targeted form (or its absence) declared."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from robustdd.attacks.gradient import eval_mode, fgsm, pgd_linf
from robustdd.attacks.spec import AttackSpec
from robustdd.attacks.targets import choose_targets
from robustdd.errors import UnknownNameError

# runner(model, images, goal_labels, spec, generator) -> (adversarial, input gradients per example)
Runner = Callable[[nn.Module, torch.Tensor, torch.Tensor, AttackSpec, torch.Generator],
                  tuple[torch.Tensor, int]]


@dataclass(frozen=True)
class AttackInfo:
    """An attack: its norms, whether it has a targeted form, and how to run it."""

    name: str
    norms: tuple[str, ...]
    targeted: bool
    description: str
    runner: Runner


def _run_fgsm(model, images, goal, spec, generator):
    if spec.restarts != 1:
        raise ValueError("fgsm is deterministic: restarts must be 1")
    return fgsm(model, images, goal, eps=spec.eps, targeted=spec.targeted), 1


def _run_pgd(model, images, goal, spec, generator):
    # Without an explicit step, 2.5·ε/steps (Madry et al.'s rule of thumb).
    step = spec.step_size if spec.step_size is not None else 2.5 * spec.eps / max(spec.steps, 1)
    adv = pgd_linf(model, images, goal, eps=spec.eps, steps=spec.steps, step_size=step,
                   targeted=spec.targeted, random_start=spec.random_start, generator=generator,
                   restarts=spec.restarts)
    return adv, spec.steps * spec.restarts  # an upper bound: restarts stop once all are fooled


ATTACKS: dict[str, AttackInfo] = {
    "fgsm": AttackInfo("fgsm", ("linf",), True, "one signed-gradient step of size eps",
                       _run_fgsm),
    "pgd": AttackInfo("pgd", ("linf",), True,
                      "projected gradient descent in the L-inf ball (Madry et al. 2018)",
                      _run_pgd),
}


@dataclass
class AttackResult:
    """Adversarial images with the targets used and what the attack cost."""

    adversarial: torch.Tensor
    targets: torch.Tensor | None
    gradients_per_example: int
    seconds: float


def attack_info(name: str) -> AttackInfo:
    """Look an attack up; unknown names raise and list the known attacks."""
    if name not in ATTACKS:
        raise UnknownNameError("attack", name, list(ATTACKS))
    return ATTACKS[name]


def run_attack(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, spec: AttackSpec,
               num_classes: int | None = None) -> AttackResult:
    """Attack ``images`` (true ``labels``) as ``spec`` says and time it.

    Targeted specs pick targets with ``spec.target_policy`` for ``num_classes`` classes (default:
    the model's output width). A targeted spec for an attack with no targeted form raises.
    """
    info = attack_info(spec.name)
    if spec.norm not in info.norms:
        raise ValueError(f"attack {spec.name!r} has no {spec.norm} form (has {info.norms})")
    if spec.targeted and not info.targeted:
        raise ValueError(f"attack {spec.name!r} has no targeted form; refusing to run it "
                         "targeted (it would silently measure something else)")
    if images.numel() and not bool(((images >= 0) & (images <= 1)).all()):
        raise ValueError("attacks take [0, 1] pixel images; got values outside that range "
                         "(or NaN)")
    generator = torch.Generator().manual_seed(spec.seed)
    start = time.perf_counter()
    targets = None
    if spec.targeted:
        with eval_mode(model), torch.no_grad():
            logits = model(images) if spec.target_policy == "least-likely" else None
            if num_classes is None:
                num_classes = int(model(images[:1]).shape[1])
        targets = choose_targets(labels, num_classes, spec.target_policy, logits=logits,
                                 generator=generator)
    adv, grads = info.runner(model, images, targets if spec.targeted else labels, spec,
                             generator)
    if adv.is_cuda:
        torch.cuda.synchronize(adv.device)
    return AttackResult(adv, targets, grads, time.perf_counter() - start)


def attack(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, name: str, *,
           eps: float = 8 / 255, steps: int = 10, step_size: float | None = 2 / 255,
           targeted: bool = False, target_policy: str = "next", random_start: bool = False,
           seed: int = 0, num_classes: int | None = None) -> torch.Tensor:
    """Return adversarial versions of pixel-space ``images`` for ``model``.

    ``name`` is one of :data:`ATTACKS`; ε and step sizes are in pixel units. Unknown names and
    targeted requests for attacks without a targeted form raise (never a silent clean pass).
    """
    spec = AttackSpec(name=name, eps=eps, steps=steps, step_size=step_size, targeted=targeted,
                      target_policy=target_policy, random_start=random_start, seed=seed)
    return run_attack(model, images, labels, spec, num_classes).adversarial
