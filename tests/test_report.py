"""The report layer: paper-style tables, figures, RobustBench entries and `robustdd report`.

Everything runs on fabricated evaluation records shaped exactly like ``evaluate()``'s output,
so no model is trained here.
"""

from __future__ import annotations

import csv
import io
import json
import sys
import xml.etree.ElementTree as ET
from statistics import fmean, pstdev

import pytest
from PIL import Image
from typer.testing import CliRunner

from robustdd.cli import app, main
from robustdd.metrics import compute_metrics
from robustdd.report import (
    ReportError,
    accuracy_table,
    format_stat,
    rdd_table1,
    records_table,
    robustbench_entry,
    robustness_curves_figure,
    rome_table1,
    rome_table2,
    to_csv,
    to_latex,
    to_markdown,
    transfer_heatmap,
    write_report,
)
from robustdd.report._common import QUERY_ATTACKS

runner = CliRunner()

ATTACK_DROPS = {"fgsm": 20.0, "pgd": 35.0, "fgsm-T": 8.0, "pgd-T": 12.0, "autoattack": 40.0,
                "square": 15.0, "spsa-T": 5.0}
ATTACK_SECONDS = {"fgsm": 0.2, "pgd": 1.5, "fgsm-T": 0.25, "pgd-T": 1.6, "autoattack": 9.0,
                  "square": 6.0, "spsa-T": 4.0}


def _spec(label: str) -> dict:
    name = label.removesuffix("-T")
    steps = {"fgsm": 1, "pgd": 10, "autoattack": 0}.get(name, 10)
    return {"name": name, "norm": "linf", "eps": 8 / 255, "steps": steps,
            "step_size": None if name in ("fgsm", "autoattack") else 2 / 255,
            "random_start": False, "restarts": 1, "loss": "ce", "targeted": label.endswith("-T"),
            "target_policy": "next", "seed": 0, "c": 1.0, "kappa": 0.0, "lr": 0.01,
            "overshoot": 0.02, "decay": 1.0, "queries": 5000, "p_init": 0.8, "delta": 0.01,
            "samples": 128, "version": "standard", "components": None, "label": label}


def _summarize(values: list[float]) -> dict:
    return {"mean": fmean(values), "std": pstdev(values), "n": len(values)}


def make_record(method: str = "dm", dataset: str = "cifar10", ipc: int | None = 10, *,
                labels: tuple[str, ...] = ("fgsm", "pgd", "fgsm-T", "pgd-T"), k: int = 2,
                clean: float = 60.0, curves: bool = False, seed: int = 0) -> dict:
    """An evaluation record with the structure ``robustdd.evaluate`` writes (format v1)."""
    models = []
    for j in range(k):
        base = clean + 2.0 * j
        entry = {
            "model_seed": 1000 + j, "clean_accuracy": base, "clean_seconds": 0.05,
            "attack_subset_clean_accuracy": base + 1.0, "attack_subset_clean_seconds": 0.1,
            "train": {"seconds": 1.0, "steps": 10, "images_seen": 1000,
                      "images_per_second": 1000.0, "final_loss": 0.5},
            "attacks": {lab: {"accuracy": max(0.0, base - ATTACK_DROPS[lab] - j),
                              "seconds": ATTACK_SECONDS[lab] + 0.01 * j,
                              "gradients_per_example": None if lab.startswith(("sq", "sp"))
                              else 10.0,
                              "queries_per_example": 5000.0 if lab.startswith("sq") else None}
                        for lab in labels},
            "warnings": [],
        }
        if curves:
            entry["curves"] = {
                mode: {"eps": {str(e): max(0.0, base - drop * e - j) for e in (0, 2, 4, 6, 8, 10)},
                       "steps": {str(s): max(0.0, base - 30 - drop * s) for s in (2, 4, 6, 8, 10)}}
                for mode, drop in (("untargeted", 5.0), ("targeted", 2.0))}
        models.append(entry)
    summary = {"clean_accuracy": _summarize([m["clean_accuracy"] for m in models]),
               "attack_subset_clean_accuracy": _summarize(
                   [m["attack_subset_clean_accuracy"] for m in models])}
    for lab in labels:
        summary[lab] = _summarize([m["attacks"][lab]["accuracy"] for m in models])
    return {
        "format": "robustdd.evaluation", "format_version": 1, "created": "2025-01-01T00:00:00",
        "seed": seed,
        "protocol": {"name": "dd-standard", "arch": "convnet", "epochs": 300, "num_models": k},
        "test_set": {"dataset": dataset, "split": "test", "size": 10000, "examples": 2000,
                     "attack_examples": 500, "subset_seed": seed},
        "attacks": [_spec(lab) for lab in labels],
        "shift": None,
        "models": models,
        "summary": summary,
        "environment": {"robustdd": "0.1.0", "python": "3.12.0", "torch": "2.3.0",
                        "numpy": "1.26.0", "git_revision": "abc123", "device": "cpu"},
        "method": method, "dataset": dataset, "ipc": ipc, "profile": "small",
        "distilled": {"images": 100, "training_images": 100},
    }


