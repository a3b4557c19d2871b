"""Robustness curves and gradient-masking sanity checks.

Curves follow BEARD's sweeps (``reference/rome-and-beard.md`` §2.3, PGD_e* and PGD_s*): PGD-L∞
accuracy at ε ∈ {0, 2, 4, 6, 8, 10}/255 with 10 steps of 2/255, and at 8/255 with
{2, 4, 6, 8, 10} steps, untargeted and targeted. ε = 0 is included on purpose: it must reproduce
clean accuracy.
"""

from __future__ import annotations

import itertools
from typing import Any

import torch
from torch import nn

from robustdd.attacks import AttackSpec, run_attack
from robustdd.nn.train import accuracy

EPS_GRID = (0, 2, 4, 6, 8, 10)  # in 1/255
STEPS_GRID = (2, 4, 6, 8, 10)
TOLERANCE = 0.5  # accuracy points allowed for non-monotonicity (ties broken by noise)
# Accuracies are float32 means times 100: a gap of exactly TOLERANCE (one image in 200) comes out
# a few 1e-6 points either side of it, so comparisons allow this much more before they warn.
FLOAT_SLACK = 1e-3


def robustness_curves(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                      num_classes: int, *, eps_grid: tuple[int, ...] = EPS_GRID,
                      steps_grid: tuple[int, ...] = STEPS_GRID, seed: int = 0
                      ) -> dict[str, Any]:
    """PGD accuracy versus ε and versus steps, both modes: ``{mode: {"eps": {...}, "steps":
    {...}}}`` with string keys (ε in 1/255 units)."""
    out: dict[str, Any] = {}
    for targeted in (False, True):
        mode = "targeted" if targeted else "untargeted"
        eps_curve = {}
        for e in eps_grid:
            spec = AttackSpec(name="pgd", eps=e / 255, steps=10, step_size=2 / 255,
                              targeted=targeted, seed=seed)
            adv = run_attack(model, images, labels, spec, num_classes).adversarial
            eps_curve[str(e)] = accuracy(model, adv, labels)
        steps_curve = {}
        for s in steps_grid:
            spec = AttackSpec(name="pgd", eps=8 / 255, steps=s, step_size=2 / 255,
                              targeted=targeted, seed=seed)
            adv = run_attack(model, images, labels, spec, num_classes).adversarial
            steps_curve[str(s)] = accuracy(model, adv, labels)
        out[mode] = {"eps": eps_curve, "steps": steps_curve}
    return out


def sanity_warnings(clean: float, curves: dict[str, Any] | None = None,
                    whitebox: dict[str, float] | None = None,
                    blackbox: dict[str, float] | None = None) -> list[str]:
    """Signs of gradient masking or a broken evaluation, as human-readable warnings.

    * ε = 0 must reproduce clean accuracy;
    * accuracy must not rise with ε or with more PGD steps (beyond :data:`TOLERANCE`);
    * a black-box attack beating every white-box attack (beyond :data:`TOLERANCE`) suggests
      masked gradients.
    """
    warnings: list[str] = []
    for mode, curve in (curves or {}).items():
        eps_curve = curve.get("eps", {})
        if "0" in eps_curve and abs(eps_curve["0"] - clean) > 1e-6:
            warnings.append(f"{mode}: PGD at eps=0 gives {eps_curve['0']:.2f}% but clean "
                            f"accuracy is {clean:.2f}%")
        for name, series in (("eps", eps_curve), ("steps", curve.get("steps", {}))):
            values = [series[k] for k in sorted(series, key=float)]
            for lo, hi in itertools.pairwise(values):
                if hi > lo + TOLERANCE + FLOAT_SLACK:
                    warnings.append(f"{mode}: accuracy rises with {name} "
                                    f"({lo:.2f}% → {hi:.2f}%): possible gradient masking")
                    break
    if whitebox and blackbox:
        best_white = min(whitebox.values())
        for name, acc in blackbox.items():
            if acc < best_white - TOLERANCE - FLOAT_SLACK:
                warnings.append(f"black-box {name} ({acc:.2f}%) beats every white-box attack "
                                f"(best {best_white:.2f}%): possible gradient masking")
    return warnings
