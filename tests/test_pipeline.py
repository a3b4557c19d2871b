"""Distill → evaluate end to end: determinism, records, bad input."""

import json

import pytest
import torch

import robustdd
from robustdd.data import load_dataset
from robustdd.errors import IncompatibleError, UnknownNameError
from robustdd.nn import build_model


@pytest.fixture(scope="module")
def digits_train():
    return load_dataset("digits", "train")


@pytest.fixture(scope="module")
def digits_test():
    return load_dataset("digits", "test")


def test_random_selection_is_seeded_class_balanced_real_images(digits_train):
    a = robustdd.distill("random", digits_train, ipc=3, seed=1, profile="smoke")
    b = robustdd.distill("random", digits_train, ipc=3, seed=1, profile="smoke")
    c = robustdd.distill("random", digits_train, ipc=3, seed=2, profile="smoke")
    assert torch.equal(a.images, b.images) and not torch.equal(a.images, c.images)
    assert torch.bincount(a.labels, minlength=10).tolist() == [3] * 10
    idx = torch.tensor(a.meta["source_indices"])
    torch.testing.assert_close(a.images, digits_train.pixels(idx))
    assert torch.equal(a.labels, digits_train.labels[idx])


def test_dm_is_deterministic_and_leaves_global_rng_alone(digits_train):
    state = torch.get_rng_state()
    kw = dict(ipc=2, profile="smoke", iterations=4, batch_real=8)
    a = robustdd.distill("dm", digits_train, seed=0, **kw)
    b = robustdd.distill("dm", digits_train, seed=0, **kw)
    c = robustdd.distill("dm", digits_train, seed=1, **kw)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(a.images, b.images)
    assert not torch.equal(a.images, c.images)
    assert a.meta["config"]["iterations"] == 4 and a.meta["seed"] == 0
    assert a.meta["profile"] == "smoke" and "torch" in a.meta["environment"]


def _dm_objective(syn_pixels, syn_labels, train, nets):
    """Mean over fixed random nets of Σ_c ‖mean ψ(real_c) − mean ψ(syn_c)‖² (no augmentation)."""
    real = train.pixels()
    total = 0.0
    with torch.no_grad():
        for net in nets:
            er, es = net.embed(real), net.embed(syn_pixels)
            for c in range(10):
                d = er[train.labels == c].mean(0) - es[syn_labels == c].mean(0)
                total += float((d ** 2).sum())
    return total / len(nets)


def test_dm_lowers_the_distribution_matching_objective(digits_train):
    """Not just 'runs': the synthetic set moves toward the real class means in feature space."""
    syn = robustdd.distill("dm", digits_train, ipc=2, seed=0, profile="smoke", iterations=20,
                           batch_real=32)
    start = robustdd.distill("dm", digits_train, ipc=2, seed=0, profile="smoke", iterations=0)
    nets = [build_model("convnetd2", 10, 1, 8, mean=digits_train.mean, std=digits_train.std,
                        seed=1000 + k) for k in range(4)]
    before = _dm_objective(start.images, start.labels, digits_train, nets)
    after = _dm_objective(syn.images, syn.labels, digits_train, nets)
    assert after < 0.7 * before, (before, after)


def test_evaluate_record_is_complete_deterministic_and_json(digits_train, digits_test):
    syn = robustdd.distill("random", digits_train, ipc=5, seed=0, profile="smoke")
    rec = robustdd.evaluate(syn, profile="smoke", test=digits_test, seed=0)
    again = robustdd.evaluate(syn, profile="smoke", test=digits_test, seed=0)
    text = json.dumps(rec, allow_nan=False)
    assert json.loads(text)["format"] == "robustdd.evaluation"
    for key in ("protocol", "test_set", "attacks", "models", "summary", "environment", "seed",
                "method", "dataset", "ipc", "profile"):
        assert key in rec
    assert len(rec["models"]) == 2  # smoke profile: K = 2
    assert rec["models"][0]["model_seed"] != rec["models"][1]["model_seed"]
    labels = [a["label"] for a in rec["attacks"]]
    assert labels == ["fgsm", "pgd", "fgsm-T", "pgd-T"]
    assert rec["attacks"][1]["eps"] == pytest.approx(8 / 255)
    for m, n in zip(rec["models"], again["models"], strict=True):
        assert m["clean_accuracy"] == n["clean_accuracy"]
        assert {k: v["accuracy"] for k, v in m["attacks"].items()} == {
            k: v["accuracy"] for k, v in n["attacks"].items()}
        assert m["attacks"]["pgd"]["gradients_per_example"] == 3
        assert "target_success_rate" in m["attacks"]["pgd-T"]
        # BEARD's t_k: the attack plus the classification of its images (t_k − T0 = attack)
        for item in m["attacks"].values():
            assert 0 < item["attack_seconds"] < item["seconds"]
    s = rec["summary"]
    assert s["pgd"]["mean"] <= s["attack_subset_clean_accuracy"]["mean"]
    assert rec["test_set"]["examples"] == 200 and rec["test_set"]["attack_examples"] == 64
    assert rec["protocol"]["train"]["total_epochs"] == 5
    assert rec["environment"]["device"] == "cpu"
    from pathlib import Path

    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file() and "model name" in cpuinfo.read_text():  # Linux: the CPU model
        assert rec["environment"]["device_name"] in cpuinfo.read_text()


