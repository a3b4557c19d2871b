"""Chunked forward passes on a CPU (robustdd.batching) and where attacks, ``predict`` and the
shared trainer use them.

A ConvNet-3 for CIFAR-shaped input (3×32×32, chunks of 16 on a CPU), randomly initialised: what
is checked is that chunking changes nothing but floating-point rounding and is really used.
"""

from __future__ import annotations

import pytest
import torch
from model_wrappers import RowSpy

import robustdd.nn.train as train_module
from robustdd.attacks import AttackSpec, deepfool, pgd_linf, run_attack
from robustdd.batching import (
    CPU_CHUNK_PIXELS,
    ChunkedForward,
    chunk_size,
    chunked_for,
    independent_in_training,
)
from robustdd.nn import build_model
from robustdd.nn.train import TrainConfig, accuracy, predict, train_model

CHUNK = CPU_CHUNK_PIXELS // (32 * 32)


@pytest.fixture(scope="module")
def net():
    return build_model("convnet", 10, 3, 32, mean=(0.5,) * 3, std=(0.25,) * 3, seed=0).eval()


@pytest.fixture(scope="module")
def images():
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(2 * CHUNK + 5, 3, 32, 32, generator=gen)  # two full chunks and a remainder
    return x, torch.randint(0, 10, (x.shape[0],), generator=gen)


def test_chunk_size_follows_device_and_image_size():
    cpu = torch.device("cpu")
    assert chunk_size(cpu, (256, 3, 32, 32)) == CHUNK == 16
    assert chunk_size(cpu, (256, 3, 64, 64)) == 4
    assert chunk_size(cpu, (9, 3, 224, 224)) == 1
    assert chunk_size(cpu, (256, 1, 8, 8)) == 256
    assert chunk_size(torch.device("meta"), (256, 3, 32, 32)) is None  # not a CPU: whole batch
    assert chunk_size(cpu, (256, 10)) is None  # not images
    x = torch.zeros(4, 3, 32, 32, device="meta")
    model = torch.nn.Identity()
    assert chunked_for(model, x) is model
    cpu_batch = torch.zeros(4, 3, 32, 32)
    wrapped = chunked_for(model, cpu_batch)
    assert isinstance(wrapped, ChunkedForward) and chunked_for(wrapped, cpu_batch) is wrapped
    with pytest.raises(ValueError, match="chunk"):
        ChunkedForward(model, 0)


def test_chunked_forward_matches_the_whole_batch_in_outputs_and_input_gradients(net, images):
    x, y = images
    chunked = ChunkedForward(net, CHUNK)
    spy = RowSpy(net)
    torch.testing.assert_close(ChunkedForward(spy, CHUNK)(x), net(x), rtol=0, atol=1e-5)
    assert spy.rows == [CHUNK, CHUNK, 5]

    def grad(model):
        xg = x.clone().requires_grad_(True)
        loss = torch.nn.functional.cross_entropy(model(xg), y, reduction="sum")
        return torch.autograd.grad(loss, xg)[0]

    torch.testing.assert_close(grad(chunked), grad(net), rtol=0, atol=1e-6)


def test_attacks_run_in_chunks_on_a_cpu_with_the_same_result(net, images):
    x, y = images
    spy = RowSpy(net)
    result = run_attack(spy, x, y, AttackSpec(name="pgd", eps=8 / 255, steps=3))
    assert max(spy.rows) == CHUNK
    direct = pgd_linf(net, x, y, eps=8 / 255, steps=3, step_size=2 / 255)  # unchunked
    torch.testing.assert_close(result.adversarial, direct, rtol=0, atol=1e-6)
    adv = run_attack(net, x, y, AttackSpec(name="deepfool", steps=5)).adversarial
    torch.testing.assert_close(adv, deepfool(net, x, y, steps=5), rtol=0, atol=1e-5)


def test_attacks_restore_a_training_batchnorm_model_when_chunked(images):
    x, y = images
    model = build_model("convnetbn", 10, 3, 32, mean=(0.5,) * 3, std=(0.25,) * 3, seed=0)
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    run_attack(model, x, y, AttackSpec(name="pgd", eps=8 / 255, steps=2))
    assert model.training and all(m.training for m in model.modules())
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key  # BN statistics untouched
    assert all(p.requires_grad for p in model.parameters())


def test_predict_uses_the_cpu_chunk_by_default(net, images):
    x, y = images
    spy = RowSpy(net)
    pred = predict(spy, x)
    assert max(spy.rows) == CHUNK
    assert torch.equal(pred, predict(net, x, batch_size=1024))
    assert accuracy(net, x, y) == accuracy(net, x, y, batch_size=x.shape[0])


def _cifar_like(n: int, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, 32, 32, generator=gen), torch.randint(0, 10, (n,), generator=gen)


def test_only_models_without_batch_statistics_or_dropout_are_chunked_in_training():
    def make(arch):
        return build_model(arch, 10, 3, 32, mean=(0.5,) * 3, std=(0.25,) * 3, seed=0)

    assert independent_in_training(make("convnet"))
    assert not independent_in_training(make("convnetbn"))
    assert not independent_in_training(torch.nn.Sequential(torch.nn.Flatten(),
                                                           torch.nn.Dropout(0.5)))
    x, y = _cifar_like(2 * CHUNK + 3)
    config = TrainConfig(epochs=1, lr=0.01, batch_size=x.shape[0])
    for arch, rows in (("convnet", CHUNK), ("convnetbn", x.shape[0])):
        spy = RowSpy(make(arch))
        train_model(spy, x, y, config, torch.Generator().manual_seed(0))
        assert max(spy.rows) == rows, arch


def test_chunked_training_matches_whole_batch_training(monkeypatch):
    """Two epochs of the shared trainer on a CIFAR-shaped ConvNet, batches of 40 (chunks of 16):
    the same weights up to float rounding as whole-batch passes."""
    x, y = _cifar_like(80)
    config = TrainConfig(epochs=2, lr=0.01, batch_size=40)

    def trained():
        net = build_model("convnet", 10, 3, 32, mean=(0.5,) * 3, std=(0.25,) * 3, seed=0)
        stats = train_model(net, x, y, config, torch.Generator().manual_seed(0))
        return net, stats

    chunked, chunked_stats = trained()
    monkeypatch.setattr(train_module, "independent_in_training", lambda model: False)
    whole, whole_stats = trained()
    for (name, a), b in zip(chunked.state_dict().items(), whole.state_dict().values(),
                            strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)
    assert chunked_stats.final_loss == pytest.approx(whole_stats.final_loss, abs=1e-5)
