"""AutoAttack (Croce & Hein, ICML 2020) through the official ``pyautoattack`` package.

``standard`` runs APGD-CE, APGD-T (9 targets), FAB-T (9 targets) and Square (5000 queries) with
100 iterations each, sequentially on still-robust points (the official setting; BEARD used
torchattacks' 10-iteration variant, ``reference/rome-and-beard.md`` §2.3). ``plus`` and custom
subsets are available. AutoAttack has no targeted mode with caller-chosen targets, so it is
registered as untargeted only. pyautoattack reseeds torch's global RNG; it runs inside
``fork_rng``, so the caller's RNG state is untouched.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from robustdd.attacks.gradient import eval_mode

VERSIONS = ("standard", "plus", "custom")
COMPONENTS = ("apgd-ce", "apgd-dlr", "fab", "square", "apgd-t", "fab-t")
# The DLR loss divides by the gap between the largest and the third (targeted: the mean of the
# third and fourth) largest logits; pyautoattack only warns when they do not exist.
MIN_CLASSES = {"apgd-dlr": 3, "apgd-t": 4}


def pyautoattack_version() -> str:
    """Installed pyautoattack version (recorded with AutoAttack results)."""
    import pyautoattack

    return str(pyautoattack.__version__)


def autoattack(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *, eps: float,
               norm: str = "linf", version: str = "standard",
               components: tuple[str, ...] | None = None, seed: int = 0,
               batch_size: int = 500, iterations: int | None = None) -> torch.Tensor:
    """Run AutoAttack and return the adversarial images (the clean image where none was found).

    ``iterations`` overrides the APGD/APGD-T/FAB iteration count (official: 100; the legacy
    BEARD suite uses torchattacks' 10).
    """
    from pyautoattack import AutoAttack

    if version not in VERSIONS:
        raise ValueError(f"unknown AutoAttack version {version!r}; known: {VERSIONS}")
    if version == "custom":
        unknown = set(components or ()) - set(COMPONENTS)
        if not components or unknown:
            raise ValueError(f"custom AutoAttack needs components from {COMPONENTS}")
    num_classes = None
    devices = [images.device] if images.is_cuda else []
    logging.getLogger("auto-attack").setLevel(logging.WARNING)
    with eval_mode(model), torch.random.fork_rng(devices=devices):
        with torch.no_grad():
            num_classes = int(model(images[:1]).shape[1])
        runner = AutoAttack(model, norm="Linf" if norm == "linf" else "L2", eps=eps,
                            version=version, seed=seed, device=images.device,
                            attacks=list(components) if version == "custom" else None)
        runner.verbose = False
        for component in runner.attacks_to_run:
            if num_classes < MIN_CLASSES.get(component, 2):
                raise ValueError(
                    f"AutoAttack {version!r} runs {component}, whose DLR loss needs at least "
                    f"{MIN_CLASSES[component]} classes; the model has {num_classes}. Use "
                    "version='custom' with components without it (e.g. apgd-ce, fab-t, square)")
        # APGD-T and FAB-T attack the top (C - 1) other classes; pyautoattack defaults to 9.
        runner.apgd_targeted.n_target_classes = min(9, num_classes - 1)
        runner.fab.n_target_classes = min(9, num_classes - 1)
        if iterations:
            _set_iterations(runner, iterations)
        adv, _ = runner.run_standard_evaluation(images, labels, batch_size=batch_size)
    return adv.detach().clamp(0.0, 1.0)


def _set_iterations(runner, iterations: int) -> None:
    """Change the iteration budget of the gradient attacks, including APGD's derived
    checkpoint schedule (computed from ``n_iter`` in its constructor)."""
    for apgd in (runner.apgd, runner.apgd_targeted):
        apgd.n_iter = iterations
        apgd.n_iter_2 = max(int(0.22 * iterations), 1)
        apgd.n_iter_min = max(int(0.06 * iterations), 1)
        apgd.size_decr = max(int(0.03 * iterations), 1)
    runner.fab.n_iter = iterations