METRICS = {
    "targeted": {"pooled": {"RR": 81.357, "CREI": 55.28, "I-RR": 97.444, "I-CREI": 63.32,
                            "ipcs": ["1", "10", "50"]}},
    "untargeted": {"pooled": {"RR": 49.86, "CREI": 35.05, "I-RR": 67.01, "I-CREI": 43.62,
                              "ipcs": ["1", "10", "50"]}},
}
TABLE1_HEADER = ["Dataset", "Method", "Targeted RR", "Targeted CREI", "Targeted I-RR",
                 "Targeted I-CREI", "Untargeted RR", "Untargeted CREI", "Untargeted I-RR",
                 "Untargeted I-CREI"]


# ---------------------------------------------------------------------------- tables


def test_table1_markdown_csv_and_latex():
    partial = {"untargeted": METRICS["untargeted"]}  # no targeted attacks were run
    table = rome_table1([("cifar10", "rome", METRICS), ("cifar100", "my_50%", partial),
                         ("cifar10", "dm", None)])
    md = to_markdown(table)
    assert "| " + " | ".join(TABLE1_HEADER) + " |" in md
    assert "| CIFAR-10 | ROME | 81.36 | 55.28 | 97.44 | 63.32 | 49.86 | 35.05 | 67.01 | 43.62 |" \
        in md
    assert "| CIFAR-100 | my_50% | – | – | – | – | 49.86 |" in md
    assert "IPC {1, 10, 50}" in md  # every row pooled over the same IPCs

    rows = list(csv.reader(io.StringIO(to_csv(table))))
    assert rows[0] == TABLE1_HEADER
    assert rows[1] == ["CIFAR-10", "ROME", "81.36", "55.28", "97.44", "63.32", "49.86", "35.05",
                       "67.01", "43.62"]
    assert rows[3] == ["CIFAR-10", "DM", *["–"] * 8]

    tex = to_latex(table)
    assert r"\toprule" in tex and r"\bottomrule" in tex and r"\begin{tabular}{llrrrrrrrr}" in tex
    assert r"\multicolumn{4}{c}{Targeted} & \multicolumn{4}{c}{Untargeted} \\" in tex
    assert r"\cmidrule(lr){3-6} \cmidrule(lr){7-10}" in tex
    assert r"Dataset & Method & RR & CREI & I-RR & I-CREI & RR & CREI & I-RR & I-CREI \\" in tex
    assert r"my\_50\%" in tex and "my_50%" not in tex
    assert r"CIFAR-100 & my\_50\% & -- & -- & -- & -- & 49.86" in tex
    assert r"\caption{" in tex and r"\label{tab:whitebox}" in tex


def test_table2_blackbox_layout():
    table = rome_table2([("cifar10", "dm", {"transfer": METRICS, "query": None}),
                         ("cifar10", "rome", {"query": METRICS})])
    rows = list(csv.reader(io.StringIO(to_csv(table))))
    assert rows[0] == ["Dataset", "Method", "Targeted Transfer", "Targeted Query",
                       "Untargeted Transfer", "Untargeted Query"]
    assert rows[1] == ["CIFAR-10", "DM", "97.44", "–", "67.01", "–"]
    assert rows[2] == ["CIFAR-10", "ROME", "–", "97.44", "–", "67.01"]
    assert "Black-box robustness (I-RR)" in to_markdown(table)
    assert r"\multicolumn{2}{c}{Targeted}" in to_latex(table)
    with pytest.raises(ReportError, match="unknown black-box attack kind"):
        rome_table2([("cifar10", "dm", {"whitebox": METRICS})])


