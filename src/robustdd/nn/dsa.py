"""Differentiable Siamese Augmentation (DSA) with explicit randomness.

Reproduces ``ParamDiffAug``, ``DiffAugment`` and the ``rand_*`` functions of the DC/DSA/DM
reference code (github.com/VICO-UoE/DatasetCondensation, ``utils.py``; the same code is in
GeorgeCazenavette/mtt-distillation ``utils.py``), mode ``'S'``: every call draws ONE family
uniformly from the strategy's tokens and applies only that family (``color`` = brightness, then
saturation, then contrast). See ``methods.md`` §1.3 for the specification.

Differences from the reference, all deliberate:

* Randomness comes from an explicit CPU ``torch.Generator``; the global RNG is never touched.
  Parameters are drawn on the CPU and moved to the images' device, so a seed gives the same
  parameters on every device. (The reference re-seeds the global RNG before every draw and
  draws crop/cutout/flip/colour values on the images' device.)
* Siamese mode draws ONE parameter set (size-1 tensors) and :func:`apply_dsa` broadcasts it to
  any batch, instead of running the same seed twice and overwriting ``param[:] = param[0]``.
* ``affine_grid``/``grid_sample`` use ``align_corners=True`` explicitly (the torch-1.2 default
  the DC code was written for; MTT sets it explicitly).
* Images are ``[0, 1]`` pixels in this project, while the reference augments mean/std-normalised
  tensors. Pass the dataset's ``mean``/``std`` to augment in normalised space exactly as the
  reference does (zero fill = the mean colour, brightness shifts in normalised units, ...), and
  get pixels back: ``model(normalize(dsa(x)))`` then equals the reference's ``model(dsa(z))``.
* Only mode ``'S'`` is implemented (mode ``'M'``, all families in sequence, is unused there).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "DEFAULT_STRATEGY",
    "DIGIT_STRATEGY",
    "DSA",
    "FAMILIES",
    "DSAConfig",
    "DSAParams",
    "apply_dsa",
    "default_strategy",
    "parse_strategy",
    "sample_dsa_params",
]

DEFAULT_STRATEGY = "color_crop_cutout_flip_scale_rotate"
#: The reference readme's strategy for digit datasets (MNIST, SVHN): flip is dropped.
DIGIT_STRATEGY = "color_crop_cutout_scale_rotate"
#: Known augmentation families, in the reference's ``AUGMENT_FNS`` order.
FAMILIES: tuple[str, ...] = ("color", "crop", "cutout", "flip", "scale", "rotate")
_IDENTITY = "none"
_DIGIT_DATASETS = frozenset({"mnist", "svhn", "digits"})

MeanStd = Sequence[float] | Tensor | None


def parse_strategy(strategy: str) -> tuple[str, ...]:
    """The family tokens of ``strategy`` (``'_'``-separated; duplicates kept, as in the reference).

    ``''`` and ``'none'`` (any case) give ``()``, the identity. Unknown tokens raise ``ValueError``.
    """
    if strategy.strip() == "" or strategy.strip().lower() == _IDENTITY:
        return ()
    tokens = tuple(strategy.strip().split("_"))
    unknown = [t for t in tokens if t not in FAMILIES]
    if unknown:
        raise ValueError(
            f"unknown DSA augmentation famil{'y' if len(unknown) == 1 else 'ies'} "
            f"{', '.join(repr(t) for t in unknown)} in strategy {strategy!r}; known families: "
            f"{', '.join(FAMILIES)} (join them with '_', or use 'none')"
        )
    return tokens


def default_strategy(dataset_name: str) -> str:
    """The reference strategy for a dataset: no flip for digit datasets (MNIST, SVHN, digits).

    Per the DatasetCondensation readme, FashionMNIST and CIFAR keep flip.
    """
    key = dataset_name.strip().lower().replace("_", "-")
    return DIGIT_STRATEGY if key in _DIGIT_DATASETS else DEFAULT_STRATEGY


@dataclass(frozen=True)
class DSAConfig:
    """Strategy and magnitudes of DSA (defaults: the reference ``ParamDiffAug``)."""

    strategy: str = DEFAULT_STRATEGY
    prob_flip: float = 0.5
    ratio_scale: float = 1.2
    ratio_rotate: float = 15.0
    ratio_crop_pad: float = 0.125
    ratio_cutout: float = 0.5
    brightness: float = 1.0
    saturation: float = 2.0
    contrast: float = 0.5

    def __post_init__(self) -> None:
        parse_strategy(self.strategy)
        if not 0.0 <= self.prob_flip <= 1.0:
            raise ValueError(f"prob_flip must be in [0, 1], got {self.prob_flip}")
        if self.ratio_scale <= 0:
            raise ValueError(f"ratio_scale must be > 0, got {self.ratio_scale}")
        if self.ratio_crop_pad < 0 or self.ratio_cutout < 0:
            raise ValueError("ratio_crop_pad and ratio_cutout must be >= 0")

    @property
    def families(self) -> tuple[str, ...]:
        """The strategy's family tokens (empty for the identity)."""
        return parse_strategy(self.strategy)