def test_evaluate_refuses_incompatible_sets(digits_train, fashion_mnist_test):
    syn = robustdd.distill("random", digits_train, ipc=1, seed=0, profile="smoke")
    with pytest.raises(IncompatibleError):
        robustdd.evaluate(syn, profile="smoke", test=fashion_mnist_test)


def test_bad_names_and_budgets_are_clear(digits_train):
    with pytest.raises(UnknownNameError, match="dm"):
        robustdd.distill("nope", digits_train, ipc=1)
    with pytest.raises(UnknownNameError, match="small"):
        robustdd.distill("dm", digits_train, ipc=1, profile="huge")
    with pytest.raises(ValueError, match="iterationz"):
        robustdd.distill("dm", digits_train, ipc=1, profile="smoke", iterationz=3)
    with pytest.raises(ValueError, match="ipc"):
        robustdd.distill("random", digits_train, ipc=1000)


@pytest.mark.parametrize("method, name, budget", [
    ("dm", "DM", {"iterations": 3, "batch_real": 4}),
    ("dc", "DC", {"iterations": 2}),
    ("idm", "idm", {"iterations": 2}),
])
def test_a_diverged_set_is_refused_not_returned(digits_train, method, name, budget):
    # lr_img near float32's maximum sends the images to Inf within an iteration or two
    with pytest.raises(FloatingPointError, match=f"{name} diverged.*lower lr_img"):
        robustdd.distill(method, digits_train, ipc=1, seed=0, profile="smoke", lr_img=1e38,
                         **budget)


def test_cifar10_real_path_smoke(cifar10_train, cifar10_test):
    """The real shared CIFAR-10 through distill (DM) and evaluate at the smoke budget."""
    syn = robustdd.distill("dm", cifar10_train, ipc=1, seed=0, profile="smoke", iterations=2)
    assert syn.images.shape == (10, 3, 32, 32)
    assert syn.meta["arch"] == "convnet"
    rec = robustdd.evaluate(syn, profile="smoke", test=cifar10_test, num_models=1)
    assert rec["protocol"]["arch"] == "convnet" and rec["test_set"]["size"] == 10000
    assert 0.0 <= rec["summary"]["clean_accuracy"]["mean"] <= 100.0


def test_full_dataset_baseline_uses_the_same_protocol(digits_train, digits_test):
    from robustdd.evaluate import evaluate_full_dataset

    rec = evaluate_full_dataset(digits_train, profile="smoke", test=digits_test, num_models=1,
                                epochs=2)
    assert rec["method"] == "full" and rec["distilled"]["training_images"] == len(digits_train)
    assert rec["protocol"]["train"]["total_epochs"] == 3
    assert rec["models"][0]["train"]["images_seen"] == 3 * len(digits_train)
    assert rec["summary"]["clean_accuracy"]["mean"] > 50.0  # 3 epochs over 1,347 real digits


def test_evaluate_with_a_suite_curves_and_sanity_checks(digits_train, digits_test):
    syn = robustdd.distill("random", digits_train, ipc=5, seed=0, profile="smoke")
    rec = robustdd.evaluate(syn, profile="smoke", test=digits_test, attacks="quick",
                            curves=True, num_models=1, attack_examples=32)
    model = rec["models"][0]
    assert [a["label"] for a in rec["attacks"]] == ["fgsm", "fgsm-T", "pgd", "pgd-T"]
    eps_curve = model["curves"]["untargeted"]["eps"]
    assert eps_curve["0"] == model["attack_subset_clean_accuracy"]  # ε = 0 is a clean pass
    assert eps_curve["10"] <= eps_curve["0"]
    assert set(model["curves"]["targeted"]["steps"]) == {"2", "4", "6", "8", "10"}
    assert isinstance(model["warnings"], list)
    with pytest.raises(UnknownNameError, match="beard"):
        robustdd.evaluate(syn, profile="smoke", test=digits_test, attacks="nope")


def test_sanity_warnings_flag_masking():
    from robustdd.evaluate.curves import sanity_warnings

    curves = {"untargeted": {"eps": {"0": 50.0, "2": 30.0, "4": 40.0}, "steps": {"2": 20.0}}}
    warnings = sanity_warnings(51.0, curves, {"pgd": 30.0}, {"square": 10.0})
    assert any("eps=0" in w for w in warnings)
    assert any("rises with eps" in w for w in warnings)
    assert any("black-box square" in w for w in warnings)
    assert sanity_warnings(50.0, {"untargeted": {"eps": {"0": 50.0, "2": 30.0}}},
                           {"pgd": 30.0}, {"square": 35.0}) == []


def test_sanity_warnings_do_not_depend_on_float_noise_at_the_tolerance():
    from robustdd.evaluate.curves import sanity_warnings

    # one image in 200 apart (0.5 points), as float32 means x 100 come out of a real run:
    # the gap lands just above or just below 0.5 and must not warn either way
    for white, black in ((24.50000047683716, 23.99999976158142),
                         (28.499999046325684, 28.000000715255737)):
        assert sanity_warnings(30.0, None, {"cw": white}, {"square": black}) == []
        curve = {"untargeted": {"eps": {"2": black, "4": white}}}
        assert sanity_warnings(30.0, curve) == []
    # two images apart warns
    assert sanity_warnings(30.0, None, {"cw": 25.50000047683716},
                           {"square": 24.49999988079071}) != []
