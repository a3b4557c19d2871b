"""The `beard-legacy` suite differs from the correct one exactly in the documented ways.

Legacy = BEARD/ROME's reference semantics (reference/rome-and-beard.md §1.6, §2.3): attacks on
normalised tensors with the [0, 1] clamp there, PGD step 2/225, targets (y + 1) mod 10,
torchattacks' DeepFool, 10-iteration AutoAttack, clean passes for targeted DeepFool/AutoAttack.
"""

from __future__ import annotations

import copy

import pytest
import torch
from model_wrappers import Shifted

from robustdd.attacks import AttackSpec, choose_targets, run_attack, suite
from robustdd.attacks.autoattack import _set_iterations
from robustdd.attacks.legacy import LEGACY_STEP, normalised_view
from robustdd.evaluate import evaluate
from robustdd.nn.train import accuracy

EPS = 8 / 255


@pytest.fixture(scope="module")
def model(digits_model):
    return digits_model


@pytest.fixture(scope="module")
def batch(digits_splits):
    _, test = digits_splits
    idx = torch.arange(64)
    return test.pixels(idx), test.labels[idx]


def legacy(name: str, **fields) -> AttackSpec:
    return AttackSpec(name=name, space="normalised", target_policy="next-mod-10", **fields)


def test_suite_is_beards_list_in_the_legacy_space():
    specs = suite("beard-legacy")
    labels = [s.label for s in specs]
    for name in ("fgsm", "pgd", "pgd-l2", "cw", "deepfool", "autoattack"):
        assert f"legacy-{name}" in labels and f"legacy-{name}-T" in labels
    assert len(specs) == 12
    assert all(s.space == "normalised" and s.target_policy == "next-mod-10" for s in specs)
    pgd = next(s for s in specs if s.name == "pgd")
    assert pgd.step_size == pytest.approx(2 / 225) and pgd.eps == pytest.approx(EPS)
    assert next(s for s in specs if s.name == "deepfool").variant == "torchattacks"
    assert next(s for s in specs if s.name == "autoattack").steps == 10
    # the correct suite keeps pixel space and its own step
    correct = {s.label: s for s in suite("beard")}
    assert correct["pgd"].space == "pixel" and correct["pgd"].step_size == pytest.approx(2 / 255)


def test_legacy_pgd_equals_torchattacks_on_normalised_tensors(model, batch):
    """The reference call: torchattacks.PGD(eps 8/255, alpha 2/225, 10 steps, no random start)
    on the raw network with normalised inputs, targets (y + 1) mod 10."""
    pytest.importorskip("torchattacks", reason="test-only oracle: pip install --no-deps "
                        "torchattacks==3.5.1 (the Makefile does)")
    from torchattacks.attacks.pgd import PGD

    x, y = batch
    view = normalised_view(model)
    z = view.to_normalised(x)
    oracle = PGD(copy.deepcopy(view.net), eps=EPS, alpha=LEGACY_STEP, steps=10,
                 random_start=False)
    oracle.set_mode_targeted_by_label(quiet=True)
    expected_z = oracle(z, (y + 1) % 10)
    result = run_attack(model, x, y, legacy("pgd", eps=EPS, steps=10, step_size=LEGACY_STEP,
                                            targeted=True))
    assert torch.equal(result.targets, (y + 1) % 10)
    assert (view.to_normalised(result.adversarial) - expected_z).abs().max() < 1e-5


def test_legacy_cw_equals_torchattacks_on_normalised_tensors(model, batch):
    """torchattacks.CW on the raw network with normalised inputs: pixels outside [0, 1] there
    start (and stay) at the box edge, the L2 term measures from the unclipped input. Logits are
    shifted by +50 for torchattacks, whose zero-masked max needs positive logits."""
    pytest.importorskip("torchattacks", reason="test-only oracle: pip install --no-deps "
                        "torchattacks==3.5.1 (the Makefile does)")
    from torchattacks.attacks.cw import CW

    x, y = batch[0][:32], batch[1][:32]
    view = normalised_view(model)
    z = view.to_normalised(x)
    shifted = Shifted(copy.deepcopy(view.net))
    moved = {}
    for targeted in (False, True):
        oracle = CW(shifted, c=1.0, kappa=0, steps=30, lr=0.01)
        goal = (y + 1) % 10 if targeted else y
        if targeted:
            oracle.set_mode_targeted_by_label(quiet=True)
        expected_z = oracle(z, goal)
        result = run_attack(model, x, y, legacy("cw", steps=30, targeted=targeted))
        got_z = view.to_normalised(result.adversarial)
        assert (got_z - expected_z).abs().max() < 1e-4
        moved[targeted] = (got_z - z).abs().max()
    # untargeted, some examples succeed and their pixels outside [0, 1] (normalised units) jump
    # to the edge; targeted CW finds no example in 30 steps here and returns the inputs
    assert moved[False] > 0.5


