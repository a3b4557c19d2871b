"""The GPU paths: every method and attack on a CUDA device, against the CPU where they must agree.

CI has no GPU, so these run only where CUDA is available (a developer's or a lent machine;
docs/measurements.md records the runs). ``ROBUSTDD_TEST_DEVICE=cpu`` runs them on the CPU, to
check the tests themselves on a machine without a GPU.
"""

from __future__ import annotations

import copy
import os

import pytest
import torch

import robustdd
import robustdd.distill.methods  # registers the built-in methods
from robustdd.attacks import AttackSpec, run_attack
from robustdd.attacks.suites import suite
from robustdd.data import load_dataset
from robustdd.distill.base import METHODS
from robustdd.nn import build_model
from robustdd.nn.train import TrainConfig, train_model

DEVICE = os.environ.get("ROBUSTDD_TEST_DEVICE", "cuda")
pytestmark = pytest.mark.skipif(DEVICE == "cuda" and not torch.cuda.is_available(),
                                reason="needs CUDA (or ROBUSTDD_TEST_DEVICE=cpu)")

#: (method, variant) pairs: every registered method, and the reference-code variant of each
#: robust method that has one.
METHOD_VARIANTS = [(name, None) for name in sorted(METHODS)] + [
    ("rome", "faithful"), ("guard-sre2l", "faithful"), ("rdd-dc", "faithful")]


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", "train"), load_dataset("digits", "test")


@pytest.fixture(scope="module")
def trained(digits):
    """A ConvNet briefly trained on the digits (on the CPU, so both devices start equal)."""
    train, test = digits
    net = build_model("convnet", 10, 1, 8, mean=train.mean, std=train.std, seed=0)
    train_model(net, train.pixels(), train.labels, TrainConfig(epochs=3, lr=0.01, batch_size=128),
                torch.Generator().manual_seed(0))
    x = test.pixels(torch.arange(128))
    with torch.no_grad():
        y = net.eval()(x).argmax(1)  # every example starts correctly classified
    return net, x, y


@pytest.fixture(scope="module")
def on_device(trained):
    """A copy of the trained net and the first 32 examples, on the device."""
    net, x, y = trained
    return copy.deepcopy(net).to(DEVICE), x[:32].to(DEVICE), y[:32].to(DEVICE)


@pytest.mark.parametrize(("method", "variant"), METHOD_VARIANTS,
                         ids=[m if v is None else f"{m}-{v}" for m, v in METHOD_VARIANTS])
def test_every_method_distills_on_the_device(digits, method, variant, tmp_path, monkeypatch):
    monkeypatch.setenv("ROBUSTDD_CACHE", str(tmp_path))  # robust models, experts, teachers
    kw = {} if variant is None else {"variant": variant}
    syn = robustdd.distill(method, digits[0], ipc=1, seed=0, profile="smoke", device=DEVICE,
                           **kw)
    # (images are not clamped to [0, 1] until export: DESIGN.md)
    assert syn.images.shape == (10, 1, 8, 8) and torch.isfinite(syn.images).all()
    assert syn.meta["environment"]["device"] == torch.device(DEVICE).type


def test_evaluation_record_names_the_device(digits):
    train, test = digits
    syn = robustdd.distill("random", train, ipc=2, seed=0, profile="smoke", device=DEVICE)
    rec = robustdd.evaluate(syn, profile="smoke", test=test, attacks="beard", num_models=1,
                            attack_examples=32, device=DEVICE, shift=True)
    assert rec["environment"]["device"] == torch.device(DEVICE).type
    model = rec["models"][0]
    for label, item in model["attacks"].items():
        assert item["accuracy"] <= model["attack_subset_clean_accuracy"] + 1e-9, label


@pytest.mark.parametrize("suite_name", ["beard", "beard-query", "guard", "beard-legacy"])
def test_suites_keep_bounds_on_the_device(on_device, suite_name):
    net, x, y = on_device
    for spec in suite(suite_name):
        spec = spec.model_copy(update={"queries": min(spec.queries, 100),
                                       "samples": min(spec.samples, 32)})
        result = run_attack(net, x, y, spec)
        adv = result.adversarial
        assert adv.device == x.device, spec.name
        assert adv.min() >= 0 and adv.max() <= 1
        if spec.name in ("cw", "deepfool") or spec.space == "normalised":
            continue  # unbounded, or the legacy [0, 1] clamp of normalised values (documented)
        delta = (adv - x).flatten(1)
        size = delta.abs().amax(1) if spec.norm == "linf" else delta.norm(dim=1)
        assert (size <= spec.eps + 1e-5).all(), spec.name


@pytest.mark.parametrize("name", ["fgsm", "pgd", "pgd-l2", "mim", "cw", "deepfool"])
def test_gradient_attacks_agree_with_the_cpu(trained, name):
    """Same model, images and spec on both devices: the attacks must fool the same examples
    (floating-point sums differ between devices, so single pixels may not match)."""
    net, x, y = trained
    dev_net = copy.deepcopy(net).to(DEVICE)
    spec = AttackSpec(name=name, norm="l2" if name in ("pgd-l2", "cw", "deepfool") else "linf",
                      eps=0.5 if name == "pgd-l2" else 8 / 255,
                      steps=20 if name == "cw" else 10)
    with torch.no_grad():
        cpu_pred = net(run_attack(net, x, y, spec).adversarial).argmax(1)
        dev_adv = run_attack(dev_net, x.to(DEVICE), y.to(DEVICE), spec).adversarial
        dev_pred = dev_net(dev_adv).argmax(1).cpu()
    # (a gradient sign that flips between devices moves a pixel by 2ε: compare outcomes)
    assert (cpu_pred == dev_pred).float().mean() >= 0.95


@pytest.mark.parametrize("name", ["pgd", "square", "spsa"])
def test_seeded_attacks_repeat_on_the_device(on_device, name):
    """Random starts and query attacks draw from the spec's seed: two runs give one result."""
    net, x, y = on_device
    spec = AttackSpec(name=name, random_start=name == "pgd", queries=100, samples=32, seed=3)
    a = run_attack(net, x, y, spec).adversarial
    b = run_attack(net, x, y, spec).adversarial
    torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
