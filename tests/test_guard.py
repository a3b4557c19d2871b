"""GUARD: the curvature penalty against finite differences and Hessian-vector products, its two
forms, the squeeze objective's BN handling, guard-sre2l and guard-dc end to end."""

from __future__ import annotations

import importlib

import pytest
import torch
import torch.nn.functional as F
from test_checkpoint import resumes_identically
from typer.testing import CliRunner

import robustdd
from robustdd.attacks.legacy import normalised_view
from robustdd.cli import app
from robustdd.distill.methods.guard import guard_real_loss, synthetic_direction
from robustdd.distilled import DistilledSet
from robustdd.nn import build_model
from robustdd.robust.curvature import (
    curvature_objective,
    curvature_penalty,
    gradient_direction,
    modules_in_eval,
)

pytestmark = pytest.mark.usefixtures("private_cache")




def _smooth_net():
    g = torch.Generator().manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(6, 5), torch.nn.Tanh(),
                              torch.nn.Linear(5, 3)).double()
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64))
    x = torch.randn(4, 1, 2, 3, generator=g, dtype=torch.float64)
    y = torch.tensor([0, 2, 1, 2])
    return net, x, y


def test_z_is_h_times_the_unit_input_gradient():
    net, x, y = _smooth_net()
    z = gradient_direction(net, x, y, h=3.0)
    # The reference's +1e-7 in numerator and denominator bends tiny gradients a little.
    assert torch.allclose(z.flatten(1).norm(dim=1), torch.full((4,), 3.0, dtype=torch.float64),
                          atol=1e-3)
    xg = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(F.cross_entropy(net(xg), y), xg)
    cos = F.cosine_similarity(z.flatten(1), g.flatten(1))
    assert torch.allclose(cos, torch.ones(4, dtype=torch.float64), atol=1e-6)


def test_gradient_difference_over_h_tends_to_the_hessian_vector_product():
    """‖∇ℓ(x + h ẑ) − ∇ℓ(x)‖ / h → ‖H ẑ‖ (the paper's Eq. 13–14) per sample."""
    net, x, y = _smooth_net()
    h = 1e-4
    z = gradient_direction(net, x, y, h)
    penalty, _ = curvature_penalty(net, x, y, h, per_sample=True, z=z)
    want = []
    for i in range(4):
        def loss(xi, i=i):
            return F.cross_entropy(net(xi.unsqueeze(0)), y[i:i + 1])
        _, hv = torch.autograd.functional.hvp(loss, x[i], z[i] / h)
        want.append(hv.norm())
    assert float(penalty.detach()) / h == pytest.approx(float(torch.stack(want).mean()), rel=1e-3)


@pytest.mark.parametrize("per_sample, squared", [(True, True), (False, False)],
                         ids=["paper", "code"])
def test_penalty_parameter_gradient_matches_finite_differences(per_sample, squared):
    net, x, y = _smooth_net()
    z = gradient_direction(net, x, y, 0.5)
    weight = net[1].weight
    form = {"squared": squared, "per_sample": per_sample}
    penalty, _ = curvature_penalty(net, x, y, 0.5, z=z, **form)
    (grad,) = torch.autograd.grad(penalty, weight)
    eps = 1e-6
    for idx in [(0, 0), (2, 3), (4, 5)]:
        with torch.no_grad():
            weight[idx] += eps
        up, _ = curvature_penalty(net, x, y, 0.5, z=z, **form)
        with torch.no_grad():
            weight[idx] -= 2 * eps
        down, _ = curvature_penalty(net, x, y, 0.5, z=z, **form)
        with torch.no_grad():
            weight[idx] += eps
        fd = (float(up.detach()) - float(down.detach())) / (2 * eps)
        assert float(grad[idx]) == pytest.approx(fd, rel=1e-5, abs=1e-9)


