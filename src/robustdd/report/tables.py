"""Result tables as data, rendered to Markdown, CSV and LaTeX (booktabs).

The builders lay results out like the ROME paper (ICML 2025): :func:`rome_table1` is Table 1
(white-box RR / CREI / I-RR / I-CREI, targeted and untargeted, pooled over IPCs),
:func:`rome_table2` is Table 2 (black-box I-RR under transfer and query attacks), and
:func:`accuracy_table` lists clean and attacked accuracy (mean ± std over the K models) per
method, dataset and IPC. Layouts are described in ``docs/reports.md``.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from robustdd.report._common import (
    MISSING,
    MODE_TITLES,
    MODES,
    ReportError,
    dataset_name,
    fmt,
    fmt_stat,
    ipc_text,
    method_name,
)

TABLE1_METRICS = ("RR", "CREI", "I-RR", "I-CREI")
TABLE2_KINDS = ("transfer", "query")
TABLE2_TITLES = {"transfer": "Transfer", "query": "Query"}


@dataclass(frozen=True)
class ColumnGroup:
    """Adjacent columns under one header (``title`` empty: no group header above them)."""

    title: str
    columns: tuple[str, ...]


@dataclass
class Table:
    """A rectangular table of preformatted cells with grouped column headers.

    ``key_columns`` leading columns are labels (left-aligned); the rest are values
    (right-aligned). ``caption`` and ``label`` are used by the Markdown and LaTeX renderers.
    """

    title: str
    groups: list[ColumnGroup]
    rows: list[list[str]] = field(default_factory=list)
    caption: str = ""
    label: str = ""
    key_columns: int = 1

    def __post_init__(self) -> None:
        width = len(self.columns)
        for i, row in enumerate(self.rows):
            if len(row) != width:
                raise ReportError(f"table {self.title!r}: row {i + 1} has {len(row)} cells, "
                                  f"the header has {width}")

    @property
    def columns(self) -> list[str]:
        """Column names without their group titles."""
        return [c for g in self.groups for c in g.columns]

    @property
    def header(self) -> list[str]:
        """Column names prefixed by their group title (``Targeted RR``): one flat header row."""
        return [f"{g.title} {c}" if g.title else c for g in self.groups for c in g.columns]


# ---------------------------------------------------------------------------- renderers


def to_markdown(table: Table) -> str:
    """A GitHub-flavoured Markdown table: bold title, one flat header row, italic caption."""
    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    n = len(table.columns)
    align = [":--" if i < table.key_columns else "--:" for i in range(n)]
    lines = [f"**{cell(table.title)}**", ""] if table.title else []
    lines.append("| " + " | ".join(cell(h) for h in table.header) + " |")
    lines.append("|" + "|".join(align) + "|")
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in table.rows]
    if table.caption:
        lines += ["", f"*{cell(table.caption)}*"]
    return "\n".join(lines) + "\n"


def to_csv(table: Table) -> str:
    """CSV with the flat header row (``Targeted RR``) and the cells as shown."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(table.header)
    writer.writerows(table.rows)
    return buf.getvalue()


_LATEX_ESCAPES = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
    "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
    "±": r"$\pm$", "–": "--", "—": "---", "ε": r"$\varepsilon$", "→": r"$\rightarrow$",
}


def latex_escape(text: str) -> str:
    """``text`` with LaTeX's special characters escaped (``_`` → ``\\_``, ``%`` → ``\\%``)."""
    return "".join(_LATEX_ESCAPES.get(ch, ch) for ch in text)


def to_latex(table: Table, *, float_env: bool = True) -> str:
    """A booktabs table: ``\\multicolumn`` group headers with ``\\cmidrule``s below them.

    Rows with the same first label as the row above show it only once, and a ``\\midrule``
    separates label blocks (like the dataset blocks of ROME Table 1). Needs ``\\usepackage
    {booktabs}``. ``float_env=False`` gives the bare ``tabular``.
    """
    n = len(table.columns)
    spec = "l" * table.key_columns + "r" * (n - table.key_columns)
    body = [rf"\begin{{tabular}}{{{spec}}}", r"\toprule"]
    if any(g.title for g in table.groups):
        cells, rules, start = [], [], 1
        for g in table.groups:
            width = len(g.columns)
            if g.title:
                cells.append(rf"\multicolumn{{{width}}}{{c}}{{{latex_escape(g.title)}}}")
                rules.append(rf"\cmidrule(lr){{{start}-{start + width - 1}}}")
            else:
                cells += [""] * width
            start += width
        body.append(" & ".join(cells) + r" \\")
        body.append(" ".join(rules))
    body.append(" & ".join(latex_escape(c) for c in table.columns) + r" \\")
    body.append(r"\midrule")
    previous: str | None = None
    for row in table.rows:
        cells = [latex_escape(c) for c in row]
        if table.key_columns > 1 and previous is not None:
            if row[0] == previous:
                cells[0] = ""
            else:
                body.append(r"\midrule")
        previous = row[0]
        body.append(" & ".join(cells) + r" \\")
    body += [r"\bottomrule", r"\end{tabular}"]
    if not float_env:
        return "\n".join(body) + "\n"
    out = [r"\begin{table}[t]", r"\centering"]
    caption = table.caption or table.title
    if caption:
        out.append(rf"\caption{{{latex_escape(caption)}}}")
    if table.label:
        out.append(rf"\label{{{table.label}}}")
    out += body
    out.append(r"\end{table}")
    return "\n".join(out) + "\n"


