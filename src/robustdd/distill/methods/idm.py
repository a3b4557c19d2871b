"""``idm``: Improved Distribution Matching (Zhao, Li, Qin, Yu, CVPR 2023), reference
``uitrbn/IDM`` ``IDM_cifar10.py`` / ``IDM_cifar100.py`` run with the flags of ``command.txt``.

Per iteration (``reference/methods.md`` §6):

1. at every ``meter_reset_interval``-th iteration (the reference's evaluation points) the pool's
   accuracy meters restart; at every ``net_generate_interval``-th iteration (0 included) a new
   random net joins the FIFO model pool (:mod:`robustdd.distill.pool`);
2. ``train_net_num`` pool nets are drawn; for each, and for each class c in turn, with one
   Siamese DSA parameter set ω_c per class:
   ``L_c = D(ψ(A_ω(B_c)), ψ(A_ω(P(S_c)))) + ce_weight · acc(%) · CE(f(A_ω(P(S_c))), c)``,
   where P cuts every stored image into its four quadrants and upsamples them ×2 (the
   ``mosaic2x2`` formation), D is the squared distance of the mean embeddings, and acc is the
   net's running training accuracy in percent. One SGD step (lr 0.2, momentum 0.5) on the whole
   synthetic tensor follows every class;
3. ``fetch_net_num`` random pool nets train for ``model_train_steps`` SGD steps on real batches.

The loop is :func:`run_idm_family`; a method built on it (``bacon``, ``rome``) supplies an
:class:`IDMVariant`: its per-class matching term, its per-IPC table, and optional hooks that
transform the real batches before embedding and the pool's training batches.

Faithfulness notes:

* Images are optimised in the reference's mean/std-normalised coordinates (its CIFAR loaders
  normalise) and stored as pixels, so lr 0.2 means what it means there. The momentum buffer
  covers the whole tensor, so a class step also moves the other classes' images by their
  decaying momentum, as in the reference (one optimizer, one step per class).
* The real side does not depend on the synthetic images and the matching net is fixed within an
  iteration, so the real batches of several classes are augmented per class and embedded in one
  no-grad forward, up to ``real_forward_batch`` images at a time; the synthetic side stays
  sequential because each class sees the images left by the previous class's step.
* The CE logits come from the classifier head applied to the same embedding (every zoo model's
  ``forward`` is ``classifier(embed(x))``); the reference runs a second full forward.
* ``iterations`` counts image-update iterations. The reference loops ``it = 0 … Iteration``: its
  last evaluation sees ``Iteration`` updates and its saved set one more.
* Real batches have ``min(batch_real, smallest class size)`` images for every class (the
  reference takes the whole class when it is smaller; the same on balanced data such as CIFAR).
* Only the ``--aug`` path (2×2 mosaics) is implemented: every published command uses it.
* Nets, their initialisation and every draw come from seeds derived from the run's seed; the
  reference reseeds from the wall clock.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from robustdd.data import sample_per_class
from robustdd.distill.base import DistillContext, MethodConfig, register_method
from robustdd.distill.checkpoint import generator_state, load_generator_state
from robustdd.distill.common import (
    initial_images,
    normalisation,
    per_class_indices,
    sample_real_batches,
    synthetic_pixels,
)
from robustdd.distill.formation import decode_mosaic2x2, make_mosaic2x2
from robustdd.distill.losses.distribution import mean_embedding_distance
from robustdd.distill.pool import ModelPool, Perturb, PoolMember, PoolObjective
from robustdd.distilled import DistilledSet
from robustdd.nn import build_model
from robustdd.nn.dsa import DSA, DSAConfig, DSAParams, default_strategy
from robustdd.progress import progress_bar

__all__ = [
    "IDM_TABLE",
    "PRESETS",
    "ClassLoss",
    "IDMConfig",
    "IDMVariant",
    "ScheduleRow",
    "mosaic_init",
    "run_idm_family",
    "schedule_for",
]


class ScheduleRow(NamedTuple):
    """The settings IDM's ``command.txt`` varies by dataset and IPC."""

    ce_weight: float
    batch_real: int
    net_generate_interval: int
    model_train_steps: int
    eval_interval: int  # where the reference resets the pool's accuracy meters