@pytest.mark.parametrize("per_sample, squared", [(False, False), (True, True)])
def test_penalty_without_z_reuses_the_input_gradient_exactly(per_sample, squared):
    """z=None takes ∇ℓ(x) once for both z and the difference: same z, value and parameter
    gradients as the reference's two passes (gradient_direction, then the difference)."""
    net, x, y = _smooth_net()
    z_ref = gradient_direction(net, x, y, 3.0)
    ref, _ = curvature_penalty(net, x, y, 3.0, squared=squared, per_sample=per_sample, z=z_ref)
    fused, z = curvature_penalty(net, x, y, 3.0, squared=squared, per_sample=per_sample)
    assert not z.requires_grad
    assert torch.allclose(z, z_ref, rtol=1e-12, atol=1e-14)
    assert float(fused.detach()) == pytest.approx(float(ref.detach()), rel=1e-10)
    params = list(net.parameters())
    for a, b in zip(torch.autograd.grad(ref, params), torch.autograd.grad(fused, params),
                    strict=True):
        assert torch.allclose(a, b, rtol=1e-9, atol=1e-12)


def test_code_form_is_the_per_sample_form_over_batch_size():
    net, x, y = _smooth_net()
    z = gradient_direction(net, x, y, 3.0)
    code, _ = curvature_penalty(net, x, y, 3.0, z=z)
    paper_plain, _ = curvature_penalty(net, x, y, 3.0, per_sample=True, z=z)
    code, paper_plain = float(code.detach()), float(paper_plain.detach())
    assert code * 4 == pytest.approx(paper_plain, rel=1e-10)
    squared, _ = curvature_penalty(net, x, y, 3.0, per_sample=True, squared=True, z=z)
    assert float(squared.detach()) >= paper_plain ** 2 - 1e-12  # mean of squares ≥ square of mean


def test_squeeze_objective_keeps_bn_statistics_for_the_plain_pass_only(digits_splits):
    train, _ = digits_splits
    x, y = train.pixels()[:64], train.labels[:64]
    a = build_model("convnetbn", 10, 1, 8, mean=train.mean, std=train.std, seed=0).train()
    b = build_model("convnetbn", 10, 1, 8, mean=train.mean, std=train.std, seed=0).train()
    loss = curvature_objective(100.0, 3.0)(a, x, y, torch.Generator())
    b(x)  # one plain training-mode forward
    assert a.training and all(m.training for m in a.modules())
    for (name, ra), rb in zip(a.named_buffers(), b.buffers(), strict=True):
        assert torch.equal(ra, rb), name
    plain = F.cross_entropy(b(x), y)
    assert float(loss.detach()) > float(plain.detach()) - 1e-4
    with modules_in_eval(a):
        assert not a.training
    assert a.training


def test_guard_dc_with_zero_weight_is_dc_and_otherwise_differs(one_thread, digits_splits):
    train = digits_splits[0]
    dc = robustdd.distill("dc", train, ipc=1, seed=0, profile="smoke")
    zero = robustdd.distill("guard-dc", train, ipc=1, seed=0, profile="smoke", guard_weight=0.0)
    assert torch.equal(dc.images, zero.images)
    for form in ("loss-difference", "curvature"):
        g = robustdd.distill("guard-dc", train, ipc=1, seed=0, profile="smoke", guard_form=form)
        assert not torch.equal(dc.images, g.images)
        assert g.meta["guard"]["variant"] == "reconstructed" and g.meta["guard"]["form"] == form


def test_zero_weight_objective_is_plain_ce_without_the_penalty_pass(monkeypatch):
    def no_penalty(*args, **kwargs):
        raise AssertionError("the penalty was computed at weight 0")

    monkeypatch.setattr(importlib.import_module("robustdd.robust.curvature"),
                        "curvature_penalty", no_penalty)
    net, x, y = _smooth_net()
    loss = curvature_objective(0.0, space="pixel")(net, x, y, torch.Generator())
    assert float(loss.detach()) == pytest.approx(float(F.cross_entropy(net(x), y).detach()),
                                              rel=1e-12)
    with pytest.raises(AssertionError, match="weight 0"):
        curvature_objective(1.0, space="pixel")(net, x, y, torch.Generator())