def test_accuracy_table_mean_std_and_missing():
    a = make_record("dm", ipc=10)
    b = make_record("random", ipc=1, labels=("pgd", "autoattack"))
    table = accuracy_table([a, b])
    rows = list(csv.reader(io.StringIO(to_csv(table))))
    assert rows[0] == ["Dataset", "Method", "IPC", "K", "Accuracy Clean", "Accuracy fgsm",
                       "Accuracy pgd", "Accuracy fgsm-T", "Accuracy pgd-T", "Accuracy autoattack"]
    stat = a["summary"]["pgd"]
    assert rows[1][:5] == ["CIFAR-10", "DM", "10", "2", "61.00 ± 1.00"]
    assert rows[1][6] == f"{stat['mean']:.2f} ± {stat['std']:.2f}"
    assert rows[1][-1] == "–" and rows[2][5] == "–"
    assert r"61.00 $\pm$ 1.00" in to_latex(table)
    # the rich terminal table still comes from robustdd.report
    assert records_table([a]).row_count == 1 and format_stat(stat) == rows[1][6]


def test_query_attack_list_matches_registry():
    from robustdd.attacks import ATTACKS

    assert {name for name, info in ATTACKS.items() if info.query} == QUERY_ATTACKS


# ---------------------------------------------------------------------------- figures


MATRIX = {
    "targeted": {"dc": {"dc": 81.78, "dm": 92.76, "rome": 99.94},
                 "dm": {"dc": 84.72, "dm": 87.2, "rome": 99.92}},
    "untargeted": {"dc": {"dc": 29.15, "dm": 90.7, "rome": None},
                   "dm": {"dc": 81.45, "dm": 35.35, "rome": 99.47}},
}


def _check_figure_files(paths, names=()):
    png, svg = paths
    assert png.suffix == ".png" and svg.suffix == ".svg"
    assert png.stat().st_size > 1000 and svg.stat().st_size > 1000
    with Image.open(png) as im:
        im.load()
        assert im.size[0] > 200 and im.size[1] > 200
    text = svg.read_text()
    ET.fromstring(text)  # well-formed XML
    for name in names:
        assert name in text
    return png.read_bytes(), svg.read_bytes()


def test_transfer_heatmap_files_names_and_determinism(tmp_path):
    first = _check_figure_files(transfer_heatmap(MATRIX, tmp_path / "a" / "heat"),
                                names=("DC", "DM", "ROME", "attack model", "transfer model",
                                       "Targeted", "Untargeted", "99.94"))
    second = _check_figure_files(transfer_heatmap(MATRIX, tmp_path / "b" / "heat"))
    assert first == second  # byte-identical PNG and SVG on a rerun
    with pytest.raises(ReportError, match="unknown mode"):
        transfer_heatmap({"both": {}}, tmp_path / "x")
    with pytest.raises(ReportError, match="finite number"):
        transfer_heatmap({"targeted": {"dc": {"dm": float("nan")}}}, tmp_path / "x")


def test_robustness_curves_figure(tmp_path):
    records = [make_record("dm", curves=True), make_record("rome", curves=True, clean=55.0),
               make_record("random")]  # no curves: skipped
    first = _check_figure_files(robustness_curves_figure(records, tmp_path / "a" / "curves"),
                                names=("DM IPC 10", "ROME IPC 10", "Targeted", "Untargeted"))
    second = _check_figure_files(robustness_curves_figure(records, tmp_path / "b" / "curves"))
    assert first == second
    with pytest.raises(ReportError, match="--curves"):
        robustness_curves_figure([make_record()], tmp_path / "none")


# ---------------------------------------------------------------------------- RobustBench


