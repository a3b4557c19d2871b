"""Query attacks (Square, SPSA) and the AutoAttack adapter on a small trained digits model."""

import pytest
import torch
from model_wrappers import RowSpy
from torch import nn

from robustdd.attacks.autoattack import autoattack, pyautoattack_version
from robustdd.attacks.query import spsa, square
from robustdd.nn.train import accuracy


class GradSpy(nn.Module):
    """Records whether autograd was enabled at each forward of the wrapped model."""

    def __init__(self, net):
        super().__init__()
        self.net = net
        self.grad_enabled = []

    def forward(self, x):
        self.grad_enabled.append(torch.is_grad_enabled())
        return self.net(x)


@pytest.fixture(scope="module")
def model(digits_model):
    return digits_model


@pytest.fixture(scope="module")
def batch(digits_splits):
    _, test = digits_splits
    return test.pixels(torch.arange(32)), test.labels[:32]


def _in_linf_ball(adv, x, eps):
    return bool((adv - x).abs().max() <= eps + 1e-6 and adv.min() >= 0 and adv.max() <= 1)


def test_square_is_output_only_bounded_effective_and_seeded(model, batch):
    x, y = batch
    spy = GradSpy(model)
    model.zero_grad(set_to_none=True)
    state = torch.get_rng_state()
    adv, queries = square(spy, x, y, eps=0.15, queries=300, seed=1)
    assert torch.equal(torch.get_rng_state(), state)  # pyautoattack's reseeding is contained
    assert spy.grad_enabled and not any(spy.grad_enabled)  # never a differentiable forward
    assert all(p.grad is None for p in model.parameters())
    assert _in_linf_ball(adv, x, 0.15)
    assert 1 <= queries <= 301
    assert accuracy(model, adv, y) < accuracy(model, x, y) - 20
    again, _ = square(model, x, y, eps=0.15, queries=300, seed=1)
    assert torch.equal(adv, again)


def test_square_targeted_hits_targets(model, batch):
    x, y = batch
    targets = (y + 1) % 10
    adv, _ = square(model, x, targets, eps=0.25, queries=500, seed=0, targeted=True)
    assert accuracy(model, adv, targets) > 30.0  # chance is ~11%


def test_spsa_is_output_only_bounded_effective_and_seeded(model, batch):
    x, y = batch
    spy = GradSpy(model)
    adv, queries = spsa(spy, x, y, eps=0.15, steps=6, lr=0.05, samples=16,
                        generator=torch.Generator().manual_seed(0))
    assert not any(spy.grad_enabled)
    assert _in_linf_ball(adv, x, 0.15)
    assert queries == 6 * 2 * 16
    assert accuracy(model, adv, y) < accuracy(model, x, y) - 20
    again, _ = spsa(model, x, y, eps=0.15, steps=6, lr=0.05, samples=16,
                    generator=torch.Generator().manual_seed(0))
    assert torch.equal(adv, again)


def test_spsa_forward_passes_stay_within_max_rows(model, batch):
    """Memory must not grow with samples × images: 32 images, 64 directions, 256 rows per pass
    → 4 directions (256 rows) at a time, 16 passes per step; the same directions either way."""
    x, y = batch[0][:32], batch[1][:32]
    spy = RowSpy(model)
    adv, queries = spsa(spy, x, y, eps=0.1, steps=2, samples=64, max_rows=256,
                        generator=torch.Generator().manual_seed(0))
    assert max(spy.rows) == 256 and len(spy.rows) == 2 * 16
    assert queries == 2 * 2 * 64
    wide, _ = spsa(model, x, y, eps=0.1, steps=2, samples=64, max_rows=10**6,
                   generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(adv, wide, rtol=0, atol=1e-6)
    # fewer rows than one direction needs: one direction (2·N rows) per pass
    spy.rows.clear()
    spsa(spy, x, y, eps=0.1, steps=1, samples=3, max_rows=8,
         generator=torch.Generator().manual_seed(0))
    assert spy.rows == [64, 64, 64]


def test_autoattack_apgd_subset(model, batch):
    x, y = batch
    state = torch.get_rng_state()
    adv = autoattack(model, x[:16], y[:16], eps=0.1, version="custom", components=("apgd-ce",))
    assert torch.equal(torch.get_rng_state(), state)
    assert _in_linf_ball(adv, x[:16], 0.1)
    assert accuracy(model, adv, y[:16]) < accuracy(model, x[:16], y[:16])
    assert pyautoattack_version().startswith("0.")
    with pytest.raises(ValueError, match="components"):
        autoattack(model, x, y, eps=0.1, version="custom", components=("nope",))


def test_autoattack_refuses_dlr_components_with_too_few_classes(batch):
    x = batch[0][:4]
    three = nn.Sequential(nn.Flatten(), nn.Linear(x[0].numel(), 3)).eval()
    y = torch.zeros(4, dtype=torch.long)
    with pytest.raises(ValueError, match="apgd-t, whose DLR loss needs at least 4 classes"):
        autoattack(three, x, y, eps=0.1)
    adv = autoattack(three, x, y, eps=0.1, version="custom", components=("apgd-dlr",))
    assert _in_linf_ball(adv, x, 0.1)


def test_registry_runs_query_attacks_and_reports_queries(model, batch):
    from robustdd.attacks import AttackSpec, run_attack

    x, y = batch
    sq = run_attack(model, x, y, AttackSpec(name="square", eps=0.1, queries=50))
    assert sq.gradients_per_example == 0 and 1 <= sq.queries_per_example <= 51
    sp = run_attack(model, x, y, AttackSpec(name="spsa", eps=0.1, samples=8, targeted=True))
    assert sp.queries_per_example == 16 and sp.targets is not None
    with pytest.raises(ValueError, match="no targeted form"):
        run_attack(model, x, y, AttackSpec(name="autoattack", targeted=True))


def test_suites_are_well_formed():
    from robustdd.attacks import ATTACKS, SUITES, suite

    for name in SUITES:
        specs = suite(name)
        labels = [s.label for s in specs]
        assert len(labels) == len(set(labels))
        for s in specs:
            legacy_clean_pass = s.space == "normalised"  # documented: targeted DeepFool/AA
            assert s.name in ATTACKS and (ATTACKS[s.name].targeted or not s.targeted
                                          or legacy_clean_pass)
            assert legacy_clean_pass == name.endswith("legacy") or s.space == "pixel"
    beard = {s.label: s for s in suite("beard")}
    assert "deepfool-T" not in beard and "autoattack-T" not in beard
    assert beard["pgd"].step_size == pytest.approx(2 / 255)  # not BEARD's 2/225 typo
    assert beard["pgd-l2"].eps == pytest.approx(128 / 255)
    assert all(s.eps == pytest.approx(1 / 255) for s in suite("guard") if s.name != "cw")
    assert suite("guard-no-aa") == [s for s in suite("guard") if s.name != "autoattack"]
    assert len(suite("guard-no-aa")) == len(suite("guard")) - 1
