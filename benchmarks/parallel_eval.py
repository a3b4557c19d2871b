"""Stacked (vmapped) versus sequential training of the K evaluation models of one set.

Usage::

    ROBUSTDD_DATA=../shared/datasets python benchmarks/parallel_eval.py --dataset cifar10 \
        --ipc 10 --models 5 --epochs 20 --device auto

Trains K ConvNets on a random IPC-k set with the standard protocol's optimiser and DSA, once
one after the other and once stacked, and prints both times, the speed-up and the largest
parameter difference between the two results (float reordering only).
"""

from __future__ import annotations

import argparse
import time

import torch

from robustdd import distill, load_dataset
from robustdd.nn import build_model
from robustdd.nn.dsa import DSA, DSAConfig, default_strategy
from robustdd.nn.parallel import train_models_parallel
from robustdd.nn.train import TrainConfig, train_model
from robustdd.runtime import generator_for, resolve_device


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="cifar10")
    parser.add_argument("--ipc", type=int, default=10)
    parser.add_argument("--models", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    dev = resolve_device(args.device)
    train = load_dataset(args.dataset, "train")
    syn = distill("random", train, args.ipc, seed=0, profile="smoke")
    x, y = syn.images.to(dev), syn.labels.to(dev)
    cfg = TrainConfig(epochs=args.epochs)
    dsa = DSA(DSAConfig(strategy=default_strategy(train.name)), mean=train.mean, std=train.std)
    arch = "convnetd2" if train.image_size < 16 else "convnet"

    def models() -> list[torch.nn.Module]:
        return [build_model(arch, train.num_classes, train.channels, train.image_size,
                            mean=train.mean, std=train.std, seed=k, device=dev)
                for k in range(args.models)]

    gens = lambda: [generator_for(0, "bench", k) for k in range(args.models)]  # noqa: E731
    seq = models()
    start = time.perf_counter()
    for m, g in zip(seq, gens(), strict=True):
        train_model(m, x, y, cfg, g, augment=dsa)
    t_seq = time.perf_counter() - start
    par = models()
    start = time.perf_counter()
    train_models_parallel(par, x, y, cfg, gens(), augment=dsa)
    t_par = time.perf_counter() - start
    diff = max(float((a - b).detach().abs().max()) for m1, m2 in zip(seq, par, strict=True)
               for a, b in zip(m1.parameters(), m2.parameters(), strict=True))
    print(f"{args.dataset} IPC {args.ipc}, K={args.models}, {cfg.total_epochs} epochs, {dev} "
          f"({torch.get_num_threads()} threads): sequential {t_seq:.1f} s, stacked {t_par:.1f} s, "
          f"speed-up {t_seq / t_par:.2f}x, max parameter difference {diff:.2e}")


if __name__ == "__main__":
    main()
