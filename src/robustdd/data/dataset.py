"""The in-memory labelled image dataset every loader returns."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class ImageDataset:
    """A split of a labelled image dataset.

    ``images`` is a uint8 tensor N×C×H×W (pixel values 0–255), ``labels`` int64 [N].
    ``mean``/``std`` are the normalisation statistics models built for this dataset use.
    """

    name: str
    split: str
    images: torch.Tensor
    labels: torch.Tensor
    class_names: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise ValueError(f"images must be uint8 N×C×H×W, got {self.images.dtype} "
                             f"{tuple(self.images.shape)}")
        if self.labels.dtype != torch.int64 or self.labels.shape != (self.images.shape[0],):
            raise ValueError("labels must be int64 with one entry per image")

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def channels(self) -> int:
        return int(self.images.shape[1])

    @property
    def image_size(self) -> int:
        return int(self.images.shape[2])

    def pixels(self, index: torch.Tensor | slice | None = None,
               device: torch.device | str = "cpu") -> torch.Tensor:
        """Images (all, or ``index``) as float32 in [0, 1] on ``device``."""
        imgs = self.images if index is None else self.images[index]
        return imgs.to(device).float().div_(255.0)

    def subset(self, index: torch.Tensor) -> ImageDataset:
        """A new dataset holding the rows ``index``."""
        return ImageDataset(self.name, self.split, self.images[index], self.labels[index],
                            self.class_names, self.mean, self.std)

    def class_indices(self) -> list[torch.Tensor]:
        """For each class, the indices of its rows (ascending)."""
        return [torch.nonzero(self.labels == c, as_tuple=True)[0] for c in range(self.num_classes)]


def sample_per_class(labels: torch.Tensor, num_classes: int, n_per_class: int,
                     generator: torch.Generator) -> torch.Tensor:
    """Draw ``n_per_class`` distinct indices of each class, class by class (class-major order).

    Raises ``ValueError`` if a class has fewer than ``n_per_class`` examples.
    """
    out = []
    for c in range(num_classes):
        idx = torch.nonzero(labels == c, as_tuple=True)[0]
        if idx.numel() < n_per_class:
            raise ValueError(f"class {c} has {idx.numel()} examples, fewer than {n_per_class}")
        perm = torch.randperm(idx.numel(), generator=generator)[:n_per_class]
        out.append(idx[perm])
    return torch.cat(out)


def make_generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A fresh generator seeded with ``seed`` (robustdd never reseeds the global RNG)."""
    g = torch.Generator(device=device)
    g.manual_seed(int(seed))
    return g
