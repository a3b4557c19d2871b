"""Differentiable Siamese Augmentation (robustdd.nn.dsa) against hand-computed expectations and
the reference semantics (DatasetCondensation ``utils.py::rand_*``, methods.md §1.3)."""

from __future__ import annotations

import math
from collections import Counter

import pytest
import torch

from robustdd.nn.dsa import (
    DEFAULT_STRATEGY,
    DIGIT_STRATEGY,
    DSA,
    FAMILIES,
    DSAConfig,
    DSAParams,
    apply_dsa,
    default_strategy,
    parse_strategy,
    sample_dsa_params,
)

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2023, 0.1994, 0.2010)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def images(n: int = 8, c: int = 3, size: int = 32, seed: int = 123,
           dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.rand(n, c, size, size, generator=gen(seed), dtype=dtype)


def only(family: str) -> DSAConfig:
    return DSAConfig(strategy=family)


def sample(family: str, n: int, size: int = 32, seed: int = 0, siamese: bool = False) -> DSAParams:
    params = sample_dsa_params(n, (size, size), gen(seed), only(family), siamese=siamese)
    assert params.family == family
    return params


# --- independent re-statements of the reference gather/mask semantics (loops, test-only) ---

def reference_crop(x: torch.Tensor, translation: torch.Tensor) -> torch.Tensor:
    """out[i, j] = pad1(x)[clamp(i + t_h + 1, 0, H + 1), clamp(j + t_w + 1, 0, W + 1)]."""
    n, _, h, w = x.shape
    padded = torch.nn.functional.pad(x, [1, 1, 1, 1])
    out = torch.empty_like(x)
    for k in range(n):
        t_h, t_w = (int(v) for v in translation[k if translation.shape[0] > 1 else 0])
        rows = [min(max(i + t_h + 1, 0), h + 1) for i in range(h)]
        cols = [min(max(j + t_w + 1, 0), w + 1) for j in range(w)]
        out[k] = padded[k][:, rows][:, :, cols]
    return out


def reference_cutout_mask(n: int, h: int, w: int, offset: torch.Tensor,
                          size: tuple[int, int]) -> torch.Tensor:
    """mask[clamp(o_h - s_h // 2 + a, 0, H - 1), clamp(o_w - s_w // 2 + b, 0, W - 1)] = 0."""
    mask = torch.ones(n, h, w)
    for k in range(n):
        o_h, o_w = (int(v) for v in offset[k if offset.shape[0] > 1 else 0])
        for a in range(size[0]):
            for b in range(size[1]):
                r = min(max(o_h - size[0] // 2 + a, 0), h - 1)
                c = min(max(o_w - size[1] // 2 + b, 0), w - 1)
                mask[k, r, c] = 0
    return mask


# --- configuration and strategy parsing ---

def test_defaults_match_reference_param_diff_aug() -> None:
    cfg = DSAConfig()
    assert cfg.strategy == DEFAULT_STRATEGY == "color_crop_cutout_flip_scale_rotate"
    assert (cfg.prob_flip, cfg.ratio_scale, cfg.ratio_rotate, cfg.ratio_crop_pad,
            cfg.ratio_cutout, cfg.brightness, cfg.saturation, cfg.contrast) == (
        0.5, 1.2, 15.0, 0.125, 0.5, 1.0, 2.0, 0.5)
    assert cfg.families == ("color", "crop", "cutout", "flip", "scale", "rotate")


def test_unknown_family_raises_naming_known_families() -> None:
    with pytest.raises(ValueError) as err:
        DSAConfig(strategy="color_blur")
    for family in FAMILIES:
        assert family in str(err.value)
    assert "blur" in str(err.value)
    with pytest.raises(ValueError):
        parse_strategy("crop__flip")


@pytest.mark.parametrize("strategy", ["", "none", "None"])
def test_identity_strategy_returns_input_and_draws_nothing(strategy: str) -> None:
    x = images(4)
    g = gen(5)
    state = g.get_state()
    dsa = DSA(DSAConfig(strategy=strategy), CIFAR_MEAN, CIFAR_STD)
    assert dsa(x, g) is x
    a, b = dsa.siamese(x, x[:2], generator=g)
    assert a is x and torch.equal(b, x[:2])
    assert torch.equal(g.get_state(), state)


def test_default_strategy_drops_flip_for_digit_datasets() -> None:
    for name in ("mnist", "MNIST", "svhn", "digits"):
        assert default_strategy(name) == DIGIT_STRATEGY
        assert "flip" not in parse_strategy(default_strategy(name))
    for name in ("cifar10", "cifar100", "fashion-mnist", "FashionMNIST", "tiny-imagenet"):
        assert default_strategy(name) == DEFAULT_STRATEGY


def test_family_is_drawn_uniformly() -> None:
    g = gen(7)
    counts = Counter(sample_dsa_params(4, (32, 32), g).family for _ in range(1200))
    assert set(counts) == set(FAMILIES)
    assert all(150 < c < 250 for c in counts.values()), counts


def test_parameter_ranges() -> None:
    n = 4000
    s = sample("scale", n).scale
    assert s is not None and s.shape == (n, 2)
    assert s.min() >= 1 / 1.2 and s.max() <= 1.2 and s.min() < 0.85 and s.max() > 1.18
    assert not torch.equal(s[:, 0], s[:, 1])  # anisotropic: independent draws
    a = sample("rotate", n).angle
    assert a is not None
    assert math.radians(14.9) < a.abs().max() <= math.radians(15)
    t = sample("crop", n).translation
    assert t is not None and t.dtype == torch.int64
    assert set(t.flatten().tolist()) == set(range(-4, 5))  # int(32 * 0.125 + 0.5) = 4
    p = sample("cutout", n)
    assert p.cutout_size == (16, 16) and p.cutout_offset is not None
    assert set(p.cutout_offset.flatten().tolist()) == set(range(33))  # randint(0, 32 + 1)
    c = sample("color", n)
    assert c.brightness is not None and c.saturation is not None and c.contrast is not None
    assert c.brightness.min() >= -0.5 and c.brightness.max() < 0.5
    assert c.saturation.min() >= 0 and c.saturation.max() < 2
    assert c.contrast.min() >= 0.5 and c.contrast.max() < 1.5
    f = sample("flip", n).flip
    assert f is not None and f.dtype == torch.bool and 0.45 < f.float().mean() < 0.55


# --- randomness ---

def test_same_seed_same_output_different_seed_different() -> None:
    x = images(8)
    dsa = DSA()
    for seed in range(12):
        assert torch.equal(dsa(x, gen(seed)), dsa(x, gen(seed)))
    scale = DSA(only("scale"))
    assert not torch.allclose(scale(x, gen(0)), scale(x, gen(1)))


def test_global_rng_is_untouched() -> None:
    before = torch.get_rng_state()
    x = images(6)
    dsa = DSA(mean=CIFAR_MEAN, std=CIFAR_STD)
    g = gen(3)
    for _ in range(30):
        dsa(x, g)
        dsa.siamese(x, x[:2], generator=g)
    assert torch.equal(torch.get_rng_state(), before)


def test_generator_is_advanced_between_calls() -> None:
    x = images(4)
    g = gen(0)
    dsa = DSA(only("rotate"))
    assert not torch.allclose(dsa(x, g), dsa(x, g))


# --- Siamese vs per-sample ---

@pytest.mark.parametrize("family", FAMILIES)
def test_siamese_applies_one_transform_to_both_batches(family: str) -> None:
    real = images(8)
    syn = real[[1, 6]].clone()
    dsa = DSA(only(family), CIFAR_MEAN, CIFAR_STD)
    for seed in range(4):
        out_real, out_syn = dsa.siamese(real, syn, generator=gen(seed))
        assert out_real.shape == real.shape and out_syn.shape == syn.shape
        torch.testing.assert_close(out_syn, out_real[[1, 6]], rtol=0, atol=1e-6)
        # identical images within a batch get identical outputs: one parameter set
        same = real[:1].expand(5, -1, -1, -1)
        (out_same,) = dsa.siamese(same, generator=gen(seed))
        torch.testing.assert_close(out_same, out_same[:1].expand_as(out_same), rtol=0, atol=1e-6)


def test_siamese_default_strategy_real_8_syn_2() -> None:
    real = images(8)
    syn = real[[3, 0]].clone()
    dsa = DSA(mean=CIFAR_MEAN, std=CIFAR_STD)
    families = set()
    for seed in range(40):
        params = dsa.sample(1, (32, 32), gen(seed), siamese=True)
        families.add(params.family)
        out_real, out_syn = dsa.siamese(real, syn, generator=gen(seed))
        torch.testing.assert_close(out_syn, out_real[[3, 0]], rtol=0, atol=1e-6)
        torch.testing.assert_close(out_real, dsa.apply(real, params), rtol=0, atol=0)
    assert families == set(FAMILIES)


@pytest.mark.parametrize("family", ["scale", "rotate", "color", "crop", "cutout"])
def test_per_sample_parameters_differ(family: str) -> None:
    x = images(1).expand(8, -1, -1, -1)
    out = DSA(only(family))(x, gen(11))
    flat = out.flatten(1)
    distinct = {tuple(row.tolist()) for row in flat}
    assert len(distinct) >= 6  # integer families can repeat by chance, continuous ones cannot
    if family in ("scale", "rotate", "color"):
        assert len(distinct) == 8


def test_batch_size_mismatch_raises() -> None:
    params = sample("rotate", 4)
    with pytest.raises(ValueError, match="batch of 4"):
        apply_dsa(images(3), params)
    with pytest.raises(ValueError, match="sampled for"):
        apply_dsa(images(4, size=28), params)


def test_generator_must_be_a_torch_generator() -> None:
    with pytest.raises(TypeError):
        sample_dsa_params(2, (8, 8), None)  # type: ignore[arg-type]


# --- each family against a hand-computed expectation ---

def test_flip_is_torch_flip_for_flipped_samples() -> None:
    x = images(32)
    params = sample("flip", 32)
    assert params.flip is not None
    f = params.flip
    assert 0 < int(f.sum()) < 32
    out = apply_dsa(x, params)
    assert torch.equal(out[f], torch.flip(x[f], dims=[3]))
    assert torch.equal(out[~f], x[~f])


def test_crop_is_a_zero_filled_shift() -> None:
    x = images(1)
    for t_h, t_w in [(2, -3), (-4, 4), (0, 1), (-1, 0)]:
        params = DSAParams("crop", (32, 32), translation=torch.tensor([[t_h, t_w]]))
        expected = torch.zeros_like(x)
        # output[i, j] = x[i + t_h, j + t_w] where that is inside the image, else 0
        expected[:, :, max(0, -t_h):32 - max(0, t_h), max(0, -t_w):32 - max(0, t_w)] = \
            x[:, :, max(0, t_h):32 + min(0, t_h), max(0, t_w):32 + min(0, t_w)]
        assert torch.equal(apply_dsa(x, params), expected)


@pytest.mark.parametrize("size", [32, 28, 8])
def test_crop_matches_reference_gather(size: int) -> None:
    x = images(16, c=1 if size != 32 else 3, size=size)
    params = sample("crop", 16, size=size)
    assert params.translation is not None
    shift = int(size * 0.125 + 0.5)
    assert params.translation.abs().max() <= shift
    assert torch.equal(apply_dsa(x, params), reference_crop(x, params.translation))


def test_cutout_zeroes_a_square_away_from_borders() -> None:
    x = torch.ones(1, 3, 32, 32)
    params = DSAParams("cutout", (32, 32), cutout_offset=torch.tensor([[12, 20]]),
                       cutout_size=(16, 16))
    out = apply_dsa(x, params)
    expected = torch.ones_like(x)
    expected[:, :, 12 - 8:12 + 8, 20 - 8:20 + 8] = 0
    assert torch.equal(out, expected)
    assert int((out[0, 0] == 0).sum()) == 16 * 16


@pytest.mark.parametrize(("size", "side"), [(32, 16), (28, 14), (8, 4)])
def test_cutout_matches_reference_mask(size: int, side: int) -> None:
    n = 64
    x = images(n, c=1, size=size) + 0.5  # strictly positive, so zeros are the hole
    params = sample("cutout", n, size=size)
    assert params.cutout_size == (side, side) and params.cutout_offset is not None
    out = apply_dsa(x, params)
    mask = reference_cutout_mask(n, size, size, params.cutout_offset, (side, side))
    assert torch.equal(out, x * mask.unsqueeze(1))
    lo = params.cutout_offset - side // 2
    inside = ((lo >= 0) & (lo + side <= size)).all(dim=1)
    assert inside.any() and (~inside).any()  # both kinds of squares occur
    holes = (out[:, 0] == 0).sum(dim=(1, 2))
    assert torch.all(holes[inside] == side * side)
    assert torch.all(holes[~inside] < side * side)  # truncated at the borders


def test_brightness_adds_the_constant() -> None:
    x = images(3)
    b = torch.tensor([0.3, -0.2, 0.0])
    params = DSAParams("color", (32, 32), batch_size=3, brightness=b,
                       saturation=torch.ones(3), contrast=torch.ones(3))
    torch.testing.assert_close(apply_dsa(x, params), x + b.view(3, 1, 1, 1))


def test_color_is_brightness_then_saturation_then_contrast() -> None:
    x = images(4)
    params = sample("color", 4)
    assert params.brightness is not None and params.saturation is not None
    assert params.contrast is not None
    expected = torch.empty_like(x)
    for k in range(4):
        y = x[k] + params.brightness[k]
        gray = y.mean(dim=0, keepdim=True)
        y = (y - gray) * params.saturation[k] + gray
        y = (y - y.mean()) * params.contrast[k] + y.mean()
        expected[k] = y
    torch.testing.assert_close(apply_dsa(x, params), expected)


def test_scale_maps_width_and_height_as_the_reference_theta() -> None:
    # 9x9, align_corners=True: s_x = 2 reads input column 2j - 4; outside reads zero padding
    x = torch.arange(81, dtype=torch.float32).view(1, 1, 9, 9) + 1
    out = apply_dsa(x, DSAParams("scale", (9, 9), scale=torch.tensor([[2.0, 1.0]])))
    expected = torch.zeros_like(x)
    expected[..., 2:7] = x[..., 0:9:2]
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-4)
    out = apply_dsa(x, DSAParams("scale", (9, 9), scale=torch.tensor([[1.0, 2.0]])))
    expected = torch.zeros_like(x)
    expected[..., 2:7, :] = x[..., 0:9:2, :]
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-4)
    identity = DSAParams("scale", (9, 9), scale=torch.tensor([[1.0, 1.0]]))
    torch.testing.assert_close(apply_dsa(x, identity), x, rtol=0, atol=1e-4)


def test_rotate_matches_rot90_and_identity() -> None:
    x = images(2)
    quarter = DSAParams("rotate", (32, 32), angle=torch.tensor([math.pi / 2]))
    torch.testing.assert_close(apply_dsa(x, quarter), torch.rot90(x, 1, dims=(2, 3)),
                               rtol=0, atol=1e-5)
    zero = DSAParams("rotate", (32, 32), angle=torch.tensor([0.0]))
    torch.testing.assert_close(apply_dsa(x, zero), x, rtol=0, atol=1e-5)


# --- normalised-space semantics ---

@pytest.mark.parametrize("family", FAMILIES)
def test_mean_std_augments_in_normalised_space(family: str) -> None:
    x = images(6)
    m = torch.tensor(CIFAR_MEAN).view(1, 3, 1, 1)
    s = torch.tensor(CIFAR_STD).view(1, 3, 1, 1)
    params = sample(family, 6, seed=4)
    expected = apply_dsa((x - m) / s, params) * s + m
    torch.testing.assert_close(apply_dsa(x, params, CIFAR_MEAN, CIFAR_STD), expected)
    dsa = DSA(only(family), mean=torch.tensor(CIFAR_MEAN), std=list(CIFAR_STD))
    torch.testing.assert_close(dsa.apply(x, params), expected)


def test_cutout_and_crop_fill_with_the_mean_colour_in_pixel_space() -> None:
    x = images(1)
    mean = torch.tensor(CIFAR_MEAN).view(3, 1, 1).expand(3, 16, 16)
    cut = DSAParams("cutout", (32, 32), cutout_offset=torch.tensor([[16, 16]]),
                    cutout_size=(16, 16))
    out = apply_dsa(x, cut, CIFAR_MEAN, CIFAR_STD)
    torch.testing.assert_close(out[0, :, 8:24, 8:24], mean)
    torch.testing.assert_close(out[0, :, :8], x[0, :, :8])
    crop = DSAParams("crop", (32, 32), translation=torch.tensor([[4, -4]]))
    out = apply_dsa(x, crop, CIFAR_MEAN, CIFAR_STD)
    torch.testing.assert_close(out[0, :, 28:, :16], mean[:, :4])  # bottom rows revealed
    torch.testing.assert_close(out[0, :, :16, :4], mean[:, :, :4])  # left columns revealed
    torch.testing.assert_close(out[0, :, :28, 4:], x[0, :, 4:, :28])


def test_brightness_shift_is_in_normalised_units() -> None:
    x = images(2)
    params = DSAParams("color", (32, 32), brightness=torch.tensor([0.25]),
                       saturation=torch.ones(1), contrast=torch.ones(1))
    out = apply_dsa(x, params, CIFAR_MEAN, CIFAR_STD)
    torch.testing.assert_close(out - x, 0.25 * torch.tensor(CIFAR_STD).view(1, 3, 1, 1)
                               .expand_as(x))


# --- autograd, dtypes, shapes, devices ---

@pytest.mark.parametrize("family", FAMILIES)
def test_gradients_flow_to_x(family: str) -> None:
    syn = images(2).requires_grad_(True)
    real = images(8, seed=9)
    dsa = DSA(only(family), CIFAR_MEAN, CIFAR_STD)
    out_real, out_syn = dsa.siamese(real, syn, generator=gen(1))
    weights = torch.rand(out_syn.shape, generator=gen(2))
    (out_syn * weights).sum().backward()
    assert syn.grad is not None and torch.isfinite(syn.grad).all()
    assert syn.grad.abs().sum() > 0
    assert not out_real.requires_grad


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("family", FAMILIES)
def test_shape_and_dtype_preserved(family: str, dtype: torch.dtype) -> None:
    x = images(5, dtype=dtype)
    out = DSA(only(family), CIFAR_MEAN, CIFAR_STD)(x, gen(0))
    assert out.shape == x.shape and out.dtype == dtype and out.is_contiguous()


@pytest.mark.parametrize("size", [28, 8])
def test_single_channel_small_images(size: int) -> None:
    x = images(6, c=1, size=size)
    dsa = DSA(DSAConfig(strategy=default_strategy("mnist")), mean=(0.1307,), std=(0.3081,))
    g = gen(0)
    seen = set()
    for _ in range(40):
        params = dsa.sample(6, (size, size), g)
        seen.add(params.family)
        out = dsa.apply(x, params)
        assert out.shape == x.shape and torch.isfinite(out).all()
    assert seen == set(FAMILIES) - {"flip"}
    with pytest.raises(ValueError, match="channels"):
        apply_dsa(x, sample("rotate", 6, size=size), CIFAR_MEAN, CIFAR_STD)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("family", FAMILIES)
def test_cuda_matches_cpu(family: str) -> None:
    x = images(8)
    dsa = DSA(only(family), CIFAR_MEAN, CIFAR_STD)
    cpu = dsa(x, gen(5))
    cuda = dsa(x.cuda(), gen(5))
    assert cuda.is_cuda
    torch.testing.assert_close(cuda.cpu(), cpu, rtol=0, atol=1e-5)
    a, b = dsa.siamese(x.cuda(), x[:2].cuda(), generator=gen(6))
    torch.testing.assert_close(b, a[:2], rtol=0, atol=1e-6)
