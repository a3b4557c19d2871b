"""GUARD against its base, one seed at a time, from `guard`-suite evaluation records.

Usage (the AutoAttack tables in docs/measurements.md)::

    python benchmarks/guard_pairs.py benchmarks/records/issue5-small-guard

For every `<base>-<dataset>-ipc<N>-<profile>-s<seed>-guard.json` whose `guard-<base>` partner is
in the folder, prints the two sets' accuracies per attack (mean ± std over the K models), each
student's AutoAttack accuracy against its best other attack, GUARD minus base per attack, and
whether each record has the same students as its `-guard-no-aa.json` counterpart (same
distillation key and equal accuracies under every attack both ran), i.e. whether AutoAttack is
the only new measurement.

With ``--overview`` it prints instead one row per seed and set pair (full suite or
`guard-no-aa`): GUARD minus base on clean accuracy, PGD-100, AutoAttack and each student's
strongest attack, so every cell's reading sits in one table.
"""

from __future__ import annotations

import argparse
import functools
import re
import statistics
import sys
from pathlib import Path
from typing import Any

from robustdd.report.writer import load_records

NAME = re.compile(r"^(?P<method>[a-z0-9-]+?)-(?P<rest>(cifar10|cifar100|fashion-mnist)-ipc"
                  r"(?P<ipc>\d+)-.+-s(?P<seed>\d+))-(?P<suite>guard|guard-no-aa)\.json$")
COLUMNS = ("clean_accuracy", "attack_subset_clean_accuracy", "pgd", "square", "cw", "mim",
           "autoattack")
HEADER = ("set", "clean", "clean (attacked images)", "PGD-100", "Square", "CW", "MIM",
          "AutoAttack")


@functools.cache
def _load(folder: Path, method: str, rest: str, suite: str) -> dict[str, Any]:
    """One evaluation record, format-checked, read once however often a table needs it."""
    return load_records([folder / f"{method}-{rest}-{suite}.json"])[0]


def _cell(record: dict[str, Any], column: str) -> str:
    summary = record["summary"][column]
    return f"{summary['mean']:.2f} ± {summary['std']:.2f}"


def _mean(record: dict[str, Any], column: str) -> float:
    return float(record["summary"][column]["mean"])


def _diff(a: float, b: float) -> str:
    return f"{round(a - b, 2) + 0.0:+.2f}"  # + 0.0 turns a rounded -0.00 into +0.00


def _lowest(model: dict[str, Any], skip: str = "") -> float:
    """A student's lowest accuracy under any attack of its record except ``skip``."""
    return min(v["accuracy"] for k, v in model["attacks"].items() if k != skip)


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


def reruns_guard_no_aa(folder: Path, method: str, rest: str) -> bool | None:
    """Whether the `guard` record re-evaluated its `guard-no-aa` record's students (None: no such
    record)."""
    if not (folder / f"{method}-{rest}-guard-no-aa.json").exists():
        return None
    return same_students(_load(folder, method, rest, "guard"),
                         _load(folder, method, rest, "guard-no-aa"))


def _delta(guard: dict[str, Any], plain: dict[str, Any], column: str) -> str:
    return _diff(_mean(guard, column), _mean(plain, column))


