"""RDD: CVaR against a brute-force tail mean and the Rockafellar–Uryasev minimum, its gradient,
the grouped form, the official code's variant, cluster assignment, rdd-dc / rdd-idm end to end."""

from __future__ import annotations

import itertools

import pytest
import torch
from test_checkpoint import resumes_identically
from typer.testing import CliRunner

import robustdd
from robustdd.cli import app
from robustdd.distill import get_method
from robustdd.distilled import DistilledSet
from robustdd.nn import build_model
from robustdd.robust.cvar import (
    assign_clusters,
    choose_centres,
    cvar,
    greedy_centres,
    group_cvar,
    official_cvar,
    official_objective,
    rdd_objective,
    tail_fraction,
)


def _brute_force_tail_mean(values: list[float], q: float) -> float:
    """Mean of the worst q-fraction with a fractional share of the boundary element."""
    ordered = sorted(values, reverse=True)
    mass, total = q * len(values), 0.0
    for v in ordered:
        take = min(1.0, mass)
        total += take * v
        mass -= take
        if mass <= 0:
            break
    return total / (q * len(values))


def _rockafellar_uryasev(values: list[float], q: float) -> float:
    """min over η of η + Σ(ℓ − η)₊ / (q n); the minimum is attained at a sample value."""
    n = len(values)
    return min(eta + sum(max(v - eta, 0.0) for v in values) / (q * n) for v in values
               for eta in [v])


@pytest.mark.parametrize("q", [0.8, 0.2, 0.5, 1.0, 0.05])
def test_cvar_is_the_tail_mean_and_the_ru_minimum(q):
    values = [0.3, 2.0, 1.1, 0.0, 5.0, 0.7, 1.9]
    got = float(cvar(torch.tensor(values, dtype=torch.float64), q, "tail"))
    assert got == pytest.approx(_brute_force_tail_mean(values, q), rel=1e-12)
    assert got == pytest.approx(_rockafellar_uryasev(values, q), rel=1e-12)


def test_cvar_conventions_and_by_hand():
    x = torch.tensor([1.0, 2.0, 3.0, 4.0, 10.0])
    # tail 0.8: worst 4 of 5 → (10 + 4 + 3 + 2) / 4; confidence 0.8: worst 1 → 10.
    assert float(cvar(x, 0.8, "tail")) == pytest.approx(19 / 4)
    assert float(cvar(x, 0.8, "confidence")) == pytest.approx(10.0)
    assert tail_fraction(0.8, "confidence") == pytest.approx(0.2)
    with pytest.raises(ValueError):
        tail_fraction(1.5)
    with pytest.raises(ValueError):
        cvar(torch.tensor([]), 0.8)


@pytest.mark.parametrize("method", ["rdd-dc", "rdd-idm"])
def test_a_cvar_level_the_convention_cannot_use_is_refused_with_the_settings(method):
    spec = get_method(method)
    assert spec.resolve_config("smoke", {"alpha": 1.0}).alpha == 1.0  # tail: the plain mean
    with pytest.raises(ValueError, match="1 is allowed under the 'tail' convention only"):
        spec.resolve_config("smoke", {"alpha": 1.0, "cvar_convention": "confidence"})


def test_cvar_gradient_weights_the_tail():
    x = torch.tensor([1.0, 4.0, 2.0, 10.0, 3.0], requires_grad=True)
    cvar(x, 0.5).backward()  # qn = 2.5: 10 and 4 fully, 3 at half weight, over 2.5
    torch.testing.assert_close(x.grad, torch.tensor([0.0, 0.4, 0.0, 0.4, 0.2]))


def test_group_cvar_equals_a_loop_over_groups_and_skips_empty_ones():
    g = torch.Generator().manual_seed(0)
    losses = torch.rand(40, generator=g, dtype=torch.float64)
    groups = torch.randint(0, 5, (40,), generator=g)
    groups[groups == 3] = 4  # group 3 empty
    for q, conv in itertools.product([0.8, 0.3], ["tail", "confidence"]):
        values, present = group_cvar(losses, groups, 6, q, conv)
        assert present.tolist() == [True, True, True, False, True, False]
        for k in (0, 1, 2, 4):
            assert float(values[k]) == pytest.approx(float(cvar(losses[groups == k], q, conv)))
        assert float(values[3]) == 0.0


