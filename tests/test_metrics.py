"""BEARD/ROME robustness metrics: formulas, pooling, edge cases, input forms and the CLI."""

from __future__ import annotations

import copy
import json
import math

import pytest
from typer.testing import CliRunner

from robustdd.cli import app
from robustdd.metrics import (
    EVALUATION_FORMAT,
    MetricsError,
    attack_efficiency,
    compute_metrics,
    crei,
    improved_robustness_ratio,
    robustness_ratio,
)

runner = CliRunner()
METRICS = ("RR", "I-RR", "AE", "CREI", "I-CREI")


def row(ipc, mode, attack, accuracy, time, **extra):
    return {"ipc": ipc, "mode": mode, "attack": attack, "accuracy": accuracy, "time": time,
            **extra}


# Two IPCs, targeted only. Used by the hand-computed and pooled tests.
TWO_IPC = {"records": [
    row(10, "targeted", "clean", 50.0, 2.0),
    row(10, "targeted", "fgsm", 40.0, 3.0),
    row(10, "targeted", "pgd", 20.0, 8.0),
    row(1, "targeted", "clean", 30.0, 1.0),
    row(1, "targeted", "pgd", 24.0, 5.0),
]}


def assert_no_nan(obj):
    json.dumps(obj, allow_nan=False)  # raises on NaN or inf anywhere


# ---------------------------------------------------------------------------- formulas


def test_hand_computed_single_ipc():
    out = compute_metrics(TWO_IPC)["targeted"]["ipc"]["10"]
    # A = 50, a = [40, 20] → ASR = [10, 30], mean 20, max 30
    assert out["ASR"] == {"fgsm": 10.0, "pgd": 30.0}
    # RR = 100(1 − 20/30) = 33.333…
    assert out["RR"] == pytest.approx(100 / 3)
    # I-RR = 100(1 − 20·30/50²) = 100(1 − 600/2500) = 76
    assert out["I-RR"] == pytest.approx(76.0)
    # T0 = 2, t = [3, 8]: AE = 100(5.5 − 2)/(8 − 2) = 58.333…
    assert out["AE"] == pytest.approx(350 / 6)
    # CREI = ½·33.33 + ½·58.33 = 45.833…; I-CREI = ½·76 + ½·58.33 = 67.166…
    assert out["CREI"] == pytest.approx(0.5 * 100 / 3 + 0.5 * 350 / 6)
    assert out["I-CREI"] == pytest.approx(0.5 * 76 + 0.5 * 350 / 6)
    assert out["clean_accuracy"] == 50.0 and out["clean_seconds"] == 2.0
    assert out["mean_ASR"] == 20.0 and out["max_ASR"] == 30.0 and out["n_attacks"] == 2
    assert out["notes"] == []


def test_pooled_differs_from_mean_of_per_ipc_values():
    res = compute_metrics(TWO_IPC)["targeted"]
    ipc1, ipc10, pooled = res["ipc"]["1"], res["ipc"]["10"], res["pooled"]
    # IPC 1: A = 30, a = [24] → ASR [6]: RR = 100(1 − 6/6) = 0; I-RR = 100(1 − 36/900) = 96
    assert ipc1["RR"] == pytest.approx(0.0) and ipc1["I-RR"] == pytest.approx(96.0)
    # IPC 1: T0 = 1, t = [5]: AE = 100(5 − 1)/(5 − 1) = 100
    assert ipc1["AE"] == pytest.approx(100.0)
    # Pooled: A = (30 + 50)/2 = 40, T0 = (1 + 2)/2 = 1.5; pooled a = [24, 40, 20]
    # → ASR from the mean A: [16, 0, 20], mean 12, max 20
    assert pooled["clean_accuracy"] == 40.0 and pooled["clean_seconds"] == 1.5
    assert pooled["mean_ASR"] == pytest.approx(12.0) and pooled["max_ASR"] == 20.0
    assert pooled["n_attacks"] == 3 and pooled["ipcs"] == ["1", "10"]
    # RR = 100(1 − 12/20) = 40; I-RR = 100(1 − 12·20/1600) = 85
    assert pooled["RR"] == pytest.approx(40.0)
    assert pooled["I-RR"] == pytest.approx(85.0)
    # pooled t = [5, 3, 8], mean 16/3: AE = 100(16/3 − 1.5)/(8 − 1.5) = 58.974…
    assert pooled["AE"] == pytest.approx(100 * (16 / 3 - 1.5) / 6.5)
    # Not the mean of per-IPC values: (0 + 33.33)/2 = 16.67 ≠ 40, (96 + 76)/2 = 86 ≠ 85
    assert pooled["RR"] != pytest.approx((ipc1["RR"] + ipc10["RR"]) / 2)
    assert pooled["I-RR"] != pytest.approx((ipc1["I-RR"] + ipc10["I-RR"]) / 2)
    assert pooled["AE"] != pytest.approx((ipc1["AE"] + ipc10["AE"]) / 2)


