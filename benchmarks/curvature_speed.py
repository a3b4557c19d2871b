"""Seconds per training step of GUARD's curvature-regularised squeeze against a plain CE step.

Usage (the numbers in docs/measurements.md)::

    python benchmarks/curvature_speed.py --arch convnetbn --batch 128 --repeats 5

Three steps on the same batch and network, interleaved so that a busy machine slows them alike:

* ``plain``: CE forward and backward (SRe2L's squeeze step);
* ``reference``: CE plus the penalty as GUARD's code computes it, one backward for z and a
  second ∇ℓ(x) inside the difference (``gradient_direction`` then ``curvature_penalty(z=z)``);
* ``fused``: robustdd's default, ∇ℓ(x) taken once for both (``curvature_penalty`` without z).

The penalty uses the paper form (per-sample losses, squared norm) on the normalised view with
BN in eval mode, as ``curvature_objective`` does. The minimum over repeats is reported.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import torch.nn.functional as F

from robustdd.attacks.legacy import normalised_view
from robustdd.nn import build_model
from robustdd.robust.curvature import curvature_penalty, gradient_direction, modules_in_eval
from robustdd.runtime import environment, resolve_device


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="convnetbn")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    dev = resolve_device(args.device)
    model = build_model(args.arch, 10, 3, 32, mean=[0.4914, 0.4822, 0.4465],
                        std=[0.2470, 0.2435, 0.2616], seed=0, device=dev)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(args.batch, 3, 32, 32, generator=g).to(dev)
    y = torch.randint(0, 10, (args.batch,), generator=g).to(dev)
    params = list(model.parameters())
    view = normalised_view(model)

    def step(kind: str) -> None:
        loss = F.cross_entropy(model(x), y)
        if kind != "plain":
            with modules_in_eval(model):
                xin = view.to_normalised(x)
                z = gradient_direction(view.net, xin, y, 3.0) if kind == "reference" else None
                penalty, _ = curvature_penalty(view.net, xin, y, 3.0, squared=True,
                                               per_sample=True, z=z)
            loss = loss + 100.0 * penalty
        torch.autograd.grad(loss, params)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    times: dict[str, list[float]] = {"plain": [], "reference": [], "fused": []}
    for kind in times:  # warm-up
        step(kind)
    for _ in range(args.repeats):
        for kind, seen in times.items():
            start = time.perf_counter()
            step(kind)
            seen.append(time.perf_counter() - start)
    best = {kind: min(seen) for kind, seen in times.items()}
    for kind, seconds in best.items():
        print(f"{kind:>9}: {seconds:.3f} s/step  ({seconds / best['plain']:.2f}x plain)")
    print(f"fused / reference: {best['fused'] / best['reference']:.3f}")
    env = environment(dev)
    print(json.dumps({"arch": args.arch, "batch": args.batch, "threads": args.threads,
                      "seconds": best, "device": env.get("device_name", str(dev)),
                      "torch": env.get("torch")}))


if __name__ == "__main__":
    main()
