"""PGD-L2, MIM, CW-L2 and DeepFool (robustdd.attacks) on a small digits ConvNet.

Checks the per-attack defaults, the registry's refusals, the L2/L∞ balls and the pixel range,
strength, targeted success, the uniform random start in the L2 ball, DeepFool's batching and box
handling, model-state hygiene, honest gradient counts, and agreement with torchattacks 3.5.1
(installed with ``--no-deps`` by the Makefile as a test-only oracle; those tests are skipped
without it). Observed agreement on this model: FGSM, PGD-L∞, PGD-L2, MIM ≤ 2e-7; CW ≤ 2e-6 (on a
logit-shifted model, see :class:`Shifted`); DeepFool's ``torchattacks`` variant ≤ 3e-7.
"""

from __future__ import annotations

import copy

import pytest
import torch
from model_wrappers import RowSpy, Shifted
from torch import nn

from robustdd.attacks import (
    ATTACKS,
    AttackSpec,
    attack,
    cw_l2,
    cw_margin,
    deepfool,
    fgsm,
    mim,
    pgd_l2,
    pgd_linf,
    random_l2_start,
    run_attack,
)
from robustdd.attacks.cw import cw_l2_with_steps
from robustdd.attacks.deepfool import (
    deepfool_with_steps,
    gap_jacobian,
    input_jacobian,
    other_classes,
)
from robustdd.nn.train import accuracy, predict

TOL = 1e-6
AGREE = 1e-5  # max |ours − torchattacks| per pixel for the deterministic attacks
NUM_CLASSES = 10


@pytest.fixture(scope="module")
def digits(digits_splits):
    return digits_splits


@pytest.fixture(scope="module")
def model(digits_model):
    return digits_model


@pytest.fixture(scope="module")
def batch(digits):
    """100 test images (pixels in [0, 1]) and their labels."""
    _, test = digits
    idx = torch.arange(100)
    return test.pixels(idx), test.labels[idx]


@pytest.fixture(scope="module")
def small(batch):
    x, y = batch
    return x[:32], y[:32]


def next_targets(y: torch.Tensor) -> torch.Tensor:
    return (y + 1) % NUM_CLASSES


def l2_norms(delta: torch.Tensor) -> torch.Tensor:
    return delta.flatten(1).norm(p=2, dim=1)


