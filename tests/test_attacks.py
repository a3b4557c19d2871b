"""White-box attacks (robustdd.attacks) on a small ConvNet trained on the embedded digits data.

Checks the ε-ball and pixel-range constraints, that ε is in pixel units although the model
normalises internally (digits std ≈ 0.376), attack strength, targeted success, target policies,
the registry's refusals, model-state hygiene, determinism and agreement with a plain
loop-based reference implementation of FGSM and PGD-L∞.
"""

from __future__ import annotations

import copy
from collections import Counter

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robustdd.attacks import (
    TARGET_POLICIES,
    AttackSpec,
    attack,
    attack_info,
    choose_targets,
    eval_mode,
    fgsm,
    pgd_linf,
    registry,
    run_attack,
)
from robustdd.attacks.registry import AttackInfo
from robustdd.errors import UnknownNameError
from robustdd.nn import build_model
from robustdd.nn.train import accuracy, predict

TOL = 1e-6
NUM_CLASSES = 10


@pytest.fixture(scope="module")
def digits(digits_splits):
    return digits_splits


@pytest.fixture(scope="module")
def model(digits_model):
    return digits_model


@pytest.fixture(scope="module")
def batch(digits):
    """150 test images (pixels in [0, 1]) and their labels."""
    _, test = digits
    idx = torch.arange(150)
    return test.pixels(idx), test.labels[idx]


@pytest.fixture(scope="module")
def small(batch):
    x, y = batch
    return x[:32], y[:32]


def next_targets(y):
    return (y + 1) % NUM_CLASSES


# ---------------------------------------------------------------------------------------------
# an independent, deliberately plain reference implementation


def reference_fgsm(net, x0, goal, eps, targeted=False):
    x = x0.clone().requires_grad_(True)
    loss = F.cross_entropy(net(x), goal, reduction="sum")
    loss.backward()
    direction = -x.grad.sign() if targeted else x.grad.sign()
    return (x0 + eps * direction).clamp(0.0, 1.0)


def reference_pgd(net, x0, goal, eps, steps, step_size, targeted=False, start=None):
    x = x0.clone() if start is None else start.clone()
    for _ in range(steps):
        x = x.detach().requires_grad_(True)
        loss = F.cross_entropy(net(x), goal, reduction="sum")
        loss.backward()
        direction = -x.grad.sign() if targeted else x.grad.sign()
        x = x.detach() + step_size * direction
        x = torch.clamp(x, min=x0 - eps, max=x0 + eps)  # back into the L∞ ball ...
        x = x.clamp(0.0, 1.0)                           # ... and into the pixel range
    return x.detach()


def reference_random_start(x0, eps, seed):
    noise = torch.rand(x0.shape, generator=torch.Generator().manual_seed(seed))
    return (x0 + (2 * noise - 1) * eps).clamp(0.0, 1.0)


# ---------------------------------------------------------------------------------------------
# the model under attack


def test_trained_digits_model_is_accurate(model, digits):
    _, test = digits
    assert accuracy(model, test.pixels(), test.labels) > 85.0


def test_model_normalises_with_digits_statistics(model, digits):
    """The premise of the pixel-unit tests: the model divides by std ≈ 0.376 internally."""
    train, _ = digits
    std = float(model.normalize.std.flatten()[0])
    assert std == pytest.approx(train.std[0]) and std == pytest.approx(0.376, abs=0.01)


# ---------------------------------------------------------------------------------------------
# constraints: the ε-ball (in pixel units) and [0, 1]


@pytest.mark.parametrize("eps", [0.1, 0.5])
@pytest.mark.parametrize("targeted", [False, True], ids=["untargeted", "targeted"])
@pytest.mark.parametrize(("name", "random_start"), [
    ("fgsm", False), ("pgd", False), ("pgd", True)], ids=["fgsm", "pgd", "pgd-random-start"])
def test_adversarial_stays_in_ball_and_pixel_range(model, small, name, random_start, targeted,
                                                   eps):
    x, y = small
    adv = attack(model, x, y, name, eps=eps, steps=5, step_size=eps / 2, targeted=targeted,
                 random_start=random_start, seed=1)
    assert adv.shape == x.shape and adv.dtype == x.dtype
    assert (adv - x).abs().max() <= eps + TOL
    assert adv.min() >= 0.0 and adv.max() <= 1.0
    assert not torch.equal(adv, x)
    assert not adv.requires_grad


