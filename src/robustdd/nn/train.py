"""The one training routine: evaluation models, full-data baselines, and later MTT experts,
SRe2L teachers and adversarially trained surrogates.

It implements the DD evaluation protocol of the DC/DSA/DM reference (``evaluate_synset``;
``reference/methods.md`` §1.4): SGD with momentum and weight decay, ``epochs + 1`` epochs (the
reference loops over ``range(Epoch + 1)``), the learning rate multiplied by 0.1 once after epoch
index ``epochs // 2 + 1`` with a fresh optimiser (so momentum is reset), shuffled batches and
per-batch augmentation.

Other recipes reuse it through options: ``cosine`` (per-epoch cosine annealing to 0, as
``CosineAnnealingLR(T_max=epochs)`` stepped once per epoch: SRe2L's teacher and student),
``optimizer="adamw"`` (SRe2L's KD student) and ``objective`` (a loss other than cross-entropy on
the given labels, e.g. online knowledge distillation with Mixup).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from robustdd.batching import chunk_size, chunked_for, independent_in_training

Augment = Callable[[torch.Tensor, torch.Generator], torch.Tensor]
BatchHook = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]
#: ``objective(model, x, y, generator) -> loss`` replacing cross-entropy on the labels.
Objective = Callable[[nn.Module, torch.Tensor, torch.Tensor, torch.Generator], torch.Tensor]


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings; ``epochs`` is nominal, ``extra_epoch`` adds the reference's +1."""

    epochs: int = 1000
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 256
    decay: bool = True
    extra_epoch: bool = True
    cosine: bool = False  # per-epoch cosine annealing over total_epochs (replaces the step)
    optimizer: Literal["sgd", "adamw"] = "sgd"  # adamw ignores momentum

    def __post_init__(self) -> None:
        if self.optimizer not in ("sgd", "adamw"):
            raise ValueError(f"unknown optimizer {self.optimizer!r}; known: sgd, adamw")

    @property
    def total_epochs(self) -> int:
        return self.epochs + (1 if self.extra_epoch else 0)

    @property
    def decay_after_epoch(self) -> int | None:
        """Epoch index after which the lr drops ×0.1 (the reference's ``Epoch // 2 + 1``)."""
        return self.epochs // 2 + 1 if self.decay and not self.cosine else None

    def lr_at(self, epoch: int) -> float:
        """The learning rate used during epoch ``epoch`` (0-based)."""
        if self.cosine:
            return self.lr * 0.5 * (1.0 + math.cos(math.pi * epoch / max(self.total_epochs, 1)))
        after = self.decay_after_epoch
        return self.lr * 0.1 if after is not None and epoch > after else self.lr

    def to_dict(self) -> dict:
        return {**asdict(self), "total_epochs": self.total_epochs,
                "decay_after_epoch": self.decay_after_epoch}


@dataclass
class TrainStats:
    """What a training run did."""

    epochs: int
    steps: int
    images_seen: int
    seconds: float
    final_loss: float

    @property
    def images_per_second(self) -> float:
        return self.images_seen / self.seconds if self.seconds > 0 else float("nan")


def _as_pixels(batch: torch.Tensor) -> torch.Tensor:
    return batch.float().div_(255.0) if batch.dtype == torch.uint8 else batch


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy for hard (int64 [N]) or soft (float [N, C] probabilities) targets."""
    if targets.dtype == torch.int64:
        return F.cross_entropy(logits, targets)
    return -(targets * F.log_softmax(logits, dim=1)).sum(dim=1).mean()


def train_model(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                config: TrainConfig, generator: torch.Generator, *,
                augment: Augment | None = None, batch_hook: BatchHook | None = None,
                objective: Objective | None = None,
                on_epoch_end: Callable[[int, nn.Module], None] | None = None,
                progress: Callable[[int], None] | None = None) -> TrainStats:
    """Train ``model`` in place on (``images``, ``labels``) and return what it did.

    ``images`` are pixels: float in [0, 1] or uint8 (converted per batch, so a whole real training
    set can stay uint8 on the device). ``labels`` are int64 or soft [N, C]. Shuffling and
    augmentation draw only from ``generator`` (a CPU generator). ``batch_hook(model, x, y)`` may
    replace a batch after augmentation (adversarial training); ``objective(model, x, y,
    generator)`` replaces the cross-entropy loss. ``on_epoch_end(epoch, model)`` is
    called after every epoch (expert trajectories); ``progress(1)`` likewise.
    """
    device = next(model.parameters()).device
    images, labels = images.to(device), labels.to(device)
    n = images.shape[0]
    lr = config.lr

    def make_optimizer(lr: float) -> torch.optim.Optimizer:
        if config.optimizer == "adamw":
            return torch.optim.AdamW(model.parameters(), lr=lr,
                                     weight_decay=config.weight_decay)
        return torch.optim.SGD(model.parameters(), lr=lr, momentum=config.momentum,
                               weight_decay=config.weight_decay)

    optimizer = make_optimizer(lr)
    steps = seen = 0
    loss_value = float("nan")
    # On a CPU the forward/backward passes of a model whose examples do not interact run in
    # chunks (robustdd.batching): the same loss and gradients up to rounding, faster.
    forward = (chunked_for(model, images[:1].to(device, torch.float32))
               if independent_in_training(model) else model)
    start = time.perf_counter()
    model.train()
    for epoch in range(config.total_epochs):
        if config.cosine:
            for group in optimizer.param_groups:
                group["lr"] = config.lr_at(epoch)
        order = torch.randperm(n, generator=generator).to(device)
        for lo in range(0, n, config.batch_size):
            idx = order[lo:lo + config.batch_size]
            x, y = _as_pixels(images[idx]), labels[idx]
            if augment is not None:
                x = augment(x, generator)
            if batch_hook is not None:
                x = batch_hook(model, x, y)
                model.train()
            loss = (soft_cross_entropy(forward(x), y) if objective is None
                    else objective(model, x, y, generator))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            steps += 1
            seen += int(idx.numel())
        loss_value = float(loss.detach())
        if not config.cosine and epoch == config.decay_after_epoch:
            lr *= 0.1
            optimizer = make_optimizer(lr)  # the reference re-creates it: momentum is reset
        if on_epoch_end is not None:
            on_epoch_end(epoch, model)
        if progress is not None:
            progress(1)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return TrainStats(config.total_epochs, steps, seen, time.perf_counter() - start, loss_value)


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, batch_size: int | None = None
            ) -> torch.Tensor:
    """Predicted classes of pixel ``images`` (float or uint8), model in eval mode.

    ``batch_size`` defaults to the device's chunk (:func:`robustdd.batching.chunk_size`; 1,024
    images where it does not chunk).
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    if batch_size is None:
        batch_size = chunk_size(device, images.shape) or 1024
    out = [model(_as_pixels(images[lo:lo + batch_size].to(device))).argmax(1)
           for lo in range(0, images.shape[0], batch_size)]
    model.train(was_training)
    return torch.cat(out) if out else torch.empty(0, dtype=torch.int64, device=device)


def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
             batch_size: int | None = None) -> float:
    """Top-1 accuracy in percent."""
    if images.shape[0] == 0:
        raise ValueError("accuracy of an empty set")
    pred = predict(model, images, batch_size)
    return 100.0 * float((pred == labels.to(pred.device)).float().mean())
