"""GUARD against its base, one seed at a time, from `guard`-suite evaluation records.

Usage (the AutoAttack tables in docs/measurements.md)::

    python benchmarks/guard_pairs.py benchmarks/records/issue5-small-guard

For every `<base>-<dataset>-ipc<N>-<profile>-s<seed>-guard.json` whose `guard-<base>` partner is
in the folder, prints the two sets' accuracies per attack (mean ± std over the K models), each
student's AutoAttack accuracy against its best other attack, GUARD minus base per attack, and
whether each record has the same students as its `-guard-no-aa.json` counterpart (same
distillation key and equal accuracies under every attack both ran), i.e. whether AutoAttack is
the only new measurement.
"""

from __future__ import annotations

import json
import re
import statistics
import sys
from pathlib import Path
from typing import Any

NAME = re.compile(r"^(?P<method>[a-z0-9-]+?)-"
                  r"(?P<rest>(cifar10|cifar100|fashion-mnist)-ipc\d+-.+-s\d+)-guard\.json$")
COLUMNS = ("clean_accuracy", "attack_subset_clean_accuracy", "pgd", "square", "cw", "mim",
           "autoattack")
HEADER = ("set", "clean", "clean (attacked images)", "PGD-100", "Square", "CW", "MIM",
          "AutoAttack")


def _cell(record: dict[str, Any], column: str) -> str:
    if column in ("clean_accuracy", "attack_subset_clean_accuracy"):
        values = [m[column] for m in record["models"]]
    else:
        values = [m["attacks"][column]["accuracy"] for m in record["models"]]
    return f"{statistics.fmean(values):.2f} ± {statistics.pstdev(values):.2f}"


def _mean(record: dict[str, Any], column: str) -> float:
    return float(record["summary"][column]["mean"])


def same_students(full: dict[str, Any], partial: dict[str, Any]) -> bool:
    """True when two records evaluated the same distilled set with the same students."""
    if full["bench"]["distill_key"] != partial["bench"]["distill_key"]:
        return False
    for a, b in zip(full["models"], partial["models"], strict=True):
        if a["clean_accuracy"] != b["clean_accuracy"]:
            return False
        if any(a["attacks"][k]["accuracy"] != v["accuracy"] for k, v in b["attacks"].items()):
            return False
    return True


def describe_pair(folder: Path, base: str, rest: str) -> list[str]:
    """Markdown lines for one base/GUARD pair of full-suite records."""
    lines = [f"### {base} vs guard-{base}, {rest}", "",
             "| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    records = {}
    for method in (base, f"guard-{base}"):
        record = json.loads((folder / f"{method}-{rest}-guard.json").read_text())
        records[method] = record
        lines.append(f"| {method} | " + " | ".join(_cell(record, c) for c in COLUMNS) + " |")
    lines.append("")
    for method, record in records.items():
        aa = [m["attacks"]["autoattack"]["accuracy"] for m in record["models"]]
        best = [min(v["accuracy"] for k, v in m["attacks"].items() if k != "autoattack")
                for m in record["models"]]
        seconds = [m["attacks"]["autoattack"]["seconds"] for m in record["models"]]
        partner = folder / f"{method}-{rest}-guard-no-aa.json"
        reproduced = (same_students(record, json.loads(partner.read_text()))
                      if partner.exists() else None)
        env = record["environment"]
        lines.append(
            f"- {method}: AutoAttack per student {' / '.join(f'{a:.1f}' for a in aa)}, best other "
            f"attack {' / '.join(f'{b:.1f}' for b in best)}; AutoAttack "
            f"{min(seconds):.0f}–{max(seconds):.0f} s per student; same students as "
            f"guard-no-aa: {'no record' if reproduced is None else reproduced}; "
            f"{env['device_name']}, code {str(env['git_revision'])[:7]}, {record['created']}")
    guard, plain = records[f"guard-{base}"], records[base]
    diffs = ", ".join(f"{c} {_mean(guard, c) - _mean(plain, c):+.2f}"
                      for c in COLUMNS if c != "attack_subset_clean_accuracy")
    lines += [f"- guard-{base} minus {base}: {diffs}", ""]
    return lines


def main() -> None:
    folder = Path(sys.argv[1] if len(sys.argv) > 1 else "benchmarks/records/issue5-small-guard")
    pairs = []
    for path in sorted(folder.glob("*-guard.json")):
        match = NAME.match(path.name)
        if match is None or match["method"].startswith("guard-"):
            continue
        base, rest = match["method"], match["rest"]
        if (folder / f"guard-{base}-{rest}-guard.json").exists():
            pairs.append((base, rest))
    if not pairs:
        sys.exit(f"no base/GUARD pairs of full-suite (-guard.json) records in {folder}")
    for base, rest in pairs:
        print("\n".join(describe_pair(folder, base, rest)))


if __name__ == "__main__":
    main()