def test_single_ipc_pooled_equals_per_ipc():
    data = {"records": [r for r in TWO_IPC["records"] if r["ipc"] == 10]}
    res = compute_metrics(data)["targeted"]
    for key in METRICS:
        assert res["pooled"][key] == pytest.approx(res["ipc"]["10"][key])


def test_shared_ae_identity_on_outputs():
    # ROME Table 1 (reference §4.5) satisfies 2·CREI − RR = 2·I-CREI − I-RR (one shared AE);
    # our outputs must too, for every block, and in general (CREI − w·RR)/(1 − w) = AE.
    data = _both_modes()
    for w in (0.5, 0.3):
        res = compute_metrics(data, crei_weight=w)
        for mode in ("targeted", "untargeted"):
            for block in [*res[mode]["ipc"].values(), res[mode]["pooled"]]:
                ae_from_crei = (block["CREI"] - w * block["RR"]) / (1 - w)
                ae_from_icrei = (block["I-CREI"] - w * block["I-RR"]) / (1 - w)
                assert ae_from_crei == pytest.approx(ae_from_icrei)
                assert ae_from_crei == pytest.approx(block["AE"])
                if w == 0.5:
                    assert 2 * block["CREI"] - block["RR"] == pytest.approx(
                        2 * block["I-CREI"] - block["I-RR"])


def test_crei_weight_option():
    res = compute_metrics(TWO_IPC, crei_weight=0.25)
    out = res["targeted"]["ipc"]["10"]
    # CREI = ¼·33.33 + ¾·58.33 = 52.083…
    assert out["CREI"] == pytest.approx(0.25 * 100 / 3 + 0.75 * 350 / 6)
    assert out["I-CREI"] == pytest.approx(0.25 * 76 + 0.75 * 350 / 6)
    assert res["settings"]["crei_weight"] == 0.25
    assert compute_metrics(TWO_IPC, crei_weight=1.0)["targeted"]["pooled"]["CREI"] == (
        pytest.approx(40.0))  # w = 1: CREI = RR
    for bad in (1.5, -0.1, float("nan"), "half"):
        with pytest.raises(MetricsError, match="crei_weight"):
            compute_metrics(TWO_IPC, crei_weight=bad)


def test_formula_helpers():
    assert robustness_ratio([10.0, 30.0]) == pytest.approx(100 / 3)
    assert improved_robustness_ratio([10.0, 30.0], 50.0) == pytest.approx(76.0)
    assert attack_efficiency([3.0, 8.0], 2.0) == pytest.approx(350 / 6)
    assert crei(40.0, 60.0) == 50.0 and crei(40.0, 60.0, 0.25) == 55.0
    with pytest.raises(MetricsError, match="at least one attack"):
        robustness_ratio([])
    with pytest.raises(MetricsError, match="at least one attack"):
        attack_efficiency([], 1.0)


# ---------------------------------------------------------------------------- edge cases


