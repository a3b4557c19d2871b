"""Presets: every method resolves at every profile, and the `paper` profile gives the reference
settings (methods.md §2–8, §11.2) for CIFAR-10, CIFAR-100 and Fashion-MNIST at IPC 1/10/50."""

from __future__ import annotations

import json

import pytest

from robustdd.distill import get_method
from robustdd.distill.base import METHODS
from robustdd.distill.methods.bacon import BACON_TABLE
from robustdd.distill.methods.idm import IDM_TABLE, schedule_for
from robustdd.distill.methods.mtt import resolve
from robustdd.profiles import PROFILES

ALL = ["random", "herding", "kcenter", "dc", "dsa", "dm", "idm", "bacon", "mtt", "sre2l",
       "rome", "guard-sre2l", "guard-dc", "rdd-dc", "rdd-idm"]


def test_every_classic_method_is_registered():
    get_method("dm")  # imports the built-in methods
    assert set(ALL) <= set(METHODS)


@pytest.mark.parametrize("method", ALL)
@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_presets_resolve_at_every_profile(method, profile):
    spec = get_method(method)
    config = spec.resolve_config(profile, {})
    json.dumps(config.model_dump())  # validated and JSON-able (it is stored with the set)
    assert set(spec.presets.get(profile, {})) <= set(config.model_dump())


def test_paper_presets_are_the_reference_settings():
    paper = {m: get_method(m).resolve_config("paper", {}) for m in ALL}
    assert (paper["dc"].iterations, paper["dc"].batch_real, paper["dc"].lr_img,
            paper["dc"].init) == (1000, 256, 0.1, "noise")
    assert (paper["dsa"].init, paper["dsa"].dsa) == ("real", True)
    assert (paper["dm"].iterations, paper["dm"].batch_real, paper["dm"].lr_img) == (20000, 256,
                                                                                   1.0)
    assert (paper["idm"].iterations, paper["idm"].lr_img) == (20000, 0.2)
    assert (paper["mtt"].iterations, paper["mtt"].num_experts,
            paper["mtt"].expert_train_epochs) == (5000, 100, 50)
    s = paper["sre2l"]
    assert (s.teacher_arch, s.teacher_epochs, s.teacher_train_per_class, s.iterations, s.lr,
            s.r_bn, s.first_bn_multiplier, s.jitter) == ("resnet18bn", 200, None, 1000, 0.25,
                                                         0.01, 10.0, 4)
    assert paper["herding"].train_epochs == 40


@pytest.mark.parametrize("ipc", [1, 10, 50])
def test_gradient_matching_loops_follow_get_loops_at_paper(ipc):
    want = {1: (1, 1), 10: (10, 50), 50: (50, 10)}[ipc]
    for method in ("dc", "dsa"):
        assert get_method(method).resolve_config("paper", {}).loops(ipc) == want
    assert get_method("dc").resolve_config("small", {}).loops(ipc) == (min(want[0], 3),
                                                                      min(want[1], 5))


def test_idm_and_bacon_tables_per_dataset_and_ipc():
    assert schedule_for(IDM_TABLE, "cifar100", 10)[0].ce_weight == 0.1
    assert schedule_for(IDM_TABLE, "cifar100", 10)[0].model_train_steps == 50
    assert schedule_for(IDM_TABLE, "cifar10", 1)[0].batch_real == 5000
    row, note = schedule_for(IDM_TABLE, "fashion-mnist", 50)
    assert row == IDM_TABLE["cifar10"][50] and "CIFAR-10's used" in note
    assert schedule_for(BACON_TABLE, "cifar100", 50)[0].model_train_steps == 50


def test_mtt_table_per_dataset_and_ipc():
    cfg = get_method("mtt").resolve_config("paper", {})
    c10 = resolve(cfg, "cifar10", 10)
    assert (c10["syn_steps"], c10["lr_img"], c10["lr_teacher"], c10["zca"]) == (30, 100.0,
                                                                                0.001, True)
    c100 = resolve(cfg, "cifar100", 50)
    assert (c100["syn_steps"], c100["batch_syn"], c100["zca"]) == (80, 125, True)
    fm = resolve(cfg, "fashion-mnist", 1)
    assert fm["table_row"] == "generic/ipc1" and fm["zca"] is False


def test_small_gradient_matching_starts_from_real_images():
    """Ten iterations cannot turn noise into images (docs/methods.md, dc)."""
    for method in ("dc", "dsa", "guard-dc", "rdd-dc"):
        assert get_method(method).resolve_config("small", {}).init == "real"
    assert get_method("dc").resolve_config("small", {"init": "noise"}).init == "noise"


def test_robust_methods_default_to_the_issue_and_reference_settings():
    """ROME (reference/rome-and-beard.md §1), GUARD (methods.md §9) and RDD (§10) defaults."""
    rome = get_method("rome").resolve_config("paper", {})
    prior = rome.resolved()["prior"]
    assert (rome.variant, rome.alpha, rome.rpm_method, rome.rpm_steps) == ("paper", 0.2, "pgd", 7)
    assert (prior.eps, prior.steps, prior.step_size) == (8 / 255, 10, 2 / 255)
    assert (prior.targeted, prior.random_start, prior.target_policy) == (True, True, "next")
    assert rome.resolved()["robust_pretrained"] and rome.adversarial_perturbation
    faithful = get_method("rome").resolve_config("paper", {"variant": "faithful"}).resolved()
    assert (faithful["distance"], faithful["accuracy_weighted_ce"],
            faithful["prior"].step_size, faithful["prior"].target_policy) == (
                "tv2", True, 2 / 225, "next-mod-10")
    guard = get_method("guard-sre2l").resolve_config("paper", {})
    assert (guard.variant, guard.curvature_weight, guard.curvature_h) == ("paper", 100.0, 3.0)
    for name in ("rdd-dc", "rdd-idm"):
        rdd = get_method(name).resolve_config("paper", {})
        assert (rdd.alpha, rdd.cvar_convention, rdd.centres_per_class) == (0.8, "tail", 10)
    rdd_dc = get_method("rdd-dc").resolve_config("paper", {})
    assert (rdd_dc.outer_loop, rdd_dc.inner_loop, rdd_dc.variant) == (2, 2, "paper")
