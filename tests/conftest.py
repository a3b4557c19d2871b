"""Shared test fixtures: the real datasets kept beside the project, loaded once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from robustdd.data import ImageDataset, load_dataset
from robustdd.nn import build_model
from robustdd.nn.train import TrainConfig, train_model

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def shared_data_root() -> Path:
    """``$ROBUSTDD_DATA``, else ``<repo>/../shared/datasets``; CI always has it, so no skip."""
    root = Path(os.environ.get("ROBUSTDD_DATA", REPO_ROOT.parent / "shared" / "datasets"))
    if not (root / "cifar10").is_dir() or not (root / "fashion-mnist").is_dir():
        pytest.fail(f"shared datasets not found in {root}: expected cifar10/ and fashion-mnist/ "
                    "there (set ROBUSTDD_DATA to the folder holding them, normally "
                    "../shared/datasets relative to the project root)")
    return root


@pytest.fixture(scope="session")
def cifar10_train(shared_data_root: Path) -> ImageDataset:
    """The shared CIFAR-10 train split (50,000 images), loaded once."""
    return load_dataset("cifar10", "train", root=shared_data_root)


@pytest.fixture(scope="session")
def cifar10_test(shared_data_root: Path) -> ImageDataset:
    """The shared CIFAR-10 test split (10,000 images), loaded once."""
    return load_dataset("cifar10", "test", root=shared_data_root)


@pytest.fixture(scope="session")
def fashion_mnist_train(shared_data_root: Path) -> ImageDataset:
    """The shared Fashion-MNIST train split (60,000 images), loaded once."""
    return load_dataset("fashion-mnist", "train", root=shared_data_root)


@pytest.fixture(scope="session")
def fashion_mnist_test(shared_data_root: Path) -> ImageDataset:
    """The shared Fashion-MNIST test split (10,000 images), loaded once."""
    return load_dataset("fashion-mnist", "test", root=shared_data_root)


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread: on a small shared CPU, thread contention slows these tiny convs
    several-fold; the setting is restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def digits_splits() -> tuple[ImageDataset, ImageDataset]:
    """The embedded digits dataset: (train, test)."""
    return load_dataset("digits", "train"), load_dataset("digits", "test")


@pytest.fixture(scope="module")
def digits_model(one_thread, digits_splits):
    """ConvNet-D2 trained without augmentation on the digits train split (one per test module).

    A 30-epoch schedule takes over a minute on a small shared CPU; 1 nominal epoch (2 run, batch
    128, lr 0.02) reaches ~92% test accuracy in a few seconds, plenty for attack tests.
    """
    train, _ = digits_splits
    net = build_model("convnetd2", train.num_classes, train.channels, train.image_size,
                      mean=train.mean, std=train.std, seed=0)
    train_model(net, train.pixels(), train.labels, TrainConfig(epochs=1, lr=0.02, batch_size=128),
                torch.Generator().manual_seed(0))
    net.eval()
    net.zero_grad(set_to_none=True)
    return net


@pytest.fixture
def private_cache(tmp_path_factory, monkeypatch):
    """Derived artefacts (teachers, robust nets) go to a per-session folder, never the user's."""
    monkeypatch.setenv("ROBUSTDD_CACHE", str(tmp_path_factory.getbasetemp() / "derived-cache"))
