"""Gradient matching (DC/DSA) and herding: hand-checked distances, batched = per-class loop,
end-to-end runs through the API and the CLI, determinism and resume."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from test_checkpoint import resumes_identically
from typer.testing import CliRunner

import robustdd
from robustdd.cli import app
from robustdd.distill import get_method
from robustdd.distill.losses.gradient import (
    batched_gradient_distance,
    class_matching_losses,
    gradient_distance,
)
from robustdd.distill.methods.dc import get_loops
from robustdd.distill.methods.herding import herding_select
from robustdd.distill.methods.kcenter import kcenter_select
from robustdd.distilled import DistilledSet
from robustdd.nn import build_model
from robustdd.runtime import derive_seed

# --- distances -------------------------------------------------------------------------------


def test_identical_gradients_are_at_distance_zero():
    g = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    d = gradient_distance([g], [g.clone()])
    assert 0 <= float(d) < 1e-6


def test_opposite_gradients_cost_two_per_row_and_orthogonal_one():
    conv = torch.randn(3, 2, 2, 2, generator=torch.Generator().manual_seed(0))  # 3 rows
    assert float(gradient_distance([conv], [-conv])) == pytest.approx(6.0, abs=1e-5)
    a = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 3.0]])
    b = torch.tensor([[0.0, 5.0], [7.0, 0.0], [1.0, -1.0]])  # row-wise orthogonal to a
    assert float(gradient_distance([a], [b])) == pytest.approx(3.0, abs=1e-6)
    # A 3-D (LayerNorm-shaped) gradient has one row per leading channel.
    ln = torch.ones(4, 2, 2)
    assert float(gradient_distance([ln], [-ln])) == pytest.approx(8.0, abs=1e-5)


def test_one_dimensional_parameters_are_ignored_by_ours():
    w = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    base = float(gradient_distance([w], [w]))
    with_bias = float(gradient_distance([w, torch.tensor([1.0, 2.0])],
                                        [w, torch.tensor([-5.0, 9.0])]))
    assert with_bias == base
    assert float(gradient_distance([torch.ones(3)], [-torch.ones(3)])) == 0.0


def test_mse_and_cos_by_hand():
    gs = [torch.tensor([[1.0, 2.0]]), torch.tensor([3.0])]
    gr = [torch.tensor([[0.0, 2.0]]), torch.tensor([1.0])]
    # All gradients concatenated, 1-D ones included: (1,2,3) vs (0,2,1).
    assert float(gradient_distance(gs, gr, "mse")) == pytest.approx(1 + 0 + 4)
    expected = 1 - 7 / (math.sqrt(14) * math.sqrt(5) + 1e-6)
    assert float(gradient_distance(gs, gr, "cos")) == pytest.approx(expected, abs=1e-6)


def test_batched_distance_equals_one_pair_at_a_time():
    gen = torch.Generator().manual_seed(1)
    shapes = [(4, 3, 3, 3), (4,), (5, 4)]
    gs = [torch.randn(3, *s, generator=gen) for s in shapes]
    gr = [torch.randn(3, *s, generator=gen) for s in shapes]
    for metric in ("ours", "mse", "cos"):
        batched = batched_gradient_distance(gs, gr, metric)
        single = torch.stack([gradient_distance([t[k] for t in gs], [t[k] for t in gr], metric)
                              for k in range(3)])
        torch.testing.assert_close(batched, single)


def test_unknown_metric_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown gradient distance"):
        gradient_distance([torch.ones(2, 2)], [torch.ones(2, 2)], "l1")


# --- per-class matching loss -----------------------------------------------------------------


def _plain_match_loss(gw_syn, gw_real):
    """The reference ``match_loss`` / ``distance_wb`` written out layer by layer."""
    total = torch.tensor(0.0)
    for gs, gr in zip(gw_syn, gw_real, strict=True):
        if gs.dim() == 1:
            continue
        gs, gr = gs.reshape(gs.shape[0], -1), gr.reshape(gr.shape[0], -1)
        cos = (gs * gr).sum(-1) / (gs.norm(dim=-1) * gr.norm(dim=-1) + 1e-6)
        total = total + (1 - cos).sum()
    return total


def _plain_class_losses(net, real, syn):
    params = list(net.parameters())
    out = []
    for c in range(real.shape[0]):
        lab_r = torch.full((real.shape[1],), c)
        gr = [g.detach() for g in torch.autograd.grad(F.cross_entropy(net(real[c]), lab_r),
                                                      params)]
        lab_s = torch.full((syn.shape[1],), c)
        gs = torch.autograd.grad(F.cross_entropy(net(syn[c]), lab_s), params, create_graph=True)
        out.append(_plain_match_loss(gs, gr))
    return torch.stack(out)


@pytest.fixture(scope="module")
def matching_problem(one_thread, digits_splits):
    train = digits_splits[0]
    net = build_model("convnetd2", 10, 1, 8, mean=train.mean, std=train.std, seed=5)
    idx = torch.stack([torch.nonzero(train.labels == c)[:12, 0] for c in range(10)])
    real = train.pixels()[idx]  # [10, 12, 1, 8, 8]
    syn = torch.rand(10, 3, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    return net, real, syn


@pytest.mark.parametrize("mode", ["loop", "vmap"])
def test_all_class_loss_equals_a_plain_per_class_loop(matching_problem, mode):
    net, real, syn0 = matching_problem
    yr = torch.arange(10).view(10, 1).expand(10, real.shape[1])
    ys = torch.arange(10).view(10, 1).expand(10, syn0.shape[1])
    syn_a = syn0.clone().requires_grad_(True)
    syn_b = syn0.clone().requires_grad_(True)
    expected = _plain_class_losses(net, real, syn_a)
    got = class_matching_losses(net, real, yr, syn_b, ys, mode=mode)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    # The gradient that moves the images (second order) agrees as well.
    (ga,) = torch.autograd.grad(expected.sum(), syn_a)
    (gb,) = torch.autograd.grad(got.sum(), syn_b)
    torch.testing.assert_close(gb, ga, atol=1e-5, rtol=1e-4)
    assert all(p.grad is None for p in net.parameters())


def test_a_dc_iteration_lowers_the_matching_loss_on_its_network(one_thread, digits_splits):
    """Image steps on iteration 0's network (no inner training) reduce that network's matching
    loss, measured on a fixed real batch different from the random ones the steps used."""
    train = digits_splits[0]
    kw = dict(ipc=2, seed=4, profile="smoke", outer_loop=3, inner_loop=0, batch_real=40)
    before = robustdd.distill("dc", train, iterations=0, **kw)
    after = robustdd.distill("dc", train, iterations=1, **kw)
    net = build_model("convnetd2", 10, 1, 8, mean=train.mean, std=train.std,
                      seed=derive_seed(4, "dc-net", 0))
    real = torch.stack([train.pixels()[train.labels == c][-60:] for c in range(10)])

    def loss(images):
        return float(_plain_class_losses(net, real, images.view(10, 2, 1, 8, 8)).sum().detach())

    assert loss(after.images) < 0.7 * loss(before.images)
    assert math.isfinite(after.meta["loss_last"]) and before.meta["loss_last"] is None


# --- schedule --------------------------------------------------------------------------------


def test_loop_schedule_follows_get_loops_and_rejects_other_ipcs():
    assert get_loops(1) == (1, 1) and get_loops(10) == (10, 50) and get_loops(50) == (50, 10)
    dc = get_method("dc")
    paper = dc.resolve_config("paper", {})
    assert paper.loops(20) == (20, 25)
    with pytest.raises(ValueError, match="outer_loop and inner_loop"):
        paper.loops(2)
    assert dc.resolve_config("paper", {"outer_loop": 4, "inner_loop": 3}).loops(2) == (4, 3)
    small = dc.resolve_config("small", {})
    assert small.loops(1) == (1, 1) and small.loops(10) == (3, 5)
    dsa = get_method("dsa").resolve_config("paper", {})
    assert dsa.init == "real" and dsa.dsa and paper.init == "noise" and not paper.dsa
    assert paper.lr_img == 0.1 and paper.momentum == 0.5 and paper.iterations == 1000


def test_unsupported_ipc_fails_before_any_work(digits_splits):
    with pytest.raises(ValueError, match="get_loops"):
        robustdd.distill("dsa", digits_splits[0], ipc=3, profile="paper")


# --- herding ---------------------------------------------------------------------------------


def test_herding_picks_the_point_at_the_mean_then_balances_it():
    feats = torch.tensor([[0.0, 0.0], [4.0, 0.0], [1.1, 0.9], [2.0, 3.0], [-1.0, 1.0]])
    # Mean (1.2, 0.8): row 2 is closest. Then 2μ − f2 = (1.3, 0.7): row 0 (‖·‖² 2.18) beats
    # row 3 (0.49 + 5.29) and row 1 (7.29 + 0.49).
    assert herding_select(feats, 2).tolist() == [2, 0]
    assert sorted(herding_select(feats, 5).tolist()) == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError):
        herding_select(feats, 6)


def test_herding_selects_real_images_deterministically(one_thread, digits_splits):
    train = digits_splits[0]
    a = robustdd.distill("herding", train, ipc=3, seed=0, profile="smoke")
    b = robustdd.distill("herding", train, ipc=3, seed=0, profile="smoke")
    r = robustdd.distill("herding", train, ipc=3, seed=0, profile="smoke", features="random")
    assert torch.equal(a.images, b.images)
    assert torch.bincount(a.labels, minlength=10).tolist() == [3] * 10
    idx = torch.tensor(a.meta["source_indices"])
    torch.testing.assert_close(a.images, train.pixels(idx))
    assert torch.equal(a.labels, train.labels[idx])
    assert r.meta["feature_net_train_seconds"] == 0.0 < a.meta["feature_net_train_seconds"]


def test_kcenter_picks_the_farthest_point_from_the_chosen_centres():
    feats = torch.tensor([[0.0, 0.0], [1.0, 0.0], [10.0, 0.0], [5.0, 5.0], [9.0, 1.0]])
    # From row 0: row 2 is farthest (10); then distances to {0, 2}: row 3 min(7.07, 7.07).
    assert kcenter_select(feats, 3, first=0).tolist() == [0, 2, 3]
    assert kcenter_select(feats, 1, first=4).tolist() == [4]
    with pytest.raises(ValueError):
        kcenter_select(feats, 6, first=0)


def test_kcenter_selects_distinct_real_images_per_class(one_thread, digits_splits):
    train = digits_splits[0]
    a = robustdd.distill("kcenter", train, ipc=3, seed=0, profile="smoke")
    b = robustdd.distill("kcenter", train, ipc=3, seed=0, profile="smoke")
    assert torch.equal(a.images, b.images) and a.method == "kcenter"
    idx = torch.tensor(a.meta["source_indices"])
    assert idx.unique().numel() == idx.numel() == 30
    assert torch.equal(a.labels, train.labels[idx])
    assert torch.bincount(a.labels, minlength=10).tolist() == [3] * 10


# --- end to end ------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["dc", "dsa"])
def test_dc_and_dsa_are_deterministic_and_leave_the_global_rng_alone(one_thread, digits_splits,
                                                                     method):
    train = digits_splits[0]
    state = torch.get_rng_state()
    a = robustdd.distill(method, train, ipc=1, seed=0, profile="smoke")
    b = robustdd.distill(method, train, ipc=1, seed=0, profile="smoke")
    c = robustdd.distill(method, train, ipc=1, seed=1, profile="smoke")
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(a.images, b.images) and not torch.equal(a.images, c.images)
    assert a.images.shape == (10, 1, 8, 8) and torch.isfinite(a.images).all()
    assert a.labels.tolist() == list(range(10))
    assert a.meta["method"] == method and a.meta["outer_loop"] == 2
    start = robustdd.distill(method, train, ipc=1, seed=0, profile="smoke", iterations=0)
    assert not torch.equal(a.images, start.images)  # the images were optimised


def test_dsa_resume_equals_uninterrupted(one_thread, digits_splits, tmp_path, monkeypatch):
    resumes_identically("dsa", digits_splits[0], tmp_path, monkeypatch, iterations=6)


@pytest.mark.parametrize("method", ["dc", "dsa", "herding", "kcenter"])
def test_cli_distills_with_each_method(one_thread, tmp_path, method):
    out = tmp_path / method
    result = CliRunner().invoke(app, ["distill", method, "digits", "--ipc", "1", "--profile",
                                      "smoke", "--out", str(out), "--device", "cpu",
                                      "--seed", "2"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    syn = DistilledSet.load(out)
    assert syn.method == method and syn.ipc == 1 and len(syn) == 10
    assert syn.meta["profile"] == "smoke"
