"""BEARD/ROME robustness metrics: ASR, RR, I-RR, AE, CREI and I-CREI, per IPC and pooled.

Definitions follow BEARD's ``auto_metrics.py`` and the ROME paper (I-RR), as summarised in
``reference/rome-and-beard.md`` §3; edge-case conventions and formats are in ``docs/metrics.md``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from statistics import fmean
from typing import Any

from rich import box
from rich.table import Table

from robustdd.errors import RobustDDError
from robustdd.jsonfile import read_json

MODES = ("targeted", "untargeted")
T0_RULES = ("same-mode", "min")
CLEAN = "clean"
TARGETED_SUFFIX = "-T"
# Mirror robustdd.attacks.legacy.LEGACY_CLEAN_PASS (not imported: it loads torch).
LEGACY_CLEAN_PASS = ("deepfool", "autoattack")
# Mirror robustdd.evaluate.whitebox.RECORD_FORMAT/RECORD_VERSION (not imported: it loads torch).
EVALUATION_FORMAT = "robustdd.evaluation"
EVALUATION_VERSIONS = (1,)
# |A - a| below this many percentage points is floating-point noise from averaging: ASR = 0.
ASR_TOLERANCE = 1e-9


class MetricsError(RobustDDError, ValueError):
    """Input to the metrics is missing, malformed or inconsistent."""


@dataclass(frozen=True)
class Measurement:
    """One accuracy/time pair: the clean pass (``attack == "clean"``) or one attack."""

    ipc: str
    mode: str
    attack: str
    accuracy: float
    seconds: float
    gradients_per_example: float | None = None


# ---------------------------------------------------------------------------- the formulas


def attack_success_rate(clean_accuracy: float, accuracy: float) -> float:
    """ASR = A − a in percentage points (BEARD's accuracy drop); noise below 1e-9 is 0."""
    drop = clean_accuracy - accuracy
    return 0.0 if abs(drop) < ASR_TOLERANCE else drop


def robustness_ratio(asrs: Sequence[float]) -> float:
    """RR = 100(1 − mean ASR / max ASR); 100 when no attack lowered accuracy (max ASR ≤ 0)."""
    worst = _nonempty_max(asrs, "ASR")
    if worst <= 0:
        return 100.0
    return 100.0 * (1.0 - fmean(asrs) / worst)


def improved_robustness_ratio(asrs: Sequence[float], clean_accuracy: float) -> float:
    """I-RR = 100(1 − mean ASR · max ASR / A²) (ROME); 100 when max ASR ≤ 0 (covers A = 0)."""
    worst = _nonempty_max(asrs, "ASR")
    if worst <= 0:
        return 100.0
    if clean_accuracy <= 0:  # impossible for real data: ASR > 0 needs A > a ≥ 0
        raise MetricsError(f"max ASR {worst} > 0 with clean accuracy {clean_accuracy} ≤ 0")
    return 100.0 * (1.0 - fmean(asrs) * worst / clean_accuracy**2)


def attack_efficiency(times: Sequence[float], clean_seconds: float) -> float:
    """AE = 100(mean t − T0)/(max t − T0); 0 when no attack took longer than T0 (max t ≤ T0)."""
    longest = _nonempty_max(times, "attack time")
    if longest <= clean_seconds:
        return 0.0
    return 100.0 * (fmean(times) - clean_seconds) / (longest - clean_seconds)


def crei(ratio: float, efficiency: float, weight: float = 0.5) -> float:
    """CREI = w·RR + (1 − w)·AE (pass I-RR for I-CREI)."""
    return weight * ratio + (1.0 - weight) * efficiency


def metric_block(clean_accuracy: float, clean_seconds: float, accuracies: Sequence[float],
                 times: Sequence[float], weight: float = 0.5) -> dict[str, Any]:
    """All metrics for one set of attacks, with the quantities they were computed from."""
    if not accuracies:
        raise MetricsError("no attacks to compute metrics over (need at least one attack)")
    asrs = [attack_success_rate(clean_accuracy, a) for a in accuracies]
    rr = robustness_ratio(asrs)
    irr = improved_robustness_ratio(asrs, clean_accuracy)
    ae = attack_efficiency(times, clean_seconds)
    mean_asr, max_asr = fmean(asrs), max(asrs)
    mean_t, max_t = fmean(times), max(times)
    notes: list[str] = []
    if max_asr <= 0:
        note = "no attack lowered accuracy (max ASR <= 0): RR = I-RR = 100 by convention"
        if clean_accuracy <= 0:
            note += "; clean accuracy is 0, so there was nothing to lose"
        elif max_asr < 0:
            literal = 100.0 * (1.0 - mean_asr * max_asr / clean_accuracy**2)
            note += f" (the literal I-RR formula would give {literal:.4g})"
        notes.append(note)
    elif mean_asr < 0:
        notes.append("mean ASR < 0 (attacks raised accuracy on average, ROME's "
                     "over-robustness): RR and I-RR exceed 100")
    if max_t <= clean_seconds:
        notes.append("no attack took longer than the clean pass (max t <= T0): "
                     "AE = 0 by convention")
    elif mean_t < clean_seconds:
        notes.append("mean attack time is below the clean time T0: AE < 0")
    block = {
        "RR": rr, "I-RR": irr, "AE": ae,
        "CREI": crei(rr, ae, weight), "I-CREI": crei(irr, ae, weight),
        "clean_accuracy": clean_accuracy, "clean_seconds": clean_seconds,
        "mean_ASR": mean_asr, "max_ASR": max_asr, "mean_seconds": mean_t, "max_seconds": max_t,
        "n_attacks": len(asrs), "notes": notes,
    }
    for key in ("RR", "I-RR", "AE", "CREI", "I-CREI"):
        if not math.isfinite(block[key]):  # unreachable for validated input; never emit NaN
            raise MetricsError(f"{key} is not finite ({block[key]}) for these inputs")
    return block


# ---------------------------------------------------------------------------- compute


def compute_metrics(records: Any, *, crei_weight: float = 0.5, t0_rule: str = "same-mode",
                    exclude: Iterable[str] = ()) -> dict[str, Any]:
    """Metrics per mode, per IPC and pooled over IPCs, from plain or evaluation records.

    ``records``: ``{"records": [{"ipc", "mode", "attack", "accuracy", "time"}, ...]}`` (one
    ``"attack": "clean"`` row per IPC and mode), or one ``robustdd.evaluation`` record or a list
    of them. ``exclude`` drops attacks by name (``"pgd"``: both modes; ``"pgd-T"``: targeted
    only). ``t0_rule``: ``"same-mode"`` (the mode's own clean time; reproduces ROME Table 1) or
    ``"min"`` (BEARD's newer toolkit: the smaller of the two modes' clean times at that IPC).
    """
    weight = _weight(crei_weight)
    if t0_rule not in T0_RULES:
        raise MetricsError(f"unknown t0_rule {t0_rule!r}; known: {', '.join(T0_RULES)}")
    excluded = [str(e) for e in exclude]
    measurements, source = parse_records(records)
    measurements = [m for m in measurements if not _is_excluded(m, excluded)]
    clean, attacks = _index(measurements)
    if not attacks:
        raise MetricsError("no attack records"
                           + (f" left after excluding {', '.join(excluded)}" if excluded else "")
                           + ": metrics need at least one attack besides 'clean'")
    out: dict[str, Any] = {}
    for mode in MODES:
        mode_attacks = [m for m in attacks if m.mode == mode]
        if not mode_attacks:
            continue  # a mode with no attack records is omitted
        ipcs = sorted({ipc for ipc, m in clean if m == mode} | {m.ipc for m in mode_attacks},
                      key=_ipc_order)
        per_ipc: dict[str, Any] = {}
        clean_accs: list[float] = []
        t0s: list[float] = []
        pooled_accs: list[float] = []
        pooled_times: list[float] = []
        for ipc in ipcs:
            rows = [m for m in mode_attacks if m.ipc == ipc]
            if not rows:
                raise MetricsError(
                    f"{mode} IPC {ipc}: a clean record but no attack records"
                    + (f" (after excluding {', '.join(excluded)})" if excluded else "")
                    + f"; other IPCs of this mode have attacks, so add attacks for IPC {ipc} "
                    "or remove its clean record")
            base = clean[(ipc, mode)]
            t0 = _t0(clean, ipc, mode, t0_rule)
            accs, times = [m.accuracy for m in rows], [m.seconds for m in rows]
            block = metric_block(base.accuracy, t0, accs, times, weight)
            block["ASR"] = {m.attack: attack_success_rate(base.accuracy, m.accuracy)
                            for m in rows}
            block["accuracy"] = {m.attack: m.accuracy for m in rows}
            block["seconds"] = {m.attack: m.seconds for m in rows}
            grads = {m.attack: m.gradients_per_example for m in rows
                     if m.gradients_per_example is not None}
            if grads:
                block["gradients_per_example"] = grads
            per_ipc[ipc] = block
            clean_accs.append(base.accuracy)
            t0s.append(t0)
            pooled_accs += accs
            pooled_times += times
        # Pooled (BEARD's RRM/AEM/CREIM): mean clean accuracy and time over IPCs, then the same
        # formulas over every (IPC, attack) pair; ASR of a pair is measured from the mean A.
        pooled = metric_block(fmean(clean_accs), fmean(t0s), pooled_accs, pooled_times, weight)
        pooled["ipcs"] = list(per_ipc)
        out[mode] = {"ipc": per_ipc, "pooled": pooled}
    out["settings"] = {"crei_weight": weight, "t0_rule": t0_rule, "exclude": excluded,
                       "asr_tolerance": ASR_TOLERANCE}
    out["source"] = source
    return out


def parse_records(records: Any) -> tuple[list[Measurement], dict[str, Any]]:
    """Measurements from either input form, and a description of the source."""
    if isinstance(records, dict) and "records" in records and "format" not in records:
        return _from_plain(records["records"]), {"format": "plain"}
    if isinstance(records, dict) and "format" in records:
        records = [records]
    if isinstance(records, list) and records:
        formatted = [isinstance(r, dict) and "format" in r for r in records]
        if all(formatted):
            return _from_evaluations(records)
        if not any(formatted):
            return _from_plain(records), {"format": "plain"}
        raise MetricsError("input mixes evaluation records (with 'format') and plain records")
    if isinstance(records, list):
        raise MetricsError("no records given: the input list is empty")
    raise MetricsError(
        "expected {'records': [{'ipc', 'mode', 'attack', 'accuracy', 'time'}, ...]} or "
        f"robustdd evaluation record(s), got {type(records).__name__}")


def load_metrics_input(paths: Sequence[str | Path]) -> Any:
    """Read one or more JSON files and merge them into one input for :func:`compute_metrics`."""
    if not paths:
        raise MetricsError("no input files given")
    plain: list[Any] = []
    evaluations: list[Any] = []
    for path in paths:
        data = read_json(path, MetricsError)
        if isinstance(data, dict) and "records" in data and "format" not in data:
            if not isinstance(data["records"], list):
                raise MetricsError(f"{path}: 'records' must be a list")
            plain += data["records"]
        elif isinstance(data, dict) and "format" in data:
            evaluations.append(data)
        elif isinstance(data, list) and all(isinstance(r, dict) and "format" in r for r in data):
            evaluations += data
        elif isinstance(data, list) and not any(isinstance(r, dict) and "format" in r
                                                for r in data):
            plain += data
        else:
            raise MetricsError(f"{path}: expected {{'records': [...]}}, an evaluation record "
                               "or a list of evaluation records")
    if plain and evaluations:
        raise MetricsError("the files mix plain records and evaluation records; use one form")
    return {"records": plain} if plain else evaluations


# ---------------------------------------------------------------------------- parsing


def _from_plain(rows: Any) -> list[Measurement]:
    if not isinstance(rows, list):
        raise MetricsError("'records' must be a list of {'ipc', 'mode', 'attack', 'accuracy', "
                           "'time'} objects")
    out: list[Measurement] = []
    for i, row in enumerate(rows):
        where = f"record {i + 1}"
        if not isinstance(row, dict):
            raise MetricsError(f"{where}: expected an object, got {type(row).__name__}")
        missing = [k for k in ("ipc", "mode", "attack", "accuracy", "time") if k not in row]
        if missing:
            raise MetricsError(f"{where}: missing {', '.join(missing)} (each record needs ipc, "
                               "mode, attack, accuracy and time)")
        mode = row["mode"]
        if mode not in MODES:
            raise MetricsError(f"{where}: unknown mode {mode!r}; known: targeted, untargeted")
        attack = row["attack"]
        if not isinstance(attack, str) or not attack:
            raise MetricsError(f"{where}: attack must be a non-empty string, got {attack!r}")
        if attack.endswith(TARGETED_SUFFIX):
            if mode != "targeted":
                raise MetricsError(f"{where}: attack {attack!r} has a targeted label but mode "
                                   f"{mode!r}")
            attack = attack[: -len(TARGETED_SUFFIX)]
        grads = row.get("gradients_per_example")
        out.append(Measurement(
            ipc=_ipc_key(row["ipc"], where), mode=mode, attack=attack,
            accuracy=_accuracy(row["accuracy"], f"{where} accuracy"),
            seconds=_seconds(row["time"], f"{where} time"),
            gradients_per_example=None if grads is None else _seconds(
                grads, f"{where} gradients_per_example")))
    return out


def _from_evaluations(records: list[dict[str, Any]]
                      ) -> tuple[list[Measurement], dict[str, Any]]:
    identity: dict[str, set[Any]] = {"method": set(), "dataset": set(), "profile": set()}
    for i, rec in enumerate(records):
        where = _where(rec, i)
        if rec.get("format") != EVALUATION_FORMAT:
            raise MetricsError(f"{where}: format {rec.get('format')!r} is not "
                               f"{EVALUATION_FORMAT!r}")
        if rec.get("format_version") not in EVALUATION_VERSIONS:
            raise MetricsError(f"{where}: unsupported format_version "
                               f"{rec.get('format_version')!r}; known: {EVALUATION_VERSIONS}")
        for key in identity:
            identity[key].add(rec.get(key))
    mixed = {k: v for k, v in identity.items() if len(v) > 1}
    if mixed:
        detail = "; ".join(f"{k}: {', '.join(sorted(map(str, v)))}" for k, v in mixed.items())
        raise MetricsError(f"evaluation records differ in {detail}; metrics pool the IPCs of one "
                           "method, dataset and profile, so compute them separately")
    out: list[Measurement] = []
    seen_ipcs: dict[str, int] = {}
    dropped: list[str] = []
    for i, rec in enumerate(records):
        where = _where(rec, i)
        ipc = _ipc_key(rec.get("ipc"), where)
        if ipc in seen_ipcs:
            raise MetricsError(f"{where}: duplicate IPC {ipc} (also evaluation record "
                               f"{seen_ipcs[ipc] + 1}); give one record per IPC")
        seen_ipcs[ipc] = i
        out += _evaluation_measurements(rec, ipc, where, dropped)
    source: dict[str, Any] = {"format": EVALUATION_FORMAT,
                              **{k: next(iter(v)) for k, v in identity.items()}}
    if dropped:
        source["dropped_clean_passes"] = dropped
    return out, source


def _where(rec: dict[str, Any], i: int) -> str:
    return f"evaluation record {i + 1} ({rec.get('method')}, IPC {rec.get('ipc')})"


def is_legacy_clean_pass(spec: dict[str, Any]) -> bool:
    """Whether a recorded attack spec is one the legacy suite answers with a clean pass.

    Its targeted DeepFool/AutoAttack score the images unchanged, as BEARD does; BEARD's metric
    code drops them (reference/rome-and-beard.md §4), and so do ours.
    """
    return (spec.get("space") == "normalised" and bool(spec.get("targeted"))
            and spec.get("name") in LEGACY_CLEAN_PASS)


def _is_clean_pass(spec: dict[str, Any], per_model: list[dict[str, Any]]) -> bool:
    """The spec rule, or every model's result flagged ``clean_pass``."""
    return is_legacy_clean_pass(spec) or all(bool(p.get("clean_pass")) for p in per_model)


def _evaluation_measurements(rec: dict[str, Any], ipc: str, where: str,
                             dropped: list[str]) -> list[Measurement]:
    """Clean and attack measurements of one record: summary means, seconds averaged over models.

    Clean passes recorded under an attack's name are left out and their labels appended to
    ``dropped``: a targeted set holds only attacks with a targeted form (DESIGN.md).
    """
    models = _get(rec, ("models",), where)
    if not isinstance(models, list) or not models:
        raise MetricsError(f"{where}: 'models' must be a non-empty list")
    specs = _get(rec, ("attacks",), where)
    if not isinstance(specs, list):
        raise MetricsError(f"{where}: 'attacks' must be a list of attack specs")
    labels = [str(_get(spec, ("label",), f"{where} attacks")) for spec in specs]
    spec_of = dict(zip(labels, specs, strict=True))
    clean_acc = _accuracy(_get(rec, ("summary", "attack_subset_clean_accuracy", "mean"), where),
                          f"{where} clean accuracy")
    clean_t = fmean(_seconds(_get(m, ("attack_subset_clean_seconds",), f"{where} model {k}"),
                             f"{where} model {k} clean seconds") for k, m in enumerate(models))
    out: list[Measurement] = []
    modes: set[str] = set()
    for label in labels:
        targeted = label.endswith(TARGETED_SUFFIX)
        mode = "targeted" if targeted else "untargeted"
        per_model = [_get(m, ("attacks", label), f"{where} model {k}")
                     for k, m in enumerate(models)]
        if _is_clean_pass(spec_of[label], per_model):
            dropped.append(f"IPC {ipc} {label}")
            continue
        modes.add(mode)
        grads = [p.get("gradients_per_example") for p in per_model]
        out.append(Measurement(
            ipc=ipc, mode=mode, attack=label[: -len(TARGETED_SUFFIX)] if targeted else label,
            accuracy=_accuracy(_get(rec, ("summary", label, "mean"), where),
                               f"{where} {label} accuracy"),
            seconds=fmean(_seconds(_get(p, ("seconds",), f"{where} {label}"),
                                   f"{where} {label} seconds") for p in per_model),
            gradients_per_example=(fmean(_seconds(g, f"{where} {label} gradients")
                                         for g in grads)
                                   if all(g is not None for g in grads) else None)))
    for mode in sorted(modes):  # the one clean pass on the attack subset serves both modes
        out.append(Measurement(ipc, mode, CLEAN, clean_acc, clean_t))
    return out


def _index(measurements: list[Measurement]
           ) -> tuple[dict[tuple[str, str], Measurement], list[Measurement]]:
    """Clean measurements by (ipc, mode), attack measurements; rejects duplicates and orphans."""
    clean: dict[tuple[str, str], Measurement] = {}
    seen: set[tuple[str, str, str]] = set()
    attacks: list[Measurement] = []
    for m in measurements:
        key = (m.ipc, m.mode, m.attack)
        if key in seen:
            what = "clean record" if m.attack == CLEAN else f"record for attack {m.attack!r}"
            raise MetricsError(f"duplicate {what} at IPC {m.ipc}, mode {m.mode}")
        seen.add(key)
        if m.attack == CLEAN:
            clean[(m.ipc, m.mode)] = m
        else:
            attacks.append(m)
    for m in attacks:
        if (m.ipc, m.mode) not in clean:
            raise MetricsError(f"missing clean record for IPC {m.ipc}, mode {m.mode} (needed "
                               f"for attack {m.attack!r}): add "
                               f"{{'ipc': {m.ipc}, 'mode': '{m.mode}', 'attack': 'clean', ...}}")
    return clean, attacks


def _t0(clean: dict[tuple[str, str], Measurement], ipc: str, mode: str, rule: str) -> float:
    if rule == "min":
        return min(m.seconds for (i, _), m in clean.items() if i == ipc)
    return clean[(ipc, mode)].seconds


def _is_excluded(m: Measurement, excluded: list[str]) -> bool:
    if m.attack == CLEAN:
        return False
    return m.attack in excluded or (m.mode == "targeted"
                                    and m.attack + TARGETED_SUFFIX in excluded)


# ---------------------------------------------------------------------------- validation


def _get(obj: Any, path: tuple[str, ...], where: str) -> Any:
    for key in path:
        if not isinstance(obj, dict) or key not in obj:
            raise MetricsError(f"{where}: missing {'.'.join(path)}")
        obj = obj[key]
    return obj


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise MetricsError(f"{what} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise MetricsError(f"{what} must be finite, got {value!r}")
    return float(value)


def _accuracy(value: Any, what: str) -> float:
    acc = _number(value, what)
    if not 0.0 <= acc <= 100.0:
        raise MetricsError(f"{what} must be a percentage in [0, 100], got {acc}")
    return acc


def _seconds(value: Any, what: str) -> float:
    t = _number(value, what)
    if t < 0:
        raise MetricsError(f"{what} must be ≥ 0, got {t}")
    return t


def _weight(value: Any) -> float:
    w = _number(value, "crei_weight")
    if not 0.0 <= w <= 1.0:
        raise MetricsError(f"crei_weight must be in [0, 1], got {w}")
    return w


def _ipc_key(value: Any, where: str) -> str:
    """IPC as a string key: a positive integer, or ``"full"`` (``None``) for full-size data."""
    if value is None or value == "full":
        return "full"
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise MetricsError(f"{where}: ipc must be a positive integer (or 'full'), got {value!r}")
    return str(value)


def _ipc_order(key: str) -> tuple[int, int, str]:
    return (0, int(key), "") if key.isdigit() else (1, 0, key)


def _nonempty_max(values: Sequence[float], what: str) -> float:
    if not values:
        raise MetricsError(f"no {what} values: need at least one attack")
    return max(values)


# ---------------------------------------------------------------------------- display


def metrics_table(result: dict[str, Any], mode: str) -> Table:
    """One row per IPC, then the pooled row: A, T0, RR, I-RR, AE, CREI, I-CREI and each ASR."""
    entry = result[mode]
    attacks: list[str] = []
    for block in entry["ipc"].values():
        attacks += [a for a in block["ASR"] if a not in attacks]
    table = Table(title=f"{mode} robustness metrics; attack columns: ASR = A − a (points)",
                  box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    for col in ("IPC", "A %", "T0 s", "RR", "I-RR", "AE", "CREI", "I-CREI", *attacks):
        table.add_column(col, justify="left" if col == "IPC" else "right", no_wrap=True)
    rows = [*entry["ipc"].items(), ("pooled", entry["pooled"])]
    for ipc, block in rows:
        asr = block.get("ASR", {})
        table.add_row(ipc, f"{block['clean_accuracy']:.2f}", f"{block['clean_seconds']:.3g}",
                      *[f"{block[k]:.2f}" for k in ("RR", "I-RR", "AE", "CREI", "I-CREI")],
                      *[f"{asr[a]:.2f}" if a in asr else "–" for a in attacks])
    return table
