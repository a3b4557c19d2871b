"""Results over distillation seeds: one row per (dataset, method, profile, IPC) instead of one
per evaluation record.

A method distilled with seeds 0, 1, 2 gives three evaluation records, each already a mean over
its K evaluation models. Over seeds we report the mean of those per-seed values and their
population standard deviation (as ``np.std``, like the K-model statistics), with ``n`` the
number of seeds. Metrics (RR, CREI, ...) are computed per seed, then combined the same way:
they are not linear in the accuracies, so pooling accuracies first would give other numbers.

The seed of a record is its set's distillation seed (``distilled.meta.seed``), falling back to
the record's own ``seed`` (the evaluation seed; the bench sets both to the same value).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from statistics import fmean, pstdev
from typing import Any

from robustdd.report._common import ReportError

__all__ = ["combine_metrics", "distill_seed", "merge_seed_records", "seed_sort_key", "seed_stat"]

#: The measured values of a compute_metrics block that are combined over seeds; per-attack
#: mappings are combined attack by attack. Everything else (counts, IPC lists, settings) must
#: agree and is taken from the first seed.
MEASURED = ("RR", "I-RR", "AE", "CREI", "I-CREI", "clean_accuracy", "clean_seconds", "mean_ASR",
            "max_ASR", "mean_seconds", "max_seconds")
PER_ATTACK = ("ASR", "accuracy", "seconds", "gradients_per_example")


def seed_stat(values: Sequence[float]) -> dict[str, float | int]:
    """``{"mean", "std", "n"}`` of per-seed values (population std; 0 for one seed)."""
    if not values:
        raise ValueError("no values to summarise")
    return {"mean": fmean(values), "std": pstdev(values), "n": len(values)}


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def distill_seed(record: Mapping[str, Any]) -> Any:
    """The distillation seed of an evaluation record (see the module docstring)."""
    meta = (record.get("distilled") or {}).get("meta") or {}
    return meta["seed"] if "seed" in meta else record.get("seed")


def _stat_or_none(values: list[Any]) -> dict[str, float | int] | None:
    numbers = [float(v) for v in values if _is_number(v)]
    return seed_stat(numbers) if numbers else None


def _combine_block(blocks: list[Mapping[str, Any]]) -> dict[str, Any]:
    out = dict(copy.deepcopy(blocks[0]))
    for key in MEASURED:
        if key in out:
            out[key] = _stat_or_none([b.get(key) for b in blocks])
    for key in PER_ATTACK:
        if isinstance(out.get(key), Mapping):
            out[key] = {a: _stat_or_none([(b.get(key) or {}).get(a) for b in blocks])
                        for a in out[key]}
    notes = [n for b in blocks for n in (b.get("notes") or [])]
    if "notes" in out:
        out["notes"] = list(dict.fromkeys(notes))
    return out


def combine_metrics(per_seed: Sequence[Mapping[str, Any]], seeds: Sequence[Any]
                    ) -> dict[str, Any]:
    """Combine :func:`robustdd.metrics.compute_metrics` results of the same attacks and IPCs
    from several seeds: each measured value (RR, I-RR, AE, CREI, I-CREI, accuracies, ASRs,
    times) becomes :func:`seed_stat` over the seeds, per IPC and pooled; counts, IPC lists and
    settings are the first seed's (they must agree). Adds ``seeds`` and ``per_seed``."""
    if not per_seed:
        raise ValueError("no per-seed metrics to combine")
    out: dict[str, Any] = dict(copy.deepcopy(per_seed[0]))
    for mode, block in per_seed[0].items():
        if not isinstance(block, Mapping) or "pooled" not in block:
            continue
        blocks = [m.get(mode) for m in per_seed]
        if any(not isinstance(b, Mapping) for b in blocks):
            raise ReportError(f"seeds {', '.join(map(str, seeds))}: not every seed has "
                              f"{mode} results")
        ipcs = [tuple(b.get("pooled", {}).get("ipcs") or ()) for b in blocks]
        if len(set(ipcs)) > 1:
            raise ReportError(f"seeds {', '.join(map(str, seeds))}: {mode} results pool "
                              f"different IPCs ({'; '.join(map(str, ipcs))})")
        out[mode] = {"ipc": {ipc: _combine_block([b["ipc"][ipc] for b in blocks])
                             for ipc in block.get("ipc", {})},
                     "pooled": _combine_block([b["pooled"] for b in blocks])}
    out["seeds"] = list(seeds)
    out["per_seed"] = [copy.deepcopy(dict(m)) for m in per_seed]
    return out


def seed_sort_key(seed: Any) -> tuple[int, Any]:
    """Sort key for seeds: integers in numeric order, then anything else as text."""
    return (0, seed) if isinstance(seed, int) else (1, str(seed))


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
    record: the first record's identity, ``attacks`` and ``shift`` as the union over the seeds,
    ``summary`` over seeds (see the module docstring; a value only some seeds have is over
    those, and its ``n`` says how many), ``seeds`` (sorted), ``models_per_seed`` (each seed's K)
    and ``models`` concatenated over the seeds. Two records of one seed are refused.
    """
    groups: dict[tuple[str, str, str, str], list[Mapping[str, Any]]] = {}
    for rec in records:
        key = (str(rec.get("dataset")), str(rec.get("method")), str(rec.get("profile")),
               str(rec.get("ipc")))
        groups.setdefault(key, []).append(rec)
    merged: list[dict[str, Any]] = []
    for (dataset, method, profile, ipc), group in groups.items():
        seeds = [distill_seed(r) for r in group]
        twice = sorted({str(s) for s in seeds if seeds.count(s) > 1})
        if twice:
            raise ReportError(f"{method} on {dataset} ({profile} profile), IPC {ipc}: more than "
                              f"one evaluation record for distillation seed {', '.join(twice)}; "
                              "give one record per seed")
        if len(group) == 1:
            merged.append(dict(group[0]))
            continue
        first = dict(group[0])
        specs = {s["label"]: s for r in group for s in (r.get("attacks") or [])}
        first["attacks"] = list(specs.values())
        tests = list(dict.fromkeys(t for r in group for t in ((r.get("shift") or {})
                                                               .get("tests") or [])))
        if tests:
            shift = next(r["shift"] for r in group if (r.get("shift") or {}).get("tests"))
            first["shift"] = {**shift, "tests": tests}
        first["summary"] = _summary_over_seeds(group)
        order = sorted(range(len(group)), key=lambda i: seed_sort_key(seeds[i]))
        first["seeds"] = [seeds[i] for i in order]
        first["models_per_seed"] = [len(group[i].get("models") or []) for i in order]
        first["models"] = [m for i in order for m in (group[i].get("models") or [])]
        merged.append(first)
    return merged
