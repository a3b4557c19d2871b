"""Distribution-shift tests of the RDD paper (Vahidian et al., ICLR 2025; ``reference/methods.md``
§10.5): Cluster-min / Cluster-mean accuracy over KMeans clusters of the test set, and the Noise,
Blur and Invert test sets.

* Clusters: sklearn ``KMeans(n_clusters=10, random_state=0, n_init=10)`` on the test set as the
  model sees it (mean/std-normalised, flattened). The assignment is computed once per test split
  and cached on disk (keyed by the SHA-256 of the test images), so it is identical for every
  method compared.
* Noise: additive Gaussian, variance 0.005 (σ ≈ 0.0707), clipped to [0, 1], drawn from a seeded
  CPU generator (the RDD notebook set no seed).
* Blur: PIL ``GaussianBlur(radius=2)`` on the uint8 image, as the RDD notebook does.
* Invert: 255 − x.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFilter
from torch import nn

from robustdd.data import ImageDataset
from robustdd.errors import UnknownNameError
from robustdd.nn.train import predict
from robustdd.runtime import cache_dir

SHIFTS = ("noise", "blur", "invert")
NOISE_VARIANCE = 0.005
BLUR_RADIUS = 2
N_CLUSTERS = 10


def images_digest(data: ImageDataset) -> str:
    """SHA-256 of a split's uint8 images (identifies the exact test set a cache belongs to)."""
    return hashlib.sha256(data.images.contiguous().numpy().tobytes()).hexdigest()


def cluster_assignment(test: ImageDataset, *, n_clusters: int = N_CLUSTERS, seed: int = 0,
                       n_init: int = 10, cache: Path | None = None) -> np.ndarray:
    """KMeans cluster index of every test image, computed once and cached (atomic .npz)."""
    from sklearn.cluster import KMeans

    digest = images_digest(test)
    folder = cache if cache is not None else cache_dir()
    path = folder / f"clusters-{test.name}-{test.split}-k{n_clusters}-s{seed}-n{n_init}.npz"
    if path.exists():
        try:
            with np.load(path, allow_pickle=False) as z:
                if str(z["digest"]) == digest and z["assignment"].shape == (len(test),):
                    return z["assignment"].astype(np.int64)
        except (OSError, ValueError, KeyError):
            pass  # corrupt or foreign cache: recompute and overwrite
    mean = np.asarray(test.mean, dtype=np.float32).reshape(1, -1, 1, 1)
    std = np.asarray(test.std, dtype=np.float32).reshape(1, -1, 1, 1)
    feats = ((test.images.numpy().astype(np.float32) / 255.0 - mean) / std).reshape(len(test), -1)
    km = KMeans(n_clusters=n_clusters, random_state=seed, n_init=n_init)
    assignment = km.fit_predict(feats).astype(np.int64)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, assignment=assignment, digest=np.array(digest))
    tmp.replace(path)
    return assignment


def cluster_accuracies(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                       clusters: torch.Tensor) -> dict[str, object]:
    """Accuracy (%) inside each cluster, their minimum (Cluster-min) and mean (Cluster-mean).

    Clusters with no example among ``images`` are left out of min and mean.
    """
    pred = predict(model, images).cpu()
    correct = (pred == labels.cpu()).float()
    per: dict[str, float] = {}
    for c in torch.unique(clusters).tolist():
        mask = clusters == c
        per[str(c)] = 100.0 * float(correct[mask].mean())
    values = list(per.values())
    return {"cluster_min": min(values), "cluster_mean": float(np.mean(values)),
            "per_cluster": per}


def shifted_images(test: ImageDataset, kind: str, index: torch.Tensor | None = None,
                   seed: int = 0) -> torch.Tensor:
    """The ``kind`` shifted version (noise / blur / invert) of the test images, float [0, 1].

    Noise is drawn for the whole split from ``seed`` and then indexed, so a subset sees the same
    noise as the full set.
    """
    if kind not in SHIFTS:
        raise UnknownNameError("shift", kind, list(SHIFTS))
    idx = torch.arange(len(test)) if index is None else index
    if kind == "noise":
        gen = torch.Generator().manual_seed(seed)
        noise = torch.randn(test.images.shape, generator=gen) * NOISE_VARIANCE ** 0.5
        return (test.pixels(idx) + noise[idx]).clamp_(0.0, 1.0)
    if kind == "invert":
        return (255 - test.images[idx]).float().div_(255.0)
    blurred = np.stack([_blur(img) for img in test.images[idx].permute(0, 2, 3, 1).numpy()])
    return torch.from_numpy(blurred).permute(0, 3, 1, 2).float().div_(255.0)


def _blur(image_hwc: np.ndarray) -> np.ndarray:
    # PIL's Gaussian blur has no batched form; this runs once per test set, not in a hot loop.
    channels = image_hwc.shape[2]
    pil = Image.fromarray(image_hwc[..., 0] if channels == 1 else image_hwc)
    out = np.asarray(pil.filter(ImageFilter.GaussianBlur(radius=BLUR_RADIUS)))
    return out[..., None] if channels == 1 else out