def to_html(table: Table) -> str:
    """An HTML ``<table>`` fragment with grouped headers, caption and the cells escaped."""
    from html import escape

    lines = ['<table class="rdd-table">']
    if table.title:
        lines.append(f"<caption>{escape(table.title)}</caption>")
    if any(g.title for g in table.groups):
        cells = "".join(f'<th colspan="{len(g.columns)}">{escape(g.title)}</th>'
                        for g in table.groups)
        lines.append(f"<thead><tr>{cells}</tr>")
    else:
        lines.append("<thead>")
    lines.append("<tr>" + "".join(f"<th>{escape(c)}</th>" for c in table.columns)
                 + "</tr></thead><tbody>")
    for row in table.rows:
        tds = "".join(f'<td class="{"key" if i < table.key_columns else "num"}">'
                      f"{escape(c)}</td>" for i, c in enumerate(row))
        lines.append(f"<tr>{tds}</tr>")
    lines.append("</tbody></table>")
    if table.caption:
        lines.append(f'<p class="note">{escape(table.caption)}</p>')
    return "\n".join(lines) + "\n"


RENDERERS = {"md": to_markdown, "csv": to_csv, "tex": to_latex, "html": to_html}


def render(table: Table, fmt_name: str) -> str:
    """Render ``table`` as ``md``, ``csv``, ``tex`` or ``html`` (a fragment)."""
    if fmt_name not in RENDERERS:
        raise ReportError(f"unknown table format {fmt_name!r}; known: {', '.join(RENDERERS)}")
    return RENDERERS[fmt_name](table)


# ---------------------------------------------------------------------------- builders


def _cell(value: Any, digits: int) -> str:
    """A number, or ``mean ± std`` of a value combined over seeds (``{"mean", "std", "n"}``)."""
    return fmt_stat(value, digits) if isinstance(value, Mapping) else fmt(value, digits)


def _seeds_text(rec: Mapping[str, Any]) -> str:
    seeds = rec.get("seeds")
    return ", ".join(map(str, seeds)) if seeds else str(rec.get("seed", MISSING))


def _models_text(rec: Mapping[str, Any]) -> str:
    per_seed = rec.get("models_per_seed")
    if per_seed:
        return str(per_seed[0]) if len(set(per_seed)) == 1 else "/".join(map(str, per_seed))
    clean = (rec.get("summary") or {}).get("clean_accuracy") or {}
    return str(clean.get("n", len(rec.get("models") or [])))


def _over_seeds(records: Sequence[Mapping[str, Any]]) -> bool:
    return any(rec.get("seeds") for rec in records)


SEEDS_CAPTION = ("Rows with several seeds: mean ± std (population) over the distillation seeds "
                 "of each seed's mean over its K models.")


SEEDS_METRICS_CAPTION = ("Cells with ± are mean ± std (population) over the distillation "
                         "seeds of the metric computed seed by seed.")


def _any_seeds(metrics: Iterable[Mapping[str, Any] | None]) -> bool:
    return any(isinstance(m, Mapping) and m.get("seeds") for m in metrics)


def _pooled(metrics: Mapping[str, Any] | None, mode: str, key: str) -> Any:
    """``metrics[mode]["pooled"][key]`` of a :func:`robustdd.metrics.compute_metrics` result."""
    if not isinstance(metrics, Mapping):
        return None
    block = metrics.get(mode)
    if not isinstance(block, Mapping) or not isinstance(block.get("pooled"), Mapping):
        return None
    return block["pooled"].get(key)


def _pooled_ipcs(metrics: Mapping[str, Any] | None) -> tuple[str, ...] | None:
    """The IPCs a metrics result pooled over (union over modes), or None without metrics."""
    ipcs: list[str] = []
    for mode in MODES:
        for ipc in _pooled(metrics, mode, "ipcs") or []:
            if str(ipc) not in ipcs:
                ipcs.append(str(ipc))
    return tuple(ipcs) or None


