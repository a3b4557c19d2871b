"""Training K models of one architecture at once: stacked parameters, one vmapped forward.

The K evaluation models of a distilled set are small and see the same tiny dataset, so on a
GPU one model leaves the device mostly idle. Here their parameters are stacked along a new
leading axis (``torch.func.stack_module_state``), each step runs one ``vmap``-ed forward over
a [K, B, ...] batch (model k's own shuffled, augmented batch) and one backward of the sum of
the K mean losses. Because SGD with momentum and weight decay is element-wise, one
``torch.optim.SGD`` over the stacked tensors is exactly K independent optimisers, and the
gradient of the summed loss with respect to model k's slice is the gradient of model k's own
loss. Each model draws its shuffles and augmentations from its own generator in the same
order as :func:`robustdd.nn.train.train_model` would, so the result equals K sequential runs
up to floating-point reordering (tested).

Models whose forward mutates buffers in training mode (BatchNorm running statistics) cannot be
vmapped this way; :func:`can_train_in_parallel` says so and callers fall back to sequential
training. Measured on the project's 2-core CPU, this path is *slower* than sequential training
(vmapped convolutions become grouped convolutions); it is meant for GPUs
(``benchmarks/parallel_eval.py`` prints the ratio).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from robustdd.nn.train import Augment, TrainConfig, TrainStats, _as_pixels

__all__ = ["can_train_in_parallel", "train_models_parallel"]


def can_train_in_parallel(models: Sequence[nn.Module]) -> bool:
    """Whether ``models`` can be trained stacked: two or more, same structure, no BatchNorm."""
    if len(models) < 2:
        return False
    first = [(n, tuple(p.shape)) for n, p in models[0].named_parameters()]
    if any([(n, tuple(p.shape)) for n, p in m.named_parameters()] != first for m in models[1:]):
        return False
    return not any(isinstance(mod, nn.modules.batchnorm._BatchNorm)
                   for m in models for mod in m.modules())


def train_models_parallel(models: Sequence[nn.Module], images: torch.Tensor,
                          labels: torch.Tensor, config: TrainConfig,
                          generators: Sequence[torch.Generator], *,
                          augment: Augment | None = None) -> list[TrainStats]:
    """Train ``models`` in place, model k with ``generators[k]``, as ``train_model`` would."""
    if not can_train_in_parallel(models):
        raise ValueError("these models cannot be trained stacked (fewer than two, different "
                         "architectures, or BatchNorm); train them one by one")
    if len(generators) != len(models):
        raise ValueError(f"{len(models)} models but {len(generators)} generators")
    if config.optimizer != "sgd" or config.cosine:
        raise ValueError("stacked training implements the standard SGD step schedule only")
    device = next(models[0].parameters()).device
    images, labels = images.to(device), labels.to(device)
    n, k = images.shape[0], len(models)
    params, buffers = stack_module_state(list(models))
    leaves = [p.detach().requires_grad_(True) for p in params.values()]
    params = dict(zip(params, leaves, strict=True))
    base = copy.deepcopy(models[0]).to("meta")

    def forward(p: dict, b: dict, x: torch.Tensor) -> torch.Tensor:
        return functional_call(base, (p, b), (x,))

    batched = vmap(forward, in_dims=(0, 0, 0))

    def make_optimizer(lr: float) -> torch.optim.Optimizer:
        return torch.optim.SGD(leaves, lr=lr, momentum=config.momentum,
                               weight_decay=config.weight_decay)

    lr = config.lr
    optimizer = make_optimizer(lr)
    steps = seen = 0
    last = torch.zeros(k)
    start = time.perf_counter()
    for m in models:
        m.train()
    for epoch in range(config.total_epochs):
        orders = [torch.randperm(n, generator=g).to(device) for g in generators]
        for lo in range(0, n, config.batch_size):
            xs, ys = [], []
            for order, g in zip(orders, generators, strict=True):
                idx = order[lo:lo + config.batch_size]
                x = _as_pixels(images[idx])
                xs.append(augment(x, g) if augment is not None else x)
                ys.append(labels[idx])
            x, y = torch.stack(xs), torch.stack(ys)
            logits = batched(params, buffers, x)  # [K, B, C]
            per_model = F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none")
            per_model = per_model.view(k, -1).mean(1)
            optimizer.zero_grad(set_to_none=True)
            per_model.sum().backward()
            optimizer.step()
            last = per_model.detach()
            steps += 1
            seen += int(y.shape[1])
        if epoch == config.decay_after_epoch:
            lr *= 0.1
            optimizer = make_optimizer(lr)  # as train_model: momentum reset at the decay
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    with torch.no_grad():
        for i, m in enumerate(models):
            for name, p in m.named_parameters():
                p.copy_(params[name][i])
    return [TrainStats(config.total_epochs, steps, seen, seconds / k, float(last[i]))
            for i in range(k)]
