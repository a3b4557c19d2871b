"""Shared test fixtures: the real datasets kept beside the project, loaded once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from robustdd.data import ImageDataset, load_dataset

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
