"""Results over distillation seeds: one row per (dataset, method, profile, IPC) instead of one
per evaluation record.

A method distilled with seeds 0, 1, 2 gives three evaluation records, each already a mean over
its K evaluation models. Over seeds we report the mean of those per-seed values and their
population standard deviation (as ``np.std``, like the K-model statistics), with ``n`` the
number of seeds. Metrics (RR, CREI, ...) are computed per seed, then combined the same way:
they are not linear in the accuracies, so pooling accuracies first would give other numbers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from statistics import fmean
from typing import Any

from robustdd.report._common import ReportError

__all__ = ["combine_over_seeds", "merge_seed_records", "seed_stat"]


def seed_stat(values: Sequence[float]) -> dict[str, float | int]:
    """``{"mean", "std", "n"}`` of per-seed values (population std; 0 for one seed)."""
    if not values:
        raise ValueError("no values to summarise")
    mean = fmean(values)
    std = math.sqrt(fmean([(v - mean) ** 2 for v in values]))
    return {"mean": mean, "std": std, "n": len(values)}


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def combine_over_seeds(items: Sequence[Any]) -> Any:
    """Combine per-seed results of the same shape (e.g. :func:`robustdd.metrics.compute_metrics`
    outputs): every finite number becomes :func:`seed_stat` over the seeds that have it,
    mappings are combined key by key, and any other value is kept when all seeds agree (else
    the list of per-seed values). One item is returned unchanged."""
    present = [x for x in items if x is not None]
    if len(items) == 1 or not present:
        return items[0] if items else None
    if all(isinstance(x, Mapping) for x in present):
        keys = list(dict.fromkeys(k for x in present for k in x))
        return {k: combine_over_seeds([x[k] for x in present if k in x]) for k in keys}
    if all(_is_number(x) for x in present):
        return seed_stat([float(x) for x in present])
    first = present[0]
    return first if all(x == first for x in present) else list(present)


def _summary_over_seeds(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    keys = list(dict.fromkeys(k for r in records for k in (r.get("summary") or {})))
    out: dict[str, Any] = {}
    for key in keys:
        means = [r["summary"][key]["mean"] for r in records
                 if isinstance((r.get("summary") or {}).get(key), Mapping)
                 and _is_number(r["summary"][key].get("mean"))]
        if means:
            out[key] = seed_stat(means)
    return out


def merge_seed_records(records: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One record per (dataset, method, profile, IPC), in first-seen order.

    A group with one record is passed through. A group of several seeds becomes a summary
    record: the first record's identity and attack specs, ``summary`` over seeds (see the
    module docstring), ``seeds`` (sorted), ``models_per_seed`` (each seed's K) and ``models``
    concatenated over the seeds.
    """
    groups: dict[tuple[str, str, str, str], list[Mapping[str, Any]]] = {}
    for rec in records:
        key = (str(rec.get("dataset")), str(rec.get("method")), str(rec.get("profile")),
               str(rec.get("ipc")))
        groups.setdefault(key, []).append(rec)
    merged: list[dict[str, Any]] = []
    for (dataset, method, profile, ipc), group in groups.items():
        seeds = [r.get("seed") for r in group]
        twice = sorted({str(s) for s in seeds if seeds.count(s) > 1})
        if twice:
            raise ReportError(f"{method} on {dataset} ({profile} profile), IPC {ipc}: more than "
                              f"one evaluation record for seed {', '.join(twice)}; give one "
                              "record per seed")
        if len(group) == 1:
            merged.append(dict(group[0]))
            continue
        first = dict(group[0])
        first["summary"] = _summary_over_seeds(group)
        first["seeds"] = sorted(seeds, key=str)
        first["models_per_seed"] = [len(r.get("models") or []) for r in group]
        first["models"] = [m for r in group for m in (r.get("models") or [])]
        merged.append(first)
    return merged
