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

import torch
import yaml
from rich.console import Console
from rich.table import Table

from robustdd import distill, load_dataset
from robustdd.distill.base import get_method
from robustdd.runtime import environment, resolve_device

KD_FAMILY = ("sre2l", "guard-sre2l")


def timed(method: str, train, ipc: int, iterations: int, device: str, profile: str,
          settings: dict) -> tuple[float, dict]:
    known = get_method(method).config_cls.model_fields
    extra = {k: v for k, v in settings.items() if k in known}
    start = time.perf_counter()
    syn = distill(method, train, ipc, seed=0, profile=profile, device=device,
                  iterations=iterations, **extra)
    return time.perf_counter() - start, syn.meta


def parse_settings(pairs: list[str]) -> dict:
    """``KEY=VALUE`` strings to a dict, values read as YAML scalars (``1`` is an int)."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"--set wants KEY=VALUE, got {pair!r}")
        out[key] = yaml.safe_load(value)
    return out


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
    settings = parse_settings(args.set)
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
        run = (method, train, args.ipc)
        warm, meta = timed(*run, 1, args.device, args.profile, settings)  # fills the caches
        squeeze = meta.get("teacher", {}).get("train", {}).get("seconds") \
            if method in KD_FAMILY else None
        t_lo, _ = timed(*run, lo, args.device, args.profile, settings)
        t_hi, _ = timed(*run, hi, args.device, args.profile, settings)
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
