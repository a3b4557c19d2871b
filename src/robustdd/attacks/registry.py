"""Attacks by name, each with its runner and its targeted form (or its absence) declared."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from robustdd.attacks.cw import cw_l2_with_steps
from robustdd.attacks.deepfool import DEEPFOOL_VARIANTS, deepfool_with_steps
from robustdd.attacks.gradient import eval_mode, fgsm, pgd_linf
from robustdd.attacks.l2 import pgd_l2
from robustdd.attacks.legacy import LEGACY_CLEAN_PASS, normalised_view
from robustdd.attacks.momentum import mim
from robustdd.attacks.query import spsa, square
from robustdd.attacks.spec import AttackSpec
from robustdd.attacks.targets import choose_targets
from robustdd.batching import chunked_for
from robustdd.errors import UnknownNameError

# runner(model, images, goal_labels, spec, generator) -> (adversarial, input gradients per
# example[, mean model queries per example for query attacks])
Runner = Callable[[nn.Module, torch.Tensor, torch.Tensor, AttackSpec, torch.Generator], tuple]


@dataclass(frozen=True)
class AttackInfo:
    """An attack: its norms, whether it has a targeted form, and how to run it."""

    name: str
    norms: tuple[str, ...]
    targeted: bool
    description: str
    runner: Runner
    query: bool = False  # black-box: uses model outputs only, never gradients


def _require(spec: AttackSpec, *, loss: str | None = "ce", allow_restarts: bool = False,
             allow_random_start: bool = False, variants: tuple[str, ...] = ()) -> None:
    """Refuse spec settings an attack would otherwise silently ignore (``loss=None``: any)."""
    if spec.variant is not None and spec.variant not in variants:
        raise ValueError(f"attack {spec.name!r} has no variant {spec.variant!r}"
                         + (f" (known: {variants})" if variants else " (it has no variants)"))
    if loss is not None and spec.loss != loss:
        raise ValueError(f"attack {spec.name!r} uses the {loss!r} loss, not {spec.loss!r}")
    if not allow_restarts and spec.restarts != 1:
        raise ValueError(f"attack {spec.name!r} has no random restarts: restarts must be 1")
    if not allow_random_start and spec.random_start:
        raise ValueError(f"attack {spec.name!r} has no random start")


def _run_fgsm(model, images, goal, spec, generator):
    if spec.restarts != 1:
        raise ValueError("fgsm is deterministic: restarts must be 1")
    _require(spec, allow_random_start=True)  # (random_start has always been ignored by fgsm)
    return fgsm(model, images, goal, eps=spec.eps, targeted=spec.targeted), 1


def _run_pgd(model, images, goal, spec, generator):
    _require(spec, allow_restarts=True, allow_random_start=True)
    # Without an explicit step, 2.5·ε/steps (Madry et al.'s rule of thumb).
    step = spec.step_size if spec.step_size is not None else 2.5 * spec.eps / max(spec.steps, 1)
    adv = pgd_linf(model, images, goal, eps=spec.eps, steps=spec.steps, step_size=step,
                   targeted=spec.targeted, random_start=spec.random_start, generator=generator,
                   restarts=spec.restarts)
    return adv, spec.steps * spec.restarts  # an upper bound: restarts stop once all are fooled


def _run_pgd_l2(model, images, goal, spec, generator):
    _require(spec, allow_restarts=True, allow_random_start=True)
    step = spec.step_size if spec.step_size is not None else 2.5 * spec.eps / max(spec.steps, 1)
    adv = pgd_l2(model, images, goal, eps=spec.eps, steps=spec.steps, step_size=step,
                 targeted=spec.targeted, random_start=spec.random_start, generator=generator,
                 restarts=spec.restarts)
    return adv, spec.steps * spec.restarts  # an upper bound, as for pgd


def _run_mim(model, images, goal, spec, generator):
    _require(spec)
    # Without an explicit step, ε/steps (Dong et al. 2018).
    step = spec.step_size if spec.step_size is not None else spec.eps / max(spec.steps, 1)
    adv = mim(model, images, goal, eps=spec.eps, steps=spec.steps, step_size=step,
              decay=spec.decay, targeted=spec.targeted)
    return adv, spec.steps


def _run_cw(model, images, goal, spec, generator):
    _require(spec, loss="margin")
    adv, done = cw_l2_with_steps(model, images, goal, c=spec.c, kappa=spec.kappa,
                                 steps=spec.steps, lr=spec.lr, targeted=spec.targeted)
    return adv, done  # exact: every example runs the same steps (the batch stops together)


def _run_deepfool(model, images, goal, spec, generator):
    _require(spec, loss=None, variants=DEEPFOOL_VARIANTS)
    adv, taken, num_classes = deepfool_with_steps(model, images, goal, steps=spec.steps,
                                                  overshoot=spec.overshoot,
                                                  variant=spec.variant or "box")
    # C − 1 backward passes per Jacobian step: exact for the slowest example, an upper bound
    # for the others (they stop once fooled).
    return adv, taken * max(num_classes - 1, 0)


def _run_square(model, images, goal, spec, generator):
    _require(spec, loss="margin")
    adv, queries = square(model, images, goal, eps=spec.eps, norm=spec.norm,
                          queries=spec.queries, p_init=spec.p_init, seed=spec.seed,
                          targeted=spec.targeted)
    return adv, 0, queries


def _run_spsa(model, images, goal, spec, generator):
    _require(spec, loss="margin")
    adv, queries = spsa(model, images, goal, eps=spec.eps, steps=spec.steps, delta=spec.delta,
                        lr=spec.lr, samples=spec.samples, targeted=spec.targeted,
                        generator=generator)
    return adv, 0, queries


def _run_autoattack(model, images, goal, spec, generator):
    from robustdd.attacks.autoattack import autoattack

    _require(spec, loss=None)
    adv = autoattack(model, images, goal, eps=spec.eps, norm=spec.norm, version=spec.version,
                     components=spec.components, seed=spec.seed,
                     iterations=spec.steps or None)
    return adv, None  # pyautoattack does not report its gradient count


ATTACKS: dict[str, AttackInfo] = {
    "fgsm": AttackInfo("fgsm", ("linf",), True, "one signed-gradient step of size eps",
                       _run_fgsm),
    "pgd": AttackInfo("pgd", ("linf",), True,
                      "projected gradient descent in the L-inf ball (Madry et al. 2018)",
                      _run_pgd),
    "pgd-l2": AttackInfo("pgd-l2", ("l2",), True,
                         "projected gradient descent in the L2 ball (normalised-gradient steps)",
                         _run_pgd_l2),
    "mim": AttackInfo("mim", ("linf",), True,
                      "momentum iterative FGSM in the L-inf ball (Dong et al. 2018)", _run_mim),
    "cw": AttackInfo("cw", ("l2",), True,
                     "Carlini-Wagner L2, Adam in tanh space, fixed c, unbounded (eps unused)",
                     _run_cw),
    "deepfool": AttackInfo("deepfool", ("l2",), False,
                           "DeepFool L2, batched, minimal perturbation, unbounded (eps unused)",
                           _run_deepfool),
    "square": AttackInfo("square", ("linf", "l2"), True,
                         "Square query attack (Andriushchenko et al. 2020; pyautoattack)",
                         _run_square, query=True),
    "spsa": AttackInfo("spsa", ("linf",), True,
                       "SPSA query attack with Adam (Uesato et al. 2018)", _run_spsa, query=True),
    "autoattack": AttackInfo("autoattack", ("linf", "l2"), False,
                             "AutoAttack ensemble via pyautoattack (Croce & Hein 2020)",
                             _run_autoattack),
}


@dataclass
class AttackResult:
    """Adversarial images with the targets used and what the attack cost."""

    adversarial: torch.Tensor
    targets: torch.Tensor | None
    gradients_per_example: int | None  # None: the attack's library does not report it
    seconds: float
    queries_per_example: float | None = None  # query attacks: mean forward queries
    note: str | None = None  # e.g. the legacy suite's deliberate clean pass
    clean_pass: bool = False  # the images were scored unchanged (legacy targeted DeepFool/AA)


def attack_info(name: str) -> AttackInfo:
    """Look an attack up; unknown names raise and list the known attacks."""
    if name not in ATTACKS:
        raise UnknownNameError("attack", name, list(ATTACKS))
    return ATTACKS[name]


def run_attack(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, spec: AttackSpec,
               num_classes: int | None = None) -> AttackResult:
    """Attack ``images`` (true ``labels``) as ``spec`` says and time it.

    Targeted specs pick targets with ``spec.target_policy`` for ``num_classes`` classes (default:
    the model's output width). A targeted spec for an attack with no targeted form raises —
    except in the legacy normalised space (:mod:`robustdd.attacks.legacy`), where targeted
    DeepFool/AutoAttack reproduce BEARD's clean pass and say so in ``note``.
    """
    info = attack_info(spec.name)
    if spec.norm not in info.norms:
        raise ValueError(f"attack {spec.name!r} has no {spec.norm} form (has {info.norms})")
    legacy = spec.space == "normalised"
    clean_pass = legacy and spec.targeted and spec.name in LEGACY_CLEAN_PASS
    if spec.targeted and not info.targeted and not clean_pass:
        raise ValueError(f"attack {spec.name!r} has no targeted form; refusing to run it "
                         "targeted (it would silently measure something else)")
    if images.numel() and not _in_unit_range(images):
        raise ValueError("attacks take [0, 1] pixel images; got values outside that range "
                         "(or NaN)")
    view = normalised_view(model) if legacy else None
    generator = torch.Generator().manual_seed(spec.seed)
    start = time.perf_counter()
    targets = None
    if spec.targeted:
        with eval_mode(model), torch.no_grad():
            logits = (chunked_for(model, images)(images)
                      if spec.target_policy == "least-likely" else None)
            if num_classes is None:
                num_classes = int(model(images[:1]).shape[1])
        targets = choose_targets(labels, num_classes, spec.target_policy, logits=logits,
                                 generator=generator)
    note = None
    goal = targets if spec.targeted else labels
    if clean_pass:
        # BEARD prints "no targeted form" and scores the clean images (rome-and-beard.md §2.3).
        adv, grads, queries = images.clone(), 0, None
        note = f"legacy: targeted {spec.name} evaluates the clean images, as BEARD does"
    elif view is not None:
        with eval_mode(model):
            adv_z, grads, queries = _in_batches(info.runner, view.net,
                                                view.to_normalised(images), goal, spec,
                                                generator)
        adv = view.to_pixels(adv_z)
    else:
        adv, grads, queries = _in_batches(info.runner, model, images, goal, spec, generator)
    if adv.is_cuda:
        torch.cuda.synchronize(adv.device)
    return AttackResult(adv, targets, grads, time.perf_counter() - start, queries, note,
                        clean_pass)


def _in_unit_range(images: torch.Tensor) -> bool:
    """Whether every value lies in [0, 1] (NaN does not): one reduction, one sync."""
    low, high = torch.aminmax(images)
    return bool((low >= 0) & (high <= 1))


def _in_batches(runner: Runner, model: nn.Module, images: torch.Tensor, goal: torch.Tensor,
                spec: AttackSpec, generator: torch.Generator
                ) -> tuple[torch.Tensor, int | None, float | None]:
    """Run ``runner`` on consecutive batches of ``spec.batch_size`` images.

    Returns the adversarial images in input order, the most input gradients per example any
    batch reported (exact with one batch, an upper bound otherwise: CW and DeepFool stop per
    batch) and, for query attacks, the mean queries per example over all images. On a CPU the
    model's passes run in small chunks of each batch (:mod:`robustdd.batching`).
    """
    model = chunked_for(model, images)
    n = images.shape[0]
    parts, grads, queried = [], [], []
    for lo in range(0, max(n, 1), spec.batch_size):
        adv, g, *q = runner(model, images[lo:lo + spec.batch_size],
                            goal[lo:lo + spec.batch_size], spec, generator)
        parts.append(adv)
        grads.append(g)
        queried += [q[0] * adv.shape[0]] if q else []
    most = None if any(g is None for g in grads) else max(grads)
    adversarial = parts[0] if len(parts) == 1 else torch.cat(parts)
    return adversarial, most, (sum(queried) / max(n, 1) if queried else None)


def attack(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, name: str, *,
           num_classes: int | None = None, **options: Any) -> torch.Tensor:
    """Return adversarial versions of pixel-space ``images`` for ``model``.

    ``name`` is one of :data:`ATTACKS`; ``options`` are :class:`AttackSpec` fields (``eps``,
    ``steps``, ``step_size``, ``targeted``, ``target_policy``, ``random_start``, ``seed``, ``c``,
    ...); unset ones take the attack's defaults (ε and step sizes in pixel units). Unknown names
    and targeted requests for attacks without a targeted form raise (never a silent clean pass).
    """
    attack_info(name)
    spec = AttackSpec(name=name, **options)
    return run_attack(model, images, labels, spec, num_classes).adversarial