@dataclass
class DSAParams:
    """One sampled DSA transform: the family and its parameters (CPU tensors).

    Tensors have a leading dimension of ``batch_size`` (per-sample) or 1 (Siamese: broadcast to
    any batch). Only the fields of ``family`` are set; ``family == 'none'`` is the identity.

    * ``scale``: float (N, 2), the factors (s_x, s_y) on width and height; > 1 zooms out.
    * ``angle``: float (N,), rotation in radians.
    * ``flip``: bool (N,), whether to flip horizontally (last axis).
    * ``brightness`` (additive shift), ``saturation`` and ``contrast`` (factors): float (N,).
    * ``translation``: int64 (N, 2), the shifts (t_h, t_w): output[i, j] = input[i + t_h, j + t_w].
    * ``cutout_offset``: int64 (N, 2), the drawn (row, column) offsets; the square covers rows
      ``offset - size // 2 .. + size - 1`` clamped to the image (likewise for columns).
    * ``cutout_size``: (height, width) of the cutout square.
    """

    family: str
    image_size: tuple[int, int]
    batch_size: int = 1
    siamese: bool = False
    scale: Tensor | None = None
    angle: Tensor | None = None
    flip: Tensor | None = None
    brightness: Tensor | None = None
    saturation: Tensor | None = None
    contrast: Tensor | None = None
    translation: Tensor | None = None
    cutout_offset: Tensor | None = None
    cutout_size: tuple[int, int] | None = None


def _check_generator(generator: torch.Generator) -> None:
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    if generator.device.type != "cpu":
        raise ValueError(
            f"DSA needs a CPU torch.Generator (got one on {generator.device}); parameters are "
            "drawn on the CPU so that a seed gives the same augmentation on every device"
        )


def _uniform(n: int, generator: torch.Generator) -> Tensor:
    return torch.rand(n, generator=generator, dtype=torch.float32)


def _randint(low: int, high: int, n: int, generator: torch.Generator) -> Tensor:
    return torch.randint(low, high, (n,), generator=generator, dtype=torch.int64)


def sample_dsa_params(batch_size: int, image_size: tuple[int, int], generator: torch.Generator,
                      config: DSAConfig = DSAConfig(), siamese: bool = False) -> DSAParams:
    """Draw one DSA transform from ``generator``: one family (uniform over the strategy's tokens)
    and its parameters, per sample, or a single set (size 1) when ``siamese``.

    Draws follow the reference order (family; s_x then s_y; t_h then t_w; rows then columns;
    brightness, saturation, contrast). The identity strategy draws nothing.
    """
    _check_generator(generator)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    height, width = int(image_size[0]), int(image_size[1])
    tokens = config.families
    n = 1 if siamese else int(batch_size)
    params = DSAParams(family=_IDENTITY, image_size=(height, width), batch_size=n, siamese=siamese)
    if not tokens:
        return params
    family = tokens[int(torch.randint(0, len(tokens), (1,), generator=generator).item())]
    params.family = family
    if family == "scale":
        lo, hi = 1.0 / config.ratio_scale, config.ratio_scale
        s_x = _uniform(n, generator) * (hi - lo) + lo
        s_y = _uniform(n, generator) * (hi - lo) + lo
        params.scale = torch.stack([s_x, s_y], dim=1)
    elif family == "rotate":
        params.angle = (_uniform(n, generator) - 0.5) * 2 * config.ratio_rotate / 180 * math.pi
    elif family == "flip":
        params.flip = _uniform(n, generator) < config.prob_flip
    elif family == "color":
        params.brightness = (_uniform(n, generator) - 0.5) * config.brightness
        params.saturation = _uniform(n, generator) * config.saturation
        params.contrast = _uniform(n, generator) + config.contrast
    elif family == "crop":
        shift_h = int(height * config.ratio_crop_pad + 0.5)
        shift_w = int(width * config.ratio_crop_pad + 0.5)
        t_h = _randint(-shift_h, shift_h + 1, n, generator)
        t_w = _randint(-shift_w, shift_w + 1, n, generator)
        params.translation = torch.stack([t_h, t_w], dim=1)
    elif family == "cutout":
        size_h = int(height * config.ratio_cutout + 0.5)
        size_w = int(width * config.ratio_cutout + 0.5)
        o_h = _randint(0, height + (1 - size_h % 2), n, generator)
        o_w = _randint(0, width + (1 - size_w % 2), n, generator)
        params.cutout_offset = torch.stack([o_h, o_w], dim=1)
        params.cutout_size = (size_h, size_w)
    return params