def test_legacy_clamp_lives_in_normalised_space(model, batch):
    """Legacy adversarial pixels sit in [mean, mean + std] per channel and within ε (normalised
    units) of the clipped normalised clean image; correct ones within ε of the pixels."""
    x, y = batch
    view = normalised_view(model)
    legacy_adv = run_attack(model, x, y, legacy("pgd", eps=EPS, steps=10,
                                                step_size=LEGACY_STEP)).adversarial
    lo, hi = view.mean, view.mean + view.std
    assert bool(((legacy_adv >= lo - 1e-6) & (legacy_adv <= hi + 1e-6)).all())
    z_gap = view.to_normalised(legacy_adv) - view.to_normalised(x).clamp(0, 1)
    assert z_gap.abs().max() <= EPS + 1e-5
    correct_adv = run_attack(model, x, y, AttackSpec(name="pgd", eps=EPS)).adversarial
    assert (correct_adv - x).abs().max() <= EPS + 1e-6
    # digits have many 0-valued pixels, far below the mean: legacy moves them, correct does not
    assert (legacy_adv - x).abs().max() > 4 * EPS


def test_next_mod_10_is_the_reference_rule_and_refuses_fewer_classes():
    y = torch.tensor([0, 8, 9, 19, 99])
    assert choose_targets(y, 100, "next-mod-10").tolist() == [1, 9, 0, 0, 0]
    assert choose_targets(y, 100, "next").tolist() == [1, 9, 10, 20, 0]
    with pytest.raises(ValueError, match="at least 10 classes"):
        choose_targets(torch.tensor([0, 1]), 5, "next-mod-10")


def test_targeted_deepfool_and_autoattack_are_clean_passes_only_in_legacy(model, batch):
    x, y = batch
    for name in ("deepfool", "autoattack"):
        result = run_attack(model, x, y, legacy(name, targeted=True))
        assert torch.equal(result.adversarial, x)
        assert "clean images" in result.note
        with pytest.raises(ValueError, match="no targeted form"):
            run_attack(model, x, y, AttackSpec(name=name, targeted=True))


def test_legacy_deepfool_runs_torchattacks_variant_in_normalised_space(model, batch):
    x, y = batch[0][:16], batch[1][:16]
    view = normalised_view(model)
    result = run_attack(model, x, y, legacy("deepfool", variant="torchattacks"))
    lo, hi = view.mean, view.mean + view.std
    adv = result.adversarial
    moved = (adv - x).flatten(1).abs().amax(1) > 1e-6  # misclassified ones come back unchanged
    assert moved.any()
    assert bool(((adv[moved] >= lo - 1e-6) & (adv[moved] <= hi + 1e-6)).all())
    assert accuracy(model, adv, y) < accuracy(model, x, y)
    with pytest.raises(ValueError, match="no variant"):
        run_attack(model, x, y, AttackSpec(name="pgd", variant="torchattacks"))


def test_legacy_autoattack_uses_ten_iterations():
    from pyautoattack import AutoAttack

    runner = AutoAttack(torch.nn.Linear(4, 3), norm="Linf", eps=EPS, version="standard")
    _set_iterations(runner, 10)
    assert runner.apgd.n_iter == runner.apgd_targeted.n_iter == runner.fab.n_iter == 10
    assert runner.apgd.n_iter_2 == 2 and runner.apgd.size_decr == 1


def test_legacy_needs_a_model_that_normalises_internally(batch):
    x, y = batch
    bare = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(x[0].numel(), 10))
    with pytest.raises(ValueError, match="normalises its input internally"):
        run_attack(bare, x, y, legacy("fgsm"))


def test_evaluation_record_marks_legacy_clean_pass(one_thread, digits_splits):
    train, test = digits_splits
    from robustdd import distill

    dset = distill("random", train, ipc=2, profile="smoke")
    specs = [legacy("pgd", eps=EPS, step_size=LEGACY_STEP), legacy("deepfool", targeted=True)]
    record = evaluate(dset, profile="smoke", test=test, attacks=specs, device="cpu")
    model = record["models"][0]
    assert "clean images" in model["attacks"]["legacy-deepfool-T"]["note"]
    assert model["attacks"]["legacy-deepfool-T"]["clean_pass"] is True
    assert "clean_pass" not in model["attacks"]["legacy-pgd"]
    # BEARD's metric code drops the clean passes; so does ours (no targeted set is left here)
    from robustdd.metrics import compute_metrics

    metrics = compute_metrics(record)
    assert metrics["source"]["dropped_clean_passes"] == ["IPC 2 legacy-deepfool-T"]
    assert "targeted" not in metrics
    assert model["attacks"]["legacy-deepfool-T"]["accuracy"] == pytest.approx(
        model["attack_subset_clean_accuracy"], abs=1e-9)
    assert {a["space"] for a in record["attacks"]} == {"normalised"}