#: ``command.txt`` of uitrbn/IDM (methods.md §6 table). Other datasets use CIFAR-10's rows.
IDM_TABLE: dict[str, dict[int, ScheduleRow]] = {
    "cifar10": {1: ScheduleRow(0.5, 5000, 5, 10, 100),
                10: ScheduleRow(0.5, 256, 30, 10, 100),
                50: ScheduleRow(0.1, 256, 30, 10, 500)},
    "cifar100": {1: ScheduleRow(0.5, 5000, 5, 10, 100),
                 10: ScheduleRow(0.1, 256, 30, 50, 100),
                 50: ScheduleRow(0.1, 256, 30, 10, 500)},
}

Table = Mapping[str, Mapping[int, ScheduleRow]]


def schedule_for(table: Table, dataset: str, ipc: int) -> tuple[ScheduleRow, str]:
    """The table row for (``dataset``, ``ipc``) and a note on where it came from.

    Datasets without rows (Fashion-MNIST, SVHN, digits, ...) use CIFAR-10's. IPCs without a
    row use IPC 1's only at IPC 1, IPC 10's below 50 and IPC 50's from 50 on.
    """
    key = dataset.strip().lower()
    source = key if key in table else "cifar10"
    rows = table[source]
    row_ipc = ipc if ipc in rows else (1 if ipc == 1 else 10 if ipc < 50 else 50)
    note = f"{source} IPC {row_ipc} row of the reference command.txt"
    if source != key:
        note += f" (no reference settings for {dataset}; CIFAR-10's used)"
    elif row_ipc != ipc:
        note += f" (no row for IPC {ipc})"
    return rows[row_ipc], note


class IDMConfig(MethodConfig):
    """IDM hyperparameters. Defaults are the published commands (methods.md §6); ``None``
    fields come from the per-dataset/IPC table (:data:`IDM_TABLE`)."""

    iterations: int = Field(20000, ge=0)
    lr_img: float = Field(0.2, gt=0)
    momentum: float = Field(0.5, ge=0)  # image optimizer
    init: Literal["real", "noise"] = "real"  # real: 2×2 mosaics of ×0.5 real images
    ce_weight: float | None = Field(None, ge=0)
    batch_real: int | None = Field(None, ge=1)  # real images per class per matching
    net_generate_interval: int | None = Field(None, ge=1)
    model_train_steps: int | None = Field(None, ge=0)
    meter_reset_interval: int | None = Field(None, ge=1)  # the reference's eval_interval
    initial_nets: int = Field(3, ge=1)
    net_num: int = Field(100, ge=1)  # pool capacity
    train_net_num: int = Field(1, ge=1)  # matching nets per iteration
    fetch_net_num: int = Field(2, ge=0)  # pool nets trained per iteration
    trained_bs: int = Field(256, ge=1)
    lr_net: float = Field(0.01, gt=0)
    net_momentum: float = Field(0.9, ge=0)
    net_weight_decay: float = Field(5e-4, ge=0)
    dsa_strategy: str | None = None  # None: the dataset's default strategy
    # Memory knob only: real images per no-grad forward (results equal up to rounding).
    real_forward_batch: int = Field(4096, ge=1)


PRESETS: dict[str, dict[str, Any]] = {
    "smoke": {"iterations": 5, "batch_real": 16, "trained_bs": 32, "model_train_steps": 2,
              "net_generate_interval": 2},
    # Sized for a 2-core CPU: CIFAR-10 IPC 1 and IPC 10 in about 4-8 minutes (measured 8-15
    # s/iteration on a shared, loaded 2-core CPU; less when it is idle). Shrunk: iterations
    # (20000 → 30), real batch per class (256, or 5000 at IPC 1 → 64), pool training (10 steps
    # of 256 → 2 steps of 64). Kept from the table: ce_weight, net_generate_interval, meter
    # resets; lr's, pool size.
    "small": {"iterations": 30, "batch_real": 64, "trained_bs": 64, "model_train_steps": 2},
    "paper": {"iterations": 20000},
}

