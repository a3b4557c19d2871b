"""IDM and BACON: distribution losses, the model pool, the mosaic formation and the methods."""

from __future__ import annotations

import math

import pytest
import torch
from test_checkpoint import resumes_identically
from typer.testing import CliRunner

import robustdd
from robustdd.cli import app
from robustdd.distill import base
from robustdd.distill.base import DistillContext
from robustdd.distill.formation import decode_mosaic2x2, make_mosaic2x2
from robustdd.distill.losses.distribution import (
    bacon_clip,
    bacon_loss,
    bacon_nll,
    mean_embedding_distance,
    total_variation,
)
from robustdd.distill.methods import idm as idm_module
from robustdd.distill.methods.bacon import BACON_TABLE
from robustdd.distill.methods.idm import (
    IDM_TABLE,
    PRESETS,
    IDMConfig,
    IDMVariant,
    run_idm_family,
    schedule_for,
)
from robustdd.distill.pool import ModelPool
from robustdd.distilled import DistilledSet
from robustdd.nn import build_model
from robustdd.runtime import derive_seed

# -- distribution losses -------------------------------------------------------------------------

REAL = torch.tensor([[0.0, 1.0], [2.0, 1.0]])  # mean (1, 1); unbiased std (√2, 0)
SYN = torch.tensor([[1.5, 0.0], [0.5, 0.0], [1.0, 0.0]])  # mean (1, 0)


def test_mean_embedding_distance_by_hand_and_batched_over_classes():
    syn = torch.tensor([[1.0, 3.0]])
    assert float(mean_embedding_distance(REAL, syn)) == pytest.approx(4.0)  # (0, 2) → 4
    g = torch.Generator().manual_seed(0)
    real, fake = torch.randn(5, 7, 3, generator=g), torch.randn(5, 2, 3, generator=g)
    batched = mean_embedding_distance(real, fake)
    assert batched.shape == (5,)
    for c in range(5):
        torch.testing.assert_close(batched[c], mean_embedding_distance(real[c], fake[c]))
    with pytest.raises(ValueError, match="differ"):
        mean_embedding_distance(real, fake[:4])


def test_bacon_terms_against_the_formulas_by_hand():
    # NLL = Σ_d ½ log 2π + σ_d + ½ Δ_d² / exp(2σ_d), σ = (√2, 0), Δ = (0, −1)
    nll = math.log(2 * math.pi) + math.sqrt(2) + 0.5
    assert float(bacon_nll(REAL, SYN)) == pytest.approx(nll, rel=1e-6)
    assert float(total_variation(REAL, SYN)) == pytest.approx(0.5)
    assert float(bacon_clip(REAL, SYN)) == 0.0  # uniform real softmax: the reference's 0/0
    g = torch.Generator().manual_seed(0)
    clip = bacon_clip(torch.randn(4, 30, 64, generator=g), torch.randn(4, 5, 64, generator=g))
    assert clip.shape == (4,) and float(clip.abs().max()) < 1e-8  # ~0 (methods.md §7)
    total = float(bacon_loss(REAL, SYN))
    assert total == pytest.approx(nll + 0.8 * 0.5, rel=1e-6)
    assert float(bacon_loss(REAL, SYN, tv_weight=0.0, clip_weight=0.0)) == pytest.approx(nll)


def test_bacon_nll_equals_the_reference_log_density_where_it_is_finite():
    g = torch.Generator().manual_seed(1)
    real, syn = torch.randn(3, 50, 16, generator=g), torch.randn(3, 4, 16, generator=g)
    sigma = torch.exp(real.std(1))  # the reference's gaussian_pdf, per class
    pdf = torch.exp(-0.5 * ((syn.mean(1) - real.mean(1)) / sigma) ** 2)
    pdf = pdf / (math.sqrt(2 * math.pi) * sigma)
    torch.testing.assert_close(bacon_nll(real, syn), -torch.log(pdf).sum(-1))
    with pytest.raises(ValueError, match="at least 2"):
        bacon_nll(real[:, :1], syn)