def _one_ipc(clean, attacks, clean_time=1.0):
    """One IPC, untargeted; ``attacks`` = [(name, accuracy, time), ...]."""
    return {"records": [row(10, "untargeted", "clean", clean, clean_time),
                        *[row(10, "untargeted", n, a, t) for n, a, t in attacks]]}


def _block(clean, attacks, clean_time=1.0):
    res = compute_metrics(_one_ipc(clean, attacks, clean_time))
    assert_no_nan(res)
    return res["untargeted"]["ipc"]["10"]


def test_no_attack_lowered_accuracy_gives_100():
    # ASR = [0, 0]: RR's 0/0 → 100 by convention; I-RR's formula gives 100 too.
    out = _block(50.0, [("fgsm", 50.0, 2.0), ("pgd", 50.0, 3.0)])
    assert out["RR"] == 100.0 and out["I-RR"] == 100.0
    assert out["max_ASR"] == 0.0
    assert "RR = I-RR = 100 by convention" in out["notes"][0]


def test_all_attacks_raised_accuracy_gives_100():
    # A = 50, a = [55, 52] → ASR [−5, −2], max −2 ≤ 0: RR = I-RR = 100 (the literal formulas
    # give RR = 100(1 − (−3.5)/(−2)) = −75 and I-RR = 100(1 − 7/2500) = 99.72).
    out = _block(50.0, [("fgsm", 55.0, 2.0), ("pgd", 52.0, 3.0)])
    assert out["RR"] == 100.0 and out["I-RR"] == 100.0
    assert "99.72" in out["notes"][0]


def test_negative_asr_kept_in_mean_over_robustness():
    # A = 50, a = [60, 45] → ASR [−10, 5], mean −2.5, max 5
    out = _block(50.0, [("fgsm", 60.0, 2.0), ("pgd", 45.0, 3.0)])
    # RR = 100(1 − (−2.5)/5) = 150; I-RR = 100(1 − (−2.5·5)/2500) = 100.5
    assert out["RR"] == pytest.approx(150.0)
    assert out["I-RR"] == pytest.approx(100.5)
    assert out["ASR"]["fgsm"] == -10.0
    assert any("over-robustness" in n for n in out["notes"])


def test_zero_clean_accuracy():
    # A = 0 forces every ASR ≤ 0, so I-RR never divides by A² = 0: RR = I-RR = 100.
    out = _block(0.0, [("fgsm", 0.0, 2.0), ("pgd", 10.0, 3.0)])
    assert out["RR"] == 100.0 and out["I-RR"] == 100.0
    assert "clean accuracy is 0" in out["notes"][0]
    with pytest.raises(MetricsError, match="clean accuracy"):
        improved_robustness_ratio([5.0], 0.0)  # inconsistent direct call: a clear error


def test_floating_point_noise_is_zero_asr():
    clean = (10.1 + 20.2 + 30.3) / 3
    other = (30.3 + 20.2 + 10.1) / 3  # same values, other summation order
    out = _block(clean, [("fgsm", other, 2.0), ("pgd", clean - 1.0, 3.0)])
    assert out["ASR"]["fgsm"] == 0.0
    assert out["RR"] == pytest.approx(50.0)  # ASR [0, 1]: 100(1 − 0.5/1)


def test_attack_efficiency_edge_cases():
    # max t == T0: no attack cost anything beyond a clean pass → AE = 0 by convention
    out = _block(50.0, [("fgsm", 40.0, 2.0), ("pgd", 30.0, 2.0)], clean_time=2.0)
    assert out["AE"] == 0.0 and out["CREI"] == pytest.approx(0.5 * out["RR"])
    assert any("AE = 0 by convention" in n for n in out["notes"])
    # max t < T0 → AE = 0 as well
    assert _block(50.0, [("fgsm", 40.0, 1.0)], clean_time=2.0)["AE"] == 0.0
    # mean t < T0 < max t: the formula is kept and AE < 0. T0 = 5, t = [1, 1, 10], mean 4:
    # AE = 100(4 − 5)/(10 − 5) = −20
    out = _block(50.0, [("a", 40.0, 1.0), ("b", 40.0, 1.0), ("c", 30.0, 10.0)], clean_time=5.0)
    assert out["AE"] == pytest.approx(-20.0)
    assert any("AE < 0" in n for n in out["notes"])
    # all attacks take the same extra time: AE = 100
    assert _block(50.0, [("fgsm", 40.0, 3.0), ("pgd", 30.0, 3.0)])["AE"] == pytest.approx(100.0)


