"""``dc`` (Zhao, Mopuri & Bilen, ICLR 2021) and ``dsa`` (Zhao & Bilen, ICML 2021): gradient
matching, reference ``DatasetCondensation/main.py`` (``reference/methods.md`` §2, §3).

One implementation, two registrations. Per iteration: a freshly initialised network (seed derived
from (seed, method, iteration)); then ``outer_loop`` times: per class c, a real batch B_c and the
synthetic images S_c, the loss Σ_c D(∇θ CE(S_c), ∇θ CE(B_c)) (layer-wise distance ``ours``), one
SGD step on the images (lr 0.1, momentum 0.5); and, except after the last outer step, ``inner_loop``
epochs of plain SGD (lr 0.01, batch 256) of the network on a detached copy of S. ``dsa`` applies
one Siamese DSA parameter set per class to both batches before matching and per-sample DSA in the
inner epochs; ``dc`` uses no augmentation in either place (the reference mutes DC augmentation
while learning the synthetic set).

Faithfulness notes:
* Images are optimised in mean/std-normalised coordinates z with the reference's lr, and stored
  as pixels, so the dynamics are the reference's.
* BatchNorm freezing (the reference's "BN_flag" block, 16 real images per class before every
  outer step) runs only for networks with BatchNorm; the default instance-norm ConvNet has no
  running statistics, so there is nothing to freeze.
* Randomness (networks, real batches, DSA, inner-loop shuffling) comes from seeds derived from
  the run's seed, never from the wall clock or the global RNG.
* The reference loops ``range(Iteration + 1)`` and evaluates the set before the last update;
  ``iterations`` counts image-update iterations, so 1000 gives the set the reference evaluated.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from pydantic import Field
from torch import nn

from robustdd.distill.base import DistillContext, MethodConfig, register_method
from robustdd.distill.checkpoint import generator_state, load_generator_state
from robustdd.distill.common import (
    initial_images,
    normalisation,
    per_class_indices,
    sample_real_batches,
    synthetic_pixels,
)
from robustdd.distill.losses.gradient import (
    Metric,
    RealLoss,
    class_matching_losses,
    freeze_batchnorm,
)
from robustdd.distilled import DistilledSet
from robustdd.nn import build_model
from robustdd.nn.dsa import DSA, default_strategy
from robustdd.nn.dsa import DSAConfig as AugmentConfig
from robustdd.nn.train import TrainConfig, train_model
from robustdd.progress import progress_bar
from robustdd.runtime import derive_seed

#: ``main.py::get_loops``: IPC → (outer_loop, inner_loop) (methods.md §2).
REFERENCE_LOOPS: dict[int, tuple[int, int]] = {
    1: (1, 1), 10: (10, 50), 20: (20, 25), 30: (30, 20), 40: (40, 15), 50: (50, 10)}
#: Real images per class put through a BatchNorm network before matching (``BNSizePC``).
BN_IMAGES_PER_CLASS = 16


def get_loops(ipc: int) -> tuple[int, int]:
    """The reference (outer_loop, inner_loop) for ``ipc``; other IPCs are an error."""
    if ipc not in REFERENCE_LOOPS:
        raise ValueError(
            f"DC/DSA define (outer_loop, inner_loop) only for IPC "
            f"{', '.join(map(str, REFERENCE_LOOPS))} (main.py get_loops); for ipc={ipc} pass "
            "outer_loop and inner_loop explicitly (the authors suggest (50, 10) or (20, 25) "
            "above IPC 50 and (100, 2) at IPC 100, DatasetCondensation issues #2 and #18)")
    return REFERENCE_LOOPS[ipc]


class DCConfig(MethodConfig):
    """DC hyperparameters; defaults are ``main.py --method DC`` (methods.md §2)."""

    iterations: int = Field(1000, ge=0)
    outer_loop: int | None = Field(None, ge=1)  # None: get_loops(ipc)
    inner_loop: int | None = Field(None, ge=0)  # None: get_loops(ipc)
    # Caps on the get_loops schedule (budget presets only; None: the reference's loops).
    max_outer_loop: int | None = Field(None, ge=1)
    max_inner_loop: int | None = Field(None, ge=0)
    lr_img: float = Field(0.1, gt=0)
    momentum: float = Field(0.5, ge=0)
    lr_net: float = Field(0.01, gt=0)
    batch_real: int = Field(256, ge=1)
    batch_train: int = Field(256, ge=1)
    init: Literal["real", "noise"] = "noise"
    dis_metric: Metric = "ours"
    dsa: bool = False  # Siamese DSA in matching, DSA in the inner epochs
    dsa_strategy: str | None = None  # None: the dataset's default strategy
    matching_mode: Literal["loop", "vmap"] = "loop"  # see losses/gradient.py for timings

    def loops(self, ipc: int) -> tuple[int, int]:
        """The (outer_loop, inner_loop) this config uses at ``ipc``."""
        if self.outer_loop is not None and self.inner_loop is not None:
            return self.outer_loop, self.inner_loop
        outer, inner = get_loops(ipc)
        if self.max_outer_loop is not None:
            outer = min(outer, self.max_outer_loop)
        if self.max_inner_loop is not None:
            inner = min(inner, self.max_inner_loop)
        # An explicit value wins over the (capped) reference one.
        return (self.outer_loop if self.outer_loop is not None else outer,
                self.inner_loop if self.inner_loop is not None else inner)


class DSAMethodConfig(DCConfig):
    """DSA = DC + Siamese augmentation, initialised from real images (readme command, §3)."""

    init: Literal["real", "noise"] = "real"
    dsa: bool = True


PRESETS = {
    # Wiring checks in seconds: explicit loops, so any IPC works.
    "smoke": {"iterations": 3, "batch_real": 8, "outer_loop": 2, "inner_loop": 1},
    # A few minutes on a 2-core CPU for CIFAR-10 at IPC 1 and 10. One reference iteration at
    # IPC 10 is 10 outer steps × 10 classes of 256-image gradients plus 9 × 50 inner epochs,
    # minutes by itself on such a CPU; capping the schedule at (3, 5) and the real batch at 32
    # keeps the curriculum's shape (match, train the net on S, match again) at a tenth of the
    # cost. IPC 1 is unaffected by the caps (its reference schedule is (1, 1)). Ten
    # iterations cannot turn noise into images (measured at IPC 10: 25.65 % from noise vs
    # 31.28 % for random real images), so `small` starts DC from real images like DSA.
    "small": {"iterations": 10, "batch_real": 32, "max_outer_loop": 3, "max_inner_loop": 5,
              "init": "real"},
    # The reference: Iteration 1000, batch_real 256, get_loops (methods.md §2, §11.2).
    "paper": {"iterations": 1000, "batch_real": 256},
}


#: ``net_update(net, real_batch, syn_pixels, syn_labels, inner_config, generator, matched_real,
#: matched_syn)``: replaces the inner-loop training of the network on S (RDD trains it on
#: clustered real data); ``real_batch(n)`` draws n fresh real images per class, [C, n, ...]
#: pixels; ``matched_real``/``matched_syn`` are this outer step's matching batches, [C, n, ...]
#: pixels after the Siamese augmentation (detached).
NetUpdate = Callable[[nn.Module, Callable[[int], torch.Tensor], torch.Tensor, torch.Tensor,
                      TrainConfig, torch.Generator, torch.Tensor, torch.Tensor], None]


def run_gradient_matching(ctx: DistillContext, config: DCConfig, name: str, *,
                          real_loss: RealLoss | None = None, meta: dict | None = None,
                          stream: str | None = None,
                          net_update: NetUpdate | None = None) -> DistilledSet:
    """The DC/DSA loop; ``real_loss`` replaces the real side's CE (GUARD-DC), ``net_update``
    the network's inner-loop training on S (RDD), ``meta`` is merged into the result's,
    ``stream`` (default ``name``) names the random streams, so a variant can share its base
    method's networks and batches for like-for-like comparisons."""
    stream = stream or name
    dev, data, C, ipc = ctx.device, ctx.data, ctx.num_classes, ctx.ipc
    outer_loop, inner_loop = config.loops(ipc)
    mean, std = normalisation(ctx)
    init_pixels, labels = initial_images(ctx, config.init)
    z = ((init_pixels.to(dev) - mean) / std).requires_grad_(True)
    optimizer = torch.optim.SGD([z], lr=config.lr_img, momentum=config.momentum)
    strategy = (config.dsa_strategy or default_strategy(data.name)) if config.dsa else "none"
    dsa = DSA(AugmentConfig(strategy=strategy), mean=data.mean, std=data.std)
    real_images = data.images.to(dev)  # uint8 on the device; converted per batch
    class_idx = per_class_indices(data.labels, C)
    batch_real = min(config.batch_real, min(int(i.numel()) for i in class_idx))
    real_labels = torch.arange(C, device=dev).view(C, 1).expand(C, batch_real)
    syn_labels = labels.to(dev).view(C, ipc)
    inner = TrainConfig(epochs=inner_loop, lr=config.lr_net, momentum=0.0, weight_decay=0.0,
                        batch_size=config.batch_train, decay=False, extra_epoch=False)
    g = ctx.generator(f"{stream}-iterations")
    losses: list[float] = []
    start_it = 0
    if (saved := ctx.checkpoint.restore()) is not None:
        with torch.no_grad():
            z.copy_(saved["z"].to(dev))
        optimizer.load_state_dict(saved["optimizer"])
        load_generator_state(g, saved["generator"])
        losses, start_it = list(saved["losses"]), int(saved["iteration"])

    def state() -> dict:
        return {"z": z.detach().cpu(), "optimizer": optimizer.state_dict(),
                "generator": generator_state(g), "losses": losses}

    def real_batch(n: int) -> torch.Tensor:
        idx = sample_real_batches(class_idx, n, g).to(dev)
        return real_images[idx].float().div_(255.0)  # [C, n, ch, H, W]

    title = f"{name.upper()} {data.name} IPC {ipc}"
    with progress_bar(config.iterations, title, ctx.progress) as advance:
        advance(start_it)
        for it in range(start_it, config.iterations):
            net = build_model(ctx.arch, C, data.channels, data.image_size, mean=data.mean,
                              std=data.std, seed=derive_seed(ctx.seed, f"{stream}-net", it),
                              device=dev)
            net.train()
            has_bn = any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
                         for m in net.modules())
            total = 0.0
            for ol in range(outer_loop):
                if has_bn:
                    freeze_batchnorm(net, real_batch(BN_IMAGES_PER_CLASS).flatten(0, 1))
                real = real_batch(batch_real)
                syn = (z * std + mean).view(C, ipc, *z.shape[1:])
                if config.dsa:
                    pairs = [dsa.siamese(real[c], syn[c], generator=g) for c in range(C)]
                    real = torch.stack([p[0] for p in pairs])
                    syn = torch.stack([p[1] for p in pairs])
                loss = class_matching_losses(net, real, real_labels, syn, syn_labels,
                                             config.dis_metric, config.matching_mode,
                                             real_loss=real_loss).sum()
                optimizer.zero_grad(set_to_none=True)
                loss.backward(inputs=[z])  # the network's .grad stays untouched
                optimizer.step()
                total += float(loss.detach())
                if ol == outer_loop - 1 or inner_loop == 0:
                    continue
                syn_train = (z.detach() * std + mean)
                if net_update is not None:
                    net_update(net, real_batch, syn_train, labels.to(dev), inner, g,
                               real.detach(), syn.detach())
                else:
                    train_model(net, syn_train, labels.to(dev), inner, g,
                                augment=dsa if config.dsa else None)
            losses.append(total / (C * outer_loop))
            ctx.checkpoint.step(it, config.iterations, state)
            advance(1)
    pixels = synthetic_pixels(z, mean, std, name.upper())
    return DistilledSet(
        images=pixels, labels=labels, num_classes=C, dataset=data.name, method=name, ipc=ipc,
        class_names=data.class_names, mean=data.mean, std=data.std,
        meta={"loss_first": losses[0] if losses else None,
              "loss_last": losses[-1] if losses else None,
              "outer_loop": outer_loop, "inner_loop": inner_loop,
              "dsa_strategy": strategy, "resumed_from_iteration": start_it,
              **(meta or {})})


@register_method("dc", DCConfig, PRESETS,
                 description="Dataset Condensation with gradient matching (Zhao et al. 2021)")
def run_dc(ctx: DistillContext, config: DCConfig) -> DistilledSet:
    """Run DC and return the synthetic set in pixel space."""
    return run_gradient_matching(ctx, config, "dc")


@register_method("dsa", DSAMethodConfig, PRESETS,
                 description="DC with Differentiable Siamese Augmentation (Zhao & Bilen 2021)")
def run_dsa(ctx: DistillContext, config: DSAMethodConfig) -> DistilledSet:
    """Run DSA and return the synthetic set in pixel space."""
    return run_gradient_matching(ctx, config, "dsa")
