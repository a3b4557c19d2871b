"""Query-based (black-box) attacks: Square and SPSA. They only see the model's outputs.

The model is wrapped in :class:`QueryCounter`, which runs it under ``no_grad`` (so no gradient
can flow back: the attack truly uses outputs only) and counts the forward queries made per
example.

* Square (Andriushchenko et al., ECCV 2020) is pyautoattack's implementation, L∞ or L2,
  ``p_init`` 0.8, 5000 queries by default (BEARD, ``reference/rome-and-beard.md`` §2.3). It
  reseeds torch's global RNG internally, so it runs inside ``fork_rng``: the caller's RNG state is
  untouched and the spec's seed decides the run.
* SPSA (Uesato et al., ICML 2018) is implemented here, batched: per iteration
  ``samples`` Rademacher directions v, the margin loss at x ± δv, the estimate
  mean((ℓ(x+δv) − ℓ(x−δv)) / 2δ · v), one Adam step of ``lr`` and projection onto the L∞ ball and
  [0, 1] (CleverHans ``SPSAAdam`` semantics; torchattacks defaults δ = 0.01, lr = 0.01,
  128 samples).
"""

from __future__ import annotations

import torch
from torch import nn

from robustdd.attacks.gradient import eval_mode


class QueryCounter(nn.Module):
    """Wraps a model: outputs only (no autograd), counts rows evaluated."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.rows = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.rows += int(x.shape[0])
        with torch.no_grad():
            return self.model(x).detach()


def _margin(logits: torch.Tensor, labels: torch.Tensor, targeted: bool) -> torch.Tensor:
    """Loss to *minimise*: untargeted z_y − max_{j≠y} z_j; targeted max_{j≠t} z_j − z_t."""
    true = logits.gather(1, labels.view(-1, 1)).squeeze(1)
    other = logits.clone()
    other.scatter_(1, labels.view(-1, 1), float("-inf"))
    best_other = other.max(1).values
    return best_other - true if targeted else true - best_other


def square(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *, eps: float,
           norm: str = "linf", queries: int = 5000, p_init: float = 0.8, seed: int = 0,
           targeted: bool = False) -> tuple[torch.Tensor, float]:
    """Square attack; returns (adversarial images, mean queries per example)."""
    from pyautoattack.square import SquareAttack

    counter = QueryCounter(model)
    devices = [images.device] if images.is_cuda else []
    with eval_mode(model), torch.random.fork_rng(devices=devices):
        attack = SquareAttack(counter, p_init=p_init, n_queries=queries, eps=eps,
                              norm="Linf" if norm == "linf" else "L2", n_restarts=1, seed=seed,
                              verbose=False, device=images.device, resc_schedule=True,
                              loss="margin", targeted=targeted)
        adv = attack.perturb(images, labels)
    return adv.detach().clamp(0.0, 1.0), counter.rows / max(images.shape[0], 1)


def spsa(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *, eps: float,
         steps: int = 1, delta: float = 0.01, lr: float = 0.01, samples: int = 128,
         max_rows: int = 1024, targeted: bool = False,
         generator: torch.Generator | None = None) -> tuple[torch.Tensor, float]:
    """SPSA with Adam in the L∞ ball; returns (adversarial images, mean queries per example).

    Each forward pass evaluates x ± δv for as many directions as fit in ``max_rows`` rows
    (at least one direction: 2·N rows for N images), so memory does not grow with ``samples``.
    """
    counter = QueryCounter(model)
    x0 = images.detach()
    n = x0.shape[0]
    chunk = max(1, max_rows // max(2 * n, 1))
    pert = torch.zeros_like(x0)
    adam_m = torch.zeros_like(x0)
    adam_v = torch.zeros_like(x0)
    beta1, beta2, tiny = 0.9, 0.999, 1e-8
    with eval_mode(model):
        for t in range(1, steps + 1):
            grad = torch.zeros_like(x0)
            for lo in range(0, samples, chunk):
                k = min(chunk, samples - lo)
                v = torch.randint(0, 2, (k, *x0.shape), generator=generator, dtype=torch.int8)
                v = (2 * v - 1).to(x0.device, x0.dtype)  # Rademacher ±1
                x = (x0 + pert).unsqueeze(0)
                both = torch.cat([x + delta * v, x - delta * v]).view(-1, *x0.shape[1:])
                lab = labels.repeat(2 * k)
                loss = _margin(counter(both.clamp(0, 1)), lab, targeted).view(2, k, n)
                diff = (loss[0] - loss[1]) / (2 * delta)
                grad += (diff.view(k, n, 1, 1, 1) * v).sum(0)
            grad /= samples
            adam_m = beta1 * adam_m + (1 - beta1) * grad
            adam_v = beta2 * adam_v + (1 - beta2) * grad ** 2
            step = lr * (adam_m / (1 - beta1 ** t)) / ((adam_v / (1 - beta2 ** t)).sqrt() + tiny)
            pert = (pert - step).clamp(-eps, eps)
            pert = (x0 + pert).clamp(0.0, 1.0) - x0
    return (x0 + pert).detach(), counter.rows / max(n, 1)
