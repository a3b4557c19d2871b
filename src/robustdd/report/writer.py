"""``write_report``: every table, figure and RobustBench entry for a set of evaluation records.

Records are grouped by (dataset, method, profile); each group's IPCs are pooled by
:func:`robustdd.metrics.compute_metrics` (BEARD's multi-IPC metrics), seed by seed, and a group
with several distillation seeds reports mean ± std over them (:mod:`robustdd.report.seeds`).
White-box attacks feed Table 1; query attacks (Square, SPSA) are kept out of it, as BEARD
does, and feed the "Query" column of Table 2. All files are written atomically.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from robustdd.jsonfile import read_json
from robustdd.metrics import (
    EVALUATION_FORMAT,
    EVALUATION_VERSIONS,
    MetricsError,
    compute_metrics,
)
from robustdd.report._common import (
    QUERY_ATTACKS,
    ReportError,
    dataset_name,
    ipc_sort_key,
    ipc_text,
    method_name,
    method_sort_key,
)
from robustdd.report.figures import curve_summary, robustness_curves_figure, transfer_heatmap
from robustdd.report.robustbench import (
    AUTOATTACK,
    THREAT_MODELS,
    eps_text,
    robustbench_entry,
)
from robustdd.report.seeds import (
    combine_metrics,
    distill_seed,
    merge_seed_records,
    seed_sort_key,
)
from robustdd.report.tables import (
    ColumnGroup,
    Table,
    accuracy_table,
    rdd_table1,
    render,
    rome_table1,
    rome_table2,
)
from robustdd.runtime import open_atomic, write_json_atomic

FORMATS = ("md", "csv", "tex", "html")
METRICS_FORMAT = "robustdd.report-metrics"
Entry = tuple[str, str, Mapping[str, Any] | None]


# ---------------------------------------------------------------------------- loading


def check_record(record: Any, where: str) -> dict[str, Any]:
    """``record`` if it is a robustdd evaluation record (format and version), else an error."""
    if not isinstance(record, dict):
        raise ReportError(f"{where}: expected a robustdd evaluation record (a JSON object), got "
                          f"{type(record).__name__}")
    if record.get("format") != EVALUATION_FORMAT:
        found = f"format {record['format']!r}" if "format" in record else "no 'format' field"
        raise ReportError(f"{where}: not a robustdd evaluation record ({found}); reports are "
                          "built from the JSON records `robustdd evaluate` writes")
    if record.get("format_version") not in EVALUATION_VERSIONS:
        raise ReportError(f"{where}: unsupported evaluation format_version "
                          f"{record.get('format_version')!r}; known: {EVALUATION_VERSIONS}")
    missing = [k for k in ("method", "dataset", "attacks", "models", "summary") if k not in record]
    if missing:
        raise ReportError(f"{where}: evaluation record lacks {', '.join(missing)}")
    return record


def load_records(paths: Sequence[str | Path]) -> list[dict[str, Any]]:
    """Evaluation records from JSON files (each one record or a list of records)."""
    if not paths:
        raise ReportError("no record files given")
    records: list[dict[str, Any]] = []
    for path in paths:
        data = read_json(path, ReportError)
        items = data if isinstance(data, list) else [data]
        if not items:
            raise ReportError(f"{path}: empty list, no evaluation records")
        for i, item in enumerate(items):
            where = str(path) if len(items) == 1 else f"{path} (item {i + 1})"
            records.append(check_record(item, where))
    return records


# ---------------------------------------------------------------------------- grouping


def _record_sort_key(rec: Mapping[str, Any]) -> tuple[Any, ...]:
    return (str(rec.get("dataset")), method_sort_key(rec.get("method")), str(rec.get("profile")),
            ipc_sort_key(rec.get("ipc")), rec.get("seed") or 0)


def _groups(records: list[dict[str, Any]]
            ) -> list[tuple[tuple[str, str, str], list[dict[str, Any]]]]:
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for rec in records:
        key = (str(rec["dataset"]), str(rec["method"]), str(rec.get("profile")))
        groups.setdefault(key, []).append(rec)
    return list(groups.items())


def _row_method(key: tuple[str, str, str], profiles_vary: bool) -> str:
    _, method, profile = key
    return f"{method_name(method)} [{profile}]" if profiles_vary else method


def _is_query(label: str) -> bool:
    return label.removesuffix("-T") in QUERY_ATTACKS


def _group_metrics(key: tuple[str, str, str], group: list[dict[str, Any]], *, query: bool,
                   crei_weight: float, t0_rule: str) -> dict[str, Any] | None:
    """Pooled metrics of one group over its white-box (or query) attacks; None if it has none.

    With one record per IPC the IPCs are pooled in one call. With several distillation seeds,
    each seed's records are pooled over the IPCs *every* seed has (a seed missing an IPC, e.g.
    mid-run, does not skew the others; the pooled ``ipcs`` say which), then combined into
    mean ± std (:func:`~robustdd.report.seeds.combine_metrics`)."""
    labels = {s["label"] for rec in group for s in rec["attacks"]}
    keep = {lab for lab in labels if _is_query(lab) == query}
    if not keep:
        return None
    dataset, method, profile = key
    kind = "query" if query else "white-box"

    def metrics(records: list[dict[str, Any]], where: str = "") -> dict[str, Any]:
        try:
            return compute_metrics(records, crei_weight=crei_weight, t0_rule=t0_rule,
                                   exclude=sorted(labels - keep))
        except MetricsError as exc:
            raise ReportError(f"{method} on {dataset} ({profile} profile{where}), {kind} "
                              f"metrics: {exc}") from None

    ipcs = [str(rec.get("ipc")) for rec in group]
    if len(set(ipcs)) == len(ipcs):
        return metrics(group)
    by_seed: dict[Any, list[dict[str, Any]]] = {}
    for rec in group:
        by_seed.setdefault(distill_seed(rec), []).append(rec)
    common = set.intersection(*({str(r.get("ipc")) for r in recs} for recs in by_seed.values()))
    if not common:
        raise ReportError(f"{method} on {dataset} ({profile} profile), {kind} metrics: the "
                          "seeds share no IPC, so there is nothing to combine over seeds")
    seeds = sorted(by_seed, key=seed_sort_key)
    per_seed = [metrics([r for r in by_seed[s] if str(r.get("ipc")) in common], f", seed {s}")
                for s in seeds]
    try:
        return combine_metrics(per_seed, seeds)
    except ReportError as exc:
        raise ReportError(f"{method} on {dataset} ({profile} profile), {kind} metrics: "
                          f"{exc}") from None


# ---------------------------------------------------------------------------- writing


def _write_text(path: Path, text: str) -> Path:
    with open_atomic(path, "w") as fh:
        fh.write(text)
    return path


def _write_table(table: Table, stem: Path, formats: Sequence[str]) -> list[Path]:
    return [_write_text(stem.parent / f"{stem.name}.{f}", render(table, f)) for f in formats]


def curves_table(records: Sequence[Mapping[str, Any]]) -> Table:
    """The data behind the curves figure: one row per (record, mode, sweep, point)."""
    rows = []
    for rec in records:
        for mode, kinds in curve_summary(rec).items():
            for kind, points in kinds.items():
                for x, p in points.items():
                    rows.append([dataset_name(rec.get("dataset")), method_name(rec.get("method")),
                                 ipc_text(rec.get("ipc")), str(rec.get("seed")), mode, kind, x,
                                 f"{p['mean']:.4f}", f"{p['std']:.4f}", str(p["n"])])
    columns = ("Dataset", "Method", "IPC", "Seed", "Mode", "Sweep", "x", "Mean accuracy",
               "Std", "K")
    return Table(title="Robustness curves (PGD-L∞ accuracy, %)",
                 groups=[ColumnGroup("", columns)], rows=rows, key_columns=7)


def _robustbench_targets(rec: Mapping[str, Any]) -> list[tuple[str, float]]:
    """(threat model, eps) of each untargeted AutoAttack run in the record."""
    norms = {v: k for k, v in THREAT_MODELS.items()}
    return [(norms[s.get("norm", "linf")], float(s["eps"])) for s in rec["attacks"]
            if s.get("name") == AUTOATTACK and not s.get("targeted")
            and s.get("norm", "linf") in norms]


def _write_robustbench(records: list[dict[str, Any]], folder: Path) -> list[Path]:
    stems: list[str] = []
    jobs: list[tuple[dict[str, Any], str, float]] = []
    for rec in records:
        targets = _robustbench_targets(rec)
        for threat, eps in targets:
            stem = f"{rec['method']}-{rec['dataset']}-ipc{ipc_text(rec.get('ipc'))}"
            if len(targets) > 1:
                stem += f"-{threat}-{eps_text(eps).replace('/', '_')}"
            stems.append(stem)
            jobs.append((rec, threat, eps))
    paths = []
    for (rec, threat, eps), stem in zip(jobs, stems, strict=True):
        if stems.count(stem) > 1:  # the same method/dataset/IPC from several seeds
            stem += f"-s{rec.get('seed')}"
        entry = robustbench_entry(rec, threat_model=threat, eps=eps)
        paths.append(write_json_atomic(folder / f"{stem}.json", entry))
    return paths


def write_report(records: Sequence[Mapping[str, Any] | str | Path], out_dir: str | Path, *,
                 formats: Sequence[str] = FORMATS,
                 transfer_matrix: Mapping[str, Any] | None = None,
                 transfer_entries: Sequence[Entry] | None = None,
                 query_entries: Sequence[Entry] | None = None,
                 crei_weight: float = 0.5, t0_rule: str = "same-mode") -> dict[str, list[Path]]:
    """Write the report for ``records`` (dicts or JSON paths) into ``out_dir``.

    Always: ``table1.<fmt>`` (ROME Table 1, white-box metrics pooled over IPCs),
    ``accuracy.<fmt>`` (mean ± std accuracies; one row per dataset, method, profile and IPC,
    over seeds where there are several, then also ``accuracy-per-seed.<fmt>``) and
    ``metrics.json`` (the metrics behind the tables).
    When any record has curves: ``curves.png/.svg`` (+ ``curves.csv``). When a record
    has an untargeted AutoAttack result: ``robustbench/<method>-<dataset>-ipc<ipc>.json``.
    Table 2 (``table2.<fmt>``) when there are query-attack results in the records,
    ``query_entries`` or ``transfer_entries`` (``(dataset, method, metrics)``, a
    :func:`~robustdd.metrics.compute_metrics` result; explicit entries replace ones derived
    from the records). ``transfer_heatmap.png/.svg`` when ``transfer_matrix`` (``{"targeted":
    {surrogate: {victim: I-RR}}, "untargeted": {...}}``) is given. Returns the written paths
    by output name.
    """
    formats = tuple(dict.fromkeys(formats))
    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats:
        raise ReportError(f"unknown table format(s) {', '.join(bad) or '(none given)'}; "
                          f"known: {', '.join(FORMATS)}")
    loaded = [check_record(dict(r), f"record {i + 1}") if isinstance(r, Mapping)
              else load_records([r])[0] for i, r in enumerate(records)]
    if not loaded:
        raise ReportError("no evaluation records given")
    loaded.sort(key=_record_sort_key)
    merged = merge_seed_records(loaded)  # also refuses two records of one seed
    out = Path(out_dir)
    written: dict[str, list[Path]] = {}

    groups = _groups(loaded)
    profiles_vary = len({key[2] for key, _ in groups}) > 1
    table1_entries: list[Entry] = []
    derived_query: dict[tuple[str, str], Mapping[str, Any]] = {}
    metrics_doc: dict[str, Any] = {"format": METRICS_FORMAT, "format_version": 1,
                                   "white_box": [], "query": []}
    for key, group in groups:
        dataset, method, profile = key
        row = _row_method(key, profiles_vary)
        white = _group_metrics(key, group, query=False, crei_weight=crei_weight,
                               t0_rule=t0_rule)
        query = _group_metrics(key, group, query=True, crei_weight=crei_weight,
                               t0_rule=t0_rule)
        table1_entries.append((dataset, row, white))
        ident = {"dataset": dataset, "method": method, "profile": profile}
        if white is not None:
            metrics_doc["white_box"].append({**ident, "metrics": white})
        if query is not None:
            derived_query[(dataset, row)] = query
            metrics_doc["query"].append({**ident, "metrics": query})

    written["table1"] = _write_table(rome_table1(table1_entries), out / "table1", formats)
    written["accuracy"] = _write_table(accuracy_table(merged), out / "accuracy", formats)
    if len(merged) < len(loaded):  # every seed's own row as well
        written["accuracy_per_seed"] = _write_table(
            accuracy_table([{**r, "seeds": [r.get("seed")]} for r in loaded],
                           title="Clean and attacked accuracy (%), per seed"),
            out / "accuracy-per-seed", formats)
    if any((r.get("shift") or {}).get("tests") for r in loaded):
        written["shift"] = _write_table(rdd_table1(merged), out / "shift", formats)

    blackbox: dict[tuple[str, str], dict[str, Mapping[str, Any] | None]] = {}
    for (dataset, row), metrics in derived_query.items():
        blackbox.setdefault((dataset, row), {})["query"] = metrics
    for kind, entries in (("query", query_entries), ("transfer", transfer_entries)):
        for dataset, method, metrics in entries or []:
            blackbox.setdefault((str(dataset), str(method)), {})[kind] = metrics
    if blackbox:
        table2_entries = [(d, m, kinds) for (d, m), kinds in blackbox.items()]
        written["table2"] = _write_table(rome_table2(table2_entries), out / "table2", formats)

    written["metrics"] = [write_json_atomic(out / "metrics.json", metrics_doc)]
    if transfer_matrix is not None:
        written["transfer_heatmap"] = transfer_heatmap(transfer_matrix, out / "transfer_heatmap")
    with_curves = [r for r in loaded if curve_summary(r)]
    if with_curves:
        written["curves"] = robustness_curves_figure(with_curves, out / "curves")
        if "csv" in formats:
            written["curves"].append(_write_text(out / "curves.csv",
                                                 render(curves_table(with_curves), "csv")))
    robustbench = _write_robustbench(loaded, out / "robustbench")
    if robustbench:
        written["robustbench"] = robustbench
    return written