def test_group_cvar_gradient_matches_the_loop():
    g = torch.Generator().manual_seed(1)
    losses = torch.rand(30, generator=g, dtype=torch.float64, requires_grad=True)
    groups = torch.randint(0, 4, (30,), generator=g)
    values, present = group_cvar(losses, groups, 4)
    (grad_batched,) = torch.autograd.grad(values[present].sum(), losses)
    loop = sum(cvar(losses[groups == k], 0.8) for k in range(4) if (groups == k).any())
    (grad_loop,) = torch.autograd.grad(loop, losses)
    torch.testing.assert_close(grad_batched, grad_loop)


def test_rdd_objective_is_ce_plus_mean_and_max_cvar():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0], [3.0, -1.0]])
    labels = torch.tensor([0, 0, 1, 1])
    groups = torch.tensor([0, 0, 1, 1])
    ce = torch.nn.functional.cross_entropy(logits, labels, reduction="none")
    c0, c1 = cvar(ce[:2], 0.8), cvar(ce[2:], 0.8)
    want = ce.mean() + (c0 + c1) / 2 + torch.maximum(c0, c1)
    assert float(rdd_objective(logits, labels, groups, 3)) == pytest.approx(float(want))


def test_official_cvar_averages_the_lowest_losses_with_padding_counted():
    row = torch.tensor([0.5, 3.0, 1.0, 0.0, 0.0])  # two zeros of padding
    # ascending: 0, 0, 0.5, 1, 3; n = 5, k = 4: nonzero-mean(0, 0, 0.5, 1) = 0.75,
    # + sorted[3] · (0.8 − 4/5) = 0 → 0.75 / 0.8
    assert float(official_cvar(row, 0.8)) == pytest.approx(0.75 / 0.8)
    # rows at once; n = 4, k = 3: (mean(1, 2, 3) + 3 · (0.8 − 0.75)) / 0.8; an all-zero row is 0
    rows = torch.tensor([[4.0, 1.0, 3.0, 2.0], [0.0, 0.0, 0.0, 0.0]])
    assert official_cvar(rows, 0.8).tolist() == pytest.approx([(2.0 + 0.15) / 0.8, 0.0])


def test_official_objective_is_mean_of_nonzero_plus_max_over_padded_rows():
    losses = torch.tensor([1.0, 2.0, 3.0, 0.5, 4.0])
    groups = torch.tensor([0, 0, 0, 1, 1])  # cluster 2 is empty: an all-zero row
    rows = torch.tensor([[1.0, 2.0, 3.0], [0.5, 4.0, 0.0], [0.0, 0.0, 0.0]])
    per = official_cvar(rows, 0.8)
    want = float(per[:2].mean() + per.max())
    assert official_objective(losses, groups, 3, 0.8) == pytest.approx(want)


def test_greedy_centres_walk_to_the_farthest_from_the_last_pick():
    points = torch.tensor([[0.0], [1.0], [10.0], [4.0], [9.0]]).view(5, 1, 1, 1)
    # from 0: farthest is 10 (idx 2); from 10: farthest remaining is 1 (idx 1); then 9 (idx 4)
    assert greedy_centres(points, 4).tolist() == [0, 2, 1, 4]
    assert greedy_centres(points, 9).tolist() == [0, 2, 1, 4, 3]


def test_clusters_are_nearest_centres_within_the_class(digits_splits):
    train, _ = digits_splits
    net = build_model("convnetd2", 10, 1, 8, mean=train.mean, std=train.std, seed=0)
    x, y = train.pixels()[:60], train.labels[:60]
    centres = train.pixels()[100:140]
    centre_labels = train.labels[100:140]
    present = set(centre_labels.tolist())
    keep = torch.tensor([int(c) in present for c in y])
    x, y = x[keep], y[keep]
    idx = assign_clusters(net, x, y, centres, centre_labels)
    assert torch.equal(centre_labels[idx], y)
    er, ec = net.embed(x).detach(), net.embed(centres).detach()
    for i in range(len(y)):
        same = torch.nonzero(centre_labels == y[i]).flatten()
        best = same[torch.cdist(er[i:i + 1], ec[same]).argmin()]
        assert int(idx[i]) == int(best)
    pooled = assign_clusters(net, x, y, centres, centre_labels, pooled=True)
    assert torch.equal(pooled, torch.cdist(er, ec).argmin(1))
    assert net.training  # mode restored