def test_robustbench_entry_uses_the_records_numbers():
    rec = make_record("dm", labels=("pgd", "autoattack"), k=3)
    entry = robustbench_entry(rec)
    aa, clean = rec["summary"]["autoattack"], rec["summary"]["clean_accuracy"]
    assert entry["autoattack_acc"] == f"{aa['mean']:.2f}"
    assert entry["clean_acc"] == f"{clean['mean']:.2f}"
    assert entry["eps"] == "8/255" and entry["dataset"] == "cifar10"
    assert entry["architecture"] == "convnet" and entry["number_forward_passes"] == 1
    assert entry["additional_data"] is False
    extra = entry["robustdd"]
    assert extra["method"] == "dm" and extra["ipc"] == 10 and extra["K"] == 3
    assert extra["autoattack"]["mean"] == aa["mean"] and extra["git_revision"] == "abc123"
    assert extra["versions"]["torch"] == "2.3.0"
    json.dumps(entry, allow_nan=False)

    rec["attacks"][1]["eps"] = 4 / 255  # ε comes from the attack's spec
    assert robustbench_entry(rec)["eps"] == "4/255"
    with pytest.raises(ValueError, match="norm linf, not l2"):
        robustbench_entry(rec, threat_model="L2")
    with pytest.raises(ValueError, match=r"has no \(untargeted\) AutoAttack result"):
        robustbench_entry(make_record("dm"))


# ---------------------------------------------------------------------------- writer and CLI


def test_write_report_outputs(tmp_path):
    labels = ("fgsm", "pgd", "fgsm-T", "pgd-T", "autoattack", "square", "spsa-T")
    dm = [make_record("dm", ipc=i, labels=labels, clean=50.0 + i) for i in (1, 10)]
    full = make_record("full", ipc=None, clean=80.0, curves=True)
    written = write_report([*dm, full], tmp_path, transfer_matrix=MATRIX)
    for name in ("table1", "accuracy", "table2"):
        assert [p.name for p in written[name]] == [f"{name}.md", f"{name}.csv", f"{name}.tex",
                                                   f"{name}.html"]
        fragment = (tmp_path / f"{name}.html").read_text()
        assert fragment.startswith('<table class="rdd-table">') and "</table>" in fragment
    assert {p.name for p in written["transfer_heatmap"]} == {"transfer_heatmap.png",
                                                               "transfer_heatmap.svg"}
    assert {p.name for p in written["curves"]} == {"curves.png", "curves.svg", "curves.csv"}
    assert [p.name for p in written["robustbench"]] == ["dm-cifar10-ipc1.json",
                                                        "dm-cifar10-ipc10.json"]
    assert all(p.is_file() and p.stat().st_size > 0 for ps in written.values() for p in ps)

    # Table 1 holds compute_metrics' pooled white-box values; query attacks are kept out of it
    white = compute_metrics(dm, exclude=["square", "spsa"])
    rows = list(csv.reader((tmp_path / "table1.csv").open()))
    dm_row = next(r for r in rows if r[1] == "DM")
    assert dm_row[2] == f"{white['targeted']['pooled']['RR']:.2f}"
    assert dm_row[8] == f"{white['untargeted']['pooled']['I-RR']:.2f}"
    assert rows[1][1] == "Full-size"  # ROME's row order: the full-size baseline first
    assert "CIFAR-10 Full-size: full; CIFAR-10 DM: 1, 10" in (tmp_path / "table1.md").read_text()
    query = compute_metrics(dm, exclude=["fgsm", "pgd", "autoattack"])
    rows2 = list(csv.reader((tmp_path / "table2.csv").open()))
    assert rows2[1][:2] == ["CIFAR-10", "DM"]
    assert rows2[1][3] == f"{query['targeted']['pooled']['I-RR']:.2f}"
    doc = json.loads((tmp_path / "metrics.json").read_text())
    dm_doc = next(d for d in doc["white_box"] if d["method"] == "dm")
    assert dm_doc["metrics"]["untargeted"]["pooled"]["ipcs"] == ["1", "10"]

    only_md = write_report([full], tmp_path / "md", formats=["md"])
    assert set(only_md) == {"table1", "accuracy", "metrics", "curves"}
    assert [p.name for p in only_md["table1"]] == ["table1.md"]
    with pytest.raises(ReportError, match="unknown table format"):
        write_report([full], tmp_path / "bad", formats=["docx"])