def top2_gap(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        top = model(x).topk(2, dim=1).values
    return top[:, 0] - top[:, 1]


# ---------------------------------------------------------------------------------------------
# specs and registry


def test_attack_specific_defaults_fill_unset_fields():
    spec = AttackSpec(name="pgd-l2")
    assert (spec.norm, spec.eps, spec.step_size, spec.steps) == ("l2", 128 / 255, 15 / 255, 10)
    spec = AttackSpec(name="cw")
    assert (spec.norm, spec.steps, spec.c, spec.kappa, spec.lr, spec.loss) == (
        "l2", 100, 1.0, 0.0, 0.01, "margin")
    spec = AttackSpec(name="deepfool")
    assert (spec.norm, spec.steps, spec.overshoot) == ("l2", 50, 0.02)
    spec = AttackSpec(name="mim")
    assert (spec.norm, spec.eps, spec.step_size, spec.steps, spec.decay) == (
        "linf", 8 / 255, 2 / 255, 10, 1.0)
    # explicit values win, and a recorded spec reloads to itself
    assert AttackSpec(name="cw", steps=7).steps == 7
    assert AttackSpec(name="pgd-l2", eps=0.5).eps == 0.5
    for name in ("pgd-l2", "cw", "deepfool", "mim"):
        spec = AttackSpec(name=name, seed=3)
        assert AttackSpec.model_validate_json(spec.model_dump_json()) == spec
    # the generic attacks keep the generic defaults
    assert AttackSpec(name="pgd").norm == "linf" and AttackSpec(name="pgd").steps == 10


def test_new_attacks_are_registered_with_their_norms_and_targeted_forms():
    expected = {"pgd-l2": (("l2",), True), "mim": (("linf",), True), "cw": (("l2",), True),
                "deepfool": (("l2",), False)}
    for name, (norms, targeted) in expected.items():
        assert (ATTACKS[name].norms, ATTACKS[name].targeted) == (norms, targeted)


def test_deepfool_refuses_targeted_requests(model, small):
    x, y = small
    with pytest.raises(ValueError, match="targeted"):
        attack(model, x, y, "deepfool", targeted=True)
    with pytest.raises(ValueError, match="targeted"):
        run_attack(model, x, y, AttackSpec(name="deepfool", targeted=True))


@pytest.mark.parametrize("spec", [
    AttackSpec(name="pgd-l2", norm="linf"),
    AttackSpec(name="cw", norm="linf"),
    AttackSpec(name="deepfool", norm="linf"),
    AttackSpec(name="mim", norm="l2"),
    AttackSpec(name="cw", loss="ce"),
    AttackSpec(name="fgsm", loss="margin"),
    AttackSpec(name="pgd", loss="margin"),
    AttackSpec(name="mim", random_start=True),
    AttackSpec(name="mim", restarts=3),
    AttackSpec(name="cw", restarts=2),
    AttackSpec(name="deepfool", random_start=True),
], ids=lambda s: f"{s.name}-{s.norm}-{s.loss}-rs{int(s.random_start)}-r{s.restarts}")
def test_specs_an_attack_would_silently_ignore_are_refused(model, small, spec):
    x, y = small
    with pytest.raises(ValueError):
        run_attack(model, x, y, spec)


# ---------------------------------------------------------------------------------------------
# constraints


@pytest.mark.parametrize("eps", [0.5, 1.5])
@pytest.mark.parametrize("targeted", [False, True], ids=["untargeted", "targeted"])
@pytest.mark.parametrize("random_start", [False, True], ids=["zero-start", "random-start"])
def test_pgd_l2_stays_in_l2_ball_and_pixel_range(model, small, eps, targeted, random_start):
    x, y = small
    adv = attack(model, x, y, "pgd-l2", eps=eps, steps=5, step_size=eps / 2, targeted=targeted,
                 random_start=random_start, seed=1)
    assert adv.shape == x.shape and adv.dtype == x.dtype and not adv.requires_grad
    assert l2_norms(adv - x).max() <= eps + 1e-5
    assert adv.min() >= 0.0 and adv.max() <= 1.0
    assert not torch.equal(adv, x)


def test_pgd_l2_eps_is_in_pixel_units_and_used_in_full(model, small):
    """With enough steps every example ends at (or, clamped to [0, 1], just inside) the ball's
    surface: ‖δ‖₂ ≈ ε itself, not ε/std ≈ 2.7ε nor ε·std ≈ 0.38ε."""
    x, y = small
    eps = 0.5
    adv = attack(model, x, y, "pgd-l2", eps=eps, steps=20, step_size=0.1)
    norms = l2_norms(adv - x)
    assert norms.max() <= eps + 1e-5
    assert (norms >= 0.98 * eps).all()


@pytest.mark.parametrize("targeted", [False, True], ids=["untargeted", "targeted"])
def test_mim_stays_in_linf_ball_and_pixel_range(model, small, targeted):
    x, y = small
    eps = 0.1
    adv = attack(model, x, y, "mim", eps=eps, steps=5, step_size=0.03, targeted=targeted)
    assert (adv - x).abs().max() <= eps + TOL
    assert (adv - x).abs().max() == pytest.approx(eps, abs=TOL)
    assert adv.min() >= 0.0 and adv.max() <= 1.0


@pytest.mark.parametrize("spec", [
    AttackSpec(name="cw", steps=20, c=5.0),
    AttackSpec(name="cw", steps=50, c=50.0, lr=0.05, targeted=True),
    AttackSpec(name="deepfool"),
], ids=["cw", "cw-T", "deepfool"])
def test_unbounded_attacks_stay_in_pixel_range(model, small, spec):
    x, y = small[0][:16], small[1][:16]
    adv = run_attack(model, x, y, spec).adversarial
    assert adv.shape == x.shape and not adv.requires_grad
    assert adv.min() >= 0.0 and adv.max() <= 1.0
    assert not torch.equal(adv, x)


# ---------------------------------------------------------------------------------------------
# strength and targeted success


def test_every_new_attack_lowers_accuracy(model, batch):
    x, y = batch[0][:48], batch[1][:48]
    clean = accuracy(model, x, y)
    assert clean > 85.0
    accs = {
        "pgd-l2": accuracy(model, attack(model, x, y, "pgd-l2", eps=1.0, step_size=0.2), y),
        "mim": accuracy(model, attack(model, x, y, "mim", eps=0.1, step_size=0.02), y),
        "cw": accuracy(model, attack(model, x, y, "cw", steps=40), y),
        "deepfool": accuracy(model, attack(model, x, y, "deepfool"), y),
    }
    assert accs["pgd-l2"] <= clean - 50.0
    assert accs["mim"] <= clean - 25.0
    assert accs["cw"] <= clean - 25.0   # c = 1, BEARD's setting: ~18% left here
    assert accs["deepfool"] <= 5.0      # minimal-norm and unbounded: fools (almost) everything


@pytest.mark.parametrize(("name", "options"), [
    ("pgd-l2", {"eps": 1.5, "steps": 20, "step_size": 0.2}),
    ("mim", {"eps": 0.25, "steps": 20, "step_size": 0.03}),
    ("cw", {"steps": 50, "c": 50.0, "lr": 0.05}),  # c = 1 needs ~100+ steps for targets here
])
def test_targeted_attacks_hit_the_target_more_than_chance(model, batch, name, options):
    x, y = batch[0][:64], batch[1][:64]
    targets = next_targets(y)
    chance = 1 / (NUM_CLASSES - 1)
    assert (predict(model, x) == targets).float().mean() < chance
    adv = attack(model, x, y, name, targeted=True, **options)
    assert (predict(model, adv) == targets).float().mean() > 3 * chance


# ---------------------------------------------------------------------------------------------
# PGD-L2 random start and determinism


def test_random_l2_start_is_uniform_in_the_ball():
    """For d = 64 a uniform point of the ball has radius ε·U^(1/64): mean ε·64/65 and almost never
    below 0.9ε (probability 0.9⁶⁴ ≈ 0.001). Images at 0.5 with ε = 0.4 are never clamped."""
    x = torch.full((2000, 1, 8, 8), 0.5)
    eps = 0.4
    start = random_l2_start(x, eps, torch.Generator().manual_seed(0))
    radii = l2_norms(start - x)
    assert radii.max() <= eps + 1e-6
    assert radii.mean() == pytest.approx(eps * 64 / 65, rel=2e-3)
    assert (radii < 0.9 * eps).float().mean() < 0.01
    # directions are isotropic: the mean unit direction is close to zero
    directions = (start - x).flatten(1) / radii.view(-1, 1)
    assert directions.mean(0).norm() < 0.1


def test_pgd_l2_random_start_is_deterministic_and_leaves_global_rng_alone(model, small):
    x, y = small
    kw = {"eps": 0.5, "steps": 2, "step_size": 0.1, "random_start": True}
    torch.manual_seed(0)
    state = torch.get_rng_state()
    a = attack(model, x, y, "pgd-l2", seed=5, **kw)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(a, attack(model, x, y, "pgd-l2", seed=5, **kw))
    assert not torch.equal(a, attack(model, x, y, "pgd-l2", seed=6, **kw))


def test_pgd_l2_restarts_only_help_and_are_counted(model, small):
    x, y = small
    kw = {"eps": 0.3, "steps": 2, "step_size": 0.15, "random_start": True, "seed": 3}
    one = run_attack(model, x, y, AttackSpec(name="pgd-l2", restarts=1, **kw))
    four = run_attack(model, x, y, AttackSpec(name="pgd-l2", restarts=4, **kw))
    assert four.gradients_per_example == 8
    assert l2_norms(four.adversarial - x).max() <= 0.3 + 1e-5
    assert accuracy(model, four.adversarial, y) <= accuracy(model, one.adversarial, y)


def test_mim_without_momentum_is_pgd_linf(model, small):
    """With decay 0 the normalisation cannot change a sign: MIM is PGD-L∞ without random start."""
    x, y = small
    for targeted in (False, True):
        goal = next_targets(y) if targeted else y
        got = mim(model, x, goal, eps=0.1, steps=6, step_size=0.02, decay=0.0, targeted=targeted)
        expected = pgd_linf(model, x, goal, eps=0.1, steps=6, step_size=0.02, targeted=targeted)
        assert torch.equal(got, expected)


def test_mim_default_step_is_eps_over_steps(model, small):
    x, y = small
    got = run_attack(model, x, y, AttackSpec(name="mim", eps=0.1, steps=5, step_size=None))
    expected = mim(model, x, y, eps=0.1, steps=5, step_size=0.02)
    assert torch.equal(got.adversarial, expected)


# ---------------------------------------------------------------------------------------------
# CW and DeepFool specifics


def test_cw_margin_is_a_real_max_over_the_other_classes():
    logits = torch.tensor([[-1.0, -3.0, -2.0], [5.0, 1.0, 2.0]])
    labels = torch.tensor([0, 2])
    # untargeted Z_y − max_{i≠y} Z_i = [1, −3], targeted max_{i≠t} Z_i − Z_t = [−1, 3],
    # both clamped below at −κ (torchattacks' zero mask would give 0 − 0 and 0 − 0 in row 1)
    assert cw_margin(logits, labels).tolist() == [1.0, 0.0]
    assert cw_margin(logits, labels, kappa=5.0).tolist() == [1.0, -3.0]
    assert cw_margin(logits, labels, targeted=True, kappa=5.0).tolist() == [-1.0, 3.0]
    assert cw_margin(logits, labels, targeted=True, kappa=0.5).tolist() == [-0.5, 3.0]


def test_cw_keeps_clean_images_where_it_fails_and_counts_steps(model, small):
    x, y = small
    result = run_attack(model, x, y, AttackSpec(name="cw", steps=30))
    adv = result.adversarial
    fooled = predict(model, adv) != y
    clean_wrong = predict(model, x) != y
    assert 0 < result.gradients_per_example <= 30
    # never fooled (and correct on clean input): returned bit-for-bit unchanged
    assert torch.equal(adv[~fooled], x[~fooled])
    assert (l2_norms(adv - x)[fooled & ~clean_wrong] > 0).all()
    # pixels at exactly 0 or 1 stay there (tanh space cannot reach them)
    saturated = (x == 0) | (x == 1)
    assert torch.equal(adv[saturated], x[saturated])


def test_deepfool_fools_with_margin_and_leaves_misclassified_examples(model, batch):
    x, y = batch[0][:60], batch[1][:60]
    result = run_attack(model, x, y, AttackSpec(name="deepfool"))
    adv = result.adversarial
    wrong = predict(model, x) != y
    assert wrong.any()
    assert torch.equal(adv[wrong], x[wrong])
    assert (predict(model, adv) != y).all()
    # crossed with a margin (not stalled on a tie): one-at-a-time evaluation agrees
    assert (top2_gap(model, adv[~wrong]) > 1e-3).float().mean() > 0.9
    single = torch.cat([predict(model, adv[i:i + 1]) for i in range(adv.shape[0])])
    assert torch.equal(single, predict(model, adv))
    # C − 1 backward passes per Jacobian step; the box-aware linearisation needs only a few
    # steps here
    assert result.gradients_per_example % (NUM_CLASSES - 1) == 0
    assert 0 < result.gradients_per_example <= (NUM_CLASSES - 1) * 5


def test_other_classes_lists_every_class_but_the_label():
    assert other_classes(torch.tensor([0, 2, 1]), 3).tolist() == [[1, 2], [0, 1], [0, 2]]


def test_gap_jacobian_equals_differences_of_the_full_jacobian(model, small):
    """C − 1 passes with cotangents e_k − e_y give exactly ∂(Z_k − Z_y)/∂x for every k ≠ y."""
    x, y = small[0][:12], small[1][:12]
    logits, jac = input_jacobian(model, x)
    xg = x.clone().requires_grad_(True)
    gaps, grads = gap_jacobian(model(xg), xg, y)
    rows = torch.arange(12)
    others = other_classes(y, NUM_CLASSES)
    torch.testing.assert_close(gaps, logits.gather(1, others) - logits[rows, y].unsqueeze(1))
    expected = jac[rows.unsqueeze(1), others] - jac[rows, y].unsqueeze(1)
    torch.testing.assert_close(grads, expected, rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="two classes"):
        gap_jacobian(logits[:, :1].requires_grad_(True), xg, y * 0)


def test_deepfool_computes_gradients_only_for_unfooled_examples(model, batch, monkeypatch):
    """Every gradient step is spent on examples the model still classifies correctly: fooled
    and misclassified examples leave after a forward pass, as in torchattacks' loop."""
    import importlib
    module = importlib.import_module("robustdd.attacks.deepfool")
    x, y = batch[0][:60], batch[1][:60]
    seen: list[int] = []

    def spy(logits, xs, labels):
        assert (logits.detach().argmax(1) == labels).all()
        seen.append(labels.numel())
        return gap_jacobian(logits, xs, labels)

    monkeypatch.setattr(module, "gap_jacobian", spy)
    adv, taken, _ = deepfool_with_steps(model, x, y)
    correct = int((predict(model, x) == y).sum())
    assert seen[0] == correct and len(seen) == taken
    assert seen == sorted(seen, reverse=True)  # the active set only shrinks
    assert (predict(model, adv) != y).all()


def test_deepfool_is_batched_independently_of_the_batch(model, small):
    """One example's result does not depend on what else is in the batch."""
    x, y = small[0][:20], small[1][:20]
    whole = deepfool(model, x, y)
    parts = torch.cat([deepfool(model, x[:5], y[:5]), deepfool(model, x[5:], y[5:])])
    torch.testing.assert_close(whole, parts, rtol=0, atol=1e-5)
    assert torch.equal(whole, deepfool(model, x, y))  # deterministic


def test_torchattacks_deepfool_variant_stalls_on_the_boundary(model, small):
    """Without box awareness, clipped steps keep falling short on images with saturated pixels:
    the iterates creep up to the decision boundary and stop on logit (near-)ties — the variant
    torchattacks (and BEARD) run. The default "box" variant crosses with a real margin."""
    x, y = small[0][:20], small[1][:20]
    correct = predict(model, x) == y
    adv, taken, _ = deepfool_with_steps(model, x, y, steps=12, variant="torchattacks")
    assert taken == 12
    assert top2_gap(model, adv[correct]).median() < 1e-2
    box = deepfool(model, x, y)
    assert top2_gap(model, box[correct]).median() > 5e-2
    with pytest.raises(ValueError, match="variant"):
        deepfool(model, x, y, variant="paper")  # type: ignore[arg-type]


def test_cw_and_deepfool_record_their_parameters(model, small):
    x, y = small
    spec = AttackSpec(name="cw", steps=5, c=2.0, kappa=0.5, lr=0.05)
    result = run_attack(model, x, y, spec)
    assert result.gradients_per_example <= 5
    torch.testing.assert_close(result.adversarial,
                               cw_l2(model, x, y, c=2.0, kappa=0.5, steps=5, lr=0.05),
                               rtol=0, atol=0)
    result = run_attack(model, x, y, AttackSpec(name="deepfool", steps=3, overshoot=0.1))
    torch.testing.assert_close(result.adversarial, deepfool(model, x, y, steps=3, overshoot=0.1),
                               rtol=0, atol=0)


# ---------------------------------------------------------------------------------------------
# model state and call context


class ModeRecorder(nn.Module):
    """Wraps a model and records its own and the inner model's training flag at every forward."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.modes: list[tuple[bool, bool]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.modes.append((self.training, self.inner.training))
        return self.inner(x)


@pytest.mark.parametrize("spec", [
    AttackSpec(name="pgd-l2", eps=0.5, steps=2, random_start=True),
    AttackSpec(name="mim", steps=2, targeted=True),
    AttackSpec(name="cw", steps=3),
    AttackSpec(name="deepfool", steps=2),
], ids=["pgd-l2", "mim-T", "cw", "deepfool"])
def test_attack_runs_in_eval_mode_and_restores_model_state(model, small, spec):
    x, y = small[0][:8], small[1][:8]
    wrapper = ModeRecorder(copy.deepcopy(model))
    wrapper.train()
    flags = [p.requires_grad for p in wrapper.parameters()]
    before = {k: v.clone() for k, v in wrapper.state_dict().items()}
    x_before = x.clone()

    with torch.no_grad():  # attacks also work when called from no-grad evaluation code
        result = run_attack(wrapper, x, y, spec)

    assert wrapper.modes and all(not o and not i for o, i in wrapper.modes)
    assert wrapper.training and all(m.training for m in wrapper.modules())
    assert [p.requires_grad for p in wrapper.parameters()] == flags
    assert all(torch.equal(before[k], v) for k, v in wrapper.state_dict().items())
    assert all(p.grad is None for p in wrapper.parameters())
    assert torch.equal(x, x_before) and x.grad is None and not x.requires_grad
    assert result.adversarial.shape == x.shape


# ---------------------------------------------------------------------------------------------
# agreement with torchattacks 3.5.1 (an independent implementation)


@pytest.fixture(scope="module")
def ta():
    """The torchattacks attack classes, imported from their submodules (no torchvision needed)."""
    pytest.importorskip("torchattacks", reason="test-only oracle: pip install --no-deps "
                        "torchattacks==3.5.1 (the Makefile does)")
    from torchattacks.attacks.cw import CW
    from torchattacks.attacks.deepfool import DeepFool
    from torchattacks.attacks.fgsm import FGSM
    from torchattacks.attacks.mifgsm import MIFGSM
    from torchattacks.attacks.pgd import PGD
    from torchattacks.attacks.pgdl2 import PGDL2

    return {"fgsm": FGSM, "pgd": PGD, "pgd-l2": PGDL2, "mim": MIFGSM, "cw": CW,
            "deepfool": DeepFool}


@pytest.fixture(scope="module")
def frozen(model):
    """A parameter-frozen copy for torchattacks (its DeepFool would accumulate .grad)."""
    return copy.deepcopy(model).requires_grad_(False)


def run_ta(attack_obj, x: torch.Tensor, goal: torch.Tensor, targeted: bool) -> torch.Tensor:
    if targeted:
        attack_obj.set_mode_targeted_by_label(quiet=True)  # the labels are the targets
    return attack_obj(x, goal)


@pytest.mark.parametrize("targeted", [False, True], ids=["untargeted", "targeted"])
def test_gradient_attacks_match_torchattacks(model, frozen, batch, ta, targeted):
    x, y = batch[0][:32], batch[1][:32]
    goal = next_targets(y) if targeted else y
    pairs = {
        "fgsm": (fgsm(model, x, goal, eps=0.1, targeted=targeted),
                 ta["fgsm"](frozen, eps=0.1)),
        "pgd": (pgd_linf(model, x, goal, eps=0.1, steps=8, step_size=0.02, targeted=targeted),
                ta["pgd"](frozen, eps=0.1, alpha=0.02, steps=8, random_start=False)),
        "pgd-l2": (pgd_l2(model, x, goal, eps=1.0, steps=8, step_size=0.2, targeted=targeted),
                   ta["pgd-l2"](frozen, eps=1.0, alpha=0.2, steps=8, random_start=False)),
        "mim": (mim(model, x, goal, eps=0.1, steps=8, step_size=0.02, targeted=targeted),
                ta["mim"](frozen, eps=0.1, alpha=0.02, steps=8, decay=1.0)),
    }
    for name, (ours, reference) in pairs.items():
        expected = run_ta(reference, x, goal, targeted)
        torch.testing.assert_close(ours, expected, rtol=0, atol=AGREE, msg=name)
    # and through the registry with the same settings
    got = attack(model, x, y, "pgd-l2", eps=1.0, steps=8, step_size=0.2, targeted=targeted)
    torch.testing.assert_close(got, pairs["pgd-l2"][0], rtol=0, atol=0)


@pytest.mark.parametrize("targeted", [False, True], ids=["untargeted", "targeted"])
def test_cw_matches_torchattacks(model, frozen, batch, ta, targeted):
    """30 steps (so the early-stop check runs every 3 steps) on a logit-shifted copy for
    torchattacks (see :class:`Shifted`); observed max difference ~2e-6."""
    x, y = batch[0][:32], batch[1][:32]
    goal = next_targets(y) if targeted else y
    ours = run_attack(model, x, y, AttackSpec(name="cw", steps=30, c=2.0, targeted=targeted))
    expected = run_ta(ta["cw"](Shifted(frozen), c=2.0, kappa=0, steps=30, lr=0.01), x, goal,
                      targeted)
    torch.testing.assert_close(ours.adversarial, expected, rtol=0, atol=AGREE)
    assert not torch.equal(ours.adversarial, x)


def test_deepfool_matches_torchattacks(model, frozen, batch, ta):
    """The ``torchattacks`` variant reproduces torchattacks' per-example loop (max difference
    ~3e-7); the default box-aware variant fools at least as many examples with per-example L2
    norms close to torchattacks' (median ratio ~1.06 here, as it crosses instead of stalling)."""
    x, y = batch[0][:16], batch[1][:16]
    reference = ta["deepfool"](frozen, steps=6, overshoot=0.02)(x, y)
    same = deepfool(model, x, y, steps=6, variant="torchattacks")
    torch.testing.assert_close(same, reference, rtol=0, atol=AGREE)

    ours = deepfool(model, x, y, steps=6)
    assert accuracy(model, ours, y) <= accuracy(model, reference, y)
    moved = l2_norms(reference - x) > 0
    ratio = l2_norms(ours - x)[moved] / l2_norms(reference - x)[moved]
    assert 0.8 < ratio.median() < 1.5


