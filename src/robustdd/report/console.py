"""Terminal views of result records: the rich tables the CLI prints."""

from __future__ import annotations

from typing import Any

from rich.table import Table


def format_stat(stat: dict[str, float]) -> str:
    """``mean ± std`` with two decimals."""
    return f"{stat['mean']:.2f} ± {stat['std']:.2f}"


def records_table(records: list[dict[str, Any]], title: str = "robustdd results") -> Table:
    """One row per record: method, dataset, IPC, K, clean accuracy and every attack's accuracy."""
    labels: list[str] = []
    for rec in records:
        for spec in rec["attacks"]:
            if spec["label"] not in labels:
                labels.append(spec["label"])
    table = Table(title=title)
    for col in ("method", "dataset", "IPC", "K", "clean %", *[f"{lab} %" for lab in labels]):
        table.add_column(col, justify="right" if col not in ("method", "dataset") else "left")
    for rec in records:
        s = rec["summary"]
        table.add_row(rec["method"], rec["dataset"], str(rec.get("ipc")),
                      str(s["clean_accuracy"]["n"]), format_stat(s["clean_accuracy"]),
                      *[format_stat(s[lab]) if lab in s else "–" for lab in labels])
    return table
