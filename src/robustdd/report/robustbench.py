"""A RobustBench-style model entry from an evaluation record with an AutoAttack result.

RobustBench describes each leaderboard model in a ``model_info/<dataset>/<threat>/<name>.json``
file with the fields ``link``, ``name``, ``authors``, ``additional_data``,
``number_forward_passes``, ``dataset``, ``venue``, ``architecture``, ``eps``, ``clean_acc``,
``reported``, ``autoattack_acc``, ``footnote`` and ``unreliable``; accuracies and ε are strings
(``"8/255"``, ``"59.53"``). :func:`robustbench_entry` fills those from the record and adds a
``robustdd`` block with what the number depends on (method, IPC, protocol, K, attack spec,
seeds, versions, git revision).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from fractions import Fraction
from typing import Any

from robustdd.report._common import ReportError, method_name

THREAT_MODELS = {"Linf": "linf", "L2": "l2"}
AUTOATTACK = "autoattack"
EPS_TOLERANCE = 1e-9


def eps_text(eps: float) -> str:
    """ε as RobustBench writes it: ``8/255`` when ε·255 is a whole number, else a decimal."""
    scaled = eps * 255
    if abs(scaled - round(scaled)) < 1e-6:
        return f"{round(scaled)}/255"
    frac = Fraction(eps).limit_denominator(1000)
    if abs(float(frac) - eps) < 1e-12:
        return f"{frac.numerator}/{frac.denominator}"
    return f"{eps:g}"


def _autoattack_spec(record: Mapping[str, Any], norm: str, eps: float | None
                     ) -> dict[str, Any]:
    where = f"{record.get('method')} {record.get('dataset')} IPC {record.get('ipc')}"
    specs = [s for s in record.get("attacks") or []
             if s.get("name") == AUTOATTACK and not s.get("targeted")]
    if not specs:
        raise ReportError(f"{where}: the record has no (untargeted) AutoAttack result, so it has "
                          "no RobustBench entry; evaluate with --suite beard or guard, or add "
                          "an AttackSpec(name='autoattack')")
    same_norm = [s for s in specs if s.get("norm", "linf") == norm]
    if not same_norm:
        raise ReportError(f"{where}: AutoAttack was run with norm "
                          f"{', '.join(sorted({str(s.get('norm')) for s in specs}))}, not {norm}")
    if eps is not None:
        same_norm = [s for s in same_norm if abs(float(s["eps"]) - eps) < EPS_TOLERANCE]
        if not same_norm:
            raise ReportError(f"{where}: no {norm} AutoAttack result at eps {eps_text(eps)}")
    if len(same_norm) > 1:
        found = ", ".join(f"{s['label']} (eps {eps_text(float(s['eps']))})" for s in same_norm)
        raise ReportError(f"{where}: several {norm} AutoAttack results ({found}); pass eps= to "
                          "choose one")
    spec = same_norm[0]
    if spec["label"] not in (record.get("summary") or {}):
        raise ReportError(f"{where}: AutoAttack {spec['label']!r} is listed but has no summary")
    return spec


def robustbench_entry(record: Mapping[str, Any], *, threat_model: str = "Linf",
                      eps: float | None = None, name: str | None = None, link: str = "",
                      authors: str = "", venue: str = "", footnote: str | None = None
                      ) -> dict[str, Any]:
    """RobustBench model-info dict for one evaluation record (mean accuracies over its K models).

    ``autoattack_acc`` is the record's untargeted AutoAttack accuracy with norm ``threat_model``
    (``Linf`` or ``L2``) and, when given, this ``eps``; ε comes from that attack's spec.
    ``clean_acc`` is the clean accuracy on the record's test subset; ``reported`` repeats
    ``autoattack_acc`` (this evaluation is the report). Raises :class:`ReportError` (a
    ``ValueError``) when the record has no matching AutoAttack result: no number is made up.
    """
    if threat_model not in THREAT_MODELS:
        raise ReportError(f"unknown threat model {threat_model!r}; known: "
                          f"{', '.join(THREAT_MODELS)}")
    spec = _autoattack_spec(record, THREAT_MODELS[threat_model], eps)
    summary = record["summary"]
    aa, clean = summary[spec["label"]], summary["clean_accuracy"]
    for what, stat in (("AutoAttack", aa), ("clean", clean)):
        mean = stat.get("mean") if isinstance(stat, Mapping) else None
        if isinstance(mean, bool) or not isinstance(mean, int | float) or not math.isfinite(mean):
            raise ReportError(f"{what} accuracy of the record is not a finite number: {mean!r}")
    protocol = record.get("protocol") or {}
    env = record.get("environment") or {}
    test_set = record.get("test_set") or {}
    ipc = record.get("ipc")
    method = record.get("method")
    k = aa.get("n", len(record.get("models") or []))
    ipc_words = "the full training set" if ipc is None else f"IPC {ipc}"
    default_footnote = (
        f"Mean over K={k} models trained on {method_name(method)} distilled data "
        f"({ipc_words}) with the {protocol.get('name', 'robustdd')} protocol; AutoAttack "
        f"({spec.get('version', 'standard')}) on {test_set.get('attack_examples', '?')} test "
        f"examples, clean accuracy on {test_set.get('examples', '?')}. Not an official "
        "RobustBench evaluation.")
    return {
        "link": link,
        "name": name or f"{method_name(method)} distilled {record.get('dataset')} "
                        f"({ipc_words})",
        "authors": authors,
        "additional_data": False,
        "number_forward_passes": 1,
        "dataset": record.get("dataset"),
        "venue": venue,
        "architecture": protocol.get("arch"),
        "eps": eps_text(float(spec["eps"])),
        "clean_acc": f"{clean['mean']:.2f}",
        "reported": f"{aa['mean']:.2f}",
        "autoattack_acc": f"{aa['mean']:.2f}",
        "footnote": footnote if footnote is not None else default_footnote,
        "unreliable": False,
        "robustdd": {
            "method": method,
            "ipc": ipc,
            "profile": record.get("profile"),
            "threat_model": threat_model,
            "K": k,
            "autoattack": {"label": spec["label"], "eps": spec["eps"], "norm": spec.get("norm"),
                           "version": spec.get("version"), "seed": spec.get("seed"),
                           "mean": aa["mean"], "std": aa.get("std")},
            "clean_accuracy": {"mean": clean["mean"], "std": clean.get("std")},
            "attack_subset_clean_accuracy": summary.get("attack_subset_clean_accuracy"),
            "test_set": test_set,
            "protocol": protocol,
            "seed": record.get("seed"),
            "created": record.get("created"),
            "git_revision": env.get("git_revision"),
            "versions": {key: env.get(key) for key in ("robustdd", "torch", "numpy", "python")
                         if key in env},
            "device": env.get("device_name") or env.get("device"),
        },
    }