def test_empty_attack_list_is_an_error():
    with pytest.raises(MetricsError, match="no attack records"):
        compute_metrics({"records": [row(10, "targeted", "clean", 50.0, 1.0)]})
    with pytest.raises(MetricsError, match="after excluding pgd"):
        compute_metrics(_one_ipc(50.0, [("pgd", 40.0, 2.0)]), exclude=["pgd"])
    with pytest.raises(MetricsError, match="empty"):
        compute_metrics([])
    with pytest.raises(MetricsError, match="list"):
        compute_metrics({"records": "nope"})


def test_clean_only_ipc_within_a_mode_is_an_error():
    data = copy.deepcopy(TWO_IPC)
    data["records"].append(row(50, "targeted", "clean", 60.0, 3.0))
    with pytest.raises(MetricsError, match="targeted IPC 50: a clean record but no attack"):
        compute_metrics(data)


# ---------------------------------------------------------------------------- modes and T0


def _both_modes(targeted_clean_time=2.5, untargeted_clean_time=2.25):
    # BEARD measures clean twice; the targeted loop runs first and includes warm-up.
    recs = []
    for ipc, clean, shift in ((1, 30.0, 0.0), (10, 50.0, 1.0)):
        recs += [
            row(ipc, "targeted", "clean", clean, targeted_clean_time + shift),
            row(ipc, "targeted", "fgsm", clean - 5, 4.0 + shift),
            row(ipc, "targeted", "pgd", clean - 15, 12.0 + shift),
            row(ipc, "untargeted", "clean", clean, untargeted_clean_time + shift),
            row(ipc, "untargeted", "fgsm", clean - 20, 4.0 + shift),
            row(ipc, "untargeted", "pgd", clean - 28, 12.0 + shift),
            row(ipc, "untargeted", "deepfool", clean - 29, 6.0 + shift),
        ]
    return {"records": recs}


def test_t0_rules():
    same = compute_metrics(_both_modes())
    low = compute_metrics(_both_modes(), t0_rule="min")
    assert same["settings"]["t0_rule"] == "same-mode" and low["settings"]["t0_rule"] == "min"
    t_same, t_min = same["targeted"]["ipc"]["1"], low["targeted"]["ipc"]["1"]
    # targeted IPC 1, same-mode: T0 = 2.5, t = [4, 12]: AE = 100(8 − 2.5)/(12 − 2.5) = 57.89…
    assert t_same["AE"] == pytest.approx(100 * 5.5 / 9.5)
    # min rule: T0 = min(2.5, 2.25) = 2.25: AE = 100(8 − 2.25)/(12 − 2.25) = 58.97…
    assert t_min["clean_seconds"] == 2.25
    assert t_min["AE"] == pytest.approx(100 * 5.75 / 9.75)
    # pooled targeted T0: same-mode (2.5 + 3.5)/2 = 3; min (2.25 + 3.25)/2 = 2.75
    assert same["targeted"]["pooled"]["clean_seconds"] == pytest.approx(3.0)
    assert low["targeted"]["pooled"]["clean_seconds"] == pytest.approx(2.75)
    # untargeted clean time is the smaller one, so untargeted metrics agree under both rules
    for key in METRICS:
        assert same["untargeted"]["pooled"][key] == pytest.approx(low["untargeted"]["pooled"][key])
    # RR does not depend on the T0 rule
    assert t_same["RR"] == t_min["RR"]
    with pytest.raises(MetricsError, match="unknown t0_rule 'max'"):
        compute_metrics(_both_modes(), t0_rule="max")