# -- model pool -----------------------------------------------------------------------------------


def _pool(digits, **kw) -> ModelPool:
    def build(seed: int):
        return build_model("convnetd1", 10, 1, 8, mean=digits.mean, std=digits.std, seed=seed)

    return ModelPool(build, 7, digits.images, digits.labels, **kw)


def test_pool_fifo_cap_and_net_seeds(one_thread, digits_splits):
    train = digits_splits[0]
    pool = _pool(train, initial=3, capacity=4)
    assert [m.index for m in pool.members] == [0, 1, 2] and pool.accuracies() == [0.0] * 3
    for _ in range(3):
        pool.push()
    assert [m.index for m in pool.members] == [2, 3, 4, 5] and pool.created == 6
    fresh = build_model("convnetd1", 10, 1, 8, mean=train.mean, std=train.std,
                        seed=derive_seed(7, "pool-net", 4))
    for a, b in zip(pool.members[2].net.parameters(), fresh.parameters(), strict=True):
        assert torch.equal(a, b)
    picked = pool.sample(3, torch.Generator().manual_seed(0))
    assert len({m.index for m in picked}) == 3
    assert len(pool.sample(10, torch.Generator().manual_seed(0))) == 4


def test_pool_accuracy_meter_counts_training_batches_since_reset(one_thread, digits_splits):
    train = digits_splits[0]
    seen_batches = []

    def record(net, x, y, g):  # perturb hook: see each batch with the weights about to be used
        with torch.no_grad():
            seen_batches.append((int((net(x).argmax(1) == y).sum()), y.numel()))
        return x

    pool = _pool(train, initial=2, perturb=record)
    member, other = pool.members
    g = torch.Generator().manual_seed(0)
    pool.train_member(member, steps=3, batch=20, generator=g)
    pool.train_member(member, steps=2, batch=20, generator=g)
    correct, seen = map(sum, zip(*seen_batches, strict=True))
    assert seen == 100 and member.seen == 100
    assert member.accuracy == pytest.approx(100.0 * correct / seen)
    assert other.accuracy == 0.0  # untrained
    assert member.optimizer.state  # momentum buffers persist between calls
    pool.reset_meters()
    assert member.accuracy == 0.0 and member.seen == 0
    assert len(pool.train_some(5, 1, 8, g)) == 2


def test_pool_perturb_hook_replaces_the_training_batch(one_thread, digits_splits):
    train = digits_splits[0]
    calls = []

    def blank(net, x, y, g):
        calls.append(x.shape)
        return torch.zeros_like(x)

    pool = _pool(train, initial=1, perturb=blank)
    reference = _pool(train, initial=1)
    pool.train_some(1, 2, 16, torch.Generator().manual_seed(0))
    reference.train_some(1, 2, 16, torch.Generator().manual_seed(0))
    assert calls == [torch.Size([16, 1, 8, 8])] * 2
    a, b = pool.members[0].net.state_dict(), reference.members[0].net.state_dict()
    assert any(not torch.equal(a[k], b[k]) for k in a)


def test_pool_state_round_trip_through_weights_only_load(one_thread, digits_splits, tmp_path):
    train = digits_splits[0]
    pool = _pool(train, initial=3, capacity=3)
    g = torch.Generator().manual_seed(0)
    pool.push()
    pool.train_some(2, 2, 16, g)
    torch.save(pool.state_dict(), tmp_path / "pool.pt")
    state = torch.load(tmp_path / "pool.pt", weights_only=True)
    copy = _pool(train, initial=1, capacity=3)
    copy.load_state_dict(state)
    assert copy.created == pool.created == 4
    assert [m.index for m in copy.members] == [m.index for m in pool.members] == [1, 2, 3]
    assert copy.accuracies() == pool.accuracies()
    g_a, g_b = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    pool.train_some(3, 2, 16, g_a)
    copy.train_some(3, 2, 16, g_b)
    for ma, mb in zip(pool.members, copy.members, strict=True):
        for k, v in ma.net.state_dict().items():
            assert torch.equal(v, mb.net.state_dict()[k])
    assert copy.accuracies() == pool.accuracies()


