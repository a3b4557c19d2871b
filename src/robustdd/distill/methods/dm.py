"""``dm``: Distribution Matching (Zhao & Bilen, WACV 2023), reference ``main_DM.py``.

Objective (``reference/methods.md`` §4): for a freshly initialised, untrained ConvNet ψ per
iteration and Siamese DSA ω drawn per class,
``Σ_c ‖mean ψ(A_ω(B_c)) − mean ψ(A_ω(S_c))‖²``, minimised over S by SGD (lr 1.0, momentum 0.5).

Faithfulness notes:
* The reference optimises images in mean/std-normalised space with lr 1.0; we optimise the same
  normalised coordinates z = (x − mean)/std and store pixels x, so the dynamics are identical.
* All classes go through the network in one batched forward (real and synthetic separately):
  with instance norm every image is processed independently, so this equals the per-class loop.
  Only the cheap augmentation is applied per class (each class has its own Siamese parameters).
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from robustdd.distill.base import DistillContext, MethodConfig, register_method
from robustdd.distill.checkpoint import generator_state, load_generator_state
from robustdd.distill.common import (
    initial_images,
    normalisation,
    per_class_indices,
    sample_real_batches,
    synthetic_pixels,
)
from robustdd.distilled import DistilledSet
from robustdd.nn import build_model
from robustdd.nn.dsa import DSA, DSAConfig, default_strategy
from robustdd.progress import progress_bar
from robustdd.runtime import derive_seed


class DMConfig(MethodConfig):
    """DM hyperparameters; defaults are ``main_DM.py``'s (methods.md §4)."""

    iterations: int = Field(20000, ge=0)
    lr_img: float = Field(1.0, gt=0)
    momentum: float = Field(0.5, ge=0)
    batch_real: int = Field(256, ge=1)
    init: Literal["real", "noise"] = "real"
    dsa_strategy: str | None = None  # None: the dataset's default strategy


PRESETS = {
    "smoke": {"iterations": 5, "batch_real": 16},
    # Sized for a 2-core CPU (one iteration on CIFAR-10 ≈ C·batch_real forward passes).
    "small": {"iterations": 200, "batch_real": 64},
    "paper": {"iterations": 20000, "batch_real": 256},
}


@register_method("dm", DMConfig, PRESETS, description="Distribution Matching (Zhao & Bilen 2023)")
def run_dm(ctx: DistillContext, config: DMConfig) -> DistilledSet:
    """Run DM and return the synthetic set in pixel space."""
    dev, data, C, ipc = ctx.device, ctx.data, ctx.num_classes, ctx.ipc
    mean, std = normalisation(ctx)
    init_pixels, labels = initial_images(ctx, config.init)
    z = ((init_pixels.to(dev) - mean) / std).requires_grad_(True)
    optimizer = torch.optim.SGD([z], lr=config.lr_img, momentum=config.momentum)
    strategy = config.dsa_strategy or default_strategy(data.name)
    dsa = DSA(DSAConfig(strategy=strategy), mean=data.mean, std=data.std)
    real_images = data.images.to(dev)  # uint8 on the device; converted per batch
    class_idx = per_class_indices(data.labels, C)
    batch_real = min(config.batch_real, min(int(i.numel()) for i in class_idx))
    g = ctx.generator("dm-iterations")
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

    with progress_bar(config.iterations, f"DM {data.name} IPC {ipc}", ctx.progress) as advance:
        advance(start_it)
        for it in range(start_it, config.iterations):
            net = build_model(ctx.arch, C, data.channels, data.image_size, mean=data.mean,
                              std=data.std, seed=derive_seed(ctx.seed, "dm-net", it), device=dev)
            net.train()
            for p in net.parameters():
                p.requires_grad_(False)
            real_idx = sample_real_batches(class_idx, batch_real, g).to(dev)
            syn = (z * std + mean).view(C, ipc, *z.shape[1:])
            real_aug, syn_aug = [], []
            for c in range(C):
                r, s = dsa.siamese(real_images[real_idx[c]].float().div_(255.0), syn[c],
                                   generator=g)
                real_aug.append(r)
                syn_aug.append(s)
            with torch.no_grad():
                emb_real = net.embed(torch.cat(real_aug)).view(C, batch_real, -1).mean(1)
            emb_syn = net.embed(torch.cat(syn_aug)).view(C, ipc, -1).mean(1)
            loss = ((emb_real - emb_syn) ** 2).sum()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()) / C)
            ctx.checkpoint.step(it, config.iterations, state)
            advance(1)
    pixels = synthetic_pixels(z, mean, std, "DM")
    return DistilledSet(
        images=pixels, labels=labels, num_classes=C, dataset=data.name, method="dm", ipc=ipc,
        class_names=data.class_names, mean=data.mean, std=data.std,
        meta={"loss_first": losses[0] if losses else None,
              "loss_last": losses[-1] if losses else None,
              "dsa_strategy": strategy, "resumed_from_iteration": start_it})