def _per_sample(values: Tensor, n: int, x: Tensor, dtype: torch.dtype | None = None) -> Tensor:
    """Move ``values`` (leading dim 1 or n) to x's device (and dtype) and expand it to n."""
    values = values.to(device=x.device, dtype=x.dtype if dtype is None else dtype)
    return values.expand(n, *values.shape[1:])


def _affine(x: Tensor, theta: Tensor) -> Tensor:
    grid = F.affine_grid(theta, list(x.shape), align_corners=True)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=True)


def _scale(x: Tensor, scale: Tensor) -> Tensor:
    s = _per_sample(scale, x.shape[0], x)
    zero = torch.zeros_like(s[:, 0])
    theta = torch.stack([torch.stack([s[:, 0], zero, zero], dim=1),
                         torch.stack([zero, s[:, 1], zero], dim=1)], dim=1)
    return _affine(x, theta)


def _rotate(x: Tensor, angle: Tensor) -> Tensor:
    a = _per_sample(angle, x.shape[0], x)
    cos, sin, zero = torch.cos(a), torch.sin(a), torch.zeros_like(a)
    theta = torch.stack([torch.stack([cos, -sin, zero], dim=1),
                         torch.stack([sin, cos, zero], dim=1)], dim=1)
    return _affine(x, theta)


def _flip(x: Tensor, flip: Tensor) -> Tensor:
    f = _per_sample(flip, x.shape[0], x, dtype=torch.bool).view(-1, 1, 1, 1)
    return torch.where(f, x.flip(3), x)


def _color(x: Tensor, brightness: Tensor, saturation: Tensor, contrast: Tensor) -> Tensor:
    n = x.shape[0]
    x = x + _per_sample(brightness, n, x).view(-1, 1, 1, 1)
    mean_c = x.mean(dim=1, keepdim=True)
    x = (x - mean_c) * _per_sample(saturation, n, x).view(-1, 1, 1, 1) + mean_c
    mean_chw = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean_chw) * _per_sample(contrast, n, x).view(-1, 1, 1, 1) + mean_chw


def _crop(x: Tensor, translation: Tensor) -> Tensor:
    # Reference gather: output[i, j] = pad1(x)[clamp(i + t_h + 1, 0, H + 1),
    # clamp(j + t_w + 1, 0, W + 1)], so everything shifted in reads the zero border.
    n, c, h, w = x.shape
    t = _per_sample(translation, n, x, dtype=torch.long)
    rows = (torch.arange(h, device=x.device).view(1, h) + t[:, :1] + 1).clamp(0, h + 1)
    cols = (torch.arange(w, device=x.device).view(1, w) + t[:, 1:] + 1).clamp(0, w + 1)
    x_pad = F.pad(x, [1, 1, 1, 1])
    x_pad = x_pad.gather(2, rows.view(n, 1, h, 1).expand(n, c, h, w + 2))
    return x_pad.gather(3, cols.view(n, 1, 1, w).expand(n, c, h, w))