# -- formation ------------------------------------------------------------------------------------


def test_matching_decode_is_the_evaluation_decode():
    g = torch.Generator().manual_seed(0)
    images = torch.rand(6, 3, 8, 8, generator=g)
    syn = DistilledSet(images=images, labels=torch.arange(3).repeat_interleave(2), num_classes=3,
                       dataset="x", method="idm", ipc=2, formation="mosaic2x2")
    assert torch.equal(decode_mosaic2x2(images), syn.decoded()[0])
    assert idm_module.decode_mosaic2x2 is decode_mosaic2x2  # the loop uses this very function
    z = images.clone().requires_grad_(True)
    decode_mosaic2x2(z).sum().backward()
    assert z.grad is not None and torch.all(z.grad > 0)
    # Constant quadrants survive the ×0.5 / ×2 round trip exactly; order is quadrant-major.
    values = torch.rand(2, 4, generator=g)
    quads = values.view(2, 4, 1, 1, 1).expand(2, 4, 3, 8, 8)
    decoded = decode_mosaic2x2(make_mosaic2x2(quads))
    assert decoded.shape == (8, 3, 8, 8)
    for q in range(4):
        for i in range(2):
            expected = torch.full((3, 8, 8), float(values[i, q]))
            torch.testing.assert_close(decoded[q * 2 + i], expected)


# -- schedule table -------------------------------------------------------------------------------


def test_per_ipc_table_and_fallbacks():
    row, _ = schedule_for(IDM_TABLE, "cifar10", 1)
    assert (row.ce_weight, row.batch_real, row.net_generate_interval) == (0.5, 5000, 5)
    assert schedule_for(IDM_TABLE, "cifar100", 10)[0].model_train_steps == 50
    assert schedule_for(IDM_TABLE, "cifar100", 50)[0].model_train_steps == 10
    assert schedule_for(BACON_TABLE, "cifar100", 50)[0].model_train_steps == 50
    assert schedule_for(IDM_TABLE, "cifar10", 50)[0].eval_interval == 500
    row, note = schedule_for(IDM_TABLE, "fashion-mnist", 10)
    assert row == IDM_TABLE["cifar10"][10] and "CIFAR-10's" in note
    assert schedule_for(IDM_TABLE, "cifar10", 20)[0] == IDM_TABLE["cifar10"][10]
    assert schedule_for(IDM_TABLE, "cifar10", 100)[0] == IDM_TABLE["cifar10"][50]


# -- the methods end to end -----------------------------------------------------------------------


@pytest.mark.parametrize("method", ["idm", "bacon"])
def test_distill_end_to_end_gives_mosaics_that_decode_to_4x_ipc(one_thread, digits_splits,
                                                                method):
    train = digits_splits[0]
    syn = robustdd.distill(method, train, ipc=2, seed=0, profile="smoke")
    assert syn.method == method and syn.formation == "mosaic2x2"
    assert syn.images.shape == (20, 1, 8, 8)
    images, labels = syn.decoded()
    assert images.shape == (80, 1, 8, 8)
    assert torch.bincount(labels, minlength=10).tolist() == [8] * 10
    assert syn.meta["pool"]["created"] == 3 + 3  # pushes at iterations 0, 2, 4 (interval 2)
    assert syn.meta["schedule"]["ce_weight"] == 0.5
    assert math.isfinite(syn.meta["loss_last"])


def test_cli_distills_idm_and_bacon(one_thread, tmp_path):
    runner = CliRunner()
    for method in ("idm", "bacon"):
        out = tmp_path / method
        result = runner.invoke(app, ["distill", method, "digits", "--ipc", "1", "--profile",
                                     "smoke", "--out", str(out), "--device", "cpu",
                                     "--set", "iterations=2"])
        assert result.exit_code == 0, result.output
        syn = DistilledSet.load(out)
        assert syn.method == method and syn.formation == "mosaic2x2"
        assert syn.meta["config"]["iterations"] == 2
        assert syn.decoded()[0].shape[0] == 40


