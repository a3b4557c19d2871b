"""The robust prior and ROME: bounds, target success, the legacy space, the distance, variants,
ablation switches, end to end through API and CLI, resume."""

from __future__ import annotations

import importlib

import pytest
import torch
from test_checkpoint import resumes_identically
from typer.testing import CliRunner

import robustdd
from robustdd.attacks.legacy import LEGACY_STEP
from robustdd.cli import app
from robustdd.distill import get_method
from robustdd.distill.methods.idm import IDMVariant
from robustdd.distill.methods.rome import rome_distance
from robustdd.distilled import DistilledSet
from robustdd.nn.train import predict
from robustdd.robust.prior import LEGACY_PRIOR, PriorConfig, adversarial_prior, prior_hook

pytestmark = pytest.mark.usefixtures("private_cache")




@pytest.fixture(scope="module")
def batch(digits_splits):
    _, test = digits_splits
    return test.pixels()[:200], test.labels[:200]


def test_pixel_prior_stays_in_the_eps_ball_and_in_range(digits_model, batch):
    x, y = batch
    cfg = PriorConfig(eps=8 / 255, steps=5)
    adv = adversarial_prior(digits_model, x, y, cfg, 10, torch.Generator().manual_seed(0))
    assert float((adv - x).abs().max()) <= 8 / 255 + 1e-6
    assert adv.min() >= 0 and adv.max() <= 1 and not adv.requires_grad
    assert not torch.equal(adv, x)


@pytest.mark.parametrize("cfg", [
    PriorConfig(eps=0.3, step_size=0.05, steps=20),
    # ROME's code: normalised space, (y + 1) mod 10, given room to move (ε in normalised units)
    LEGACY_PRIOR.model_copy(update={"eps": 1.0, "step_size": 0.1, "steps": 20}),
], ids=["pixel", "legacy"])
def test_targeted_prior_reaches_next_class_far_more_often_than_chance(digits_model, batch, cfg):
    x, y = batch
    target = (y + 1) % 10
    adv = adversarial_prior(digits_model, x, y, cfg, 10, torch.Generator().manual_seed(0))
    hit = float((predict(digits_model, adv) == target).float().mean())
    clean = float((predict(digits_model, x) == target).float().mean())
    assert hit > 0.5 > clean + 0.3
    digits_model.train()  # the model's mode is restored by the attack
    adversarial_prior(digits_model, x[:4], y[:4], cfg, 10, torch.Generator().manual_seed(0))
    assert digits_model.training
    digits_model.eval()


def test_untargeted_prior_lowers_accuracy(digits_model, batch):
    x, y = batch
    cfg = PriorConfig(eps=0.3, step_size=0.05, steps=10, targeted=False)
    adv = adversarial_prior(digits_model, x, y, cfg, 10, torch.Generator().manual_seed(0))
    assert float((predict(digits_model, adv) == y).float().mean()) < 0.2


def test_legacy_prior_clamps_in_normalised_space(digits_model, batch):
    """ROME's code: every adversarial pixel ends between its channel mean and mean + std."""
    x, y = batch
    assert LEGACY_PRIOR.step_size == LEGACY_STEP and LEGACY_PRIOR.target_policy == "next-mod-10"
    adv = adversarial_prior(digits_model, x, y, LEGACY_PRIOR, 10,
                            torch.Generator().manual_seed(0))
    mean = digits_model.normalize.mean.view(-1)
    std = digits_model.normalize.std.view(-1)
    assert adv.min() >= float(mean.min()) - 1e-6
    assert adv.max() <= float((mean + std).max()) + 1e-6
    # ε is in normalised units: the pixel change from the clamped image is at most ε·std.
    clamped = ((x - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)).clamp(0, 1)
    clamped = clamped * std.view(1, -1, 1, 1) + mean.view(1, -1, 1, 1)
    assert float((adv - clamped).abs().max()) <= 8 / 255 * float(std.max()) + 1e-5


def test_next_mod_10_prior_is_refused_below_ten_classes(digits_model, batch):
    x, y = batch
    with pytest.raises(ValueError, match="at least 10 classes"):
        adversarial_prior(digits_model, x, y % 5, LEGACY_PRIOR, 5, torch.Generator())


def test_prior_hook_draws_only_from_its_generator(digits_model, batch):
    x, y = batch
    hook = prior_hook(PriorConfig(steps=2), 10)
    a = hook(digits_model, x[:16], y[:16], torch.Generator().manual_seed(4))
    b = hook(digits_model, x[:16], y[:16], torch.Generator().manual_seed(4))
    state = torch.get_rng_state()
    hook(digits_model, x[:16], y[:16], torch.Generator().manual_seed(5))
    assert torch.equal(a, b) and torch.equal(state, torch.get_rng_state())


def test_rome_distances_by_hand():
    real = torch.tensor([[1.0, 0.0, 2.0], [3.0, 0.0, 0.0]])  # mean (2, 0, 1)
    syn = torch.tensor([[0.0, 1.0, 1.0]])                   # mean (0, 1, 1): Δ = (−2, 1, 0)
    assert float(rome_distance(real, syn, "l2sq", 0.2)) == pytest.approx(0.2 * 5)
    assert float(rome_distance(real, syn, "tv2", 0.2)) == pytest.approx(0.2 * (0.5 * 3) ** 2)
    with pytest.raises(ValueError):
        rome_distance(real, syn, "l3", 0.2)