def test_pgd_eps_is_in_pixel_units(model, small):
    """With enough steps PGD uses the whole budget: max |δ| is ε itself (not ε/std ≈ 2.7ε, nor
    ε·std ≈ 0.38ε), and almost every pixel ends on the ball's surface or on a [0, 1] bound."""
    x, y = small
    eps = 0.1
    adv = attack(model, x, y, "pgd", eps=eps, steps=20, step_size=0.02)
    delta = (adv - x).abs()
    assert delta.max() == pytest.approx(eps, abs=TOL)
    on_surface = delta >= eps - TOL
    on_bound = (adv == 0.0) | (adv == 1.0)
    assert (on_surface | on_bound).float().mean() > 0.9
    assert on_surface.float().mean() > 0.3
    # and the digits really have pixels where the full ε is reachable in both directions
    assert ((x >= eps) & (x <= 1 - eps)).float().mean() > 0.2


def test_fgsm_moves_every_free_pixel_by_exactly_eps(model, small):
    x, y = small
    eps = 0.1
    adv = attack(model, x, y, "fgsm", eps=eps)
    delta = (adv - x).abs()
    assert delta.max() == pytest.approx(eps, abs=TOL)
    exactly_eps = (delta - eps).abs() <= TOL
    on_bound = (adv == 0.0) | (adv == 1.0)
    assert (exactly_eps | on_bound).float().mean() > 0.99


# ---------------------------------------------------------------------------------------------
# strength


def test_pgd_lowers_accuracy_substantially(model, batch):
    x, y = batch
    clean = accuracy(model, x, y)
    pgd_acc = accuracy(model, attack(model, x, y, "pgd", eps=0.1, steps=10, step_size=0.025), y)
    fgsm_acc = accuracy(model, attack(model, x, y, "fgsm", eps=0.1), y)
    assert clean > 85.0
    assert pgd_acc <= clean - 30.0
    assert fgsm_acc < clean - 10.0
    assert pgd_acc <= fgsm_acc + 2.0  # the iterative attack is at least as strong


@pytest.mark.parametrize(("name", "random_start", "step_size"), [
    ("fgsm", False, 2 / 255), ("pgd", False, 2 / 255), ("pgd", True, 2 / 255),
    ("pgd", True, None)])
@pytest.mark.parametrize("targeted", [False, True], ids=["untargeted", "targeted"])
def test_eps_zero_returns_clean_images(model, small, name, random_start, step_size, targeted):
    x, y = small
    adv = attack(model, x, y, name, eps=0.0, steps=3, step_size=step_size, targeted=targeted,
                 random_start=random_start)
    assert torch.equal(adv, x)
    assert accuracy(model, adv, y) == accuracy(model, x, y)


def test_targeted_pgd_reaches_the_next_class(model, batch):
    x, y = batch[0][:100], batch[1][:100]
    targets = next_targets(y)
    chance = 1 / (NUM_CLASSES - 1)
    assert (predict(model, x) == targets).float().mean() < chance
    adv = attack(model, x, y, "pgd", eps=0.25, steps=20, step_size=0.25 / 8, targeted=True,
                 target_policy="next")
    hit = (predict(model, adv) == targets).float().mean()
    assert hit >= 0.5
    assert hit > 4 * chance


def test_targeted_pgd_beats_chance_at_smaller_eps(model, batch):
    x, y = batch[0][:100], batch[1][:100]
    targets = next_targets(y)
    adv = attack(model, x, y, "pgd", eps=0.15, steps=20, step_size=0.15 / 8, targeted=True)
    hit = (predict(model, adv) == targets).float().mean()
    assert hit > 1.5 / (NUM_CLASSES - 1)  # ~2.3× chance here; ε = 0.25 above reaches ~80%


def test_targeted_pgd_raises_target_probability_more_than_untargeted(model, small):
    x, y = small
    targets = next_targets(y)
    kw = {"eps": 0.1, "steps": 10, "step_size": 0.02}
    targeted_adv = attack(model, x, y, "pgd", targeted=True, **kw)
    untargeted_adv = attack(model, x, y, "pgd", **kw)

    def target_logprob(images):
        with torch.no_grad():
            return F.log_softmax(model(images), 1).gather(1, targets.view(-1, 1)).mean()

    assert target_logprob(targeted_adv) > target_logprob(x) + 1.0
    assert target_logprob(targeted_adv) > target_logprob(untargeted_adv)


# ---------------------------------------------------------------------------------------------
# target policies


