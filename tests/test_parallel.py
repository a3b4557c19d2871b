"""Stacked training of the K evaluation models equals sequential training up to float rounding."""

from __future__ import annotations

import pytest
import torch

import robustdd
from robustdd.nn import build_model
from robustdd.nn.dsa import DSA, DSAConfig
from robustdd.nn.parallel import can_train_in_parallel, train_models_parallel
from robustdd.nn.train import TrainConfig, train_model
from robustdd.runtime import generator_for


def _models(train, arch="convnetd2", k=3):
    return [build_model(arch, 10, 1, 8, mean=train.mean, std=train.std, seed=i) for i in range(k)]


@pytest.mark.parametrize("augment", [False, True])
def test_stacked_training_equals_sequential_runs(one_thread, digits_splits, augment):
    train, _ = digits_splits
    x, y = train.pixels()[:200], train.labels[:200]
    dsa = DSA(DSAConfig(), mean=train.mean, std=train.std) if augment else None
    cfg = TrainConfig(epochs=2, lr=0.01, batch_size=64)  # 3 epochs run, lr drop after epoch 2
    seq = _models(train)
    for k, m in enumerate(seq):
        train_model(m, x, y, cfg, generator_for(0, "t", k), augment=dsa)
    par = _models(train)
    stats = train_models_parallel(par, x, y, cfg, [generator_for(0, "t", k) for k in range(3)],
                                  augment=dsa)
    assert [s.steps for s in stats] == [3 * 4] * 3
    for a, b in zip(seq, par, strict=True):
        for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
            torch.testing.assert_close(pa, pb, rtol=1e-3, atol=2e-4)
    # and the models differ from each other (each had its own seed and generator)
    assert not torch.equal(next(par[0].parameters()), next(par[1].parameters()))


def test_batchnorm_or_single_models_are_not_stacked(digits_splits):
    train, _ = digits_splits
    assert not can_train_in_parallel(_models(train, k=1))
    bn = [build_model("convnetbn", 10, 1, 8, seed=i) for i in range(2)]
    assert not can_train_in_parallel(bn)
    with pytest.raises(ValueError, match="one by one"):
        train_models_parallel(bn, train.pixels()[:8], train.labels[:8], TrainConfig(epochs=0),
                              [torch.Generator(), torch.Generator()])


def test_evaluate_in_parallel_gives_the_sequential_record(one_thread, digits_splits):
    train, test = digits_splits
    syn = robustdd.distill("random", train, ipc=5, seed=0, profile="smoke")
    seq = robustdd.evaluate(syn, profile="smoke", test=test, attacks=[], num_models=3)
    par = robustdd.evaluate(syn, profile="smoke", test=test, attacks=[], num_models=3,
                            parallel=True)
    assert par["parallel_training"] and not seq["parallel_training"]
    for a, b in zip(seq["models"], par["models"], strict=True):
        assert a["model_seed"] == b["model_seed"]
        assert abs(a["clean_accuracy"] - b["clean_accuracy"]) <= 1.0  # a flipped prediction or two


def test_parallel_falls_back_for_kd_sets(one_thread, digits_splits, tmp_path, monkeypatch):
    monkeypatch.setenv("ROBUSTDD_CACHE", str(tmp_path))
    train, test = digits_splits
    syn = robustdd.distill("sre2l", train, ipc=1, seed=0, profile="smoke")
    record = robustdd.evaluate(syn, profile="smoke", test=test, attacks=[], num_models=2,
                               parallel=True)
    assert record["parallel_training"] is False