def test_variants_resolve_to_the_paper_and_to_the_reference_code():
    spec = get_method("rome")
    paper = spec.resolve_config("paper", {}).resolved()
    assert (paper["distance"], paper["robust_pretrained"], paper["accuracy_weighted_ce"]) == (
        "l2sq", True, False)
    assert (paper["prior"].space, paper["prior"].step_size, paper["prior"].target_policy) == (
        "pixel", 2 / 255, "next")
    faithful = spec.resolve_config("paper", {"variant": "faithful"}).resolved()
    assert (faithful["distance"], faithful["robust_pretrained"],
            faithful["accuracy_weighted_ce"]) == ("tv2", False, True)
    assert (faithful["prior"].space, faithful["prior"].step_size,
            faithful["prior"].target_policy) == ("normalised", LEGACY_STEP, "next-mod-10")
    with pytest.raises(ValueError, match="invalid configuration"):
        spec.resolve_config("smoke", {"variant": "mystery"})
    mode = spec.resolve_config("small", {"prior_targeted": False, "prior_random_start": False,
                                         "prior_target_policy": "random"}).resolved()["prior"]
    assert (mode.targeted, mode.random_start, mode.target_policy) == (False, False, "random")


def test_least_likely_prior_targets_the_lowest_clean_logit(digits_model, batch):
    x, y = batch
    logits = digits_model(x).detach().scatter(1, y.view(-1, 1), float("inf"))
    target = logits.argmin(1)
    cfg = PriorConfig(eps=0.3, step_size=0.05, steps=20, target_policy="least-likely")
    adv = adversarial_prior(digits_model, x, y, cfg, 10, torch.Generator().manual_seed(0))
    assert float((predict(digits_model, adv) == target).float().mean()) > 0.5


def test_fixed_matching_net_refuses_accuracy_weighting():
    with pytest.raises(ValueError, match="accuracy-weighted CE"):
        IDMVariant("x", matching_net=torch.nn.Linear(1, 1), accuracy_weighted_ce=True)


@pytest.mark.parametrize("overrides", [{"variant": "faithful", "robust_pretrained": True},
                                       {"accuracy_weighted_ce": True}])
def test_rpm_with_accuracy_weighting_is_refused_before_any_training(overrides, monkeypatch):
    def no_training(*args, **kwargs):
        raise AssertionError("the RPM was trained before the configuration was refused")

    rome_module = importlib.import_module("robustdd.distill.methods.rome")
    monkeypatch.setattr(rome_module, "adversarially_trained_model", no_training)
    with pytest.raises(ValueError, match=r"robust pretrained model .* accuracy-weighted CE"):
        get_method("rome").resolve_config("paper", overrides)
    with pytest.raises(ValueError, match=r"robust pretrained model .* accuracy-weighted CE"):
        robustdd.distill("rome", "digits", 1, profile="smoke", **overrides)


@pytest.mark.parametrize("overrides", [{}, {"variant": "faithful"},
                                       {"robust_pretrained": False},
                                       {"adversarial_perturbation": False, "alpha": 0.5}])
def test_rome_distils_and_evaluates_at_smoke(one_thread, digits_splits, overrides):
    train, test = digits_splits
    syn = robustdd.distill("rome", train, ipc=2, seed=0, profile="smoke", **overrides)
    assert syn.method == "rome" and syn.formation == "mosaic2x2" and len(syn) == 20
    info = syn.meta["rome"]
    assert info["variant"] == overrides.get("variant", "paper")
    assert info["adversarial_perturbation"] == overrides.get("adversarial_perturbation", True)
    assert (info["robust_model"] is not None) == info["robust_pretrained"]
    record = robustdd.evaluate(syn, profile="smoke", test=test, num_models=1, attacks=[])
    assert record["distilled"]["training_images"] == 80


def test_the_prior_changes_the_result(one_thread, digits_splits):
    train = digits_splits[0]
    on = robustdd.distill("rome", train, ipc=1, seed=0, profile="smoke")
    off = robustdd.distill("rome", train, ipc=1, seed=0, profile="smoke",
                           adversarial_perturbation=False)
    assert not torch.equal(on.images, off.images)


def test_the_pool_is_trained_on_pgd_examples_only_without_the_robust_model(one_thread,
                                                                          digits_splits):
    train = digits_splits[0]
    common = dict(ipc=1, seed=0, profile="smoke", robust_pretrained=False)
    adversarial = robustdd.distill("rome", train, **common)
    plain = robustdd.distill("rome", train, **common, adversarial_pool=False)
    assert adversarial.meta["rome"]["adversarial_pool"] is True
    assert plain.meta["rome"]["adversarial_pool"] is False
    assert not torch.equal(adversarial.images, plain.images)
    # With the robust model as f there is no pool to perturb, so the switch must be inert.
    with_rpm = robustdd.distill("rome", train, ipc=1, seed=0, profile="smoke")
    with_rpm_off = robustdd.distill("rome", train, ipc=1, seed=0, profile="smoke",
                                    adversarial_pool=False)
    assert with_rpm.meta["rome"]["adversarial_pool"] is False
    assert torch.equal(with_rpm.images, with_rpm_off.images)


def test_rome_resume_equals_uninterrupted(one_thread, digits_splits, tmp_path, monkeypatch):
    resumes_identically("rome", digits_splits[0], tmp_path, monkeypatch, iterations=7,
                        variant="faithful")


def test_cli_distills_rome_with_a_variant(one_thread, tmp_path):
    out = tmp_path / "rome"
    result = CliRunner().invoke(app, ["distill", "rome", "digits", "--ipc", "1", "--profile",
                                      "smoke", "--variant", "faithful", "--out", str(out),
                                      "--device", "cpu"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert DistilledSet.load(out).meta["rome"]["variant"] == "faithful"
    bad = CliRunner().invoke(app, ["distill", "dm", "digits", "--ipc", "1", "--profile",
                                   "smoke", "--variant", "faithful", "--out",
                                   str(tmp_path / "x"), "--device", "cpu"])
    assert bad.exit_code != 0 and "unknown setting(s) variant" in str(bad.exception)
