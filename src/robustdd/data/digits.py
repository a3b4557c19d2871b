"""scikit-learn's 8×8 handwritten digits: the embedded dataset (no download)."""

from __future__ import annotations

import numpy as np
import torch

from robustdd.data.dataset import ImageDataset
from robustdd.data.registry import dataset_info

TEST_FRACTION = 0.25
SPLIT_SEED = 0


def digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """All 1,797 digits as uint8 N×1×8×8 (0–16 rescaled to 0–255) and int64 labels."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)[:, None]
    return images, bunch.target.astype(np.int64)


def load_digits_split(split: str) -> ImageDataset:
    """The fixed stratified 75/25 train/test split (seed 0) of scikit-learn's digits."""
    from sklearn.model_selection import train_test_split

    images, labels = digits_arrays()
    idx_train, idx_test = train_test_split(np.arange(len(labels)), test_size=TEST_FRACTION,
                                           stratify=labels, random_state=SPLIT_SEED)
    idx = np.sort(idx_train if split == "train" else idx_test)
    info = dataset_info("digits")
    return ImageDataset("digits", split, torch.from_numpy(images[idx]),
                        torch.from_numpy(labels[idx]), info.class_names, info.mean, info.std)