def test_idm_is_deterministic_and_leaves_global_rng_alone(one_thread, digits_splits):
    train = digits_splits[0]
    state = torch.get_rng_state()
    kw = dict(ipc=1, profile="smoke", iterations=3)
    a = robustdd.distill("idm", train, seed=0, **kw)
    b = robustdd.distill("idm", train, seed=0, **kw)
    c = robustdd.distill("idm", train, seed=1, **kw)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(a.images, b.images) and a.meta["pool"] == b.meta["pool"]
    assert not torch.equal(a.images, c.images)


def test_idm_resume_equals_uninterrupted(one_thread, digits_splits, tmp_path, monkeypatch):
    resumes_identically("idm", digits_splits[0], tmp_path, monkeypatch, iterations=7)


def test_variant_hooks_see_real_batches_and_pool_batches(one_thread, digits_splits):
    """The hooks ROME plugs in: a transform of the real batches and of pool training batches."""
    train = digits_splits[0]
    real_calls, pool_calls = [], []

    def real_transform(net, x, y, g):
        real_calls.append(y.clone())
        return x

    def pool_perturb(net, x, y, g):
        pool_calls.append(x.shape[0])
        return x

    ctx = DistillContext(data=train, ipc=1, seed=0, device=torch.device("cpu"), progress=False,
                         arch="convnetd2")
    config = IDMConfig(**{**PRESETS["smoke"], "iterations": 2, "real_forward_batch": 64})
    variant = IDMVariant("idm-hooked", real_transform=real_transform, pool_perturb=pool_perturb,
                         ce_scale=0.5)
    syn = run_idm_family(ctx, config, variant)
    assert syn.method == "idm-hooked"
    # 64 // 16 = 4 classes per real forward: groups of 4, 4, 2 classes, twice
    assert [len(y) for y in real_calls] == [64, 64, 32] * 2
    assert torch.equal(torch.cat(real_calls[:3]), torch.arange(10).repeat_interleave(16))
    assert pool_calls == [32] * (2 * 2 * 2)  # iterations × fetch_net_num × steps
    plain = run_idm_family(ctx, config, IDMVariant("idm-hooked", ce_scale=0.5))
    assert torch.equal(plain.images, syn.images)  # identity hooks change nothing


def test_random_hooks_resume_identically(one_thread, digits_splits, tmp_path, monkeypatch):
    """Hooks that draw from the generator they are given stay resumable (ROME's PGD starts)."""

    def jitter(net, x, y, g):
        return x + 0.01 * torch.rand(x.shape, generator=g)

    def run(ctx, config):
        return run_idm_family(ctx, config, IDMVariant("idm-jitter", real_transform=jitter,
                                                      pool_perturb=jitter))

    monkeypatch.setitem(base.METHODS, "idm-jitter", base.Method("idm-jitter", IDMConfig, run,
                                                                PRESETS))
    resumes_identically("idm-jitter", digits_splits[0], tmp_path, monkeypatch, iterations=6)


def test_idm_lowers_the_mean_embedding_distance(one_thread, digits_splits):
    """Not just 'runs': without the CE term the decoded set moves toward the real class means."""
    train = digits_splits[0]
    kw = dict(ipc=1, seed=0, profile="smoke", ce_weight=0.0, batch_real=16)
    start = robustdd.distill("idm", train, iterations=0, **kw)
    syn = robustdd.distill("idm", train, iterations=6, **kw)
    nets = [build_model("convnetd2", 10, 1, 8, mean=train.mean, std=train.std, seed=100 + k)
            for k in range(3)]

    def objective(s: DistilledSet) -> float:
        images, labels = s.decoded()
        with torch.no_grad():
            return sum(float(mean_embedding_distance(
                net.embed(train.pixels(train.labels == c))[None],
                net.embed(images[labels == c])[None]).sum())
                for net in nets for c in range(10))

    assert objective(syn) < 0.8 * objective(start)
