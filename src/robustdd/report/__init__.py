"""Reports: terminal tables, paper-style tables (Markdown, CSV, LaTeX), figures, RobustBench JSON.

``records_table``/``format_stat`` are the rich tables the CLI prints. The paper layouts (ROME
Table 1 and 2, Figure 3 and 5) and ``write_report`` are described in ``docs/reports.md``.
Figures and the writer import matplotlib and torch; they load on first use.
"""

from __future__ import annotations

from typing import Any

from robustdd.report._common import ReportError
from robustdd.report.console import format_stat, records_table
from robustdd.report.robustbench import robustbench_entry
from robustdd.report.tables import (
    ColumnGroup,
    Table,
    accuracy_table,
    rdd_table1,
    rome_table1,
    rome_table2,
    to_csv,
    to_latex,
    to_markdown,
)

_LAZY = {
    "transfer_heatmap": "robustdd.report.figures",
    "robustness_curves_figure": "robustdd.report.figures",
    "write_report": "robustdd.report.writer",
    "load_records": "robustdd.report.writer",
}

__all__ = [
    "ColumnGroup",
    "ReportError",
    "Table",
    "accuracy_table",
    "format_stat",
    "load_records",
    "rdd_table1",
    "records_table",
    "robustbench_entry",
    "robustness_curves_figure",
    "rome_table1",
    "rome_table2",
    "to_csv",
    "to_latex",
    "to_markdown",
    "transfer_heatmap",
    "write_report",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'robustdd.report' has no attribute {name!r}")