def test_cli_report_and_refusals(tmp_path, monkeypatch, capsys):
    path = tmp_path / "rec.json"
    path.write_text(json.dumps(make_record("dm", labels=("pgd", "pgd-T", "autoattack"))))
    out = tmp_path / "report"
    result = runner.invoke(app, ["report", str(path), "--out", str(out), "--format", "md",
                                 "--format", "csv"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert "table1.md" in result.output and "dm-cifar10-ipc10.json" in result.output
    assert (out / "table1.csv").is_file() and not (out / "table1.tex").exists()

    foreign = tmp_path / "metrics.json"
    foreign.write_text(json.dumps({"targeted": {}, "settings": {}}))
    result = runner.invoke(app, ["report", str(foreign), "--out", str(out)])
    assert result.exit_code != 0 and isinstance(result.exception, ReportError)
    assert "metrics.json: not a robustdd evaluation record" in str(result.exception)

    monkeypatch.setattr(sys, "argv", ["robustdd", "report", str(foreign), "--out", str(out)])
    with pytest.raises(SystemExit) as exc:
        main()
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "not a robustdd evaluation record" in err and "Traceback" not in err


def test_rdd_table1_lists_clean_and_shift_accuracies(tmp_path):
    rec = make_record("rdd-dc", ipc=10, clean=40.0)
    rec["shift"] = {"tests": ["cluster_min", "cluster_mean", "noise", "blur", "invert"]}
    for i, key in enumerate(rec["shift"]["tests"]):
        rec["summary"][key] = {"mean": 10.0 + i, "std": 0.5, "n": 3}
    table = rdd_table1([rec, make_record("dm", ipc=10)])
    assert table.columns == ["Dataset", "Method", "IPC", "Clean", "Cluster-min", "Cluster-mean",
                             "Noise", "Blur", "Invert"]
    assert len(table.rows) == 1 and table.rows[0][4:] == [
        "10.00 ± 0.50", "11.00 ± 0.50", "12.00 ± 0.50", "13.00 ± 0.50", "14.00 ± 0.50"]
    written = write_report([rec], tmp_path)
    assert (tmp_path / "shift.md").is_file() and "shift" in written
    with pytest.raises(ReportError, match="distribution-shift"):
        rdd_table1([make_record("dm", ipc=10)])


# ---------------------------------------------------------------------------- over seeds


def test_combine_metrics_on_hand_values():
    from robustdd.report.seeds import combine_metrics, seed_stat

    assert seed_stat([1.0, 3.0]) == {"mean": 2.0, "std": 1.0, "n": 2}
    a = compute_metrics([make_record(clean=50.0)])
    b = compute_metrics([make_record(clean=54.0)])
    got = combine_metrics([a, b], [0, 1])
    pooled = got["untargeted"]["pooled"]
    want = [a["untargeted"]["pooled"]["I-RR"], b["untargeted"]["pooled"]["I-RR"]]
    assert pooled["I-RR"] == {"mean": fmean(want), "std": pstdev(want), "n": 2}
    assert pooled["n_attacks"] == a["untargeted"]["pooled"]["n_attacks"]  # counts stay counts
    assert pooled["ipcs"] == ["10"] and got["settings"] == a["settings"]
    per_attack = got["untargeted"]["ipc"]["10"]["accuracy"]["pgd"]
    assert per_attack["n"] == 2 and per_attack["mean"] == pytest.approx(
        fmean([a["untargeted"]["ipc"]["10"]["accuracy"]["pgd"],
               b["untargeted"]["ipc"]["10"]["accuracy"]["pgd"]]))
    assert got["seeds"] == [0, 1] and got["per_seed"] == [a, b]
    c = compute_metrics([make_record(ipc=1), make_record(ipc=10)])
    with pytest.raises(ReportError, match="different IPCs"):
        combine_metrics([a, c], [0, 1])


def test_distillation_seed_names_the_record():
    from robustdd.report.seeds import distill_seed

    rec = make_record(seed=0)
    assert distill_seed(rec) == 0
    rec["distilled"]["meta"] = {"seed": 7}  # evaluated with seed 0, distilled with seed 7
    assert distill_seed(rec) == 7


def test_seeds_missing_an_ipc_are_pooled_over_the_ipcs_all_seeds_have(tmp_path):
    recs = [make_record("dm", ipc=1, seed=0), make_record("dm", ipc=10, seed=0),
            make_record("dm", ipc=10, seed=1, clean=50.0)]
    write_report(recs, tmp_path, formats=("md",))
    doc = json.loads((tmp_path / "metrics.json").read_text())
    m = doc["white_box"][0]["metrics"]
    assert m["untargeted"]["pooled"]["ipcs"] == ["10"] and m["seeds"] == [0, 1]
    assert "IPC {10}" in (tmp_path / "table1.md").read_text()
    # one record per IPC (any seeds): pooled over the IPCs as one run, as before
    single = [make_record("dm", ipc=1, seed=0), make_record("dm", ipc=10, seed=1)]
    write_report(single, tmp_path / "b", formats=("md",))
    m = json.loads((tmp_path / "b" / "metrics.json").read_text())["white_box"][0]["metrics"]
    assert m["untargeted"]["pooled"]["ipcs"] == ["1", "10"] and "seeds" not in m


def test_report_over_three_seeds_gives_mean_and_std_of_per_seed_results(tmp_path):
    """Three seeds of one method and IPC: one row, mean ± std over the seeds of each seed's
    K-model mean; Table 1 from the metrics computed per seed (not from pooled accuracies)."""
    recs = [make_record("rome", ipc=10, clean=c, seed=s, k=2)
            for s, c in ((0, 50.0), (1, 54.0), (2, 58.0))]
    written = write_report(recs, tmp_path, formats=("md", "csv"))
    rows = list(csv.reader(io.StringIO((tmp_path / "accuracy.csv").read_text())))
    assert rows[0][:6] == ["Dataset", "Method", "IPC", "Seeds", "K", "Accuracy Clean"]
    assert len(rows) == 2 and rows[1][3] == "0, 1, 2" and rows[1][4] == "2"
    per_seed_clean = [r["summary"]["clean_accuracy"]["mean"] for r in recs]  # 51, 55, 59
    assert rows[1][5] == f"{fmean(per_seed_clean):.2f} ± {pstdev(per_seed_clean):.2f}"
    per_seed_rows = list(csv.reader(io.StringIO((tmp_path / "accuracy-per-seed.csv")
                                                .read_text())))
    assert [r[3] for r in per_seed_rows[1:]] == ["0", "1", "2"]
    assert "accuracy_per_seed" in written

    rr = [compute_metrics([r])["untargeted"]["pooled"]["I-RR"] for r in recs]
    assert len(set(round(x, 6) for x in rr)) == 3  # the seeds really differ
    table1 = list(csv.reader(io.StringIO((tmp_path / "table1.csv").read_text())))
    col = table1[0].index("Untargeted I-RR")
    assert table1[1][col] == f"{fmean(rr):.2f} ± {pstdev(rr):.2f}"
    doc = json.loads((tmp_path / "metrics.json").read_text())
    entry = doc["white_box"][0]["metrics"]
    assert entry["seeds"] == [0, 1, 2] and len(entry["per_seed"]) == 3
    assert "over the distillation seeds" in (tmp_path / "table1.md").read_text()


def test_report_refuses_two_records_of_one_seed(tmp_path):
    recs = [make_record("dm", seed=0), make_record("dm", seed=0, clean=40.0)]
    with pytest.raises(ReportError, match="more than one evaluation record for distillation "
                                          "seed 0"):
        write_report(recs, tmp_path)


def test_shift_table_over_seeds():
    from robustdd.report.seeds import merge_seed_records

    recs = []
    for s, v in ((0, 10.0), (1, 20.0)):
        r = make_record("rdd-dc", ipc=1, seed=s)
        r["shift"] = {"tests": ["cluster_min", "noise"]}
        r["summary"]["cluster_min"] = {"mean": v, "std": 1.0, "n": 2}
        r["summary"]["noise"] = {"mean": v + 5, "std": 1.0, "n": 2}
        recs.append(r)
    md = to_markdown(rdd_table1(merge_seed_records(recs)))
    assert "| CIFAR-10 | rdd-dc | 1 | 0, 1 | 61.00 ± 0.00 | 15.00 ± 5.00 | 20.00 ± 5.00 |" in md
    assert "over the distillation seeds" in md