def _cutout(x: Tensor, offset: Tensor, size: tuple[int, int]) -> Tensor:
    # Reference: zero mask[clamp(offset_h - size_h // 2 + k, 0, H - 1), (same for columns)] for
    # k < size. Clamping consecutive indices gives the contiguous range [clamp(first), clamp(last)].
    n, _, h, w = x.shape
    o = _per_sample(offset, n, x, dtype=torch.long)

    def covered(length: int, off: Tensor, side: int) -> Tensor:
        first = (off - side // 2).clamp(0, length - 1).view(-1, 1)
        last = (off - side // 2 + side - 1).clamp(0, length - 1).view(-1, 1)
        idx = torch.arange(length, device=x.device).view(1, length)
        return (idx >= first) & (idx <= last) & (side > 0)

    hole = covered(h, o[:, 0], size[0]).view(n, h, 1) & covered(w, o[:, 1], size[1]).view(n, 1, w)
    mask = (~hole).to(x.dtype).unsqueeze(1)
    return x * mask


def _stats(values: MeanStd, x: Tensor, name: str) -> Tensor:
    t = torch.as_tensor(values, dtype=x.dtype, device=x.device).reshape(1, -1, 1, 1)
    if t.shape[1] != x.shape[1]:
        raise ValueError(f"{name} has {t.shape[1]} values but the images have {x.shape[1]} "
                         "channels")
    return t


def _floats(values: Sequence[float] | Tensor) -> tuple[float, ...]:
    return tuple(float(v) for v in torch.as_tensor(values).flatten())


def apply_dsa(x: Tensor, params: DSAParams, mean: MeanStd = None, std: MeanStd = None) -> Tensor:
    """Apply a sampled transform to an NCHW float batch (differentiable w.r.t. ``x``).

    Parameters of size 1 (Siamese) broadcast to any batch size. With ``mean``/``std`` the batch
    is normalised, augmented and de-normalised (the reference augments normalised tensors).
    """
    if x.dim() != 4 or not x.is_floating_point():
        raise ValueError(f"DSA expects a float NCHW batch, got shape {tuple(x.shape)} of {x.dtype}")
    if (mean is None) != (std is None):
        raise ValueError("give both mean and std, or neither")
    if params.family == _IDENTITY:
        return x
    if tuple(x.shape[-2:]) != tuple(params.image_size):
        raise ValueError(f"parameters were sampled for {tuple(params.image_size)} images, "
                         f"got {tuple(x.shape[-2:])}")
    if params.batch_size not in (1, x.shape[0]):
        raise ValueError(f"parameters were sampled for a batch of {params.batch_size}, got "
                         f"{x.shape[0]} images (sample with siamese=True to share one set)")
    if mean is not None:
        m, s = _stats(mean, x, "mean"), _stats(std, x, "std")
        x = (x - m) / s
    family = params.family
    if family == "scale" and params.scale is not None:
        out = _scale(x, params.scale)
    elif family == "rotate" and params.angle is not None:
        out = _rotate(x, params.angle)
    elif family == "flip" and params.flip is not None:
        out = _flip(x, params.flip)
    elif (family == "color" and params.brightness is not None and params.saturation is not None
          and params.contrast is not None):
        out = _color(x, params.brightness, params.saturation, params.contrast)
    elif family == "crop" and params.translation is not None:
        out = _crop(x, params.translation)
    elif (family == "cutout" and params.cutout_offset is not None
          and params.cutout_size is not None):
        out = _cutout(x, params.cutout_offset, params.cutout_size)
    else:
        raise ValueError(f"DSAParams for family {family!r} lack its parameters, or the family is "
                         f"unknown; known families: {', '.join(FAMILIES)}")
    if mean is not None:
        out = out * s + m
    return out.contiguous()


class DSA:
    """Callable augmenter bound to a config and a dataset's normalisation."""

    def __init__(self, config: DSAConfig = DSAConfig(), mean: MeanStd = None,
                 std: MeanStd = None):
        if (mean is None) != (std is None):
            raise ValueError("give both mean and std, or neither")
        self.config = config
        self.mean = None if mean is None else _floats(mean)
        self.std = None if std is None else _floats(std)
        if self.std is not None and any(v <= 0 for v in self.std):
            raise ValueError(f"std must be positive, got {self.std}")

    def __repr__(self) -> str:
        return f"DSA(config={self.config!r}, mean={self.mean}, std={self.std})"

    def sample(self, batch_size: int, image_size: tuple[int, int], generator: torch.Generator,
               siamese: bool = False) -> DSAParams:
        """Draw a transform with this augmenter's config (see :func:`sample_dsa_params`)."""
        return sample_dsa_params(batch_size, image_size, generator, self.config, siamese)

    def apply(self, x: Tensor, params: DSAParams) -> Tensor:
        """Apply ``params`` with this augmenter's normalisation (see :func:`apply_dsa`)."""
        return apply_dsa(x, params, self.mean, self.std)

    def __call__(self, x: Tensor, generator: torch.Generator) -> Tensor:
        """Augment ``x`` with one family and per-sample parameters (training/evaluation use)."""
        params = self.sample(x.shape[0], (x.shape[-2], x.shape[-1]), generator)
        return self.apply(x, params)

    def siamese(self, *batches: Tensor, generator: torch.Generator) -> tuple[Tensor, ...]:
        """Augment every batch with the SAME family and the same single parameter set."""
        if not batches:
            return ()
        size = (batches[0].shape[-2], batches[0].shape[-1])
        params = self.sample(1, size, generator, siamese=True)
        return tuple(self.apply(b, params) for b in batches)