@pytest.mark.parametrize("num_classes", [2, 3, 10, 100])
@pytest.mark.parametrize("policy", TARGET_POLICIES)
def test_choose_targets_never_returns_the_true_label(policy, num_classes):
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(num_classes).repeat(20)
    logits = torch.randn(labels.numel(), num_classes, generator=g)
    # make the true class the least likely one for half the rows: least-likely must skip it
    half = labels.numel() // 2
    logits[torch.arange(half), labels[:half]] = -1e4
    targets = choose_targets(labels, num_classes, policy, logits=logits, generator=g)
    assert targets.shape == labels.shape and targets.dtype == torch.int64
    assert (targets != labels).all()
    assert targets.min() >= 0 and targets.max() < num_classes


def test_next_policy_is_label_plus_one_mod_c():
    labels = torch.tensor([0, 1, 5, 8, 9])
    assert choose_targets(labels, 10, "next").tolist() == [1, 2, 6, 9, 0]
    assert choose_targets(torch.tensor([0, 1]), 2, "next").tolist() == [1, 0]
    # with the real C, not a hard-coded 10 (BEARD's bug)
    assert choose_targets(torch.tensor([9, 99]), 100, "next").tolist() == [10, 0]


def test_random_policy_is_reproducible_with_a_seeded_generator():
    labels = torch.randint(0, 10, (500,), generator=torch.Generator().manual_seed(1))

    def draw(seed):
        return choose_targets(labels, 10, "random", generator=torch.Generator().manual_seed(seed))

    assert torch.equal(draw(3), draw(3))
    assert not torch.equal(draw(3), draw(4))


def test_random_policy_is_uniform_over_the_other_classes():
    labels = torch.full((9000,), 3)
    targets = choose_targets(labels, 10, "random", generator=torch.Generator().manual_seed(0))
    counts = Counter(targets.tolist())
    assert counts[3] == 0
    assert set(counts) == set(range(10)) - {3}
    for c in counts:
        assert 850 <= counts[c] <= 1150  # expected 1000 each (±~5 standard deviations)


def test_random_policy_needs_a_generator():
    with pytest.raises(ValueError):
        choose_targets(torch.tensor([0, 1]), 10, "random")


def test_least_likely_picks_the_lowest_logit_among_other_classes():
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(200, 10, generator=g)
    labels = torch.randint(0, 10, (200,), generator=g)
    logits[:50] = logits[:50] - 100 * F.one_hot(labels[:50], 10)  # true class lowest
    original = logits.clone()
    targets = choose_targets(labels, 10, "least-likely", logits=logits)
    for i in range(200):
        others = [c for c in range(10) if c != int(labels[i])]
        expected = min(others, key=lambda c: float(logits[i, c]))
        assert int(targets[i]) == expected
    assert torch.equal(logits, original)  # the caller's logits are not modified


def test_least_likely_needs_logits():
    with pytest.raises(ValueError):
        choose_targets(torch.tensor([0, 1]), 10, "least-likely")


def test_unknown_target_policy_raises():
    with pytest.raises(UnknownNameError) as info:
        choose_targets(torch.tensor([0, 1]), 10, "most-likely")
    for policy in TARGET_POLICIES:
        assert policy in str(info.value)


@pytest.mark.parametrize("num_classes", [1, 0])
@pytest.mark.parametrize("policy", TARGET_POLICIES)
def test_fewer_than_two_classes_raises(policy, num_classes):
    with pytest.raises(ValueError):
        choose_targets(torch.tensor([0, 0]), num_classes, policy, logits=torch.zeros(2, 1),
                       generator=torch.Generator().manual_seed(0))


# ---------------------------------------------------------------------------------------------
# the registry refuses what it cannot do


def test_unknown_attack_raises_and_lists_known_attacks(model, small):
    x, y = small
    with pytest.raises(UnknownNameError) as info:
        attack(model, x, y, "deepfool-9000")
    assert "fgsm" in str(info.value) and "pgd" in str(info.value)
    assert {"fgsm", "pgd"} <= set(info.value.known)
    with pytest.raises(UnknownNameError):
        attack_info("PGD-linf")


