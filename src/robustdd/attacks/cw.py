"""Carlini–Wagner L2 (Carlini & Wagner 2017) in pixel space, torchattacks ``CW`` semantics.

The adversarial image is x' = ½(tanh(w) + 1), so it always lies in [0, 1]; w starts at
atanh(2x − 1) and Adam (learning rate ``lr``) minimises, summed over the batch,

    ‖x' − x‖²₂ + c · f(x'),   f(x') = max(Z_y − max_{i≠y} Z_i, −κ)        (untargeted)
                              f(x') = max(max_{i≠t} Z_i − Z_t, −κ)        (targeted, target t)

with Z the logits. Per example the successful iterate with the smallest L2 distance is kept;
examples never fooled come back unchanged. Like torchattacks there is one fixed c (no binary
search) and the whole batch stops early when the total loss rose since the previous check (every
``steps // 10`` steps). The attack is unbounded: no ε.

Pixels at exactly 0 or 1 stay where they are, as in torchattacks (there atanh(±1) = ±∞ freezes
them; Carlini's reference code scales by 0.999999 instead, which leaves them movable in principle
but Adam at lr 0.01 moves them by less than 1e-5 in 100 steps). We freeze them explicitly,
without infinities in the optimiser state.

One deliberate difference from torchattacks 3.5.1: the max over the other classes is a real
max; torchattacks masks the excluded logit with 0 (and takes max(Z_y, 0) as the own logit),
which is wrong whenever logits are negative. On a model whose logits are all positive the two
agree (the tests compare them that way).
"""

from __future__ import annotations

import torch
from torch import nn

from robustdd.attacks.gradient import eval_mode


def cw_margin(logits: torch.Tensor, labels: torch.Tensor, *, kappa: float = 0.0,
              targeted: bool = False) -> torch.Tensor:
    """CW's f per example: how far the example still is from (targeted: reaching) success."""
    own = logits.gather(1, labels.view(-1, 1)).squeeze(1)
    others = logits.scatter(1, labels.view(-1, 1), float("-inf")).amax(1)
    gap = others - own if targeted else own - others
    return gap.clamp(min=-kappa)


def cw_l2(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *, c: float = 1.0,
          kappa: float = 0.0, steps: int = 100, lr: float = 0.01,
          targeted: bool = False) -> torch.Tensor:
    """CW-L2 adversarial examples (``labels`` are the targets if ``targeted``)."""
    return cw_l2_with_steps(model, images, labels, c=c, kappa=kappa, steps=steps, lr=lr,
                            targeted=targeted)[0]


def cw_l2_with_steps(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *,
                     c: float = 1.0, kappa: float = 0.0, steps: int = 100, lr: float = 0.01,
                     targeted: bool = False) -> tuple[torch.Tensor, int]:
    """:func:`cw_l2` plus the number of optimisation steps run (one gradient each)."""
    x0 = images.detach()
    # Tanh space cannot move a pixel off 0 or 1. Inputs outside [0, 1] (the legacy suite's
    # normalised tensors) sit at the box edge, as torchattacks' atanh(clamp(2x - 1)) puts them;
    # the L2 term still measures from x0. In pixel space x0 is already inside the box.
    frozen = (x0 <= 0) | (x0 >= 1)
    edge = x0.clamp(0.0, 1.0)
    w = torch.atanh(torch.where(frozen, 0.0, 2 * x0 - 1)).requires_grad_(True)
    best = x0.clone()
    best_l2 = torch.full((x0.shape[0],), float("inf"), device=x0.device, dtype=x0.dtype)
    optimizer = torch.optim.Adam([w], lr=lr)
    check_every = max(steps // 10, 1)
    previous = float("inf")
    view = (-1, *([1] * (x0.dim() - 1)))
    done = 0
    with eval_mode(model), torch.enable_grad():
        for step in range(steps):
            adv = torch.where(frozen, edge, 0.5 * (torch.tanh(w) + 1))
            l2 = (adv - x0).pow(2).flatten(1).sum(1)
            logits = model(adv)
            cost = l2.sum() + c * cw_margin(logits, labels, kappa=kappa, targeted=targeted).sum()
            optimizer.zero_grad(set_to_none=True)
            cost.backward()
            optimizer.step()
            done += 1
            with torch.no_grad():
                pred = logits.argmax(1)
                success = pred == labels if targeted else pred != labels
                better = success & (l2 < best_l2)
                best_l2 = torch.where(better, l2, best_l2)
                best = torch.where(better.view(view), adv, best)
            if step % check_every == 0:
                value = float(cost.detach())
                if value > previous:
                    break
                previous = value
    return best.detach(), done
