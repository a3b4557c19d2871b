"""IDM's model pool: a FIFO queue of networks that keep training on real data during distillation.

Reference: ``uitrbn/IDM`` ``IDM_cifar10.py`` (``net_list``, ``optimizer_list``, ``acc_meters``;
methods.md §6 item 2) and the same queue in ROME (rome-and-beard.md §1.4), where the nets are
trained adversarially. The pool

* starts with ``initial`` randomly initialised nets;
* :meth:`ModelPool.push` appends a new random net, dropping the oldest when ``capacity`` nets
  are held (the caller pushes every ``net_generate_interval`` iterations, iteration 0 included);
* :meth:`ModelPool.sample` picks distinct nets uniformly (the matching nets);
* :meth:`ModelPool.train_some` trains a few distinct random nets for some SGD steps on random
  real batches drawn from all classes, without augmentation. Each net keeps its own SGD
  optimizer (lr 0.01, momentum 0.9, weight decay 5e-4: ``--net_decay``) across calls;
* keeps, per net, the running training accuracy in percent over the batches it was trained on
  since the last :meth:`ModelPool.reset_meters` (torchnet ``ClassErrorMeter(accuracy=True)``,
  top-1); a net that has not been trained since has accuracy 0, as the reference's
  ``value() if n != 0 else 0``.

``perturb(net, images, labels, generator) -> images`` (optional, default none) replaces every
training batch before the step, drawing any randomness (a PGD random start) from ``generator``,
the one the pool's training draws its batches from, so a checkpointed generator state covers
it. ROME plugs its targeted PGD in here to train the pool adversarially; the accuracy meter then
counts predictions on the perturbed batch, as ROME's does.

Every net's initialisation seed is derived from (pool seed, ``"pool-net"``, creation index), so a
pool is reproducible and can be rebuilt from :meth:`ModelPool.state_dict`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustdd.runtime import derive_seed

__all__ = ["BuildNet", "ModelPool", "Perturb", "PoolMember", "PoolObjective"]

#: Builds a freshly initialised network on the pool's device from an integer seed.
BuildNet = Callable[[int], nn.Module]
#: ``perturb(net, images, labels, generator) -> images``: replaces a batch (e.g. adversarial
#: examples against ``net``), drawing any randomness from ``generator``.
Perturb = Callable[[nn.Module, Tensor, Tensor, torch.Generator], Tensor]
#: ``objective(net, logits, images, labels) -> loss`` for a pool training step.
PoolObjective = Callable[[nn.Module, Tensor, Tensor, Tensor], Tensor]


@dataclass
class PoolMember:
    """One pooled net with its persistent optimizer and accuracy meter."""

    index: int  # creation order; also determines the initialisation seed
    net: nn.Module
    optimizer: torch.optim.SGD
    correct: Tensor  # 0-d int64 on the net's device (no host sync per training step)
    seen: int = 0

    @property
    def accuracy(self) -> float:
        """Training accuracy (%) since the last meter reset; 0 when untrained since."""
        return 100.0 * int(self.correct) / self.seen if self.seen else 0.0


class ModelPool:
    """A FIFO pool of networks trained on real data (see the module docstring)."""

    def __init__(self, build: BuildNet, seed: int, images: Tensor, labels: Tensor, *,
                 initial: int = 3, capacity: int = 100, lr: float = 0.01,
                 momentum: float = 0.9, weight_decay: float = 5e-4,
                 perturb: Perturb | None = None):
        """``images`` are uint8 or [0, 1] float pixels [N, C, H, W] and ``labels`` int64 [N]
        (kept on the device the nets live on); ``build(seed)`` makes one network."""
        if initial < 0 or capacity < 1 or initial > capacity:
            raise ValueError(f"need 0 <= initial <= capacity and capacity >= 1, got initial="
                             f"{initial}, capacity={capacity}")
        if images.shape[0] != labels.shape[0] or images.shape[0] == 0:
            raise ValueError(f"{images.shape[0]} images but {labels.shape[0]} labels")
        self.build = build
        self.seed = int(seed)
        self.images = images
        self.labels = labels
        self.capacity = int(capacity)
        self.lr, self.momentum, self.weight_decay = float(lr), float(momentum), float(weight_decay)
        self.perturb = perturb
        self.members: list[PoolMember] = []
        self.created = 0
        for _ in range(initial):
            self.push()

    def __len__(self) -> int:
        return len(self.members)

    def __repr__(self) -> str:
        return (f"ModelPool({len(self)}/{self.capacity} nets, created={self.created}, "
                f"perturb={'yes' if self.perturb else 'no'})")

    def _new_member(self, index: int) -> PoolMember:
        net = self.build(derive_seed(self.seed, "pool-net", index))
        net.train()
        device = next(net.parameters()).device
        optimizer = torch.optim.SGD(net.parameters(), lr=self.lr, momentum=self.momentum,
                                    weight_decay=self.weight_decay)
        return PoolMember(index, net, optimizer, torch.zeros((), dtype=torch.int64,
                                                             device=device))

    def push(self) -> PoolMember:
        """Append a new random net; when the pool is full the oldest one leaves first."""
        if len(self.members) == self.capacity:
            self.members.pop(0)
        member = self._new_member(self.created)
        self.created += 1
        self.members.append(member)
        return member

    def sample(self, k: int, generator: torch.Generator) -> list[PoolMember]:
        """``min(k, len(pool))`` distinct members drawn uniformly (a shuffled prefix)."""
        order = torch.randperm(len(self.members), generator=generator)[:k]
        return [self.members[int(i)] for i in order]

    def reset_meters(self) -> None:
        """Restart every net's accuracy count (the reference does this at evaluation points)."""
        for m in self.members:
            m.correct.zero_()
            m.seen = 0

    def train_member(self, member: PoolMember, steps: int, batch: int,
                     generator: torch.Generator, objective: PoolObjective | None = None) -> None:
        """``steps`` SGD steps of ``member`` on random real batches of ``batch`` images;
        ``objective(net, logits, x, y)`` replaces the cross-entropy (RDD's group CVaR)."""
        net, n = member.net, self.labels.shape[0]
        device = member.correct.device
        net.train()
        for _ in range(steps):
            idx = torch.randperm(n, generator=generator)[:batch].to(self.images.device)
            x, y = self.images[idx], self.labels[idx]
            x = x.float().div_(255.0) if x.dtype == torch.uint8 else x
            if self.perturb is not None:
                x = self.perturb(net, x, y, generator)
                net.train()
            logits = net(x)
            loss = (F.cross_entropy(logits, y) if objective is None
                    else objective(net, logits, x, y))
            member.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            member.optimizer.step()
            member.correct += (logits.detach().argmax(1) == y).sum().to(device)
            member.seen += int(y.shape[0])

    def train_some(self, fetch_net_num: int, steps: int, batch: int,
                   generator: torch.Generator,
                   objective: PoolObjective | None = None) -> list[PoolMember]:
        """Train ``fetch_net_num`` distinct random members (see :meth:`train_member`)."""
        picked = self.sample(fetch_net_num, generator)
        for member in picked:
            self.train_member(member, steps, batch, generator, objective)
        return picked

    def accuracies(self) -> list[float]:
        """Every member's running training accuracy (%), oldest first."""
        return [m.accuracy for m in self.members]

    # -- checkpointing ------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """The whole pool as tensors, numbers and plain dicts/lists (``weights_only``-loadable)."""
        return {
            "created": self.created,
            "members": [{
                "index": m.index,
                "net": {k: v.detach().cpu().clone() for k, v in m.net.state_dict().items()},
                "optimizer": _to_cpu(m.optimizer.state_dict()),
                "correct": m.correct.detach().cpu().clone(),
                "seen": m.seen,
            } for m in self.members],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Rebuild the pool saved by :meth:`state_dict` (same ``build`` and seed expected)."""
        members = []
        for saved in state["members"]:
            member = self._new_member(int(saved["index"]))
            member.net.load_state_dict(saved["net"])
            member.optimizer.load_state_dict(saved["optimizer"])
            member.correct.copy_(saved["correct"])
            member.seen = int(saved["seen"])
            members.append(member)
        if len(members) > self.capacity:
            raise ValueError(f"saved pool holds {len(members)} nets, more than the capacity "
                             f"{self.capacity}")
        self.members = members
        self.created = int(state["created"])


def _to_cpu(obj: Any) -> Any:
    if isinstance(obj, Tensor):
        return obj.detach().cpu().clone()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_to_cpu(v) for v in obj]
    return obj