#: ``class_loss(real_emb [n, d], syn_emb [m, d]) -> scalar``: a method's matching term for one
#: class (the CE regulariser is added by the loop). Real embeddings are detached.
ClassLoss = Callable[[Tensor, Tensor], Tensor]
PoolLossWithSet = Callable[[nn.Module, Tensor, Tensor, Tensor, Tensor, Tensor, torch.Generator],
                           Tensor]


@dataclass(frozen=True)
class IDMVariant:
    """What a method built on the IDM loop changes.

    * ``class_loss``: the per-class matching term (IDM: squared distance of mean embeddings).
    * ``table``: per-dataset/IPC defaults for the ``None`` fields of the config.
    * ``ce_scale``: extra factor on the CE regulariser (ROME: 1 − α).
    * ``accuracy_weighted_ce``: multiply the CE term by the matching net's training accuracy in
      percent, as every reference does; ``False`` uses a plain ``ce_weight · ce_scale``.
    * ``real_transform(net, real, labels, generator) -> real``: applied to the DSA-augmented
      real pixels of a group of classes (labels: their classes) before they are embedded
      (ROME's robust prior: targeted PGD against the matching net). Runs with gradients
      enabled; the embedding happens under no_grad.
    * ``pool_perturb(net, images, labels, generator) -> images``: applied to each pool training
      batch (ROME's adversarial training of the pool).
    * ``matching_net``: a fixed network to match with instead of the pool (ROME's robust
      pretrained model); the pool is then neither built nor trained. Accuracy-weighted CE
      needs the pool's running accuracies, so it must be off.
    * ``pool_objective(net, logits, x, y, syn, syn_labels, generator) -> loss``: replaces the
      pool's training CE; ``syn`` are the current decoded synthetic pixels (RDD's clusters).

    Hooks draw randomness only from the generator they are given (the loop's, which
    checkpoints save), so runs with hooks stay reproducible and resumable.
    """

    method: str
    class_loss: ClassLoss = mean_embedding_distance
    table: Table = field(default_factory=lambda: IDM_TABLE)
    ce_scale: float = 1.0
    accuracy_weighted_ce: bool = True
    real_transform: Perturb | None = None
    pool_perturb: Perturb | None = None
    matching_net: nn.Module | None = None
    pool_objective: PoolLossWithSet | None = None
    meta: dict[str, Any] = field(default_factory=dict)  # merged into the result's meta

    def __post_init__(self) -> None:
        if self.matching_net is not None and self.accuracy_weighted_ce:
            raise ValueError(f"{self.method}: accuracy-weighted CE uses the pool nets' running "
                             "accuracies, so it cannot be combined with a fixed matching net")


@dataclass
class FixedNet:
    """A fixed matching network in the role of a pool member (no accuracy meter)."""

    net: nn.Module
    accuracy: float = 0.0


def mosaic_init(ctx: DistillContext) -> tuple[Tensor, Tensor]:
    """IDM's real initialisation: each stored image is a 2×2 mosaic of four random real images
    of its class, each downscaled ×0.5 (bilinear). Returns class-major pixels and labels."""
    g = ctx.generator("init")
    labels = torch.arange(ctx.num_classes).repeat_interleave(ctx.ipc)
    quadrants = [ctx.data.pixels(sample_per_class(ctx.data.labels, ctx.num_classes, ctx.ipc, g))
                 for _ in range(4)]
    return make_mosaic2x2(torch.stack(quadrants, dim=1)), labels


def _logits(net: nn.Module, embedding: Tensor, images: Tensor) -> Tensor:
    """Logits from an embedding via the classifier head, or a full forward without one."""
    head = getattr(getattr(net, "net", None), "classifier", None)
    return head(embedding) if isinstance(head, nn.Module) else net(images)


def _embed(net: nn.Module, images: Tensor, chunk: int) -> Tensor:
    return torch.cat([net.embed(images[lo:lo + chunk]) for lo in range(0, images.shape[0], chunk)])


