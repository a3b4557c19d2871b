"""Attack throughput (images/s): robustdd's attacks against torchattacks 3.5.1 on ConvNet-3.

Usage::

    python benchmarks/attack_throughput.py --device auto --batch 256 --repeats 3

Model: ConvNet-3 (width 128, instance norm) for CIFAR-10-shaped input (3×32×32), normalising
internally, briefly trained on the first ``--train-images`` CIFAR-10 training images when the
data is found (``--data-root``, else ``$ROBUSTDD_DATA``, else ``../shared/datasets``), random
init otherwise. Images: the first ``--batch`` CIFAR-10 test images (uniform noise without the
data). Labels are the model's own clean predictions, so every example starts correctly classified
and both libraries attack the same set. Each attack runs once on 16 images as a warm-up, then
``--repeats`` times on the whole batch; the table shows the median. torchattacks is installed
with ``pip install --no-deps torchattacks==3.5.1`` (it needs no torchvision for these attacks).
Timings depend on the machine and on whatever else runs on it: record both with the numbers.

On a CPU robustdd's attacks run their forward/backward passes in chunks of a few images
(``robustdd.batching``); torchattacks passes the whole batch (FGSM, PGD, CW) or one image at a
time (DeepFool). To show how much of a speed-up comes from that alone, the script also times an
input gradient and the gradients of the 9 logit gaps (DeepFool's unit of work since 2026-12-04;
the full 10-class Jacobian before) one image at a time, in robustdd's chunks and for the whole
batch (``--no-passes`` skips this).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from robustdd import load_dataset
from robustdd.attacks import AttackSpec, run_attack
from robustdd.attacks.deepfool import deepfool, gap_jacobian
from robustdd.batching import ChunkedForward, chunk_size, chunked_for
from robustdd.data import ImageDataset
from robustdd.nn import build_model
from robustdd.nn.train import TrainConfig, train_model
from robustdd.runtime import resolve_device

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)
Attack = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def load_cifar(root: Path | None) -> tuple[ImageDataset, ImageDataset] | None:
    """CIFAR-10 (train, test) from ``root`` if it holds the cache format, else ``None``."""
    if root is None or not (root / "cifar10").is_dir():
        return None
    return load_dataset("cifar10", "train", root=root), load_dataset("cifar10", "test", root=root)


def make_model(device: torch.device, data: tuple[ImageDataset, ImageDataset] | None,
               train_images: int, epochs: int, seed: int) -> nn.Module:
    net = build_model("convnet", 10, 3, 32, mean=CIFAR_MEAN, std=CIFAR_STD, seed=seed)
    if data is not None and train_images > 0 and epochs > 0:
        train, _ = data
        idx = torch.arange(min(train_images, len(train.labels)))
        train_model(net, train.pixels(idx), train.labels[idx],
                    TrainConfig(epochs=epochs, lr=0.01, batch_size=256),
                    torch.Generator().manual_seed(seed))
    return net.to(device).eval()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def robust_accuracy(model: nn.Module, adv: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return (model(adv).argmax(1) == y).float().mean().item() * 100


def timed(fn: Attack, x: torch.Tensor, y: torch.Tensor, repeats: int,
          device: torch.device) -> tuple[float, torch.Tensor]:
    """Median seconds over ``repeats`` runs (after a 16-image warm-up) and the last output."""
    fn(x[:16], y[:16])
    sync(device)
    times, out = [], x
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn(x, y)
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def pass_speeds(model: nn.Module, x: torch.Tensor, y: torch.Tensor, repeats: int,
                device: torch.device) -> dict[str, dict[str, float]]:
    """Images/s of an input gradient and of the gradients of the 9 logit gaps (DeepFool's unit
    of work) one example at a time, in the device's chunks (robustdd.batching) and all at
    once."""
    def gradient(m: nn.Module) -> Attack:
        def run(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            a = a.detach().requires_grad_(True)
            loss = torch.nn.functional.cross_entropy(m(a), b, reduction="sum")
            return torch.autograd.grad(loss, a)[0]
        return run

    def jacobian(m: nn.Module) -> Attack:
        def run(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            a = a.detach().requires_grad_(True)
            return gap_jacobian(m(a), a, b)[1]
        return run

    default = chunk_size(x.device, x.shape) or x.shape[0]
    speeds: dict[str, dict[str, float]] = {}
    for name, make in (("input gradient", gradient), ("logit-gap Jacobian", jacobian)):
        for label, chunk in (("one at a time", 1), (f"chunks of {default}", default),
                             ("whole batch", x.shape[0])):
            seconds, _ = timed(make(ChunkedForward(model, chunk)), x, y, repeats, device)
            speeds.setdefault(name, {})[label] = x.shape[0] / seconds
    return speeds


def ours(model: nn.Module, spec: AttackSpec) -> Attack:
    return lambda x, y: run_attack(model, x, y, spec).adversarial


def theirs(model: nn.Module, name: str) -> Attack | None:
    try:
        from torchattacks.attacks.cw import CW
        from torchattacks.attacks.deepfool import DeepFool
        from torchattacks.attacks.fgsm import FGSM
        from torchattacks.attacks.pgd import PGD
    except ImportError:
        return None
    # (the caller freezes the parameters: torchattacks' DeepFool would otherwise fill .grad)
    attack = {
        "fgsm": lambda: FGSM(model, eps=8 / 255),
        "pgd": lambda: PGD(model, eps=8 / 255, alpha=2 / 255, steps=10, random_start=False),
        "cw": lambda: CW(model, c=1, kappa=0, steps=100, lr=0.01),
        "deepfool": lambda: DeepFool(model, steps=50, overshoot=0.02),
    }[name]()
    return lambda x, y: attack(x, y)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--attacks", default="fgsm,pgd,cw,deepfool")
    parser.add_argument("--train-images", type=int, default=5000)
    parser.add_argument("--train-epochs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    parser.add_argument("--data-root", type=Path, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--passes", action=argparse.BooleanOptionalAction, default=True,
                        help="also time input gradients and Jacobians by chunk size")
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    root = args.data_root or Path(os.environ.get("ROBUSTDD_DATA", "")
                                  or Path(__file__).resolve().parents[2] / "shared" / "datasets")
    data = load_cifar(root)
    model = make_model(device, data, args.train_images, args.train_epochs, args.seed)
    model.requires_grad_(False)
    if data is not None:
        x = data[1].pixels(torch.arange(args.batch)).to(device)
        source = "CIFAR-10 test images"
    else:
        x = torch.rand(args.batch, 3, 32, 32, generator=torch.Generator().manual_seed(args.seed))
        x = x.to(device)
        source = "uniform noise (no CIFAR-10 found)"
    with torch.no_grad():
        y = model(x).argmax(1)

    # One attack call sees the whole batch, as torchattacks does (evaluations split into
    # BEARD's batches of 256; runs before 2026-12-04 18:40 did that here too).
    one_call = {"batch_size": args.batch}
    specs = {
        "fgsm": ("FGSM ε=8/255", AttackSpec(name="fgsm", **one_call)),
        "pgd": ("PGD-L∞ 10 steps", AttackSpec(name="pgd", **one_call)),
        "cw": ("CW-L2 100 steps", AttackSpec(name="cw", **one_call)),
        "deepfool": ("DeepFool 50 steps", AttackSpec(name="deepfool", **one_call)),
    }
    rows = []
    for name in args.attacks.split(","):
        title, spec = specs[name]
        variants: list[tuple[str, Attack, Attack | None]] = [(title, ours(model, spec),
                                                              theirs(model, name))]
        if name == "deepfool":  # the same algorithm as torchattacks, batched
            variants.append(("DeepFool, torchattacks variant",
                             lambda a, b: deepfool(chunked_for(model, a), a, b,
                                                   variant="torchattacks"),
                             theirs(model, name)))
        for label, mine, ref in variants:
            t_ours, adv = timed(mine, x, y, args.repeats, device)
            acc_ours = robust_accuracy(model, adv, y)
            t_ref, acc_ref = float("nan"), float("nan")
            if ref is not None:
                t_ref, adv_ref = timed(ref, x, y, args.repeats, device)
                acc_ref = robust_accuracy(model, adv_ref, y)
            rows.append((label, args.batch / t_ours, args.batch / t_ref, t_ref / t_ours,
                         acc_ours, acc_ref))
            print(f"  done: {label}", flush=True)

    print(f"\ndevice {device} ({torch.get_num_threads()} threads), torch {torch.__version__}, "
          f"batch {args.batch} of {source}, ConvNet-3 "
          f"{'trained' if data is not None and args.train_epochs else 'random init'}, "
          f"median of {args.repeats}")
    print(f"{'attack':34s} {'ours img/s':>11s} {'TA img/s':>10s} {'speed-up':>9s} "
          f"{'acc ours':>9s} {'acc TA':>7s}")
    for label, ips, ips_ref, ratio, acc, acc_ref in rows:
        print(f"{label:34s} {ips:11.1f} {ips_ref:10.1f} {ratio:8.2f}x {acc:8.1f}% {acc_ref:6.1f}%")
    if args.passes:
        for name, speeds in pass_speeds(model, x, y, args.repeats, device).items():
            single = speeds["one at a time"]
            print(f"{name} img/s: " + ", ".join(f"{label} {ips:.1f} ({ips / single:.2f}x)"
                                                 for label, ips in speeds.items()))
    print(time.strftime("measured %Y-%m-%d %H:%M"))


if __name__ == "__main__":
    main()