def describe_pair(folder: Path, base: str, rest: str) -> list[str]:
    """Markdown lines for one base/GUARD pair of full-suite records."""
    lines = [f"### {base} vs guard-{base}, {rest}", "",
             "| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    records = {}
    for method in (base, f"guard-{base}"):
        record = records[method] = _load(folder, method, rest, "guard")
        lines.append(f"| {method} | " + " | ".join(_cell(record, c) for c in COLUMNS) + " |")
    lines.append("")
    for method, record in records.items():
        aa = [m["attacks"]["autoattack"]["accuracy"] for m in record["models"]]
        best = [_lowest(m, skip="autoattack") for m in record["models"]]
        seconds = [m["attacks"]["autoattack"]["seconds"] for m in record["models"]]
        reproduced = reruns_guard_no_aa(folder, method, rest)
        env = record["environment"]
        lines.append(
            f"- {method}: AutoAttack per student {' / '.join(f'{a:.1f}' for a in aa)}, best other "
            f"attack {' / '.join(f'{b:.1f}' for b in best)}; AutoAttack "
            f"{min(seconds):.0f}–{max(seconds):.0f} s per student; same students as "
            f"guard-no-aa: {'no record' if reproduced is None else reproduced}; "
            f"{env['device_name']}, code {str(env['git_revision'])[:7]}, {record['created']}")
    guard, plain = records[f"guard-{base}"], records[base]
    diffs = ", ".join(f"{c} {_delta(guard, plain, c)}"
                      for c in COLUMNS if c != "attack_subset_clean_accuracy")
    lines += [f"- guard-{base} minus {base}: {diffs}", ""]
    return lines


def _strongest(record: dict[str, Any]) -> float:
    """Mean over the students of each student's lowest accuracy under any attack."""
    return statistics.fmean(_lowest(m) for m in record["models"])


def overview(folder: Path, cells: list[tuple[str, str, str, str, str]]) -> list[str]:
    """One Markdown row per set pair; a `guard-no-aa` pair whose students the full-suite pair
    re-evaluated is left out (the full-suite row holds the same numbers and AutoAttack)."""
    lines = ["| base | IPC | seed | suite | CPU | base clean | Δ clean | base PGD-100 | Δ PGD-100 "
             "| Δ AutoAttack | base strongest | Δ strongest |", "|" + "---|" * 12]
    full = {(base, rest) for base, rest, _, _, suite in cells if suite == "guard"}
    for base, rest, ipc, seed, suite in cells:
        plain, guard = (_load(folder, m, rest, suite) for m in (base, f"guard-{base}"))
        if suite == "guard-no-aa" and (base, rest) in full and all(
                reruns_guard_no_aa(folder, m, rest) for m in (base, f"guard-{base}")):
            continue
        aa = _delta(guard, plain, "autoattack") if "autoattack" in plain["summary"] else "–"
        cpu = str(plain["environment"]["device_name"]).replace("(R)", "").replace(" Processor", "")
        lines.append(
            f"| {base} | {ipc} | {seed} | {suite} | {' '.join(cpu.split()[:2])} "
            f"| {_mean(plain, 'clean_accuracy'):.2f} "
            f"| {_delta(guard, plain, 'clean_accuracy')} "
            f"| {_mean(plain, 'pgd'):.2f} | {_delta(guard, plain, 'pgd')} "
            f"| {aa} | {_strongest(plain):.2f} | {_diff(_strongest(guard), _strongest(plain))} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", nargs="?", type=Path,
                        default=Path("benchmarks/records/issue5-small-guard"))
    parser.add_argument("--overview", action="store_true",
                        help="one row per seed and set pair instead of the full-suite tables")
    args = parser.parse_args()
    cells = []
    for path in sorted(args.folder.glob("*.json")):
        match = NAME.match(path.name)
        if match is None or match["method"].startswith("guard-"):
            continue
        base, rest, suite = match["method"], match["rest"], match["suite"]
        if (args.folder / f"guard-{base}-{rest}-{suite}.json").exists():
            cells.append((base, rest, match["ipc"], match["seed"], suite))
    cells.sort(key=lambda c: (c[0], int(c[2]), int(c[3]), c[4]))
    if args.overview:
        if not cells:
            sys.exit(f"no base/GUARD pairs of guard or guard-no-aa records in {args.folder}")
        print("\n".join(overview(args.folder, cells)))
        return
    pairs = [(base, rest) for base, rest, _, _, suite in cells if suite == "guard"]
    if not pairs:
        sys.exit(f"no base/GUARD pairs of full-suite (-guard.json) records in {args.folder}")
    for base, rest in pairs:
        print("\n".join(describe_pair(args.folder, base, rest)))


if __name__ == "__main__":
    main()