def test_guard_sre2l_regularises_the_teacher_and_keeps_sre2l_otherwise(one_thread, digits_splits,
                                                                      tmp_path, monkeypatch):
    # An empty cache of its own: the session's may already hold these teachers (the CLI tests
    # distil guard-sre2l on digits too), and the test asks whether GUARD trains its own.
    monkeypatch.setenv("ROBUSTDD_CACHE", str(tmp_path))
    train, test = digits_splits
    base = robustdd.distill("sre2l", train, ipc=1, seed=0, profile="smoke", jpeg_quality=None)
    zero = robustdd.distill("guard-sre2l", train, ipc=1, seed=0, profile="smoke",
                            jpeg_quality=None, curvature_weight=0.0)
    assert torch.equal(base.images, zero.images)  # the penalty is skipped, not weighted by 0
    paper = robustdd.distill("guard-sre2l", train, ipc=1, seed=0, profile="smoke",
                             jpeg_quality=None)
    faithful = robustdd.distill("guard-sre2l", train, ipc=1, seed=0, profile="smoke",
                                jpeg_quality=None, variant="faithful")
    for g in (paper, faithful):
        assert not g.meta["teacher"]["from_cache"]  # its own cache entry, not SRe2L's teacher
        assert any(not torch.equal(base.teacher.state[k], g.teacher.state[k])
                   for k in base.teacher.state)
    assert paper.meta["guard"]["squared"] and not faithful.meta["guard"]["squared"]
    record = robustdd.evaluate(paper, profile="smoke", test=test, num_models=1, attacks="quick")
    assert record["protocol"]["name"] == "sre2l-kd" and record["method"] == "guard-sre2l"


def test_guard_dc_resume_equals_uninterrupted(one_thread, digits_splits, tmp_path, monkeypatch):
    resumes_identically("guard-dc", digits_splits[0], tmp_path, monkeypatch, iterations=6)


def test_cli_distills_guard_sre2l_faithful(one_thread, tmp_path):
    out = tmp_path / "g"
    result = CliRunner().invoke(app, ["distill", "guard-sre2l", "digits", "--ipc", "1",
                                      "--profile", "smoke", "--variant", "faithful", "--out",
                                      str(out), "--device", "cpu"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert DistilledSet.load(out).meta["guard"]["variant"] == "faithful"


def test_guard_dc_synthetic_direction_is_algorithm_1(one_thread, digits_splits):
    """direction 'synthetic': one unit direction (×h) from the class's synthetic batch, shared by
    every real image; at IPC 1 it is the synthetic image's own normalised input gradient."""
    train = digits_splits[0]
    net = build_model("convnet", 10, 1, 8, mean=train.mean, std=train.std, seed=0).eval()
    x, y = train.images[:6], torch.full((6,), 3)
    syn, syn_y = train.images[6:7], torch.tensor([3])
    view = normalised_view(net)
    sin = view.to_normalised(syn).requires_grad_(True)
    (g,) = torch.autograd.grad(F.cross_entropy(view.net(sin), syn_y), sin)
    z = 3.0 * g / g.norm()
    torch.testing.assert_close(synthetic_direction(view.net, view.to_normalised(syn), syn_y, 3.0),
                               z)
    xin = view.to_normalised(x)
    base = F.cross_entropy(view.net(xin), y)
    want = base + 0.5 * (F.cross_entropy(view.net(xin + z), y) - base)
    got = guard_real_loss("loss-difference", 0.5, 3.0, "normalised", direction="synthetic")(
        net, x, y, syn, syn_y)
    torch.testing.assert_close(got, want)
    real = guard_real_loss("loss-difference", 0.5, 3.0, "normalised")(net, x, y, syn, syn_y)
    assert not torch.allclose(got, real)
    with pytest.raises(ValueError, match="direction"):
        guard_real_loss("loss-difference", 0.5, 3.0, "normalised", direction="other")
    dc = robustdd.distill("guard-dc", train, ipc=1, seed=0, profile="smoke")
    alg1 = robustdd.distill("guard-dc", train, ipc=1, seed=0, profile="smoke",
                            guard_direction="synthetic")
    assert not torch.equal(dc.images, alg1.images)
    assert alg1.meta["guard"]["direction"] == "synthetic"