def test_modes_are_separate_and_missing_modes_omitted():
    res = compute_metrics(_both_modes())
    assert set(res) == {"targeted", "untargeted", "settings", "source"}
    assert set(res["targeted"]["ipc"]["10"]["ASR"]) == {"fgsm", "pgd"}
    assert set(res["untargeted"]["ipc"]["10"]["ASR"]) == {"fgsm", "pgd", "deepfool"}
    only_t = compute_metrics(TWO_IPC)
    assert "untargeted" not in only_t and "targeted" in only_t


def test_exclude_by_name_and_targeted_only():
    data = _both_modes()
    res = compute_metrics(data, exclude=["deepfool"])
    assert "deepfool" not in res["untargeted"]["ipc"]["1"]["ASR"]
    res = compute_metrics(data, exclude=["fgsm-T"])  # targeted FGSM only
    assert set(res["targeted"]["ipc"]["1"]["ASR"]) == {"pgd"}
    assert "fgsm" in res["untargeted"]["ipc"]["1"]["ASR"]
    assert res["settings"]["exclude"] == ["fgsm-T"]
    res = compute_metrics(data, exclude=["fgsm"])  # both modes
    assert "fgsm" not in res["targeted"]["ipc"]["1"]["ASR"]
    assert "fgsm" not in res["untargeted"]["ipc"]["1"]["ASR"]


def test_targeted_labels_in_plain_input():
    data = {"records": [row(1, "targeted", "clean", 50.0, 1.0),
                        row(1, "targeted", "pgd-T", 40.0, 2.0)]}
    assert set(compute_metrics(data)["targeted"]["ipc"]["1"]["ASR"]) == {"pgd"}
    data["records"].append(row(1, "untargeted", "fgsm-T", 40.0, 2.0))
    with pytest.raises(MetricsError, match="targeted label but mode 'untargeted'"):
        compute_metrics(data)


# ---------------------------------------------------------------------------- validation


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda r: r.pop(0), "missing clean record for IPC 10, mode targeted"),
    (lambda r: r[1].update(mode="Targeted"), "unknown mode 'Targeted'"),
    (lambda r: r[1].update(accuracy="40"), "record 2 accuracy must be a number, got '40'"),
    (lambda r: r[1].update(accuracy=True), "must be a number"),
    (lambda r: r[1].update(accuracy=float("nan")), "must be finite"),
    (lambda r: r[1].update(accuracy=140.0), r"percentage in \[0, 100\]"),
    (lambda r: r[1].update(time=-1.0), "time must be ≥ 0"),
    (lambda r: r[1].pop("time"), "record 2: missing time"),
    (lambda r: r[1].update(ipc=0), "ipc must be a positive integer"),
    (lambda r: r[1].update(attack=""), "attack must be a non-empty string"),
    (lambda r: r.append(dict(r[1])), "duplicate record for attack 'fgsm' at IPC 10"),
    (lambda r: r.append(dict(r[0])), "duplicate clean record at IPC 10, mode targeted"),
    (lambda r: r.append(7), "record 6: expected an object"),
])
def test_plain_input_errors(mutate, message):
    data = copy.deepcopy(TWO_IPC)
    mutate(data["records"])
    with pytest.raises(MetricsError, match=message):
        compute_metrics(data)


def test_plain_input_accepts_string_ipc_full_and_bare_list():
    data = [row("10", "untargeted", "clean", 50.0, 1.0),
            row("10", "untargeted", "pgd", 40.0, 2.0),
            row(None, "untargeted", "clean", 80.0, 1.0),  # None: the full-size baseline
            row("full", "untargeted", "pgd", 60.0, 2.0)]
    res = compute_metrics(data)["untargeted"]
    assert list(res["ipc"]) == ["10", "full"] and res["pooled"]["ipcs"] == ["10", "full"]
    with pytest.raises(MetricsError, match="expected"):
        compute_metrics("records.json")