@dataclass
class _Loop:
    """The fixed parts of one run (kept together so the per-net matching reads simply)."""

    ctx: DistillContext
    config: IDMConfig
    variant: IDMVariant
    z: Tensor
    optimizer: torch.optim.Optimizer
    dsa: DSA
    real_images: Tensor
    class_idx: list[Tensor]
    batch_real: int
    ce_weight: float
    mean: Tensor
    std: Tensor

    def match(self, member: PoolMember | FixedNet, g: torch.Generator) -> Tensor:
        """One pass over the classes with pool net ``member``: a synthetic step per class.
        Returns the summed class losses (detached)."""
        z, ipc, C = self.z, self.ctx.ipc, self.ctx.num_classes
        dev = z.device
        net = member.net
        net.eval()
        weight = member.accuracy if self.variant.accuracy_weighted_ce else 1.0
        ce_coef = self.ce_weight * self.variant.ce_scale * weight
        real_idx = sample_real_batches(self.class_idx, self.batch_real, g).to(dev)
        size = (z.shape[-2], z.shape[-1])
        params: list[DSAParams] = [self.dsa.sample(1, size, g, siamese=True) for _ in range(C)]
        group = max(1, self.config.real_forward_batch // self.batch_real)
        total = torch.zeros((), device=dev)
        for lo in range(0, C, group):
            classes = range(lo, min(C, lo + group))
            real = torch.cat([self.dsa.apply(self.real_images[real_idx[c]].float().div_(255.0),
                                             params[c]) for c in classes])
            if self.variant.real_transform is not None:
                labels = torch.arange(lo, lo + len(classes), device=dev)
                real = self.variant.real_transform(
                    net, real, labels.repeat_interleave(self.batch_real), g)
                net.eval()
            with torch.no_grad():
                emb_real = _embed(net, real, self.config.real_forward_batch)
            emb_real = emb_real.view(len(classes), self.batch_real, -1)
            for k, c in enumerate(classes):
                syn = decode_mosaic2x2(z[c * ipc:(c + 1) * ipc] * self.std + self.mean)
                syn = self.dsa.apply(syn, params[c])
                emb_syn = net.embed(syn)
                loss = self.variant.class_loss(emb_real[k], emb_syn)
                if ce_coef:
                    target = torch.full((syn.shape[0],), c, dtype=torch.int64, device=dev)
                    loss = loss + ce_coef * F.cross_entropy(_logits(net, emb_syn, syn), target)
                # Gradient for the images only (the net's weights are not being trained here).
                (z.grad,) = torch.autograd.grad(loss, z)
                self.optimizer.step()
                total += loss.detach()
        return total


def run_idm_family(ctx: DistillContext, config: IDMConfig, variant: IDMVariant) -> DistilledSet:
    """Run the IDM loop with ``variant``'s matching term and hooks; pixels in mosaic2x2 form."""
    dev, data, C, ipc = ctx.device, ctx.data, ctx.num_classes, ctx.ipc
    if data.image_size % 2:
        raise ValueError(f"{variant.method} stores 2×2 mosaics and needs an even image size, "
                         f"got {data.image_size}")
    row, source = schedule_for(variant.table, data.name, ipc)
    settings = {name: getattr(config, name) if getattr(config, name) is not None else default
                for name, default in (("ce_weight", row.ce_weight),
                                      ("batch_real", row.batch_real),
                                      ("net_generate_interval", row.net_generate_interval),
                                      ("model_train_steps", row.model_train_steps),
                                      ("meter_reset_interval", row.eval_interval))}
    mean, std = normalisation(ctx)
    if config.init == "real":
        init_pixels, labels = mosaic_init(ctx)
    else:
        init_pixels, labels = initial_images(ctx, "noise")
    z = ((init_pixels.to(dev) - mean) / std).requires_grad_(True)
    optimizer = torch.optim.SGD([z], lr=config.lr_img, momentum=config.momentum)
    strategy = config.dsa_strategy or default_strategy(data.name)
    dsa = DSA(DSAConfig(strategy=strategy), mean=data.mean, std=data.std)
    real_images = data.images.to(dev)  # uint8 on the device; converted per batch
    class_idx = per_class_indices(data.labels, C)
    batch_real = min(int(settings["batch_real"]), min(int(i.numel()) for i in class_idx))

    def build(seed: int) -> nn.Module:
        return build_model(ctx.arch, C, data.channels, data.image_size, mean=data.mean,
                           std=data.std, seed=seed, device=dev)

    fixed = variant.matching_net
    pool = ModelPool(build, ctx.seed, real_images, data.labels.to(dev),
                     initial=0 if fixed is not None else config.initial_nets,
                     capacity=config.net_num, lr=config.lr_net,
                     momentum=config.net_momentum, weight_decay=config.net_weight_decay,
                     perturb=variant.pool_perturb)
    g_match = ctx.generator(variant.method, "match")
    g_pool = ctx.generator(variant.method, "pool-train")
    losses: list[float] = []
    start_it = 0
    if (saved := ctx.checkpoint.restore()) is not None:
        with torch.no_grad():
            z.copy_(saved["z"].to(dev))
        optimizer.load_state_dict(saved["optimizer"])
        pool.load_state_dict(saved["pool"])
        load_generator_state(g_match, saved["generators"]["match"])
        load_generator_state(g_pool, saved["generators"]["pool"])
        losses, start_it = list(saved["losses"]), int(saved["iteration"])

    def state() -> dict[str, Any]:
        return {"z": z.detach().cpu(), "optimizer": optimizer.state_dict(),
                "pool": pool.state_dict(), "losses": losses,
                "generators": {"match": generator_state(g_match),
                               "pool": generator_state(g_pool)}}

    loop = _Loop(ctx, config, variant, z, optimizer, dsa, real_images, class_idx, batch_real,
                 float(settings["ce_weight"]), mean, std)
    decoded_labels = labels.to(dev).repeat(4)  # decode_mosaic2x2 is quadrant-major

    def pool_objective() -> PoolObjective | None:
        """The variant's pool loss bound to the synthetic images as they are now."""
        if variant.pool_objective is None:
            return None
        syn = decode_mosaic2x2(z.detach() * std + mean)
        hook = variant.pool_objective

        def objective(net: nn.Module, logits: Tensor, x: Tensor, y: Tensor) -> Tensor:
            return hook(net, logits, x, y, syn, decoded_labels, g_pool)

        return objective
    title = f"{variant.method.upper()} {data.name} IPC {ipc}"
    with progress_bar(config.iterations, title, ctx.progress) as advance:
        advance(start_it)
        for it in range(start_it, config.iterations):
            total = torch.zeros((), device=dev)
            if fixed is not None:
                total += loop.match(FixedNet(fixed), g_match)
            else:
                if it > 0 and it % settings["meter_reset_interval"] == 0:
                    pool.reset_meters()
                if it % settings["net_generate_interval"] == 0:
                    pool.push()
                for member in pool.sample(config.train_net_num, g_match):
                    total += loop.match(member, g_match)
                pool.train_some(config.fetch_net_num, settings["model_train_steps"],
                                config.trained_bs, g_pool, pool_objective())
            losses.append(float(total) / C)
            ctx.checkpoint.step(it, config.iterations, state)
            advance(1)
    pixels = synthetic_pixels(z, mean, std, variant.method)
    return DistilledSet(
        images=pixels, labels=labels, num_classes=C, dataset=data.name, method=variant.method,
        ipc=ipc, formation="mosaic2x2", class_names=data.class_names, mean=data.mean,
        std=data.std,
        meta={"loss_first": losses[0] if losses else None,
              "loss_last": losses[-1] if losses else None,
              "dsa_strategy": strategy, "resumed_from_iteration": start_it,
              "schedule": {**settings, "batch_real_used": batch_real, "source": source},
              "pool": {"size": len(pool), "created": pool.created,
                       "accuracies": pool.accuracies()},
              **variant.meta})


@register_method("idm", IDMConfig, PRESETS,
                 description="Improved Distribution Matching (Zhao et al. 2023)")
def run_idm(ctx: DistillContext, config: IDMConfig) -> DistilledSet:
    """Run IDM and return 2×2-mosaic synthetic images in pixel space."""
    return run_idm_family(ctx, config, IDMVariant("idm"))