def _ipc_phrase(rows: Iterable[tuple[str, tuple[str, ...] | None]]) -> str:
    """``IPC {1, 10, 50}`` when every row pooled the same IPCs, else the IPCs row by row."""
    rows = [(label, ipcs) for label, ipcs in rows if ipcs]
    if len({ipcs for _, ipcs in rows}) == 1:
        return "IPC {" + ", ".join(rows[0][1]) + "}"
    per_row = "; ".join(f"{label}: {', '.join(ipcs)}" for label, ipcs in rows)
    return f"each row's IPCs ({per_row})" if per_row else "IPCs"


def _row_label(dataset: str, method: str) -> str:
    return f"{dataset_name(dataset)} {method_name(method)}"


def rome_table1(entries: Sequence[tuple[str, str, Mapping[str, Any] | None]], *,
                title: str = "White-box robustness (pooled over IPCs)",
                caption: str | None = None, digits: int = 2) -> Table:
    """ROME Table 1: per (dataset, method), targeted then untargeted RR, CREI, I-RR, I-CREI.

    ``entries``: ``(dataset, method, metrics)`` with ``metrics`` a
    :func:`robustdd.metrics.compute_metrics` result over white-box attacks (or None); values
    come from each mode's ``pooled`` block (BEARD's multi-IPC RRM/CREIM), rows in the given
    order. A missing mode or metric shows ``–``.
    """
    groups = [ColumnGroup("", ("Dataset", "Method"))]
    groups += [ColumnGroup(MODE_TITLES[m], TABLE1_METRICS) for m in MODES]
    rows = []
    for dataset, method, metrics in entries:
        rows.append([dataset_name(dataset), method_name(method),
                     *[_cell(_pooled(metrics, mode, key), digits)
                       for mode in MODES for key in TABLE1_METRICS]])
    if caption is None:
        caption = ("Robustness of models trained on distilled data under white-box targeted and "
                   "untargeted attacks (layout of ROME Table 1): RR and CREI (BEARD) and I-RR and "
                   "I-CREI (ROME), pooled over "
                   + _ipc_phrase((_row_label(d, m), _pooled_ipcs(x)) for d, m, x in entries)
                   + ". Higher is more "
                   f"robust; {MISSING} = not measured."
                   + (f" {SEEDS_METRICS_CAPTION}" if _any_seeds(x for *_, x in entries) else ""))
    return Table(title=title, groups=groups, rows=rows, caption=caption, label="tab:whitebox",
                 key_columns=2)


def rome_table2(entries: Sequence[tuple[str, str, Mapping[str, Mapping[str, Any] | None]]], *,
                metric: str = "I-RR", title: str | None = None, caption: str | None = None,
                digits: int = 2) -> Table:
    """ROME Table 2: black-box robustness, targeted then untargeted, transfer and query columns.

    ``entries``: ``(dataset, method, {"transfer": metrics, "query": metrics})``, each metrics a
    :func:`robustdd.metrics.compute_metrics` result over that kind of attack (either may be
    missing or None → ``–``). Cells show ``metric`` (I-RR, as in the paper: black-box attack
    times say little, so CREI is not reported) from each mode's ``pooled`` block.
    """
    if metric not in ("RR", "I-RR", "AE", "CREI", "I-CREI"):
        raise ReportError(f"unknown metric {metric!r}; known: RR, I-RR, AE, CREI, I-CREI")
    groups = [ColumnGroup("", ("Dataset", "Method"))]
    groups += [ColumnGroup(MODE_TITLES[m], tuple(TABLE2_TITLES[k] for k in TABLE2_KINDS))
               for m in MODES]
    rows, ipc_sets = [], []
    for dataset, method, kinds in entries:
        unknown = sorted(set(kinds) - set(TABLE2_KINDS))
        if unknown:
            raise ReportError(f"{method} on {dataset}: unknown black-box attack kind(s) "
                              f"{', '.join(unknown)}; known: {', '.join(TABLE2_KINDS)}")
        rows.append([dataset_name(dataset), method_name(method),
                     *[_cell(_pooled(kinds.get(kind), mode, metric), digits)
                       for mode in MODES for kind in TABLE2_KINDS]])
        ipc_sets += [(f"{_row_label(dataset, method)} {kind}", _pooled_ipcs(kinds.get(kind)))
                     for kind in TABLE2_KINDS]
    title = title or f"Black-box robustness ({metric})"
    if caption is None:
        caption = (f"{metric} of models trained on distilled data under targeted and untargeted "
                   "black-box attacks (layout of ROME Table 2): transfer attacks crafted on a "
                   "surrogate model, and query attacks (Square, SPSA) on the model itself; "
                   "pooled over " + _ipc_phrase(ipc_sets) + f". {MISSING} = not measured."
                   + (f" {SEEDS_METRICS_CAPTION}"
                      if _any_seeds(m for *_, kinds in entries for m in kinds.values()) else ""))
    return Table(title=title, groups=groups, rows=rows, caption=caption, label="tab:blackbox",
                 key_columns=2)


