"""SRe2L and the online-KD protocol: hand-checked losses, batched recovery = separate slice
runs, augmentation, teacher storage, evaluation recipes (KD, ZCA), end to end and resume."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from test_checkpoint import resumes_identically
from typer.testing import CliRunner

import robustdd
from robustdd.cli import app
from robustdd.distill.base import DistillContext
from robustdd.distill.methods.sre2l import (
    BNStatistics,
    SRe2LConfig,
    bn_matching_loss,
    jitter_slices,
    jpeg_round_trip,
    recover,
)
from robustdd.distilled import DistilledSet, TeacherNet
from robustdd.errors import CorruptDataError
from robustdd.evaluate.recipe import recipe_for_set
from robustdd.nn import build_model
from robustdd.nn.kd import kd_loss, kd_objective, mixup, random_crop_flip
from robustdd.nn.train import TrainConfig, train_model
from robustdd.nn.zca import ZCAModel, ZCAWhitening
from robustdd.profiles import get_profile
from robustdd.runtime import generator_for

pytestmark = pytest.mark.usefixtures("private_cache")




def _teacher(data, seed=0):
    net = build_model("convnetbn", data.num_classes, data.channels, data.image_size,
                      mean=data.mean, std=data.std, seed=seed)
    train_model(net, data.pixels()[:300], data.labels[:300],
                TrainConfig(epochs=1, lr=0.05, batch_size=64, decay=False, extra_epoch=False),
                torch.Generator().manual_seed(seed))
    return net.eval()


# --- losses ----------------------------------------------------------------------------------


def test_bn_loss_is_the_norm_of_stat_gaps_per_group_with_first_layer_weighted():
    bn1, bn2 = torch.nn.BatchNorm2d(2), torch.nn.BatchNorm2d(2)
    bn1.running_mean.copy_(torch.tensor([1.0, -1.0]))
    bn1.running_var.copy_(torch.tensor([2.0, 0.5]))
    net = torch.nn.Sequential(bn1, bn2).eval()
    x = torch.randn(6, 2, 3, 3, generator=torch.Generator().manual_seed(0))
    stats = BNStatistics(net)
    net(x)
    got = bn_matching_loss(stats, groups=2, first_multiplier=10.0)
    stats.remove()
    want = []
    for part in (x[:3], x[3:]):
        mu = part.mean((0, 2, 3))
        var = part.permute(1, 0, 2, 3).reshape(2, -1).var(1, unbiased=False)
        l1 = (bn1.running_var - var).norm() + (bn1.running_mean - mu).norm()
        h = bn1(part)  # the second layer's input
        mu2, var2 = h.mean((0, 2, 3)), h.permute(1, 0, 2, 3).reshape(2, -1).var(1, unbiased=False)
        l2 = (bn2.running_var - var2).norm() + (bn2.running_mean - mu2).norm()
        want.append(10.0 * l1 + l2)
    torch.testing.assert_close(got, torch.stack(want), rtol=1e-5, atol=1e-6)


def test_teacher_without_batchnorm_is_refused():
    with pytest.raises(ValueError, match="BatchNorm"):
        BNStatistics(build_model("convnet", 10, 3, 32))


def test_kd_loss_by_hand_has_no_temperature_squared():
    s = torch.tensor([[1.0, 2.0, 0.0], [0.5, -1.0, 3.0]])
    t = torch.tensor([[0.0, 1.0, 2.0], [2.0, 2.0, -2.0]])
    T = 2.0
    pt, ls = F.softmax(t / T, 1), F.log_softmax(s / T, 1)
    want = (pt * (pt.log() - ls)).sum(1).mean()
    assert float(kd_loss(s, t, T)) == pytest.approx(float(want), rel=1e-6)


# --- augmentation ----------------------------------------------------------------------------


def test_random_crop_flip_equals_a_per_image_crop_of_the_padded_image():
    x = torch.rand(5, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    out = random_crop_flip(x, torch.Generator().manual_seed(7), padding=2)
    g = torch.Generator().manual_seed(7)  # replay the draws: y offsets, x offsets, flips
    oy = torch.randint(0, 5, (5,), generator=g)
    ox = torch.randint(0, 5, (5,), generator=g)
    flips = torch.rand(5, generator=g) < 0.5
    padded = F.pad(x, (2, 2, 2, 2))
    for i in range(5):
        crop = padded[i, :, oy[i]:oy[i] + 8, ox[i]:ox[i] + 8]
        torch.testing.assert_close(out[i], crop.flip(2) if flips[i] else crop)
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1


def test_mixup_is_a_convex_combination_and_reproducible():
    x = torch.rand(6, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    mixed, lam, perm = mixup(x, torch.Generator().manual_seed(3), 0.8)
    assert 0.0 <= lam <= 1.0
    torch.testing.assert_close(mixed, lam * x + (1 - lam) * x[perm])
    again, lam2, _ = mixup(x, torch.Generator().manual_seed(3), 0.8)
    assert lam2 == lam and torch.equal(again, mixed)
    plain, one, _ = mixup(x, torch.Generator().manual_seed(3), 0.0)
    assert one == 1.0 and torch.equal(plain, x)


def test_cosine_schedule_and_adamw_in_the_shared_trainer():
    cfg = TrainConfig(epochs=4, lr=1.0, decay=False, extra_epoch=False, cosine=True,
                      optimizer="adamw")
    assert [cfg.lr_at(e) for e in range(4)] == pytest.approx(
        [0.5 * (1 + math.cos(math.pi * e / 4)) for e in range(4)])
    assert cfg.decay_after_epoch is None
    step = TrainConfig(epochs=4, lr=1.0)
    assert [step.lr_at(e) for e in range(5)] == pytest.approx([1, 1, 1, 1, 0.1])
    with pytest.raises(ValueError, match="optimizer"):
        TrainConfig(optimizer="lbfgs")


# --- recover ---------------------------------------------------------------------------------


def test_batched_recovery_equals_separate_reference_runs_per_slice(one_thread, digits_splits):
    """Each slice of the batched recovery follows the reference's single-slice loop exactly."""
    train = digits_splits[0]
    teacher = _teacher(train)
    cfg = SRe2LConfig(iterations=4, jitter=2, r_bn=0.05, first_bn_multiplier=10.0)
    ctx = DistillContext(data=train, ipc=2, seed=5, device=torch.device("cpu"), progress=False)
    pixels, _, _ = recover(teacher, ctx, cfg)

    C, S = train.num_classes, 2
    mean = torch.tensor(train.mean).view(1, -1, 1, 1)
    std = torch.tensor(train.std).view(1, -1, 1, 1)
    g = generator_for(5, "sre2l-recover")
    z0 = torch.randn(S, C, 1, train.image_size, train.image_size, generator=g)
    offsets = [torch.randint(0, 3, (S, 2), generator=g) for _ in range(4)]
    bns = [m for m in teacher.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    feats: list[tuple[torch.nn.Module, torch.Tensor]] = []
    hooks = [m.register_forward_hook(lambda mod, inp, out: feats.append((mod, inp[0])))
             for m in bns]
    for s in range(S):  # the reference: one run per slice, hooks à la BNFeatureHook
        z = z0[s].clone().requires_grad_(True)
        opt = torch.optim.Adam([z], lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=1e-8)
        for it in range(4):
            for group in opt.param_groups:
                group["lr"] = 0.5 * (1 + math.cos(math.pi * it / 4)) * cfg.lr
            feats.clear()
            dy, dx = int(offsets[it][s, 0]), int(offsets[it][s, 1])
            out = teacher(torch.roll(z, shifts=(dy, dx), dims=(2, 3)) * std + mean)
            r = []
            for mod, inp in feats:
                nch = inp.shape[1]
                mu = inp.mean([0, 2, 3])
                var = inp.permute(1, 0, 2, 3).contiguous().view([nch, -1]).var(1, unbiased=False)
                r.append(torch.norm(mod.running_var - var, 2)
                         + torch.norm(mod.running_mean - mu, 2))
            bn = sum(f * w for f, w in zip(r, [10.0] + [1.0] * (len(r) - 1), strict=True))
            loss = F.cross_entropy(out, torch.arange(C)) + cfg.r_bn * bn
            opt.zero_grad()
            loss.backward()
            opt.step()
            with torch.no_grad():
                z.copy_(torch.max(torch.min(z, (1 - mean) / std), -mean / std))
        torch.testing.assert_close(pixels[s], (z.detach() * std + mean), rtol=1e-4, atol=1e-5)
    for h in hooks:
        h.remove()


def test_jitter_rolls_each_slice_by_its_own_offset():
    x = torch.arange(2 * 1 * 1 * 3 * 3, dtype=torch.float32).view(2, 1, 1, 3, 3)
    out = jitter_slices(x, torch.tensor([[1, 0], [0, 2]]))
    assert torch.equal(out[0], torch.roll(x[0], (1, 0), (2, 3)))
    assert torch.equal(out[1], torch.roll(x[1], (0, 2), (2, 3)))


def test_jpeg_round_trip_truncates_to_uint8_and_is_lossy_but_close():
    x = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    y = jpeg_round_trip(x, 75)
    assert y.shape == x.shape and y.dtype == torch.float32
    assert 0 < float((y - x).abs().mean()) < 0.2
    flat = torch.full((1, 1, 8, 8), 0.5)
    assert torch.allclose(jpeg_round_trip(flat, 95), torch.full_like(flat, 127 / 255), atol=2e-3)


# --- storage and evaluation recipes ----------------------------------------------------------


def _small_set(train, teacher=None, meta=None, zca=None):
    return DistilledSet(images=train.pixels()[:10], labels=train.labels[:10],
                        num_classes=train.num_classes, dataset=train.name, method="t", ipc=1,
                        mean=train.mean, std=train.std, teacher=teacher, meta=meta or {},
                        zca=zca)


def test_teacher_is_saved_in_the_checksummed_file_and_loads_back(digits_splits, tmp_path):
    train = digits_splits[0]
    net = _teacher(train)
    syn = _small_set(train, TeacherNet.from_model("convnetbn", net),
                     {"protocol": {"name": "sre2l-kd", "arch": "convnetbn"}})
    syn.save(tmp_path / "s")
    back = DistilledSet.load(tmp_path / "s")
    rebuilt = back.teacher.build(train.num_classes, 1, train.image_size, train.mean, train.std)
    x = train.pixels()[:20]
    torch.testing.assert_close(rebuilt(x), net(x))
    assert not rebuilt.training
    # A teacher for another architecture is refused with the reason.
    wrong = TeacherNet("convnet", back.teacher.state)
    with pytest.raises(CorruptDataError, match="does not fit"):
        wrong.build(train.num_classes, 1, train.image_size, train.mean, train.std)


def test_kd_set_without_teacher_and_unknown_protocols_are_refused(digits_splits):
    train, test = digits_splits
    prof = get_profile("smoke")
    with pytest.raises(ValueError, match="carries none"):
        recipe_for_set(_small_set(train, meta={"protocol": {"name": "sre2l-kd"}}), test, prof,
                       torch.device("cpu"))
    with pytest.raises(ValueError, match="known: dd-standard, sre2l-kd"):
        recipe_for_set(_small_set(train, meta={"protocol": {"name": "mystery"}}), test, prof,
                       torch.device("cpu"))


def test_a_zca_set_is_trained_under_its_whitening(digits_splits):
    train, test = digits_splits
    zca = ZCAWhitening.fit(train.pixels()[:200])
    recipe = recipe_for_set(_small_set(train, zca=zca), test, get_profile("smoke"),
                            torch.device("cpu"))
    model = recipe.build(test, 0, torch.device("cpu"))
    assert isinstance(model, ZCAModel) and recipe.details["zca"] is True
    plain = recipe_for_set(_small_set(train), test, get_profile("smoke"), torch.device("cpu"))
    assert not isinstance(plain.build(test, 0, torch.device("cpu")), ZCAModel)


def test_kd_objective_trains_the_student_towards_the_teacher(one_thread, digits_splits):
    train, _ = digits_splits
    teacher = _teacher(train)
    student = build_model("convnetbn", train.num_classes, 1, train.image_size, mean=train.mean,
                          std=train.std, seed=9)
    x = train.pixels()[:100]
    with torch.no_grad():
        before = float(kd_loss(student.eval()(x), teacher(x), 4.0))
    train_model(student, x, train.labels[:100],
                TrainConfig(epochs=15, lr=3e-3, weight_decay=0.0, batch_size=50, decay=False,
                            extra_epoch=False, cosine=True, optimizer="adamw"),
                torch.Generator().manual_seed(0), objective=kd_objective(teacher, 4.0, 0.0))
    with torch.no_grad():
        after = float(kd_loss(student.eval()(x), teacher(x), 4.0))
    assert after < 0.5 * before
    assert all(not p.requires_grad for p in teacher.parameters())


# --- end to end ------------------------------------------------------------------------------


def test_sre2l_distils_and_evaluates_with_its_kd_protocol(one_thread, digits_splits):
    train, test = digits_splits
    syn = robustdd.distill("sre2l", train, ipc=2, seed=1, profile="smoke")
    assert len(syn) == 2 * train.num_classes and syn.teacher is not None
    assert syn.labels.tolist() == torch.arange(train.num_classes).repeat_interleave(2).tolist()
    assert syn.images.min() >= 0 and syn.images.max() <= 1
    assert syn.meta["protocol"] == {"name": "sre2l-kd", "arch": "convnetbn"}
    again = robustdd.distill("sre2l", train, ipc=2, seed=1, profile="smoke")
    assert again.meta["teacher"]["from_cache"] and torch.equal(again.images, syn.images)
    record = robustdd.evaluate(syn, profile="smoke", test=test, seed=0, num_models=1,
                               attacks=[])
    proto = record["protocol"]
    assert proto["name"] == "sre2l-kd" and proto["train"]["optimizer"] == "adamw"
    assert proto["train"]["cosine"] and proto["temperature"] == 30.0
    assert proto["teacher_arch"] == "convnetbn"
    assert 0 <= record["summary"]["clean_accuracy"]["mean"] <= 100


def test_sre2l_resume_equals_uninterrupted(one_thread, digits_splits, tmp_path, monkeypatch):
    resumes_identically("sre2l", digits_splits[0], tmp_path, monkeypatch, iterations=7)


def test_cli_distills_sre2l(one_thread, tmp_path):
    out = tmp_path / "sre2l"
    result = CliRunner().invoke(app, ["distill", "sre2l", "digits", "--ipc", "1", "--profile",
                                      "smoke", "--out", str(out), "--device", "cpu"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    syn = DistilledSet.load(out)
    assert syn.method == "sre2l" and syn.teacher is not None
