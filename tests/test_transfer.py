"""Transfer-attack matrix and the adversarially trained surrogate."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from robustdd import distill
from robustdd.attacks import AttackSpec, run_attack
from robustdd.evaluate import evaluate
from robustdd.evaluate.transfer import (
    ADVERSARIAL_SURROGATE,
    transfer_evaluation,
    transfer_metrics,
)
from robustdd.nn import build_model
from robustdd.nn.train import TrainConfig, accuracy, train_model
from robustdd.robust import adversarially_trained_model, at_config

EPS = 8 / 255
SPECS = [AttackSpec(name="fgsm", eps=EPS, steps=1, step_size=None),
         AttackSpec(name="pgd", eps=EPS, steps=3, step_size=2 / 255, targeted=True)]


@pytest.fixture(scope="module")
def sets(one_thread, digits_splits):
    train, _ = digits_splits
    return {"random": distill("random", train, ipc=3, seed=0, profile="smoke"),
            "dm": distill("dm", train, ipc=3, seed=0, profile="smoke")}


@pytest.fixture(scope="module")
def record(sets, digits_splits, tmp_path_factory):
    train, test = digits_splits
    cache = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ROBUSTDD_CACHE", str(cache))
        return transfer_evaluation(sets, profile="smoke", test=test, train=train,
                                   attacks=SPECS, device="cpu")


def test_record_has_every_cell_and_is_json(record, sets):
    surrogates = [*sets, ADVERSARIAL_SURROGATE]
    assert list(record["accuracy"]) == surrogates
    for s in surrogates:
        assert set(record["accuracy"][s]) == set(sets)
        for v in sets:
            assert set(record["accuracy"][s][v]) == {"fgsm", "pgd-T"}
            assert all(0 <= a <= 100 for a in record["accuracy"][s][v].values())
        assert 0 < record["attack_seconds"][s]["fgsm"] < record["seconds"][s]["fgsm"]
        assert 0 <= record["surrogates"][s]["attacked_accuracy"]["pgd-T"] <= 100
    assert record["surrogates"][ADVERSARIAL_SURROGATE]["kind"] == "adversarially-trained"
    assert record["surrogates"][ADVERSARIAL_SURROGATE]["config"]["method"] == "fgsm-rs"
    json.loads(json.dumps(record, allow_nan=False))


def test_diagonal_is_the_white_box_evaluation_of_model_zero(record, sets, digits_splits):
    """The victim model is evaluate()'s model 0 (same seeds), so a surrogate attacking itself
    reproduces that evaluation's white-box numbers exactly."""
    _, test = digits_splits
    white = evaluate(sets["dm"], profile="smoke", test=test, attacks=SPECS, device="cpu")
    model0 = white["models"][0]
    for label in ("fgsm", "pgd-T"):
        assert record["accuracy"]["dm"]["dm"][label] == pytest.approx(
            model0["attacks"][label]["accuracy"], abs=1e-9)
    assert record["victims"]["dm"]["clean_accuracy"] == pytest.approx(
        model0["attack_subset_clean_accuracy"], abs=1e-9)


def test_transfer_metrics_per_pair(record, sets):
    irr = transfer_metrics(record, metric="I-RR")
    assert set(irr) == {"targeted", "untargeted"}
    for mode in irr:
        assert set(irr[mode]) == {*sets, ADVERSARIAL_SURROGATE}
        for row in irr[mode].values():
            assert set(row) == set(sets)
            assert all(isinstance(v, float) for v in row.values())
    full = transfer_metrics(record)
    assert set(full["untargeted"]["dm"]["random"]) == {"RR", "AE", "CREI", "I-RR", "I-CREI"}
    with pytest.raises(ValueError, match=r"robustdd\.transfer"):
        transfer_metrics({"format": "robustdd.evaluation"})


def test_transfer_metrics_leave_legacy_clean_passes_out(record):
    """A legacy targeted DeepFool cell (the clean images, no cost) must not enter the metrics."""
    from robustdd.evaluate.transfer import transfer_pair_metrics

    base = transfer_pair_metrics(record, "dm", "random")
    patched = copy.deepcopy(record)
    label = "legacy-deepfool-T"
    patched["attacks"].append({"name": "deepfool", "targeted": True, "space": "normalised",
                               "label": label})
    for s_name, cells in patched["accuracy"].items():
        patched["attack_seconds"][s_name][label] = 0.0
        patched["seconds"][s_name][label] = 0.0
        for v_name in cells:
            cells[v_name][label] = patched["victims"][v_name]["clean_accuracy"]
    again = transfer_pair_metrics(patched, "dm", "random")
    assert again["targeted"]["pooled"] == base["targeted"]["pooled"]


def test_reserved_surrogate_name_and_empty_victims_are_refused(sets, digits_splits):
    _, test = digits_splits
    with pytest.raises(ValueError, match="at least one victim"):
        transfer_evaluation({}, test=test)
    with pytest.raises(ValueError, match="reserved"):
        transfer_evaluation(sets, surrogates={ADVERSARIAL_SURROGATE: sets["dm"]}, test=test)