def test_targeted_request_for_untargeted_only_attack_raises(model, small, monkeypatch):
    x, y = small
    calls = []

    def runner(net, images, goal, spec, generator):
        calls.append(spec)
        return images.clone(), 1

    info = AttackInfo("untargeted-only", ("linf",), False, "test attack", runner)
    monkeypatch.setitem(registry.ATTACKS, "untargeted-only", info)
    with pytest.raises(ValueError, match="targeted"):
        attack(model, x, y, "untargeted-only", targeted=True)
    with pytest.raises(ValueError, match="targeted"):
        run_attack(model, x, y, AttackSpec(name="untargeted-only", targeted=True))
    assert calls == []
    # sanity: the untargeted form does run (so the refusal above is what stopped the call)
    run_attack(model, x, y, AttackSpec(name="untargeted-only"))
    assert len(calls) == 1


@pytest.mark.parametrize("name", ["fgsm", "pgd"])
def test_l2_spec_for_linf_attacks_raises(model, small, name):
    x, y = small
    with pytest.raises(ValueError, match="l2"):
        run_attack(model, x, y, AttackSpec(name=name, norm="l2", eps=0.5))


@pytest.mark.parametrize("name", ["fgsm", "pgd"])
@pytest.mark.parametrize("shift", [-0.5, 0.5])
def test_images_outside_pixel_range_are_refused(model, small, name, shift):
    x, y = small
    bad = x.clone()
    bad[0, 0, 0, 0] = (1.0 + shift) if shift > 0 else shift
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        attack(model, bad, y, name)
    # normalised-space inputs (the BEARD/ROME mistake) are refused too
    normalised = (x - model.normalize.mean) / model.normalize.std
    with pytest.raises(ValueError):
        attack(model, normalised, y, name)


def test_attack_spec_rejects_negative_budgets():
    with pytest.raises(ValueError):
        AttackSpec(name="pgd", eps=-0.1)
    with pytest.raises(ValueError):
        AttackSpec(name="pgd", steps=-1)
    with pytest.raises(ValueError):
        AttackSpec(name="pgd", bogus=1)


# ---------------------------------------------------------------------------------------------
# model state: eval mode during the attack, everything restored after


