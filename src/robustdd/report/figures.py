"""Report figures (matplotlib, Agg canvas, no pyplot): transfer heatmap and robustness curves.

:func:`transfer_heatmap` mirrors ROME Figure 3 (I-RR of every surrogate → victim transfer pair,
targeted and untargeted panels); :func:`robustness_curves_figure` mirrors ROME Figure 5 (PGD
accuracy as ε grows, plus accuracy as PGD steps grow), from the ``curves`` that ``robustdd
evaluate --curves`` stores per model. Both write PNG and SVG and return the paths.

Output is byte-for-byte reproducible for a given matplotlib version: figures are drawn on an
explicit Agg canvas (pyplot and the global backend are never touched), the SVG id salt is fixed
(``svg.hashsalt``) and no date or software stamp goes into the file metadata.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from statistics import fmean, pstdev
from typing import Any

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from robustdd.report._common import (
    MODE_TITLES,
    MODES,
    ReportError,
    dataset_name,
    ipc_text,
    method_name,
)
from robustdd.runtime import open_atomic

RC = {"svg.hashsalt": "robustdd-report", "svg.fonttype": "path", "font.size": 8,
      "axes.titlesize": 9, "figure.dpi": 100}
PNG_DPI = 150
CURVE_KINDS = ("eps", "steps")


def _new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)  # the Agg canvas, set explicitly: never an interactive backend
    return fig


def save_figure(fig: Figure, path_stem: str | Path) -> list[Path]:
    """Write ``<path_stem>.png`` and ``<path_stem>.svg`` atomically, without date metadata."""
    stem = Path(path_stem)
    paths = []
    for ext, metadata, dpi in (("png", {"Software": None}, PNG_DPI),
                               ("svg", {"Date": None}, None)):
        buf = io.BytesIO()
        with matplotlib.rc_context(RC):
            fig.savefig(buf, format=ext, metadata=metadata, dpi=dpi)
        path = stem.parent / f"{stem.name}.{ext}"
        with open_atomic(path, "wb") as fh:
            fh.write(buf.getvalue())
        paths.append(path)
    return paths


# ---------------------------------------------------------------------------- heatmap


def _matrix_grid(block: Any, mode: str) -> tuple[list[str], list[str], np.ndarray]:
    if not isinstance(block, Mapping) or not block:
        raise ReportError(f"transfer matrix {mode!r}: expected {{surrogate: {{victim: value}}}}")
    surrogates = [str(s) for s in block]
    victims: list[str] = []
    for s, row in block.items():
        if not isinstance(row, Mapping):
            raise ReportError(f"transfer matrix {mode!r}, surrogate {s!r}: expected "
                              f"{{victim: value}}, got {type(row).__name__}")
        victims += [str(v) for v in row if str(v) not in victims]
    grid = np.full((len(surrogates), len(victims)), np.nan)
    for i, row in enumerate(block.values()):
        for v, value in row.items():
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int | float) \
                    or not math.isfinite(value):
                raise ReportError(f"transfer matrix {mode!r}: value for {surrogates[i]} → {v} "
                                  f"must be a finite number or null, got {value!r}")
            grid[i, victims.index(str(v))] = float(value)
    return surrogates, victims, grid


def transfer_heatmap(matrix: Mapping[str, Mapping[str, Mapping[str, float | None]]],
                     path_stem: str | Path, *, metric: str = "I-RR",
                     title: str | None = None, digits: int = 2) -> list[Path]:
    """Annotated heatmap of a transfer matrix, like ROME Figure 3; returns [PNG, SVG] paths.

    ``matrix``: ``{"targeted": {surrogate: {victim: value}}, "untargeted": {...}}`` (either
    mode may be absent; None marks an unmeasured pair). One panel per mode; rows are the
    surrogate ("attack model") the adversarial examples were crafted on, columns the victim
    ("transfer model") they were tested on; darker = higher ``metric``.
    """
    unknown = sorted(set(matrix) - set(MODES))
    if unknown:
        raise ReportError(f"transfer matrix: unknown mode(s) {', '.join(unknown)}; "
                          f"known: {', '.join(MODES)}")
    modes = [m for m in MODES if matrix.get(m)]
    if not modes:
        raise ReportError("transfer matrix is empty: give 'targeted' and/or 'untargeted' "
                          "{surrogate: {victim: value}} blocks")
    panels = [(mode, *_matrix_grid(matrix[mode], mode)) for mode in modes]
    n_rows = max(len(s) for _, s, _, _ in panels)
    n_cols = max(len(v) for _, _, v, _ in panels)
    with matplotlib.rc_context(RC):
        cell = 0.55
        fig = _new_figure(len(panels) * (cell * n_cols + 2.2), cell * n_rows + 1.9)
        axes = fig.subplots(1, len(panels), squeeze=False)[0]
        font = max(4.5, 8.0 - 0.25 * max(n_rows, n_cols))
        for ax, (mode, surrogates, victims, grid) in zip(axes, panels, strict=True):
            finite = grid[np.isfinite(grid)]
            lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
            if hi <= lo:
                lo, hi = lo - 1.0, hi + 1.0
            image = ax.imshow(np.ma.masked_invalid(grid), cmap="Blues", vmin=lo, vmax=hi,
                              aspect="equal")
            ax.set_xticks(range(len(victims)), [method_name(v) for v in victims],
                          rotation=45, ha="right", rotation_mode="anchor")
            ax.set_yticks(range(len(surrogates)), [method_name(s) for s in surrogates])
            ax.set_xlabel("transfer model (victim)")
            ax.set_ylabel("attack model (surrogate)")
            ax.set_title(MODE_TITLES[mode])
            for i in range(len(surrogates)):
                for j in range(len(victims)):
                    value = grid[i, j]
                    if not np.isfinite(value):
                        ax.text(j, i, "–", ha="center", va="center", fontsize=font)
                        continue
                    dark = (value - lo) / (hi - lo) > 0.55
                    ax.text(j, i, f"{value:.{digits}f}", ha="center", va="center",
                            fontsize=font, color="white" if dark else "black")
            fig.colorbar(image, ax=ax, label=metric, shrink=0.85)
        fig.suptitle(title or f"Transfer attacks: {metric} of each victim (higher = more robust)")
        return save_figure(fig, path_stem)


# ---------------------------------------------------------------------------- curves


def curve_summary(record: Mapping[str, Any]) -> dict[str, dict[str, dict[str, dict[str, float]]]]:
    """Mean/std/n over the record's models of each curve point: ``{mode: {"eps"|"steps":
    {x: {"mean", "std", "n"}}}}`` (x as stored: ε in 1/255 units, or a step count). Empty when
    no model has curves."""
    per_model = [m["curves"] for m in record.get("models") or [] if m.get("curves")]
    out: dict[str, dict[str, dict[str, dict[str, float]]]] = {}
    for mode in MODES:
        for kind in CURVE_KINDS:
            keys: list[str] = []
            for curves in per_model:
                keys += [k for k in curves.get(mode, {}).get(kind, {}) if k not in keys]
            for key in sorted(keys, key=float):
                values = [c[mode][kind][key] for c in per_model
                          if key in c.get(mode, {}).get(kind, {})]
                out.setdefault(mode, {}).setdefault(kind, {})[key] = {
                    "mean": fmean(values), "std": pstdev(values), "n": len(values)}
    return out


def _series_labels(records: Sequence[Mapping[str, Any]]) -> list[str]:
    datasets = {r.get("dataset") for r in records}
    labels = []
    for rec in records:
        parts = [method_name(rec.get("method"))]
        if rec.get("ipc") is not None:  # None: trained on the full training set
            parts.append(f"IPC {ipc_text(rec['ipc'])}")
        if len(datasets) > 1:
            parts.insert(0, dataset_name(rec.get("dataset")))
        labels.append(" ".join(parts))
    if len(set(labels)) < len(labels):  # same method/IPC from several seeds
        labels = [f"{lab} s{rec.get('seed')}" for lab, rec in zip(labels, records, strict=True)]
    return labels


def robustness_curves_figure(records: Sequence[Mapping[str, Any]], path_stem: str | Path, *,
                             title: str | None = None) -> list[Path]:
    """PGD accuracy vs ε and vs steps, targeted and untargeted, like ROME Figure 5.

    A 2 × 2 grid (rows: targeted, untargeted; columns: ε sweep at 10 steps, step sweep at
    ε = 8/255) with one line per evaluation record (mean over its K models, ±std band).
    Records without curves are skipped; raises :class:`ReportError` if none has any.
    Returns [PNG, SVG] paths.
    """
    with_curves = [r for r in records if curve_summary(r)]
    if not with_curves:
        raise ReportError("no record has robustness curves: evaluate with --curves "
                          "(curves=True) to measure PGD accuracy vs eps and steps")
    summaries = [curve_summary(r) for r in with_curves]
    modes = [m for m in MODES if any(m in s for s in summaries)]
    with matplotlib.rc_context(RC):
        fig = _new_figure(7.2, 2.6 * len(modes) + 0.5)
        axes = fig.subplots(len(modes), 2, squeeze=False)
        for row, mode in enumerate(modes):
            for col, kind in enumerate(CURVE_KINDS):
                ax = axes[row][col]
                for label, summary in zip(_series_labels(with_curves), summaries, strict=True):
                    points = summary.get(mode, {}).get(kind)
                    if not points:
                        continue
                    xs = [float(k) for k in points]
                    mean = np.array([p["mean"] for p in points.values()])
                    std = np.array([p["std"] for p in points.values()])
                    (line,) = ax.plot(xs, mean, marker="o", markersize=3, linewidth=1.2,
                                      label=label)
                    if np.any(std > 0):
                        ax.fill_between(xs, mean - std, mean + std, alpha=0.15,
                                        color=line.get_color(), linewidth=0)
                what = "ε (×1/255), 10 PGD steps" if kind == "eps" else "PGD steps (ε = 8/255)"
                ax.set_xlabel(what)
                ax.set_ylabel("accuracy (%)")
                ax.set_ylim(0, 100)
                ax.grid(True, linewidth=0.3, alpha=0.5)
                ax.set_title(f"{MODE_TITLES[mode]}: accuracy vs "
                             f"{'ε' if kind == 'eps' else 'steps'}")
        handles, labels = axes[0][0].get_legend_handles_labels()
        if not handles:
            handles, labels = axes[0][1].get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside lower center",
                   ncols=min(4, max(1, len(labels))), frameon=False)
        fig.suptitle(title or "Robustness curves (PGD-L∞)")
        return save_figure(fig, path_stem)