def test_centres_are_all_below_the_cap_and_a_random_subset_above():
    labels = torch.arange(3).repeat_interleave(12)
    few = choose_centres(labels, 3, 20, torch.Generator().manual_seed(0))
    assert sorted(few.tolist()) == list(range(36))
    some = choose_centres(labels, 3, 10, torch.Generator().manual_seed(0))
    assert torch.bincount(labels[some]).tolist() == [10, 10, 10]


@pytest.mark.parametrize("method,overrides", [("rdd-dc", {}), ("rdd-dc", {"variant": "faithful"}),
                                              ("rdd-idm", {})])
def test_rdd_methods_distil_and_evaluate_with_shift(one_thread, digits_splits, method,
                                                    overrides):
    train, test = digits_splits
    syn = robustdd.distill(method, train, ipc=2, seed=0, profile="smoke", **overrides)
    assert syn.method == method and "rdd" in syn.meta
    record = robustdd.evaluate(syn, profile="smoke", test=test, num_models=1, attacks=[],
                               shift=True)
    assert {"cluster_min", "noise", "blur", "invert"} <= set(record["summary"])


def test_rdd_dc_paper_and_faithful_differ(one_thread, digits_splits):
    train = digits_splits[0]
    paper = robustdd.distill("rdd-dc", train, ipc=2, seed=0, profile="smoke")
    faithful = robustdd.distill("rdd-dc", train, ipc=2, seed=0, profile="smoke",
                                variant="faithful")
    assert not torch.equal(paper.images, faithful.images)
    assert paper.meta["rdd"]["cvar_gradient"] and not faithful.meta["rdd"]["cvar_gradient"]
    assert (paper.meta["rdd"]["init"], faithful.meta["rdd"]["init"]) == ("real", "noise")
    assert faithful.meta["rdd"]["official_objective_mean"] > 0  # the code's logged value
    assert faithful.meta["rdd"]["clusters"] == "pooled"


@pytest.mark.parametrize(("ipc", "per_class"), [(2, 2), (50, 10)])
def test_rdd_dc_faithful_clusters_around_all_or_ten_greedy_centres(one_thread, digits_splits,
                                                                   ipc, per_class):
    """The released code's centres: every synthetic image, except at IPC 50 (greedy, 10)."""
    syn = robustdd.distill("rdd-dc", digits_splits[0], ipc=ipc, seed=0, profile="smoke",
                           variant="faithful", iterations=1)
    assert syn.meta["rdd"]["centres_used"] == per_class * syn.num_classes


def test_rdd_idm_records_the_centres_it_clustered_around(one_thread, digits_splits):
    syn = robustdd.distill("rdd-idm", digits_splits[0], ipc=1, seed=0, profile="smoke")
    # IPC 1 stores one 2×2 mosaic per class: 4 decoded images, all of them centres
    assert syn.meta["rdd"]["centres_used"] == 4 * syn.num_classes


@pytest.mark.parametrize("method", ["rdd-dc", "rdd-idm"])
def test_rdd_resume_equals_uninterrupted(one_thread, digits_splits, tmp_path, monkeypatch,
                                         method):
    resumes_identically(method, digits_splits[0], tmp_path, monkeypatch, iterations=6)


def test_cli_distills_rdd_dc(one_thread, tmp_path):
    out = tmp_path / "r"
    result = CliRunner().invoke(app, ["distill", "rdd-dc", "digits", "--ipc", "1", "--profile",
                                      "smoke", "--variant", "faithful", "--out", str(out),
                                      "--device", "cpu"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert DistilledSet.load(out).meta["rdd"]["variant"] == "faithful"