class ModeRecorder(nn.Module):
    """Wraps a model and records its own and the inner model's training flag at every forward."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner
        self.modes = []

    def forward(self, x):
        self.modes.append((self.training, self.inner.training))
        return self.inner(x)


@pytest.mark.parametrize("spec", [
    AttackSpec(name="fgsm", eps=0.1),
    AttackSpec(name="pgd", eps=0.1, steps=3, random_start=True),
    AttackSpec(name="pgd", eps=0.1, steps=3, targeted=True, target_policy="least-likely"),
    AttackSpec(name="fgsm", eps=0.1, targeted=True, target_policy="random"),
], ids=["fgsm", "pgd", "pgd-T-least-likely", "fgsm-T-random"])
def test_attack_runs_in_eval_mode_and_restores_model_state(model, small, spec):
    x, y = small
    wrapper = ModeRecorder(copy.deepcopy(model))
    wrapper.train()
    frozen = wrapper.inner.net.classifier.bias
    frozen.requires_grad_(False)  # a mixed requires_grad pattern must come back as it was
    flags = [p.requires_grad for p in wrapper.parameters()]
    before = {k: v.clone() for k, v in wrapper.state_dict().items()}

    result = run_attack(wrapper, x, y, spec)

    assert wrapper.modes, "the attack never called the model"
    assert all(not outer and not inner for outer, inner in wrapper.modes)
    assert wrapper.training and wrapper.inner.training
    assert all(m.training for m in wrapper.modules())
    assert [p.requires_grad for p in wrapper.parameters()] == flags
    assert not frozen.requires_grad
    after = wrapper.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None for p in wrapper.parameters())
    assert (result.adversarial - x).abs().max() <= spec.eps + TOL


def test_eval_mode_context_restores_on_error(model):
    net = copy.deepcopy(model).train()
    with pytest.raises(RuntimeError), eval_mode(net):
        assert not net.training
        assert not any(p.requires_grad for p in net.parameters())
        raise RuntimeError("boom")
    assert net.training
    assert all(p.requires_grad for p in net.parameters())


def test_attack_leaves_the_inputs_untouched(model, small):
    x, y = small
    x_before, y_before = x.clone(), y.clone()
    attack(model, x, y, "pgd", eps=0.1, steps=2, random_start=True)
    assert torch.equal(x, x_before) and torch.equal(y, y_before)
    assert not x.requires_grad and x.grad is None


def test_attack_works_on_a_fully_frozen_model(model, small):
    x, y = small
    net = copy.deepcopy(model)
    net.requires_grad_(False)
    adv = attack(net, x, y, "pgd", eps=0.1, steps=3, step_size=0.05)
    assert not torch.equal(adv, x)
    assert not any(p.requires_grad for p in net.parameters())


# ---------------------------------------------------------------------------------------------
# determinism


def test_random_start_is_deterministic_per_seed(model, small):
    x, y = small
    kw = {"eps": 0.1, "steps": 3, "step_size": 0.02, "random_start": True}
    a = attack(model, x, y, "pgd", seed=5, **kw)
    b = attack(model, x, y, "pgd", seed=5, **kw)
    c = attack(model, x, y, "pgd", seed=6, **kw)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    # without a random start the seed is irrelevant
    kw["random_start"] = False
    assert torch.equal(attack(model, x, y, "pgd", seed=5, **kw),
                       attack(model, x, y, "pgd", seed=6, **kw))


def test_random_start_uses_its_own_generator_not_the_global_rng(model, small):
    x, y = small
    kw = {"eps": 0.1, "steps": 0, "random_start": True, "seed": 2}
    torch.manual_seed(0)
    state = torch.get_rng_state()
    a = attack(model, x, y, "pgd", **kw)
    assert torch.equal(torch.get_rng_state(), state)
    torch.rand(1000)  # moving the global RNG does not change the attack
    assert torch.equal(attack(model, x, y, "pgd", **kw), a)
    # zero steps returns the random start itself: inside the ball, away from x
    assert not torch.equal(a, x) and (a - x).abs().max() <= 0.1 + TOL


def test_random_target_policy_is_deterministic_per_seed(model, small):
    x, y = small

    def targets(seed):
        spec = AttackSpec(name="fgsm", targeted=True, target_policy="random", seed=seed)
        return run_attack(model, x, y, spec).targets

    assert torch.equal(targets(1), targets(1))
    assert not torch.equal(targets(1), targets(2))


# ---------------------------------------------------------------------------------------------
# what run_attack reports


def test_run_attack_reports_cost_and_targets(model, small):
    x, y = small
    r = run_attack(model, x, y, AttackSpec(name="fgsm", eps=0.1))
    assert r.gradients_per_example == 1 and r.seconds >= 0 and r.targets is None

    r = run_attack(model, x, y, AttackSpec(name="pgd", eps=0.1, steps=7))
    assert r.gradients_per_example == 7 and r.seconds >= 0 and r.targets is None

    r = run_attack(model, x, y, AttackSpec(name="pgd", eps=0.1, steps=4, targeted=True))
    assert r.gradients_per_example == 4 and r.seconds >= 0
    assert torch.equal(r.targets, next_targets(y))

    r = run_attack(model, x, y, AttackSpec(name="fgsm", eps=0.1, targeted=True,
                                           target_policy="least-likely"))
    with torch.no_grad():
        masked = model(x).scatter(1, y.view(-1, 1), float("inf"))
    assert torch.equal(r.targets, masked.argmin(1))
    assert (r.targets != y).all()


def test_run_attack_uses_given_num_classes_for_targets(model, small):
    x, y = small
    spec = AttackSpec(name="fgsm", targeted=True, target_policy="next")
    r = run_attack(model, x, y, spec, num_classes=NUM_CLASSES)
    assert torch.equal(r.targets, next_targets(y))
    assert r.targets.max() < NUM_CLASSES


def test_attack_helper_matches_run_attack(model, small):
    x, y = small
    spec = AttackSpec(name="pgd", eps=0.1, steps=3, step_size=0.03, targeted=True,
                      target_policy="random", random_start=True, seed=9)
    via_helper = attack(model, x, y, "pgd", eps=0.1, steps=3, step_size=0.03, targeted=True,
                        target_policy="random", random_start=True, seed=9)
    assert torch.equal(via_helper, run_attack(model, x, y, spec).adversarial)


# ---------------------------------------------------------------------------------------------
# agreement with the reference implementation


@pytest.mark.parametrize("targeted", [False, True], ids=["untargeted", "targeted"])
def test_fgsm_matches_reference(model, batch, targeted):
    x, y = batch[0][:40], batch[1][:40]
    goal = next_targets(y) if targeted else y
    expected = reference_fgsm(model, x, goal, 0.1, targeted)
    torch.testing.assert_close(fgsm(model, x, goal, eps=0.1, targeted=targeted), expected,
                               rtol=0, atol=TOL)
    got = attack(model, x, y, "fgsm", eps=0.1, targeted=targeted)
    torch.testing.assert_close(got, expected, rtol=0, atol=TOL)


@pytest.mark.parametrize("targeted", [False, True], ids=["untargeted", "targeted"])
def test_pgd_matches_reference(model, batch, targeted):
    x, y = batch[0][:40], batch[1][:40]
    goal = next_targets(y) if targeted else y
    eps, steps, step = 0.1, 8, 0.02
    expected = reference_pgd(model, x, goal, eps, steps, step, targeted)
    got = pgd_linf(model, x, goal, eps=eps, steps=steps, step_size=step, targeted=targeted)
    torch.testing.assert_close(got, expected, rtol=0, atol=TOL)
    got = attack(model, x, y, "pgd", eps=eps, steps=steps, step_size=step, targeted=targeted)
    torch.testing.assert_close(got, expected, rtol=0, atol=TOL)


def test_pgd_with_random_start_matches_reference(model, batch):
    x, y = batch[0][:40], batch[1][:40]
    eps, steps, step, seed = 0.1, 5, 0.02, 11
    start = reference_random_start(x, eps, seed)
    expected = reference_pgd(model, x, y, eps, steps, step, start=start)
    got = attack(model, x, y, "pgd", eps=eps, steps=steps, step_size=step, random_start=True,
                 seed=seed)
    torch.testing.assert_close(got, expected, rtol=0, atol=TOL)
    got = pgd_linf(model, x, y, eps=eps, steps=steps, step_size=step, random_start=True,
                   generator=torch.Generator().manual_seed(seed))
    torch.testing.assert_close(got, expected, rtol=0, atol=TOL)


def test_pgd_default_step_size_is_madry_rule(model, batch):
    """``step_size=None`` means 2.5·ε/steps (Madry et al.)."""
    x, y = batch[0][:40], batch[1][:40]
    eps, steps = 0.1, 6
    expected = reference_pgd(model, x, y, eps, steps, 2.5 * eps / steps)
    got = run_attack(model, x, y, AttackSpec(name="pgd", eps=eps, steps=steps,
                                             step_size=None)).adversarial
    torch.testing.assert_close(got, expected, rtol=0, atol=TOL)


def test_eval_mode_restores_submodule_modes():
    """A training net with frozen BatchNorm (as DC freezes BN) keeps it frozen after an attack."""
    net = build_model("convnetbn", 10, 1, 8, seed=0)
    net.train()
    bns = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for bn in bns:
        bn.eval()
    x = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    attack(net, x, torch.zeros(4, dtype=torch.int64), "fgsm")
    assert net.training and all(not bn.training for bn in bns)


def test_attack_works_inside_no_grad(model, small):
    x, y = small
    with torch.no_grad():
        adv = attack(model, x, y, "pgd", eps=0.1, steps=2, step_size=0.05)
    assert (adv - x).abs().max() > 0


def test_nan_images_are_refused(model, small):
    x, y = small
    bad = x.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        attack(model, bad, y, "fgsm")


def test_pgd_restarts_only_help_and_are_counted(model, small):
    x, y = small
    one = run_attack(model, x, y, AttackSpec(name="pgd", eps=0.08, steps=2, step_size=0.04,
                                             random_start=True, restarts=1, seed=3))
    five = run_attack(model, x, y, AttackSpec(name="pgd", eps=0.08, steps=2, step_size=0.04,
                                              random_start=True, restarts=5, seed=3))
    assert five.gradients_per_example == 10
    assert (five.adversarial - x).abs().max() <= 0.08 + 1e-6
    assert accuracy(model, five.adversarial, y) <= accuracy(model, one.adversarial, y)
    with pytest.raises(ValueError, match="restarts"):
        run_attack(model, x, y, AttackSpec(name="fgsm", restarts=2))


def test_eval_mode_restores_mixed_flags_even_if_the_block_changes_them():
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(144, 3))
    net.train()
    net[1].eval()  # BN frozen inside a training network
    net[3].bias.requires_grad_(False)
    modes = [m.training for m in net.modules()]
    flags = [p.requires_grad for p in net.parameters()]
    with eval_mode(net):
        assert not any(m.training for m in net.modules())
        assert not any(p.requires_grad for p in net.parameters())
        net[3].train()  # the block may change flags: they still come back as they were
        net[0].weight.requires_grad_(True)
    assert [m.training for m in net.modules()] == modes
    assert [p.requires_grad for p in net.parameters()] == flags
