"""Seconds per distillation iteration of each method (and of each robust method against its base).

Usage (the numbers in docs/measurements.md)::

    ROBUSTDD_DATA=../shared/datasets python benchmarks/method_speed.py --dataset cifar10 \
        --ipc 10 --methods dc,guard-dc,rdd-dc,idm,rome,rdd-idm --iterations 2,4

Each method runs at the ``small`` preset (``--profile``) twice, with the two iteration counts;
the slope of the wall-clock time is the cost of one iteration, the intercept the fixed cost
(data, initial images, a robust model or expert buffer already in the cache after a warm-up
run). SRe2L-family methods also report their squeeze time (the teacher, trained fresh in a
private cache). ``--set KEY=VALUE`` overrides a setting of every method that has it, e.g.
``--profile paper --set rpm_epochs=1`` times ROME's paper preset without its 100-epoch robust
model (whose training time the warm-up run reports).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from functools import partial

import torch
from rich.console import Console
from rich.table import Table

from robustdd import distill, load_dataset
from robustdd.cli import parse_overrides
from robustdd.distill.base import get_method
from robustdd.runtime import environment, resolve_device

KD_FAMILY = ("sre2l", "guard-sre2l")


def timed(method: str, train, ipc: int, iterations: int, *, device: str, profile: str,
          overrides: dict) -> tuple[float, dict]:
    start = time.perf_counter()
    syn = distill(method, train, ipc, seed=0, profile=profile, device=device,
                  iterations=iterations, **overrides)
    return time.perf_counter() - start, syn.meta


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="cifar10")
    parser.add_argument("--ipc", type=int, default=10)
    parser.add_argument("--methods", default="dc,guard-dc,rdd-dc,idm,rome,rdd-idm")
    parser.add_argument("--iterations", default="2,4")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--profile", default="small")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    settings = parse_overrides(args.set)
    lo, hi = (int(i) for i in args.iterations.split(","))
    os.environ.setdefault("ROBUSTDD_CACHE", tempfile.mkdtemp(prefix="robustdd-speed-"))
    train = load_dataset(args.dataset, "train")
    dev = resolve_device(args.device)
    table = Table(title=f"{args.dataset} IPC {args.ipc}, {args.profile} preset, {dev.type}"
                  + (f", {settings}" if settings else ""))
    for col in ("method", "s / iteration", "fixed s", "squeeze s"):
        table.add_column(col)
    console = Console()
    for method in args.methods.split(","):
        known = get_method(method).config_cls.model_fields  # --set applies where it exists
        run = partial(timed, method, train, args.ipc, device=args.device, profile=args.profile,
                      overrides={k: v for k, v in settings.items() if k in known})
        warm, meta = run(1)  # fills the caches
        squeeze = meta.get("teacher", {}).get("train", {}).get("seconds") \
            if method in KD_FAMILY else None
        t_lo, _ = run(lo)
        t_hi, _ = run(hi)
        per_it = (t_hi - t_lo) / (hi - lo)
        table.add_row(method, f"{per_it:.2f}", f"{t_lo - lo * per_it:.1f}",
                      f"{squeeze:.0f}" if squeeze is not None else "")
        console.print(f"{method}: {per_it:.2f} s/iteration (warm-up run {warm:.0f} s)")
        robust = (meta.get("rome") or {}).get("robust_model")
        if robust:  # ROME's robust pretrained model, trained in the warm-up run
            console.print(f"  robust model: {robust['train']['seconds']:.1f} s, "
                          f"{robust['config']}")
    console.print(table)
    env = environment(dev)
    console.print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, "
                  f"device {env.get('device_name', dev.type)}, "
                  f"{time.strftime('%Y-%m-%d %H:%M')}")


if __name__ == "__main__":
    main()
