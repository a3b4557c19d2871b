"""Distribution-shift tests (RDD): clusters, shifted test sets, and their place in the record."""

import numpy as np
import pytest
import torch
from PIL import Image, ImageFilter

import robustdd
from robustdd.data import load_dataset
from robustdd.errors import UnknownNameError
from robustdd.evaluate.shift import (
    cluster_accuracies,
    cluster_assignment,
    images_digest,
    shifted_images,
)


@pytest.fixture(scope="module")
def digits_test():
    return load_dataset("digits", "test")


def test_cluster_assignment_is_cached_and_identical(digits_test, tmp_path):
    a = cluster_assignment(digits_test, cache=tmp_path)
    files = list(tmp_path.glob("clusters-digits-test-*.npz"))
    assert len(files) == 1 and a.shape == (len(digits_test),)
    assert set(np.unique(a)) == set(range(10))
    b = cluster_assignment(digits_test, cache=tmp_path)  # from the cache
    assert np.array_equal(a, b)
    with np.load(files[0]) as z:
        assert str(z["digest"]) == images_digest(digits_test)


def test_corrupt_or_foreign_cluster_cache_is_recomputed(digits_test, tmp_path):
    a = cluster_assignment(digits_test, cache=tmp_path)
    path = next(tmp_path.glob("clusters-*.npz"))
    path.write_bytes(b"not an npz")
    assert np.array_equal(cluster_assignment(digits_test, cache=tmp_path), a)
    np.savez(path, assignment=np.zeros(len(digits_test), dtype=np.int64),
             digest=np.array("someone else's test set"))
    assert np.array_equal(cluster_assignment(digits_test, cache=tmp_path), a)


def test_cluster_accuracies_by_hand():
    class Fixed(torch.nn.Module):
        def __init__(self, pred):
            super().__init__()
            self.pred = pred
            self.w = torch.nn.Parameter(torch.zeros(1))

        def forward(self, x):
            return torch.nn.functional.one_hot(self.pred[: x.shape[0]], 3).float() + self.w

    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    pred = torch.tensor([0, 1, 0, 0, 0, 0])  # correct: 1 1 0 1 0 0
    clusters = torch.tensor([0, 0, 1, 1, 2, 2])
    out = cluster_accuracies(Fixed(pred), torch.zeros(6, 1, 2, 2), labels, clusters)
    assert out["per_cluster"] == {"0": 100.0, "1": 50.0, "2": 0.0}
    assert out["cluster_min"] == 0.0 and out["cluster_mean"] == pytest.approx(50.0)


def test_shifted_images(digits_test):
    idx = torch.tensor([0, 5, 7])
    inv = shifted_images(digits_test, "invert", idx)
    torch.testing.assert_close(inv, 1.0 - digits_test.pixels(idx))
    noise = shifted_images(digits_test, "noise", idx, seed=1)
    full = shifted_images(digits_test, "noise", None, seed=1)
    torch.testing.assert_close(noise, full[idx])  # a subset sees the full set's noise
    assert noise.min() >= 0 and noise.max() <= 1
    diff = (full - digits_test.pixels()).flatten()
    inside = (digits_test.pixels().flatten() > 0.2) & (digits_test.pixels().flatten() < 0.8)
    assert diff[inside].var().item() == pytest.approx(0.005, rel=0.1)
    assert not torch.equal(noise, shifted_images(digits_test, "noise", idx, seed=2))
    blur = shifted_images(digits_test, "blur", idx)
    img = Image.fromarray(digits_test.images[5, 0].numpy())
    expect = np.asarray(img.filter(ImageFilter.GaussianBlur(radius=2))) / 255.0
    np.testing.assert_allclose(blur[1, 0].numpy(), expect, atol=1e-6)
    with pytest.raises(UnknownNameError):
        shifted_images(digits_test, "fog", idx)


def test_evaluate_with_shift(digits_test, monkeypatch, tmp_path):
    monkeypatch.setenv("ROBUSTDD_CACHE", str(tmp_path))
    train = load_dataset("digits", "train")
    syn = robustdd.distill("random", train, ipc=5, seed=0, profile="smoke")
    rec = robustdd.evaluate(syn, profile="smoke", test=digits_test, shift=True, num_models=1)
    scores = rec["models"][0]["shift"]
    for key in ("cluster_min", "cluster_mean", "noise", "blur", "invert"):
        assert 0.0 <= scores[key] <= 100.0 and key in rec["summary"]
    assert scores["cluster_min"] <= scores["cluster_mean"]
    assert rec["shift"]["noise_variance"] == 0.005