# ---------------------------------------------------------------------------- evaluation records


def evaluation_record(ipc=10, method="dm", clean=(60.0, 62.0), seconds=(0.10, 0.14)):
    """A minimal ``robustdd.evaluation`` record (2 models, 4 attacks) as ``evaluate`` writes."""
    accs = {"fgsm": (40.0, 44.0), "pgd": (20.0, 24.0), "fgsm-T": (50.0, 52.0),
            "pgd-T": (45.0, 47.0)}
    secs = {"fgsm": (0.2, 0.4), "pgd": (1.0, 1.4), "fgsm-T": (0.3, 0.3), "pgd-T": (1.1, 1.3)}
    grads = {"fgsm": 1, "pgd": 10, "fgsm-T": 1, "pgd-T": 10}
    models = []
    for k in range(2):
        models.append({
            "model_seed": k, "clean_accuracy": 99.0, "clean_seconds": 9.0,  # test subset: unused
            "attack_subset_clean_accuracy": clean[k], "attack_subset_clean_seconds": seconds[k],
            "attacks": {lab: {"accuracy": accs[lab][k], "seconds": secs[lab][k],
                              "gradients_per_example": grads[lab]} for lab in accs}})
    summary = {"clean_accuracy": {"mean": 99.0, "std": 0.0, "n": 2},
               "attack_subset_clean_accuracy": {"mean": sum(clean) / 2, "std": 1.0, "n": 2}}
    summary.update({lab: {"mean": sum(v) / 2, "std": 2.0, "n": 2} for lab, v in accs.items()})
    return {"format": EVALUATION_FORMAT, "format_version": 1, "method": method,
            "dataset": "cifar10", "ipc": ipc, "profile": "smoke", "seed": 0,
            "attacks": [{"name": lab.removesuffix("-T"), "targeted": lab.endswith("-T"),
                         "label": lab} for lab in accs],
            "models": models, "summary": summary}


def test_evaluation_record_input():
    res = compute_metrics(evaluation_record())
    assert res["source"] == {"format": EVALUATION_FORMAT, "method": "dm", "dataset": "cifar10",
                             "profile": "smoke"}
    unt, tgt = res["untargeted"]["ipc"]["10"], res["targeted"]["ipc"]["10"]
    # A = attack-subset clean mean (60 + 62)/2 = 61 (not the test-subset 99); T0 = 0.12
    assert unt["clean_accuracy"] == 61.0 and unt["clean_seconds"] == pytest.approx(0.12)
    # untargeted a = [42, 22] → ASR [19, 39]; t = [0.3, 1.2] (means over models)
    assert unt["ASR"] == {"fgsm": 19.0, "pgd": 39.0}
    assert unt["seconds"] == pytest.approx({"fgsm": 0.3, "pgd": 1.2})
    # RR = 100(1 − 29/39); AE = 100(0.75 − 0.12)/(1.2 − 0.12)
    assert unt["RR"] == pytest.approx(100 * (1 - 29 / 39))
    assert unt["AE"] == pytest.approx(100 * 0.63 / 1.08)
    # targeted labels lose "-T": a = [51, 46] → ASR [10, 15]
    assert tgt["ASR"] == {"fgsm": 10.0, "pgd": 15.0}
    assert tgt["gradients_per_example"] == {"fgsm": 1.0, "pgd": 10.0}
    assert_no_nan(res)


def test_evaluation_format_matches_whitebox():
    from robustdd.evaluate.whitebox import RECORD_FORMAT, RECORD_VERSION

    assert RECORD_FORMAT == EVALUATION_FORMAT and RECORD_VERSION == 1


