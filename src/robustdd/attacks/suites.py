"""Named attack suites: lists of :class:`AttackSpec` that evaluations run together.

* ``beard``: BEARD's white-box list (``reference/rome-and-beard.md`` §2.3) with correct
  pixel-space semantics — FGSM, PGD-10 (ε 8/255, step 2/255), PGD-L2 (ε 128/255, step 15/255),
  CW (c 1, κ 0, 100 steps, lr 0.01), DeepFool (50 steps, overshoot 0.02), AutoAttack standard
  (ε 8/255); targeted mode for those with a targeted form (FGSM, PGD, PGD-L2, CW), targets
  (y + 1) mod C.
* ``beard-query``: BEARD's query attacks — Square (L∞ 8/255, 5000 queries, p_init 0.8) and SPSA
  (ε 8/255, δ 0.01, lr 0.01, 128 samples, 1 iteration: torchattacks' defaults), both modes.
* ``guard``: GUARD's ε = 1/255 suite (GUARD paper §Experiments; ``reference/methods.md`` §9.3):
  PGD-100 (step 0.25/255), Square, AutoAttack, CW (c = 1e-5 as the paper says; the code uses
  1e-4), MIM (step 1/255, 20 iterations, decay 1.0). Untargeted.
* ``quick``: CPU-sized — FGSM and PGD-10 at 8/255, both modes.
* ``beard-legacy``: BEARD's white-box list exactly as its code runs it (``reference/
  rome-and-beard.md`` §2.3–2.4; :mod:`robustdd.attacks.legacy`): attacks on the normalised
  tensors with the [0, 1] clamp there, ε in normalised units, PGD step 2/225, targets
  (y + 1) mod 10, torchattacks' DeepFool, 10-iteration AutoAttack, and clean passes for
  targeted DeepFool and AutoAttack. Only for comparing with published BEARD/ROME numbers.
"""

from __future__ import annotations

from robustdd.attacks.legacy import LEGACY_STEP
from robustdd.attacks.spec import AttackSpec
from robustdd.errors import UnknownNameError

EPS = 8 / 255


def _both(spec: dict) -> list[AttackSpec]:
    return [AttackSpec(**spec), AttackSpec(**spec, targeted=True)]


def beard() -> list[AttackSpec]:
    """BEARD's white-box suite, correct semantics, both modes where a targeted form exists."""
    return [
        *_both({"name": "fgsm", "eps": EPS, "steps": 1, "step_size": None}),
        *_both({"name": "pgd", "eps": EPS, "steps": 10, "step_size": 2 / 255}),
        *_both({"name": "pgd-l2", "eps": 128 / 255, "steps": 10, "step_size": 15 / 255}),
        *_both({"name": "cw", "c": 1.0, "kappa": 0.0, "steps": 100, "lr": 0.01}),
        AttackSpec(name="deepfool", steps=50, overshoot=0.02),
        AttackSpec(name="autoattack", eps=EPS),
    ]


def beard_query() -> list[AttackSpec]:
    """BEARD's query-based suite, both modes."""
    return [
        *_both({"name": "square", "eps": EPS, "queries": 5000, "p_init": 0.8}),
        *_both({"name": "spsa", "eps": EPS, "steps": 1, "lr": 0.01, "delta": 0.01,
                "samples": 128}),
    ]


def guard() -> list[AttackSpec]:
    """GUARD's ε = 1/255 suite (untargeted)."""
    eps = 1 / 255
    return [
        AttackSpec(name="pgd", eps=eps, steps=100, step_size=0.25 / 255),
        AttackSpec(name="square", eps=eps, queries=5000, p_init=0.8),
        AttackSpec(name="autoattack", eps=eps),
        AttackSpec(name="cw", c=1e-5, kappa=0.0, steps=100, lr=0.01),
        AttackSpec(name="mim", eps=eps, steps=20, step_size=1 / 255, decay=1.0),
    ]


def guard_no_aa() -> list[AttackSpec]:
    """GUARD's suite without AutoAttack, its costliest member (a CPU budget, not GUARD's)."""
    return [spec for spec in guard() if spec.name != "autoattack"]


def quick() -> list[AttackSpec]:
    """FGSM and PGD-10 at 8/255, both modes (the profiles' default)."""
    return [
        *_both({"name": "fgsm", "eps": EPS, "steps": 1, "step_size": None}),
        *_both({"name": "pgd", "eps": EPS, "steps": 10, "step_size": 2 / 255}),
    ]


def beard_legacy() -> list[AttackSpec]:
    """BEARD's white-box suite with its reference-code semantics (both modes, clean passes)."""
    legacy = {"space": "normalised", "target_policy": "next-mod-10"}
    return [
        *_both({"name": "fgsm", "eps": EPS, "steps": 1, "step_size": None, **legacy}),
        *_both({"name": "pgd", "eps": EPS, "steps": 10, "step_size": LEGACY_STEP, **legacy}),
        *_both({"name": "pgd-l2", "eps": 128 / 255, "steps": 10, "step_size": 15 / 255,
                **legacy}),
        *_both({"name": "cw", "c": 1.0, "kappa": 0.0, "steps": 100, "lr": 0.01, **legacy}),
        *_both({"name": "deepfool", "steps": 50, "overshoot": 0.02, "variant": "torchattacks",
                **legacy}),
        *_both({"name": "autoattack", "eps": EPS, "steps": 10, **legacy}),
    ]


SUITES = {"beard": beard, "beard-legacy": beard_legacy, "beard-query": beard_query,
          "guard": guard, "guard-no-aa": guard_no_aa, "quick": quick}


def suite(name: str) -> list[AttackSpec]:
    """The attack specs of suite ``name``; unknown names list the known suites."""
    if name not in SUITES:
        raise UnknownNameError("attack suite", name, list(SUITES))
    return SUITES[name]()
