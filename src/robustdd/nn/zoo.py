"""``build_model``: architectures by name, wrapped to normalise their own input."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from robustdd.errors import UnknownNameError
from robustdd.nn.models import MLP, VGG11, AlexNet, ConvNet, ResNet18
from robustdd.nn.normalize import NormalizedModel

Builder = Callable[[int, int, int], nn.Module]


def _convnet(**kw) -> Builder:
    return lambda c, k, s: ConvNet(c, k, s, **kw)


ARCHITECTURES: dict[str, Builder] = {
    "convnet": _convnet(),
    "convnetd1": _convnet(depth=1),
    "convnetd2": _convnet(depth=2),
    "convnetd3": _convnet(depth=3),
    "convnetd4": _convnet(depth=4),
    "convnetw32": _convnet(width=32),
    "convnetw64": _convnet(width=64),
    "convnetw256": _convnet(width=256),
    "convnetbn": _convnet(norm="batchnorm"),
    "convnetln": _convnet(norm="layernorm"),
    "convnetgn": _convnet(norm="groupnorm"),
    "convnetnn": _convnet(norm="none"),
    "convnetmp": _convnet(pooling="maxpooling"),
    "convnetnp": _convnet(pooling="none"),
    "resnet18": lambda c, k, s: ResNet18(c, k, s, norm="instancenorm"),
    "resnet18bn": lambda c, k, s: ResNet18(c, k, s, norm="batchnorm"),
    "resnet18bn_ap": lambda c, k, s: ResNet18(c, k, s, norm="batchnorm", avgpool_downsample=True),
    "resnet18_ap": lambda c, k, s: ResNet18(c, k, s, norm="instancenorm",
                                            avgpool_downsample=True),
    "vgg11": lambda c, k, s: VGG11(c, k, s, norm="instancenorm"),
    "vgg11bn": lambda c, k, s: VGG11(c, k, s, norm="batchnorm"),
    "alexnet": lambda c, k, s: AlexNet(c, k, s),
    "mlp": lambda c, k, s: MLP(c, k, s),
}


def architecture_names() -> list[str]:
    """Every architecture name ``build_model`` accepts."""
    return sorted(ARCHITECTURES)


def build_model(arch: str, num_classes: int, in_channels: int, image_size: int, *,
                mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                seed: int | None = None, device: torch.device | str = "cpu") -> NormalizedModel:
    """Build architecture ``arch`` taking [0, 1] pixels of shape ``in_channels×image_size²``.

    ``mean``/``std`` (default: identity) are applied inside the model. With ``seed`` the
    initialisation is reproducible; the global RNG is left exactly as it was (the parameters are
    drawn inside :func:`torch.random.fork_rng`), and they are drawn on the CPU so the same seed
    gives the same model on every device.
    """
    key = arch.lower().replace("-", "")
    if key not in ARCHITECTURES:
        raise UnknownNameError("model", arch, list(ARCHITECTURES))
    mean = tuple(mean) if mean is not None else (0.0,) * in_channels
    std = tuple(std) if std is not None else (1.0,) * in_channels
    if len(mean) != in_channels:
        raise ValueError(f"{len(mean)} normalisation channels for a {in_channels}-channel model")
    if seed is None:
        net = ARCHITECTURES[key](in_channels, num_classes, image_size)
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            net = ARCHITECTURES[key](in_channels, num_classes, image_size)
    return NormalizedModel(net, mean, std).to(device)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
