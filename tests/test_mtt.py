"""MTT: functional unrolled student, trajectory loss, guards, ZCA, expert cache, end to end."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
import torch.nn.functional as F
from test_checkpoint import resumes_identically
from torch import nn
from typer.testing import CliRunner

import robustdd
from robustdd.cli import app
from robustdd.distill import experts as experts_mod
from robustdd.distill.experts import ExpertConfig, dataset_zca, expert_buffer
from robustdd.distill.losses.trajectory import (
    FlatParams,
    clamp_syn_lr_,
    minibatch_schedule,
    step_problem,
    trajectory_matching_loss,
    unroll_student,
)
from robustdd.distill.methods.mtt import HPARAMS, table_row
from robustdd.distilled import DistilledSet
from robustdd.errors import CorruptDataError
from robustdd.nn import build_model
from robustdd.nn.dsa import DSA, DSAConfig
from robustdd.nn.zca import ZCAModel, ZCAWhitening, whitened_space_augment, wrap_with_zca
from robustdd.runtime import derive_seed


@pytest.fixture(scope="module", autouse=True)
def mtt_cache(tmp_path_factory):
    """Experts and ZCA go to a per-module cache (built once, shared by the tests below)."""
    folder = tmp_path_factory.mktemp("derived-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ROBUSTDD_CACHE", str(folder))
        yield folder


# -- the unrolled functional student --------------------------------------------------------------


def _explicit_loss(module: nn.Module, start_module: nn.Module, images: torch.Tensor,
                   labels: torch.Tensor, lr: float, batches, augment, target: torch.Tensor,
                   start: torch.Tensor) -> tuple[float, torch.Tensor]:
    """A plain copied nn.Module trained by N manual in-place SGD steps; returns (loss, θ_N)."""
    net = copy.deepcopy(start_module)
    for step, idx in enumerate(batches):
        x = augment(images[idx], step)
        loss = F.cross_entropy(net(x), labels[idx])
        net.zero_grad()
        loss.backward()
        with torch.no_grad():
            for p in net.parameters():
                p -= lr * p.grad
    end = FlatParams.flatten(net)
    value = float(((end - target) ** 2).sum() / ((start - target) ** 2).sum())
    return value, end


def test_functional_unroll_equals_explicit_loop_including_gradients(one_thread, digits_splits):
    torch.manual_seed(0)  # only for this test's own fixtures; the code under test takes none
    train = digits_splits[0]
    net = build_model("convnetd1", 10, 1, 8, seed=1).net.double()
    for p in net.parameters():
        p.requires_grad_(False)
    layout = FlatParams(net)
    start = FlatParams.flatten(net)
    target = start + 0.05 * torch.randn(start.shape, dtype=torch.float64,
                                        generator=torch.Generator().manual_seed(2))
    images = train.pixels(torch.arange(6)).double()
    labels = train.labels[:6]
    batches = minibatch_schedule(6, 3, 4, torch.Generator().manual_seed(3))
    assert [len(b) for b in batches] == [4, 2, 4]  # chunks of a permutation, then a fresh one
    dsa = DSA(DSAConfig(strategy="crop_scale_rotate"))
    g = torch.Generator().manual_seed(4)
    params = [dsa.sample(len(b), (8, 8), g) for b in batches]

    def augment(x, step):
        return dsa.apply(x, params[step])

    lr = 0.03
    x = images.clone().requires_grad_(True)
    syn_lr = torch.tensor(lr, dtype=torch.float64, requires_grad=True)
    end = unroll_student(net, layout, start, x, labels, syn_lr, batches, augment)
    loss = trajectory_matching_loss(end, start, target)
    loss.backward()

    module = copy.deepcopy(net)
    for p in module.parameters():
        p.requires_grad_(True)
    ref_loss, ref_end = _explicit_loss(module, module, images, labels, lr, batches, augment,
                                       target, start)
    torch.testing.assert_close(end.detach(), ref_end, atol=1e-5, rtol=0)
    assert float(loss.detach()) == pytest.approx(ref_loss, abs=1e-5)

    # Gradients of the explicit loop's loss by central differences (float64).
    h = 1e-6
    direction = torch.randn(images.shape, dtype=torch.float64,
                            generator=torch.Generator().manual_seed(5))
    plus = _explicit_loss(module, module, images + h * direction, labels, lr, batches, augment,
                          target, start)[0]
    minus = _explicit_loss(module, module, images - h * direction, labels, lr, batches, augment,
                           target, start)[0]
    fd_images = (plus - minus) / (2 * h)
    assert float((x.grad * direction).sum()) == pytest.approx(fd_images, abs=1e-5, rel=1e-5)
    plus = _explicit_loss(module, module, images, labels, lr + h, batches, augment, target,
                          start)[0]
    minus = _explicit_loss(module, module, images, labels, lr - h, batches, augment, target,
                           start)[0]
    assert float(syn_lr.grad) == pytest.approx((plus - minus) / (2 * h), abs=1e-5, rel=1e-5)


def test_loss_is_zero_on_target_and_matches_a_hand_computed_case():
    net = nn.Linear(2, 2)
    with torch.no_grad():
        net.weight.zero_()
        net.bias.zero_()
    layout = FlatParams(net)
    start = FlatParams.flatten(net)  # [w11, w12, w21, w22, b1, b2] = 0
    x = torch.tensor([[1.0, 2.0]])
    y = torch.tensor([0])
    alpha = torch.tensor(0.5)
    batches = [torch.tensor([0])]
    end = unroll_student(net, layout, start, x, y, alpha, batches)
    # At zero weights p = softmax(0) = (½, ½); ∇W = (p − e_y) xᵀ, ∇b = p − e_y.
    # θ₁ = −α∇ = 0.5 · [½, 1, −½, −1, ½, −½].
    expected = torch.tensor([0.25, 0.5, -0.25, -0.5, 0.25, -0.25])
    torch.testing.assert_close(end.detach(), expected)
    assert float(trajectory_matching_loss(end, start, end.detach()).detach()) == 0.0
    target = torch.tensor([1.0, 0.0, 0.0, 0.0, 0.0, 1.0])
    num = (0.25 - 1) ** 2 + 0.5 ** 2 + 0.25 ** 2 + 0.5 ** 2 + 0.25 ** 2 + (-0.25 - 1) ** 2
    assert float(trajectory_matching_loss(end, start, target).detach()) == pytest.approx(num / 2)
    with pytest.raises(ValueError, match="did not move"):
        trajectory_matching_loss(end, start, start)


def test_guards_and_projection_units():
    lr = torch.tensor(-0.2, requires_grad=True)
    assert clamp_syn_lr_(lr, 1e-6) and float(lr.detach()) == pytest.approx(1e-6)
    assert not clamp_syn_lr_(lr, 1e-6)
    ok = torch.tensor(0.7)
    assert step_problem(ok, [torch.ones(3), None], max_loss=100) is None
    assert "non-finite loss" in step_problem(torch.tensor(float("nan")), [], 100)
    assert "above max_loss" in step_problem(torch.tensor(1e6), [], 100)
    assert "gradient" in step_problem(ok, [torch.tensor([1.0, float("inf")])], 100)


# -- ZCA ------------------------------------------------------------------------------------------


def test_zca_matches_the_kornia_formula_and_whitens(digits_splits):
    images = digits_splits[0].images  # uint8, 1347 × 64 values
    x = images.reshape(len(images), -1).double() / 255.0
    mu = x.mean(0)
    cov = (x - mu).T @ (x - mu) / (len(x) - 1)
    u, s, _ = torch.linalg.svd(cov)  # Kornia's recipe
    for eps in (0.1, 1e-4):
        zca = ZCAWhitening.fit(images, eps=eps, chunk=100)  # chunked == whole-set statistics
        t = u @ torch.diag((s + eps).rsqrt()) @ u.T
        torch.testing.assert_close(zca.mean.double(), mu, atol=1e-6, rtol=0)
        torch.testing.assert_close(zca.transform.double(), t, atol=2e-4, rtol=1e-4)
        w = zca(images.float() / 255.0).reshape(len(images), -1).double()
        wc = w - w.mean(0)
        cov_w = wc.T @ wc / (len(w) - 1)
        shrunk = u @ torch.diag(s / (s + eps)) @ u.T  # identity up to the eps shrinkage
        torch.testing.assert_close(cov_w, shrunk, atol=2e-4, rtol=0)
        big = s > 100 * eps  # well-resolved directions are whitened to unit variance
        var = torch.diag(u.T @ cov_w @ u)
        assert torch.allclose(var[big], torch.ones_like(var[big]), atol=0.011)
        if eps < 1e-3:
            assert int(big.sum()) >= 30  # of 64 pixels (some digit corners are always 0)
        px = images[:5].float() / 255.0
        torch.testing.assert_close(zca.inverse(zca(px)), px, atol=1e-4, rtol=0)


def test_zca_model_and_whitened_augmentation_compose_correctly(digits_splits):
    train = digits_splits[0]
    zca = ZCAWhitening.fit(train.images, eps=0.1)
    model = build_model("convnetd2", 10, 1, 8, mean=train.mean, std=train.std, seed=0)
    wrapped = wrap_with_zca(model, zca)
    assert isinstance(wrapped, ZCAModel) and wrapped.net is model.net
    assert [p for p in wrapped.parameters()] == [p for p in model.net.parameters()]
    x = train.pixels(torch.arange(8))
    torch.testing.assert_close(wrapped(x), model.net(zca(x)))  # ZCA replaces mean/std
    other = nn.Flatten()
    torch.testing.assert_close(wrap_with_zca(other, zca)(x), zca(x).flatten(1))
    dsa = DSA(DSAConfig(strategy="crop"))
    aug = whitened_space_augment(dsa, zca)
    out = wrapped(aug(x, torch.Generator().manual_seed(0)))
    ref = model.net(dsa(zca(x), torch.Generator().manual_seed(0)))
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)


def test_distilled_set_round_trips_its_zca(tmp_path, digits_splits):
    train = digits_splits[0]
    zca = ZCAWhitening.fit(train.images, eps=0.1)
    syn = DistilledSet(images=train.pixels(torch.arange(10)), labels=train.labels[:10],
                       num_classes=10, dataset="digits", method="mtt", ipc=1, lr=0.02,
                       mean=train.mean, std=train.std, zca=zca)
    syn.save(tmp_path / "s")
    doc = json.loads((tmp_path / "s" / "meta.json").read_text())
    assert doc["zca"]["tensors"] == {"mean": "zca.mean", "transform": "zca.transform"}
    assert doc["zca"]["eps"] == 0.1 and doc["zca"]["dim"] == 64
    back = DistilledSet.load(tmp_path / "s")
    assert back.lr == 0.02 and back.zca is not None and back.zca.eps == 0.1
    assert torch.equal(back.zca.mean, zca.mean)
    assert torch.equal(back.zca.transform, zca.transform)
    # The checksum covers the ZCA tensors.
    path = tmp_path / "s" / "tensors.safetensors"
    blob = bytearray(path.read_bytes())
    blob[-3] ^= 0xFF
    path.write_bytes(bytes(blob))
    with pytest.raises(CorruptDataError, match="checksum"):
        DistilledSet.load(tmp_path / "s")
    # A set without ZCA, and an older meta.json with no "zca" key at all, still load.
    plain = DistilledSet(images=syn.images, labels=syn.labels, num_classes=10,
                         dataset="digits", method="random", ipc=1)
    plain.save(tmp_path / "p")
    meta = tmp_path / "p" / "meta.json"
    doc = json.loads(meta.read_text())
    del doc["zca"]
    meta.write_text(json.dumps(doc))
    assert DistilledSet.load(tmp_path / "p").zca is None
    with pytest.raises(ValueError, match="dimensional"):
        DistilledSet(images=torch.zeros(1, 1, 4, 4), labels=torch.zeros(1, dtype=torch.int64),
                     num_classes=1, dataset="x", method="y", ipc=1, zca=zca)


# -- experts --------------------------------------------------------------------------------------


SMALL_EXPERTS = ExpertConfig(num_experts=2, epochs=2, images_per_class=20)


def test_experts_are_cached_verified_and_follow_buffer_py(one_thread, digits_splits, mtt_cache,
                                                          monkeypatch):
    train = digits_splits[0]
    buf = expert_buffer(train, "convnetd2", SMALL_EXPERTS, seed=7)
    assert buf.key["expert"]["momentum"] == 0.0 and buf.key["expert"]["weight_decay"] == 0.0
    assert str(buf.directory).startswith(str(mtt_cache))
    traj = buf.trajectory(1)
    assert traj.shape == (3, buf.num_params)
    init = build_model("convnetd2", 10, 1, 8, seed=derive_seed(7, "mtt-expert", 1))
    torch.testing.assert_close(traj[0], FlatParams.flatten(init), atol=0, rtol=0)
    assert not torch.equal(traj[1], traj[0]) and not torch.equal(traj[2], traj[1])

    def no_training(*args, **kwargs):
        raise AssertionError("the second call must load, not train")

    monkeypatch.setattr(experts_mod, "train_expert", no_training)
    again = expert_buffer(train, "convnetd2", SMALL_EXPERTS, seed=7)
    assert torch.equal(again.trajectory(1), traj) and again.directory == buf.directory
    # One byte of a snapshot flipped: that snapshot is refused.
    path = buf.path(0)
    blob = bytearray(path.read_bytes())
    blob[-5] ^= 0x01
    path.write_bytes(bytes(blob))
    fresh = expert_buffer(train, "convnetd2", SMALL_EXPERTS, seed=7)
    with pytest.raises(CorruptDataError, match="SHA-256"):
        fresh.snapshot(0, 2)
    # A truncated file is refused before any work is done.
    path.write_bytes(bytes(blob[: len(blob) // 2]))
    with pytest.raises(CorruptDataError):
        expert_buffer(train, "convnetd2", SMALL_EXPERTS, seed=7)


def test_dataset_zca_is_cached(digits_splits, mtt_cache):
    train = digits_splits[0]
    a = dataset_zca(train, 0.1)
    files = list((mtt_cache / "zca").glob("*.safetensors"))
    assert len(files) == 1
    b = dataset_zca(train, 0.1)
    assert torch.equal(a.transform, b.transform) and torch.equal(a.mean, b.mean)


# -- the method -----------------------------------------------------------------------------------


def test_hyperparameter_table_rows():
    assert table_row("cifar10", 10) == ("cifar10/ipc10", HPARAMS["cifar10"][10])
    assert table_row("cifar100", 50)[1].batch_syn == 125
    assert table_row("cifar10", 1)[1].zca and not table_row("cifar10", 50)[1].zca
    assert table_row("fashion-mnist", 7)[0] == "generic/ipc10"
    assert table_row("digits", 2)[0] == "generic/ipc1"


def test_mtt_end_to_end_deterministic_with_lr_and_no_global_rng(one_thread, digits_splits):
    train = digits_splits[0]
    state = torch.get_rng_state()
    a = robustdd.distill("mtt", train, ipc=2, seed=0, profile="smoke")
    b = robustdd.distill("mtt", train, ipc=2, seed=0, profile="smoke")
    c = robustdd.distill("mtt", train, ipc=2, seed=1, profile="smoke")
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(a.images, b.images) and a.lr == b.lr
    assert not torch.equal(a.images, c.images)
    assert a.images.shape == (20, 1, 8, 8) and a.lr is not None and a.lr > 0
    assert a.zca is None and a.meta["mtt"]["table_row"] == "generic/ipc1"
    assert a.meta["config"]["iterations"] == 6 and a.meta["skipped_iterations"] == []
    assert a.meta["timings"]["seconds_per_iteration"] > 0
    start = robustdd.distill("mtt", train, ipc=2, seed=0, profile="smoke", iterations=0)
    assert not torch.equal(start.images, a.images)  # the images were optimised
    assert start.lr == pytest.approx(0.01)


def test_mtt_zca_set_round_trips_and_evaluates_in_pixel_space(one_thread, digits_splits,
                                                              tmp_path):
    train = digits_splits[0]
    syn = robustdd.distill("mtt", train, ipc=1, seed=0, profile="smoke", zca=True,
                           iterations=2)
    assert syn.zca is not None and syn.meta["mtt"]["zca"]
    syn.save(tmp_path / "z")
    back = DistilledSet.load(tmp_path / "z")
    assert torch.equal(back.images, syn.images) and back.lr == syn.lr
    model = wrap_with_zca(build_model("convnetd2", 10, 1, 8, seed=0), back.zca)
    assert model(back.images).shape == (10, 10)


def test_mtt_lr_projection_and_explosion_guard(one_thread, digits_splits):
    train = digits_splits[0]
    clamped = robustdd.distill("mtt", train, ipc=1, seed=0, profile="smoke", iterations=2,
                               lr_lr=1e-3, min_syn_lr=0.05)
    assert clamped.lr >= 0.05 and clamped.meta["syn_lr_clamped_steps"] >= 1
    with pytest.raises(FloatingPointError, match="consecutive"):
        robustdd.distill("mtt", train, ipc=1, seed=0, profile="smoke", iterations=4,
                         lr_teacher=1e4, max_consecutive_skips=2)
    kept = robustdd.distill("mtt", train, ipc=1, seed=0, profile="smoke", iterations=2,
                            lr_teacher=1e4, max_consecutive_skips=5)
    start = robustdd.distill("mtt", train, ipc=1, seed=0, profile="smoke", iterations=0)
    assert [s["iteration"] for s in kept.meta["skipped_iterations"]] == [0, 1]
    assert torch.equal(kept.images, start.images)  # skipped steps change nothing
    assert math.isfinite(kept.lr)


def test_mtt_through_the_cli(one_thread, tmp_path):
    out = tmp_path / "mtt-set"
    result = CliRunner().invoke(app, ["distill", "mtt", "digits", "--ipc", "1", "--profile",
                                      "smoke", "--device", "cpu", "--out", str(out),
                                      "--set", "iterations=2"])
    assert result.exit_code == 0, result.output
    syn = DistilledSet.load(out)
    assert syn.method == "mtt" and syn.lr is not None and syn.meta["config"]["iterations"] == 2


def test_mtt_resume_equals_uninterrupted(one_thread, digits_splits, tmp_path, monkeypatch):
    resumes_identically("mtt", digits_splits[0], tmp_path, monkeypatch, batch_syn=7)