def _attack_labels(records: Sequence[Mapping[str, Any]]) -> list[str]:
    labels: list[str] = []
    for rec in records:
        for spec in rec.get("attacks") or []:
            if spec["label"] not in labels:
                labels.append(spec["label"])
    return labels


def _shift_keys(records: Sequence[Mapping[str, Any]]) -> list[str]:
    keys: list[str] = []
    for rec in records:
        for key in (rec.get("shift") or {}).get("tests") or []:
            if key not in keys:
                keys.append(key)
    return keys


def accuracy_table(records: Sequence[Mapping[str, Any]], *,
                   title: str = "Clean and attacked accuracy (%)", caption: str | None = None,
                   digits: int = 2) -> Table:
    """One row per evaluation record: dataset, method, IPC, K, then mean ± std accuracies.

    Columns: clean accuracy on the test subset, every attack's accuracy on the attack subset
    (by label; ``-T`` = targeted) and, when any record ran them, the distribution-shift tests.
    Rows in the given order; cells a record lacks show ``–``.
    """
    labels, shifts = _attack_labels(records), _shift_keys(records)
    seeds = _over_seeds(records)
    keys = ("Dataset", "Method", "IPC", *(("Seeds",) if seeds else ()), "K")
    groups = [ColumnGroup("", keys), ColumnGroup("Accuracy", ("Clean", *labels))]
    if shifts:
        groups.append(ColumnGroup("Distribution shift", tuple(shifts)))
    rows = []
    for rec in records:
        summary = rec.get("summary") or {}
        ident = [dataset_name(rec.get("dataset")), method_name(rec.get("method")),
                 ipc_text(rec.get("ipc"))]
        rows.append([*ident, *([_seeds_text(rec)] if seeds else []), _models_text(rec),
                     fmt_stat(summary.get("clean_accuracy"), digits),
                     *[fmt_stat(summary.get(k), digits) for k in (*labels, *shifts)]])
    if caption is None:
        caption = ("Accuracy in percent, mean ± std (population) over K evaluation models; clean "
                   "accuracy on the test subset, attacks on the attack subset; -T marks targeted "
                   f"attacks. {MISSING} = not measured."
                   + (f" {SEEDS_CAPTION}" if seeds else ""))
    return Table(title=title, groups=groups, rows=rows, caption=caption, label="tab:accuracy",
                 key_columns=len(keys))


SHIFT_TITLES = {"cluster_min": "Cluster-min", "cluster_mean": "Cluster-mean", "noise": "Noise",
                "blur": "Blur", "invert": "Invert"}


def rdd_table1(records: Sequence[Mapping[str, Any]], *, digits: int = 2) -> Table:
    """The RDD paper's Table 1 layout: clean accuracy and the distribution-shift tests
    (Cluster-min, Cluster-mean, Noise, Blur, Invert; ``reference/methods.md`` §10.5), mean ± std
    over the K models, one row per record that ran them."""
    shifted = [r for r in records if (r.get("shift") or {}).get("tests")]
    if not shifted:
        raise ReportError("no record has distribution-shift results (evaluate with shift=True)")
    keys = [k for k in SHIFT_TITLES if k in _shift_keys(shifted)]
    seeds = _over_seeds(shifted)
    ident = ("Dataset", "Method", "IPC", "Seeds") if seeds else ("Dataset", "Method", "IPC")
    groups = [ColumnGroup("", ident),
              ColumnGroup("", ("Clean",)),
              ColumnGroup("Distribution shift", tuple(SHIFT_TITLES[k] for k in keys))]
    rows = []
    for rec in shifted:
        summary = rec.get("summary") or {}
        rows.append([dataset_name(rec.get("dataset")), method_name(rec.get("method")),
                     ipc_text(rec.get("ipc")), *([_seeds_text(rec)] if seeds else []),
                     fmt_stat(summary.get("clean_accuracy"), digits),
                     *[fmt_stat(summary.get(k), digits) for k in keys]])
    caption = ("Accuracy (%) on the clean test subset, on the worst and the mean of 10 KMeans "
               "clusters of the test set, and on its Gaussian-noise, blurred and inverted "
               "copies (RDD, ICLR 2025); mean ± std over K models."
               + (f" {SEEDS_CAPTION}" if seeds else ""))
    return Table(title="Robustness to distribution shift (RDD Table 1 layout)", groups=groups,
                 rows=rows, caption=caption, label="tab:shift", key_columns=len(ident))
