"""The shared training routine against an explicit re-implementation of the reference protocol."""

import pytest
import torch
import torch.nn.functional as F

from robustdd.data import load_dataset
from robustdd.nn import build_model
from robustdd.nn.train import TrainConfig, accuracy, soft_cross_entropy, train_model


@pytest.fixture(scope="module")
def digits():
    train = load_dataset("digits", "train")
    idx = torch.arange(0, len(train), 7)  # ~190 images keep these tests fast
    return train.pixels(idx), train.labels[idx], train


def _model(train, seed=0):
    return build_model("convnetd2", 10, 1, 8, mean=train.mean, std=train.std, seed=seed)


def _reference_loop(model, x, y, epochs, generator, lr=0.01, batch=64):
    """DC's evaluate_synset: Epoch+1 epochs, lr x0.1 after epoch Epoch//2+1, new optimiser."""
    def opt(lr):
        return torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)

    optimizer = opt(lr)
    model.train()
    for ep in range(epochs + 1):
        order = torch.randperm(x.shape[0], generator=generator)
        for lo in range(0, x.shape[0], batch):
            idx = order[lo:lo + batch]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        if ep == epochs // 2 + 1:
            lr *= 0.1
            optimizer = opt(lr)


def test_schedule_matches_reference_loop(digits):
    x, y, train = digits
    a, b = _model(train), _model(train)
    cfg = TrainConfig(epochs=6, batch_size=64)
    stats = train_model(a, x, y, cfg, torch.Generator().manual_seed(3))
    _reference_loop(b, x, y, 6, torch.Generator().manual_seed(3))
    assert stats.epochs == 7 and cfg.decay_after_epoch == 4
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(pa, pb, rtol=0, atol=0)


def test_schedule_differs_without_momentum_reset(digits):
    """Sanity of the previous test: a loop that keeps the optimiser gives other weights."""
    x, y, train = digits
    a, b = _model(train), _model(train)
    train_model(a, x, y, TrainConfig(epochs=6, batch_size=64), torch.Generator().manual_seed(3))
    optimizer = torch.optim.SGD(b.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    g = torch.Generator().manual_seed(3)
    for ep in range(7):
        order = torch.randperm(x.shape[0], generator=g)
        for lo in range(0, x.shape[0], 64):
            idx = order[lo:lo + 64]
            loss = F.cross_entropy(b(x[idx]), y[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        if ep == 4:
            for group in optimizer.param_groups:
                group["lr"] *= 0.1
    assert any(not torch.equal(pa, pb) for pa, pb in zip(a.parameters(), b.parameters(),
                                                         strict=True))


def test_training_is_deterministic_and_seed_dependent(digits):
    x, y, train = digits
    cfg = TrainConfig(epochs=3, batch_size=64)
    models = [_model(train) for _ in range(3)]
    for m, seed in zip(models, (1, 1, 2), strict=True):
        train_model(m, x, y, cfg, torch.Generator().manual_seed(seed))
    same = [torch.equal(p, q) for p, q in zip(models[0].parameters(), models[1].parameters(),
                                               strict=True)]
    other = [torch.equal(p, q) for p, q in zip(models[0].parameters(), models[2].parameters(),
                                                strict=True)]
    assert all(same) and not all(other)


def test_uint8_input_equals_float_pixels(digits):
    _, _, train = digits
    idx = torch.arange(0, len(train), 7)
    a, b = _model(train), _model(train)
    cfg = TrainConfig(epochs=2, batch_size=64)
    train_model(a, train.images[idx], train.labels[idx], cfg, torch.Generator().manual_seed(0))
    train_model(b, train.pixels(idx), train.labels[idx], cfg, torch.Generator().manual_seed(0))
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(pa, pb)


def test_soft_one_hot_labels_equal_hard_labels(digits):
    x, y, train = digits
    a, b = _model(train), _model(train)
    cfg = TrainConfig(epochs=2, batch_size=64)
    train_model(a, x, y, cfg, torch.Generator().manual_seed(0))
    train_model(b, x, F.one_hot(y, 10).float(), cfg, torch.Generator().manual_seed(0))
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(pa, pb, rtol=1e-4, atol=1e-5)


def test_soft_cross_entropy_matches_torch():
    logits = torch.randn(5, 4, generator=torch.Generator().manual_seed(0))
    probs = torch.softmax(torch.randn(5, 4, generator=torch.Generator().manual_seed(1)), 1)
    torch.testing.assert_close(soft_cross_entropy(logits, probs), F.cross_entropy(logits, probs))


def test_training_learns_and_accuracy_guards_empty(digits):
    x, y, train = digits
    test = load_dataset("digits", "test")
    model = _model(train)
    before = accuracy(model, test.pixels(), test.labels)
    train_model(model, x, y, TrainConfig(epochs=20, batch_size=64),
                torch.Generator().manual_seed(0))
    after = accuracy(model, test.pixels(), test.labels)
    assert after > 80.0 and after > before + 30
    with pytest.raises(ValueError):
        accuracy(model, test.pixels()[:0], test.labels[:0])


def test_callbacks_and_batch_hook(digits):
    x, y, train = digits
    model = _model(train)
    epochs, hooked = [], []

    def hook(m, xb, yb):
        hooked.append((m.training, xb.shape[0]))
        return xb

    train_model(model, x, y, TrainConfig(epochs=2, batch_size=100),
                torch.Generator().manual_seed(0), batch_hook=hook,
                on_epoch_end=lambda ep, m: epochs.append(ep))
    assert epochs == [0, 1, 2]
    assert len(hooked) == 3 * 2 and hooked[0][1] == 100
