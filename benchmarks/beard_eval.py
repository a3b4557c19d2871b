"""Run the `beard` white-box suite on saved distilled sets and print the BEARD/ROME metrics.

Usage (issue-3 measurement on a 2-core CPU; sets from benchmarks/foundation.py)::

    ROBUSTDD_DATA=../shared/datasets python benchmarks/beard_eval.py \
        results/foundation-cifar10-small/random-cifar10-ipc10-small-s0 \
        results/foundation-cifar10-small/dm-cifar10-ipc10-small-s0 \
        --models 1 --attack-examples 200 --out results/beard-small

A record already in ``--out`` is loaded instead of recomputed (the run resumes).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.console import Console
from rich.table import Table

from robustdd import DistilledSet, evaluate
from robustdd.metrics import compute_metrics
from robustdd.runtime import write_json_atomic


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sets", nargs="+", type=Path)
    parser.add_argument("--profile", default="small")
    parser.add_argument("--models", type=int, default=None)
    parser.add_argument("--attack-examples", type=int, default=None)
    parser.add_argument("--suite", default="beard")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    overrides = {}
    if args.models:
        overrides["num_models"] = args.models
    if args.attack_examples:
        overrides["attack_examples"] = args.attack_examples
    console = Console()
    for set_dir in args.sets:
        path = args.out / f"{set_dir.name}-{args.suite}.json"
        if path.exists():
            record = json.loads(path.read_text())
        else:
            record = evaluate(DistilledSet.load(set_dir), profile=args.profile,
                              attacks=args.suite, device=args.device, progress=True,
                              **overrides)
            write_json_atomic(path, record)
        metrics = compute_metrics([record])
        write_json_atomic(args.out / f"{set_dir.name}-{args.suite}-metrics.json", metrics)
        model = record["models"][0]
        table = Table(title=f"{record['method']} IPC {record['ipc']}: {args.suite} suite, "
                            f"K={len(record['models'])}, "
                            f"{record['test_set']['attack_examples']} attacked images")
        for col in ("attack", "accuracy %", "seconds (model 0)", "grads/example"):
            table.add_column(col)
        table.add_row("clean", f"{record['summary']['attack_subset_clean_accuracy']['mean']:.2f}",
                      f"{model['attack_subset_clean_seconds']:.2f}", "0")
        for label, item in model["attacks"].items():
            table.add_row(label, f"{record['summary'][label]['mean']:.2f}",
                          f"{item['seconds']:.1f}", str(item["gradients_per_example"]))
        console.print(table)
        for mode in ("targeted", "untargeted"):
            pooled = metrics[mode]["pooled"]
            console.print(f"  {mode}: " + ", ".join(
                f"{k} {pooled[k]:.2f}" for k in ("RR", "AE", "CREI", "I-RR", "I-CREI")))
        console.print(f"  training {sum(m['train']['seconds'] for m in record['models']):.0f} s,"
                      f" warnings: {[w for m in record['models'] for w in m['warnings']]}")


if __name__ == "__main__":
    main()
