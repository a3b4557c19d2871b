"""Distill a dataset with random and DM, evaluate both, print accuracy and throughput.

Usage (the issue-2 measurement, ~35 min on a 2-core CPU)::

    ROBUSTDD_DATA=../shared/datasets python benchmarks/foundation.py --dataset cifar10 \
        --ipc 10 --profile small --out results/foundation-cifar10-small

Every record (distilled sets and evaluation JSON) lands in ``--out``; the script resumes: a
set or record already there is loaded, not recomputed.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from robustdd import DistilledSet, distill, evaluate, load_dataset
from robustdd.report import records_table
from robustdd.runtime import write_json_atomic


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="cifar10")
    parser.add_argument("--ipc", type=int, default=10)
    parser.add_argument("--profile", default="small")
    parser.add_argument("--methods", default="random,dm")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    train = load_dataset(args.dataset, "train")
    test = load_dataset(args.dataset, "test")
    records, lines = [], []
    for method in args.methods.split(","):
        stem = f"{method}-{args.dataset}-ipc{args.ipc}-{args.profile}-s{args.seed}"
        set_dir, rec_path = args.out / stem, args.out / f"{stem}.json"
        if (set_dir / "meta.json").exists():
            syn = DistilledSet.load(set_dir)
        else:
            syn = distill(method, train, args.ipc, seed=args.seed, profile=args.profile,
                          device=args.device, progress=True)
            syn.save(set_dir)
        if rec_path.exists():
            record = json.loads(rec_path.read_text())
        else:
            record = evaluate(syn, profile=args.profile, test=test, seed=args.seed,
                              device=args.device, progress=True)
            write_json_atomic(rec_path, record)
        records.append(record)
        iters = syn.meta["config"].get("iterations")
        secs = syn.meta["distill_seconds"]
        train_ips = [m["train"]["images_per_second"] for m in record["models"]]
        lines.append(f"{method}: distill {secs:.1f} s"
                     + (f" ({iters / secs:.3f} it/s)" if iters else "")
                     + f"; evaluation training {sum(train_ips) / len(train_ips):.0f} images/s"
                     + f" on {record['environment']['device']}")
    from rich.console import Console

    console = Console()
    console.print(records_table(records, f"{args.dataset} IPC {args.ipc}, profile {args.profile}"))
    for line in lines:
        console.print(line)
    console.print(time.strftime("measured %Y-%m-%d"))


if __name__ == "__main__":
    main()
