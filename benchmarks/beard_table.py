"""Markdown tables from evaluation records that ran an attack suite: accuracy per attack
(mean ± std over the K models) with its wall-clock cost, then the BEARD/ROME metrics.

Usage (the tables in docs/measurements.md)::

    python benchmarks/beard_table.py results/beard/random-...-beard.json \
        results/beard/dm-...-beard.json

Each record is one column. Seconds are summed over the K models (training, each attack).
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path
from typing import Any

from robustdd.metrics import compute_metrics

METRICS = ("RR", "AE", "CREI", "I-RR", "I-CREI")


def _mean_std(values: list[float]) -> str:
    std = statistics.pstdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.2f} ± {std:.2f}"


def accuracy_table(records: list[dict[str, Any]], names: list[str]) -> list[str]:
    """One row per attack: accuracy and total seconds for each record."""
    head = "| attack | " + " | ".join(f"{n} acc. % | {n} s" for n in names) + " |"
    lines = [head, "|---|" + "---|---|" * len(records)]

    def row(label: str, cells: list[tuple[str, str]]) -> str:
        return f"| {label} | " + " | ".join(f"{a} | {s}" for a, s in cells) + " |"

    lines.append(row("clean (attacked subset)", [
        (_mean_std([m["attack_subset_clean_accuracy"] for m in r["models"]]),
         f"{sum(m['attack_subset_clean_seconds'] for m in r['models']):.1f}")
        for r in records]))
    labels = list(records[0]["models"][0]["attacks"])
    for label in labels:
        lines.append(row(label, [
            (_mean_std([m["attacks"][label]["accuracy"] for m in r["models"]]),
             f"{sum(m['attacks'][label]['seconds'] for m in r['models']):.1f}")
            for r in records]))
    lines.append(row("model training", [
        ("", f"{sum(m['train']['seconds'] for m in r['models']):.0f}") for r in records]))
    return lines


def metrics_table(records: list[dict[str, Any]], names: list[str]) -> list[str]:
    """Pooled metrics per record and mode (T0 = the mode's clean time, CREI weight ½)."""
    lines = ["| set | mode | " + " | ".join(METRICS) + " |",
             "|---|---|" + "---|" * len(METRICS)]
    for name, record in zip(names, records, strict=True):
        metrics = compute_metrics([record])
        for mode in ("targeted", "untargeted"):
            if mode in metrics:
                pooled = metrics[mode]["pooled"]
                lines.append(f"| {name} | {mode} | "
                             + " | ".join(f"{pooled[k]:.2f}" for k in METRICS) + " |")
    return lines


def main() -> None:
    paths = [Path(p) for p in sys.argv[1:]]
    if not paths:
        raise SystemExit(__doc__)
    records = [json.loads(p.read_text()) for p in paths]
    names = [f"{r['method']} IPC {r['ipc']}" for r in records]
    k = {len(r["models"]) for r in records}
    n = {r["test_set"]["attack_examples"] for r in records}
    print(f"K = {'/'.join(map(str, sorted(k)))} models, "
          f"{'/'.join(map(str, sorted(n)))} attacked test images\n")
    print("\n".join(accuracy_table(records, names)))
    print()
    print("\n".join(metrics_table(records, names)))
    warnings = [w for r in records for m in r["models"] for w in m["warnings"]]
    print(f"\nwarnings: {warnings or 'none'}")


if __name__ == "__main__":
    main()