# ---------------------------------------------------------------------------- batching


def test_run_attack_splits_into_batches_of_batch_size(model, small):
    """Per-example attacks give the same images in any batch size; CW's early stop is decided
    per batch, so a batched run equals the direct call on each batch, and the gradient count is
    the largest any batch needed."""
    x, y = small
    whole = run_attack(model, x, y, AttackSpec(name="pgd", eps=0.1, steps=5, targeted=True))
    spy = RowSpy(model)
    split = run_attack(spy, x, y, AttackSpec(name="pgd", eps=0.1, steps=5, targeted=True,
                                             batch_size=7))
    assert max(spy.rows[1:]) == 7  # (rows[0]: the one-image probe for the class count)
    torch.testing.assert_close(split.adversarial, whole.adversarial, rtol=0, atol=TOL)
    assert torch.equal(split.targets, whole.targets)
    assert split.gradients_per_example == whole.gradients_per_example == 5

    spec = AttackSpec(name="cw", steps=20, c=5.0, batch_size=12)
    result = run_attack(model, x, y, spec)
    direct = [cw_l2_with_steps(model, x[lo:lo + 12], y[lo:lo + 12], c=5.0, steps=20)
              for lo in range(0, 32, 12)]
    torch.testing.assert_close(result.adversarial, torch.cat([a for a, _ in direct]),
                               rtol=0, atol=0)
    assert result.gradients_per_example == max(steps for _, steps in direct)


def test_query_counts_are_averaged_over_batches(model, small):
    x, y = small
    spec = AttackSpec(name="spsa", eps=0.1, steps=2, samples=8)
    one = run_attack(model, x, y, spec)
    three = run_attack(model, x, y, spec.model_copy(update={"batch_size": 11}))
    assert one.queries_per_example == three.queries_per_example == 2 * 2 * 8
    assert three.gradients_per_example == 0
    assert AttackSpec(name="pgd").batch_size == 256  # BEARD's test-loader batch
