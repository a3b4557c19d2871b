"""The model zoo (robustdd.nn.zoo / models / normalize): shapes of every architecture, the
reference ConvNet (methods.md §1.1), normalisation inside the model, seeded construction and the
errors of ``build_model``."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from robustdd.errors import UnknownNameError
from robustdd.nn import (
    Normalize,
    NormalizedModel,
    architecture_names,
    build_model,
    count_parameters,
)

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2023, 0.1994, 0.2010)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread: on a small shared CPU, thread contention makes the big nets (ResNet,
    VGG) an order of magnitude slower; the setting is restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def pixels(n, c, size, seed=0):
    return torch.rand(n, c, size, size, generator=torch.Generator().manual_seed(seed))


def logits_and_embedding(model, x):
    model.eval()
    with torch.no_grad():
        return model(x), model.embed(x)


# ---------------------------------------------------------------------------------------------
# every architecture: shapes of logits and embeddings


def test_architecture_names_cover_the_reference_families():
    names = architecture_names()
    assert names == sorted(names) and len(names) == len(set(names))
    for expected in ("convnet", "convnetd1", "convnetd2", "convnetd3", "convnetd4", "convnetbn",
                     "resnet18", "resnet18bn_ap", "vgg11", "alexnet", "mlp"):
        assert expected in names


@pytest.mark.parametrize("arch", architecture_names())
@pytest.mark.parametrize(("channels", "size"), [(3, 32), (1, 28)], ids=["3x32x32", "1x28x28"])
def test_every_architecture_gives_logits_and_embedding(arch, channels, size):
    num_classes = 7
    model = build_model(arch, num_classes, channels, size, seed=0)
    assert isinstance(model, NormalizedModel)
    x = pixels(2, channels, size)
    logits, features = logits_and_embedding(model, x)
    assert logits.shape == (2, num_classes)
    assert features.ndim == 2 and features.shape[0] == 2 and features.shape[1] > 0
    assert torch.isfinite(logits).all() and torch.isfinite(features).all()
    # embed is really the penultimate layer: the classifier applied to it gives the logits
    classifier = model.net.classifier
    assert isinstance(classifier, nn.Linear) and classifier.in_features == features.shape[1]
    torch.testing.assert_close(classifier(features), logits, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("arch", "channels", "size", "dim"), [
    ("convnet", 3, 32, 2048),      # 128 · 4 · 4 (methods.md §1.1)
    ("convnet", 1, 28, 2048),      # the first conv pads by 3: 28 → 32
    ("convnetd1", 3, 32, 128 * 16 * 16),
    ("convnetd2", 3, 32, 128 * 8 * 8),
    ("convnetd4", 3, 32, 128 * 2 * 2),
    ("convnetw32", 3, 32, 32 * 4 * 4),
    ("convnetw256", 3, 32, 256 * 4 * 4),
    ("convnetnp", 3, 32, 128 * 32 * 32),
    ("resnet18", 3, 32, 512),
    ("vgg11", 3, 32, 512),
    ("alexnet", 3, 32, 192 * 4 * 4),
    ("alexnet", 1, 28, 192 * 4 * 4),
    ("mlp", 3, 32, 128),
])
def test_embedding_dimension(arch, channels, size, dim):
    model = build_model(arch, 10, channels, size, seed=0)
    _, features = logits_and_embedding(model, pixels(1, channels, size))
    assert features.shape == (1, dim)
    assert model.net.classifier.in_features == dim


def test_convnetd4_on_64px_tiny_imagenet_inputs():
    model = build_model("ConvNetD4", 200, 3, 64, seed=0)  # names are case-insensitive
    logits, features = logits_and_embedding(model, pixels(2, 3, 64))
    assert logits.shape == (2, 200)
    assert features.shape == (2, 128 * 4 * 4)  # 64 → 32 → 16 → 8 → 4


# ---------------------------------------------------------------------------------------------
# the reference ConvNet-3 (methods.md §1.1)


@pytest.mark.parametrize(("num_classes", "expected"), [(10, 320_010), (100, 504_420)])
def test_convnet3_parameter_count(num_classes, expected):
    model = build_model("convnet", num_classes, 3, 32, mean=CIFAR_MEAN, std=CIFAR_STD)
    assert count_parameters(model) == expected
    assert sum(p.numel() for p in model.parameters()) == expected  # mean/std are not parameters
    assert count_parameters(build_model("convnetd3", num_classes, 3, 32)) == expected


def test_convnet3_layer_order_matches_reference():
    net = build_model("convnet", 10, 3, 32).net
    kinds = [type(m) for m in net.features]
    block = [nn.Conv2d, nn.GroupNorm, nn.ReLU, nn.AvgPool2d]
    assert kinds == block * 3
    convs = [m for m in net.features if isinstance(m, nn.Conv2d)]
    assert [c.in_channels for c in convs] == [3, 128, 128]
    assert all(c.out_channels == 128 and c.kernel_size == (3, 3) and c.padding == (1, 1)
               and c.bias is not None for c in convs)
    mono = build_model("convnet", 10, 1, 28).net
    assert next(m for m in mono.features if isinstance(m, nn.Conv2d)).padding == (3, 3)


@pytest.mark.parametrize("arch", ["convnet", "convnetd2", "convnetw64", "vgg11", "resnet18"])
def test_instance_norm_is_groupnorm_with_one_group_per_channel(arch):
    net = build_model(arch, 10, 3, 32).net
    norms = [m for m in net.modules() if isinstance(m, nn.GroupNorm)]
    assert norms
    for norm in norms:
        assert norm.num_groups == norm.num_channels
        assert norm.affine and norm.weight.shape == (norm.num_channels,)
    forbidden = (nn.InstanceNorm2d, nn.BatchNorm2d, nn.LayerNorm)
    assert not any(isinstance(m, forbidden) for m in net.modules())
    assert not list(net.buffers())  # no running statistics anywhere


def test_instance_norm_normalises_each_channel_of_each_image():
    """GroupNorm(C, C) at initialisation (weight 1, bias 0) standardises every channel map."""
    net = build_model("convnet", 10, 3, 32, seed=0).net
    x = pixels(3, 3, 32) * 5 + 2
    with torch.no_grad():
        out = net.features[1](net.features[0](x))
    torch.testing.assert_close(out.mean(dim=(2, 3)), torch.zeros(3, 128), atol=1e-4, rtol=0)
    torch.testing.assert_close(out.var(dim=(2, 3), unbiased=False), torch.ones(3, 128),
                               atol=1e-2, rtol=0)


@pytest.mark.parametrize(("arch", "norm_type", "groups"), [
    ("convnetbn", nn.BatchNorm2d, None),
    ("convnetln", nn.LayerNorm, None),
    ("convnetgn", nn.GroupNorm, 4),
])
def test_convnet_norm_variants(arch, norm_type, groups):
    net = build_model(arch, 10, 3, 32).net
    norms = [m for m in net.features if isinstance(m, norm_type)]
    assert len(norms) == 3
    if groups is not None:
        assert all(m.num_groups == groups for m in norms)
    if norm_type is nn.LayerNorm:
        assert [tuple(m.normalized_shape) for m in norms] == [(128, 32, 32), (128, 16, 16),
                                                              (128, 8, 8)]


def test_convnet_without_norm_or_pooling():
    assert not any(isinstance(m, (nn.GroupNorm, nn.BatchNorm2d, nn.LayerNorm))
                   for m in build_model("convnetnn", 10, 3, 32).net.modules())
    assert not any(isinstance(m, (nn.AvgPool2d, nn.MaxPool2d))
                   for m in build_model("convnetnp", 10, 3, 32).net.modules())
    mp = build_model("convnetmp", 10, 3, 32).net
    assert sum(isinstance(m, nn.MaxPool2d) for m in mp.modules()) == 3


# ---------------------------------------------------------------------------------------------
# normalisation inside the model


def test_model_normalises_its_own_input():
    model = build_model("convnet", 10, 3, 32, mean=CIFAR_MEAN, std=CIFAR_STD, seed=1).eval()
    x = pixels(4, 3, 32, seed=5)
    mean = torch.tensor(CIFAR_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        out = model(x)
        torch.testing.assert_close(out, model.net((x - mean) / std), rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(model.embed(x), model.net.embed((x - mean) / std),
                                   rtol=1e-6, atol=1e-6)
        # and the normalisation matters: feeding raw pixels to the backbone gives other logits
        assert not torch.allclose(out, model.net(x), atol=1e-3)


def test_default_normalisation_is_identity():
    model = build_model("convnet", 10, 3, 32, seed=1).eval()
    x = pixels(2, 3, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), model.net(x), rtol=0, atol=0)
    assert model.normalize.mean.flatten().tolist() == [0.0, 0.0, 0.0]
    assert model.normalize.std.flatten().tolist() == [1.0, 1.0, 1.0]


def test_mean_and_std_are_buffers_saved_in_state_dict():
    model = build_model("convnet", 10, 3, 32, mean=CIFAR_MEAN, std=CIFAR_STD, seed=1).eval()
    buffers = dict(model.named_buffers())
    assert set(buffers) == {"normalize.mean", "normalize.std"}
    assert "normalize.mean" not in dict(model.named_parameters())
    state = model.state_dict()
    torch.testing.assert_close(state["normalize.mean"].flatten(), torch.tensor(CIFAR_MEAN))
    torch.testing.assert_close(state["normalize.std"].flatten(), torch.tensor(CIFAR_STD))
    # a model built with the default (identity) statistics becomes the same model on loading
    other = build_model("convnet", 10, 3, 32, seed=2).eval()
    other.load_state_dict(state)
    x = pixels(2, 3, 32)
    with torch.no_grad():
        torch.testing.assert_close(other(x), model(x), rtol=0, atol=0)


def test_normalisation_buffers_follow_the_model_dtype():
    model = build_model("mlp", 10, 3, 32, mean=CIFAR_MEAN, std=CIFAR_STD, seed=0).double()
    assert model.normalize.mean.dtype == torch.float64
    assert model(pixels(2, 3, 32).double()).dtype == torch.float64


def test_normalize_module_rejects_bad_statistics():
    with pytest.raises(ValueError):
        Normalize((0.5, 0.5), (0.2,))
    with pytest.raises(ValueError):
        Normalize((0.5,), (0.0,))
    with pytest.raises(ValueError):
        Normalize((0.5,), (-1.0,))


# ---------------------------------------------------------------------------------------------
# seeded construction and the global RNG


def test_same_seed_gives_same_model():
    a = build_model("convnet", 10, 3, 32, seed=7).state_dict()
    b = build_model("convnet", 10, 3, 32, seed=7).state_dict()
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_different_seeds_give_different_models():
    a = build_model("convnet", 10, 3, 32, seed=7).state_dict()
    b = build_model("convnet", 10, 3, 32, seed=8).state_dict()
    weights = [k for k in a if k.endswith("weight") and not k.startswith("normalize")]
    assert weights
    assert any(not torch.equal(a[k], b[k]) for k in weights)
    assert not torch.equal(a["net.classifier.weight"], b["net.classifier.weight"])


def test_seeded_build_leaves_global_rng_unchanged():
    torch.manual_seed(1234)
    before = torch.get_rng_state()
    build_model("convnet", 10, 3, 32, seed=3)
    build_model("resnet18bn", 10, 3, 32, seed=4)
    assert torch.equal(torch.get_rng_state(), before)
    # ... so the next global draw is the one it would have been without the builds
    drawn = torch.rand(5)
    torch.manual_seed(1234)
    torch.testing.assert_close(drawn, torch.rand(5), rtol=0, atol=0)


def test_seeded_build_does_not_depend_on_global_rng():
    torch.manual_seed(0)
    a = build_model("convnetd2", 10, 1, 8, seed=5).state_dict()
    torch.manual_seed(99)
    torch.rand(100)
    b = build_model("convnetd2", 10, 1, 8, seed=5).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_unseeded_builds_differ():
    a = build_model("convnetd2", 10, 1, 8).state_dict()
    b = build_model("convnetd2", 10, 1, 8).state_dict()
    assert not torch.equal(a["net.classifier.weight"], b["net.classifier.weight"])


# ---------------------------------------------------------------------------------------------
# errors


def test_unknown_architecture_raises_and_lists_known_names():
    with pytest.raises(UnknownNameError) as info:
        build_model("convnet-9000", 10, 3, 32)
    message = str(info.value)
    assert "convnet-9000" in message
    for name in architecture_names():
        assert name in message
    assert set(info.value.known) == set(architecture_names())
    assert isinstance(info.value, KeyError)  # UnknownNameError is also a KeyError


@pytest.mark.parametrize(("channels", "mean", "std"), [
    (3, (0.5,), (0.2,)),
    (1, CIFAR_MEAN, CIFAR_STD),
    (3, (0.5, 0.5), (0.2, 0.2)),
])
def test_mean_length_must_match_channels(channels, mean, std):
    with pytest.raises(ValueError):
        build_model("convnet", 10, channels, 32, mean=mean, std=std)


def test_std_length_must_match_mean():
    with pytest.raises(ValueError):
        build_model("convnet", 10, 3, 32, mean=CIFAR_MEAN, std=(0.2, 0.2))
    with pytest.raises(ValueError):
        build_model("convnet", 10, 3, 32, std=(0.2,))


def test_convnet_too_deep_for_tiny_inputs_raises():
    with pytest.raises(ValueError, match="too deep"):
        build_model("convnetd4", 10, 3, 8)


def test_resnet_ap_follows_reference_layout():
    """DC's ResNet_AP flattens the 512×4×4 map (classifier 8192 → C); plain ResNet pools."""
    ap = build_model("resnet18bn_ap", 10, 3, 32, seed=0)
    plain = build_model("resnet18bn", 10, 3, 32, seed=0)
    x = torch.rand(2, 3, 32, 32)
    assert ap.embed(x).shape == (2, 512 * 4 * 4)
    assert ap.net.classifier.in_features == 8192
    assert plain.embed(x).shape == (2, 512)
    assert build_model("resnet18_ap", 10, 1, 28).embed(torch.rand(2, 1, 28, 28)).shape == (
        2, 512 * 3 * 3)
