"""Distill and evaluate a grid of methods × IPCs × seeds; print clean accuracy and cost.

Usage (the issue-4 measurement on a 2-core CPU)::

    ROBUSTDD_DATA=../shared/datasets python benchmarks/methods_grid.py --dataset cifar10 \
        --methods random,herding,dc,dsa,dm,idm,bacon,mtt --ipcs 1,10 --seeds 0 \
        --profile small --attacks none --out results/methods-cifar10-small

Records land in ``--out`` and sets in ``--sets`` (default ``OUT/sets``); the script resumes: a
finished record is reused, a finished set is evaluated without distilling it again, and an
interrupted distillation continues from its checkpoint. Accuracy is the mean ± population std
over the K evaluation models of each set (and, with several seeds, over the seeds' means).

A method may carry overrides, ``name{key=value;key=value}`` (YAML values), e.g. ROME's ablations:
``--methods 'idm,rome,rome{robust_pretrained=false},rome{adversarial_perturbation=false}'``;
its records are named after the overrides. ``--shift`` adds the distribution-shift tests.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import time
from pathlib import Path

import yaml
from rich.console import Console
from rich.table import Table

from robustdd import DistilledSet, distill, evaluate, load_dataset
from robustdd.runtime import write_json_atomic


def parse_method(spec: str) -> tuple[str, dict, str]:
    """``name{k=v;k=v}`` → (name, overrides, label used in file names)."""
    if "{" not in spec:
        return spec, {}, spec
    if not spec.endswith("}"):
        raise SystemExit(f"bad method spec {spec!r}: expected name{{key=value;...}}")
    name, body = spec[:-1].split("{", 1)
    overrides = {}
    for item in filter(None, (part.strip() for part in body.split(";"))):
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"bad override {item!r} in {spec!r}: expected key=value")
        overrides[key.strip()] = yaml.safe_load(value)
    tag = "_".join(f"{k}={v}" for k, v in sorted(overrides.items()))
    label = re.sub(r"[^A-Za-z0-9_.=-]", "", f"{name}-{tag}") if tag else name
    return name, overrides, label


def split_methods(text: str) -> list[str]:
    """Split on commas outside braces."""
    out, depth, cur = [], 0, ""
    for ch in text:
        depth += ch == "{"
        depth -= ch == "}"
        if ch == "," and depth == 0:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    return [m for m in (*out, cur) if m]


def run_one(spec: str, train, test, ipc: int, seed: int, args) -> dict:
    """The evaluation record of one (method, IPC, seed), computed or loaded from ``--out``."""
    method, overrides, label = parse_method(spec)
    stem = f"{label}-{args.dataset}-ipc{ipc}-{args.profile}-s{seed}"
    set_dir, rec_path = args.sets / stem, args.out / f"{stem}.json"
    if rec_path.exists():  # finished earlier: the record is all the table needs
        return json.loads(rec_path.read_text())
    if (set_dir / "meta.json").exists():
        syn = DistilledSet.load(set_dir)
    else:
        ckpt = args.sets / "checkpoints" / stem
        syn = distill(method, train, ipc, seed=seed, profile=args.profile, device=args.device,
                      progress=True, checkpoint_dir=ckpt, checkpoint_every=args.checkpoint_every,
                      **overrides)
        syn.save(set_dir)
        shutil.rmtree(ckpt, ignore_errors=True)
    attacks = [] if args.attacks == "none" else args.attacks
    record = evaluate(syn, profile=args.profile, test=test, seed=seed, device=args.device,
                      attacks=attacks, progress=True, shift=args.shift)
    write_json_atomic(rec_path, record)
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="cifar10")
    parser.add_argument("--methods", default="random,dm")
    parser.add_argument("--ipcs", default="1,10")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--profile", default="small")
    parser.add_argument("--attacks", default="none", help="none, or a suite name")
    parser.add_argument("--shift", action="store_true", help="add the distribution-shift tests")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--checkpoint-every", type=int, default=10)
    parser.add_argument("--out", type=Path, required=True,
                        help="folder of the evaluation records (JSON, small: keep them)")
    parser.add_argument("--sets", type=Path, default=None,
                        help="folder of the distilled sets and checkpoints (default: OUT/sets)")
    args = parser.parse_args()
    args.sets = args.sets if args.sets is not None else args.out / "sets"

    train, test = load_dataset(args.dataset, "train"), load_dataset(args.dataset, "test")
    console = Console()
    table = Table(title=f"{args.dataset}, profile {args.profile}: clean accuracy (%)")
    for col in ("method", "IPC", "seeds", "clean % (mean ± std)", "distill s", "eval train s",
                "device"):
        table.add_column(col)
    for method in split_methods(args.methods):
        for ipc in (int(i) for i in args.ipcs.split(",")):
            means, stds, d_secs, e_secs, device = [], [], [], [], ""
            for seed in (int(s) for s in args.seeds.split(",")):
                record = run_one(method, train, test, ipc, seed, args)
                summary = record["summary"]["clean_accuracy"]
                means.append(summary["mean"])
                stds.append(summary["std"])
                d_secs.append(record["distilled"]["meta"].get("distill_seconds", 0.0))
                e_secs.append(sum(m["train"]["seconds"] for m in record["models"]))
                device = record["environment"]["device"]
                console.print(f"{method} IPC {ipc} seed {seed}: {summary['mean']:.2f} ± "
                              f"{summary['std']:.2f} (K={summary['n']})")
            spread = (statistics.pstdev(means) if len(means) > 1 else stds[0])
            table.add_row(method, str(ipc), str(len(means)),
                          f"{statistics.fmean(means):.2f} ± {spread:.2f}",
                          f"{statistics.fmean(d_secs):.0f}", f"{statistics.fmean(e_secs):.0f}",
                          device)
    console.print(table)
    console.print(time.strftime("measured %Y-%m-%d %H:%M"))


if __name__ == "__main__":
    main()