def _with_clean_pass(rec, label, spec, flag):
    """Add a targeted attack that scored the clean images unchanged (accuracy = clean, t ≈ 0)."""
    for m in rec["models"]:
        item = {"accuracy": m["attack_subset_clean_accuracy"], "seconds": 0.0,
                "gradients_per_example": 0}
        if flag:
            item["clean_pass"] = True
        m["attacks"][label] = item
    rec["summary"][label] = dict(rec["summary"]["attack_subset_clean_accuracy"])
    rec["attacks"].append({**spec, "label": label})
    return rec


@pytest.mark.parametrize(("spec", "flag"), [
    # the legacy suite's targeted DeepFool, recognised from its spec alone (older records)
    ({"name": "deepfool", "targeted": True, "space": "normalised"}, False),
    # any attack flagged clean_pass by the evaluation
    ({"name": "autoattack", "targeted": True, "space": "pixel"}, True),
])
def test_clean_passes_are_left_out_of_the_targeted_set(spec, flag):
    reference = compute_metrics(evaluation_record())
    rec = _with_clean_pass(evaluation_record(), "legacy-x-T", spec, flag)
    res = compute_metrics(rec)
    # counted, the clean pass would add ASR 0 and t 0: RR and AE would both change
    assert res["targeted"]["ipc"]["10"]["ASR"] == {"fgsm": 10.0, "pgd": 15.0}
    for key in METRICS:
        assert res["targeted"]["ipc"]["10"][key] == pytest.approx(
            reference["targeted"]["ipc"]["10"][key])
    assert res["source"]["dropped_clean_passes"] == ["IPC 10 legacy-x-T"]
    assert "dropped_clean_passes" not in reference["source"]


def test_a_pixel_space_targeted_attack_is_kept():
    spec = {"name": "deepfool", "targeted": True, "space": "pixel"}
    res = compute_metrics(_with_clean_pass(evaluation_record(), "odd-T", spec, False))
    assert res["targeted"]["ipc"]["10"]["ASR"]["odd"] == 0.0


def test_clean_pass_list_mirrors_the_legacy_suite():
    from robustdd.attacks.legacy import LEGACY_CLEAN_PASS as ATTACKS_SIDE
    from robustdd.metrics import LEGACY_CLEAN_PASS

    assert LEGACY_CLEAN_PASS == ATTACKS_SIDE


def test_several_evaluation_records_pool():
    recs = [evaluation_record(ipc=1, clean=(30.0, 32.0)), evaluation_record(ipc=10)]
    res = compute_metrics(recs)
    pooled = res["untargeted"]["pooled"]
    # A = (31 + 61)/2 = 46; pooled a = [42, 22, 42, 22] → ASR [4, 24, 4, 24], mean 14, max 24
    assert pooled["clean_accuracy"] == 46.0
    assert pooled["RR"] == pytest.approx(100 * (1 - 14 / 24))
    assert pooled["I-RR"] == pytest.approx(100 * (1 - 14 * 24 / 46**2))
    assert list(res["untargeted"]["ipc"]) == ["1", "10"]


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda rs: rs[1].update(method="random"), "differ in method: dm, random"),
    (lambda rs: rs[1].update(ipc=1), "duplicate IPC 1"),
    (lambda rs: rs[1].update(format="robustdd.distilled"), "is not 'robustdd.evaluation'"),
    (lambda rs: rs[1].update(format_version=9), "unsupported format_version 9"),
    (lambda rs: rs[1]["summary"].pop("pgd"), r"missing summary\.pgd\.mean"),
    (lambda rs: rs[1]["models"][0]["attacks"].pop("pgd-T"), r"model 0: missing attacks\.pgd-T"),
    (lambda rs: rs[1].update(models=[]), "'models' must be a non-empty list"),
    (lambda rs: rs.append({"records": []}), "mixes evaluation records"),
])
def test_evaluation_record_errors(mutate, message):
    recs = [evaluation_record(ipc=1), evaluation_record(ipc=10)]
    mutate(recs)
    with pytest.raises(MetricsError, match=message):
        compute_metrics(recs)


# ---------------------------------------------------------------------------- CLI


def _invoke(args):
    result = runner.invoke(app, ["metrics", *args])
    return result.exit_code, result.output