@pytest.mark.parametrize("method", ["fgsm-rs", "pgd"])
def test_adversarial_training_buys_robustness(one_thread, digits_splits, tmp_path, method):
    """FGSM-RS and PGD training on digits raise PGD accuracy far above a normally trained twin."""
    train, test = digits_splits
    # digits have 17 grey levels: a visible budget is ε = 0.2 (robustness at 8/255 is free here)
    cfg = at_config("smoke", method=method, steps=3, step_size=0.08, epochs=3,
                    train_examples=None, lr=0.02, batch_size=128, eps=0.2)
    robust, info = adversarially_trained_model(train, cfg, seed=0, cache=tmp_path)
    assert info["from_cache"] is False and info["train_examples"] == len(train)
    assert info["config"]["method"] == method
    plain = build_model("convnetd2", train.num_classes, train.channels, train.image_size,
                        mean=train.mean, std=train.std, seed=0)
    train_model(plain, train.pixels(), train.labels,
                TrainConfig(epochs=3, lr=0.02, batch_size=128), torch.Generator().manual_seed(0))
    x, y = test.pixels(torch.arange(200)), test.labels[:200]
    spec = AttackSpec(name="pgd", eps=0.2, steps=10, step_size=0.05)
    robust_acc = accuracy(robust, run_attack(robust, x, y, spec).adversarial, y)
    plain_acc = accuracy(plain, run_attack(plain, x, y, spec).adversarial, y)
    assert robust_acc > plain_acc + 15  # measured: 33.5 vs 0.5 with 4 epochs


def test_adversarially_trained_model_is_cached_and_corrupt_cache_retrains(
        one_thread, digits_splits, tmp_path):
    train, _ = digits_splits
    cfg = at_config("smoke", epochs=0, train_examples=128)
    first, info = adversarially_trained_model(train, cfg, seed=0, cache=tmp_path)
    again, info2 = adversarially_trained_model(train, cfg, seed=0, cache=tmp_path)
    assert (info["from_cache"], info2["from_cache"]) == (False, True)
    for a, b in zip(first.state_dict().values(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    # Naming the dataset's default arch explicitly is the same network, found in the cache.
    _, named = adversarially_trained_model(train, cfg.model_copy(update={"arch": "convnetd2"}),
                                           seed=0, cache=tmp_path)
    assert named["from_cache"] and named["cache_key"] == info["cache_key"]
    _, info_seed = adversarially_trained_model(train, cfg, seed=1, cache=tmp_path)
    assert info_seed["from_cache"] is False and info_seed["cache_key"] != info["cache_key"]
    weights = tmp_path / "robust-nets" / f"{info['cache_key']}.safetensors"
    weights.write_bytes(b"garbage")
    with pytest.warns(RuntimeWarning, match="cache entry .* refused"):
        retrained, info3 = adversarially_trained_model(train, cfg, seed=0, cache=tmp_path)
    assert info3["from_cache"] is False
    for a, b in zip(first.state_dict().values(), retrained.state_dict().values(), strict=True):
        assert torch.equal(a, b)  # same seeds: the retrained network is the same network
    assert info3["environment"]["device"] == "cpu" and len(info3["weights_sha256"]) == 64
    # a flipped byte in the last weight still loads as safetensors: the checksum catches it
    blob = bytearray(weights.read_bytes())
    blob[-1] ^= 0xFF
    weights.write_bytes(bytes(blob))
    with pytest.warns(RuntimeWarning, match="do not match their recorded SHA-256"):
        _, info4 = adversarially_trained_model(train, cfg, seed=0, cache=tmp_path)
    assert info4["from_cache"] is False


def test_cli_transfer_then_report_with_heatmap(sets, digits_splits, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from robustdd.cli import app
    from robustdd.runtime import write_json_atomic

    _, test = digits_splits
    monkeypatch.setenv("ROBUSTDD_CACHE", str(tmp_path / "cache"))
    folders = []
    for name, dset in sets.items():
        dset.save(tmp_path / name)
        folders.append(str(tmp_path / name))
    runner = CliRunner()
    out = tmp_path / "transfer.json"
    result = runner.invoke(app, ["transfer", *folders, "--profile", "smoke", "--suite", "quick",
                                 "--out", str(out), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "I-RR, untargeted" in result.output and ADVERSARIAL_SURROGATE in result.output
    record = json.loads(out.read_text())
    assert set(record["accuracy"]) == {"random", "dm", ADVERSARIAL_SURROGATE}
    evaluation = evaluate(sets["dm"], profile="smoke", test=test, attacks="quick", device="cpu")
    write_json_atomic(tmp_path / "dm.json", evaluation)
    result = runner.invoke(app, ["report", str(tmp_path / "dm.json"), "--out",
                                 str(tmp_path / "report"), "--transfer", str(out)])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "report" / "transfer_heatmap.png").stat().st_size > 0
    assert "Transfer" in (tmp_path / "report" / "table2.md").read_text()
    bad = runner.invoke(app, ["report", str(tmp_path / "dm.json"), "--out",
                              str(tmp_path / "r2"), "--transfer", str(tmp_path / "dm.json")])
    assert bad.exit_code != 0 and "not a robustdd.transfer record" in str(bad.exception)


@pytest.mark.parametrize(("content", "message"), [
    ("{not json", "not valid JSON"),
    ("[1]", "not a robustdd.transfer record"),
    ('{"format": "robustdd.evaluation"}', "not a robustdd.transfer record"),
    ('{"format": "robustdd.transfer", "format_version": 99}', "unsupported format_version 99"),
    ('{"format": "robustdd.transfer", "format_version": 1}', "missing or malformed: accuracy"),
])
def test_foreign_transfer_files_are_refused_with_the_reason(tmp_path, content, message):
    from typer.testing import CliRunner

    from robustdd.cli import app
    from robustdd.errors import CorruptDataError
    from robustdd.evaluate.transfer import load_transfer_record

    path = tmp_path / "t.json"
    path.write_text(content)
    with pytest.raises(CorruptDataError, match=message):
        load_transfer_record(path)
    record = tmp_path / "r.json"
    record.write_text("{}")
    result = CliRunner().invoke(app, ["report", str(record), "--transfer", str(path),
                                      "--out", str(tmp_path / "rep")])
    assert isinstance(result.exception, CorruptDataError) and str(path) in str(result.exception)
