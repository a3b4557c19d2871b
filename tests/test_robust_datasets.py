"""The robust methods on the dataset shapes their presets name besides CIFAR-10: Fashion-MNIST
(one channel, 28×28, the shared copy) and a 100-class set standing in for CIFAR-100, which is
not available offline (CIFAR-10 pixels relabelled into 100 classes, named ``cifar100`` so that
the methods pick CIFAR-100's table rows)."""

from __future__ import annotations

import pytest
import torch

import robustdd
from robustdd.data.dataset import ImageDataset

ROBUST = [("rome", {}), ("rome", {"variant": "faithful"}), ("guard-sre2l", {}),
          ("guard-sre2l", {"variant": "faithful"}), ("guard-dc", {}), ("rdd-dc", {}),
          ("rdd-dc", {"variant": "faithful"}), ("rdd-idm", {})]


def _small_fashion(train: ImageDataset) -> ImageDataset:
    index = torch.cat([rows[:40] for rows in train.class_indices()])
    return train.subset(index)


def _hundred_classes(cifar10: ImageDataset) -> ImageDataset:
    images = cifar10.images[:2000]
    labels = torch.arange(2000, dtype=torch.int64) % 100
    return ImageDataset("cifar100", "train", images, labels,
                        tuple(f"class-{c}" for c in range(100)), cifar10.mean, cifar10.std)


@pytest.mark.parametrize(("method", "overrides"), ROBUST,
                         ids=[m + ("-" + o["variant"] if o else "") for m, o in ROBUST])
@pytest.mark.parametrize("shape", ["fashion-mnist", "100-classes"])
def test_robust_methods_distil_other_dataset_shapes(one_thread, private_cache, fashion_mnist_train,
                                                    cifar10_train, method, overrides, shape):
    train = (_small_fashion(fashion_mnist_train) if shape == "fashion-mnist"
             else _hundred_classes(cifar10_train))
    # One iteration: what is checked is that every part runs on these shapes; 100 classes at
    # smoke's full iteration count take minutes.
    syn = robustdd.distill(method, train, ipc=1, seed=0, profile="smoke", iterations=1,
                           **overrides)
    assert syn.num_classes == train.num_classes
    assert syn.images.shape[1:] == train.images.shape[1:]
    assert torch.isfinite(syn.images).all()
    assert torch.bincount(syn.labels, minlength=train.num_classes).tolist() == [
        len(syn) // train.num_classes] * train.num_classes
    if method == "rome":
        policy = syn.meta["rome"]["prior"]["target_policy"]
        assert policy == ("next-mod-10" if overrides else "next")