def test_cli_plain_file_writes_json(tmp_path):
    src, dst = tmp_path / "plain.json", tmp_path / "out" / "metrics.json"
    src.write_text(json.dumps(_both_modes()))
    code, out = _invoke([str(src), "--output", str(dst), "--crei-weight", "0.25",
                         "--t0-rule", "min", "--exclude", "deepfool"])
    assert code == 0, out
    assert "targeted robustness metrics" in out and "pooled" in out and "I-RR" in out
    written = json.loads(dst.read_text())
    provenance = {k: written.pop(k) for k in
                  ("format", "format_version", "robustdd_version", "created", "inputs")}
    assert provenance["format"] == "robustdd.metrics"
    import hashlib

    assert provenance["inputs"] == [{"path": str(src),
                                     "sha256": hashlib.sha256(src.read_bytes()).hexdigest()}]
    assert written == json.loads(json.dumps(compute_metrics(
        _both_modes(), crei_weight=0.25, t0_rule="min", exclude=["deepfool"])))
    assert written["settings"]["crei_weight"] == 0.25 and written["settings"]["t0_rule"] == "min"
    assert not any(p.name.endswith(".tmp") for p in dst.parent.iterdir())


def test_cli_several_evaluation_files(tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(evaluation_record(ipc=1)))
    b.write_text(json.dumps([evaluation_record(ipc=10)]))
    dst = tmp_path / "m.json"
    code, out = _invoke([str(a), str(b), "-o", str(dst)])
    assert code == 0, out
    res = json.loads(dst.read_text())
    assert res["untargeted"]["pooled"]["ipcs"] == ["1", "10"]
    assert [i["path"] for i in res.pop("inputs")] == [str(a), str(b)]
    for key in ("format", "format_version", "robustdd_version", "created"):
        res.pop(key)
    assert res == json.loads(json.dumps(compute_metrics(
        [evaluation_record(ipc=1), evaluation_record(ipc=10)])))


def test_cli_prints_edge_case_notes(tmp_path):
    src = tmp_path / "p.json"
    src.write_text(json.dumps(_one_ipc(50.0, [("pgd", 50.0, 2.0)])))
    code, out = _invoke([str(src)])
    assert code == 0 and "by convention" in out


@pytest.mark.parametrize(("content", "extra", "message"), [
    ("{not json", [], "not valid JSON"),
    (json.dumps({"records": [row(1, "targeted", "pgd", 1.0, 1.0)]}), [], "missing clean record"),
    (json.dumps(TWO_IPC), ["--t0-rule", "max"], "unknown t0_rule"),
    (json.dumps(TWO_IPC), ["--crei-weight", "2"], "crei_weight must be in"),
    (json.dumps(42), [], "expected"),
])
def test_cli_errors(tmp_path, content, extra, message):
    src = tmp_path / "bad.json"
    src.write_text(content)
    code, out = _invoke([str(src), *extra])
    assert code == 2
    assert message in " ".join(out.split())  # rich may wrap long lines


def test_cli_mixed_files_and_missing_file(tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(TWO_IPC))
    b.write_text(json.dumps(evaluation_record()))
    code, out = _invoke([str(a), str(b)])
    assert code == 2 and "mix plain records and evaluation records" in " ".join(out.split())
    code, _ = _invoke([str(tmp_path / "missing.json")])
    assert code != 0


def test_outputs_never_contain_nan():
    cases = [TWO_IPC, _both_modes(), _one_ipc(0.0, [("pgd", 0.0, 1.0)], clean_time=1.0),
             _one_ipc(50.0, [("pgd", 60.0, 0.5)], clean_time=1.0)]
    for data in cases:
        res = compute_metrics(data)
        assert_no_nan(res)
        for mode in ("targeted", "untargeted"):
            for block in [*res.get(mode, {}).get("ipc", {}).values()]:
                assert all(math.isfinite(block[k]) for k in METRICS)
