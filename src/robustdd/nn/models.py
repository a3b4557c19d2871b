"""The dataset-distillation model zoo.

Architectures follow the DC/DSA/DM reference ``networks.py`` (``reference/methods.md`` §1.1):
ConvNet with instance norm implemented as ``GroupNorm(C, C)``, ResNet-18 (instance-norm, BN and
the "AP" variant with stride-2 convolutions replaced by stride-1 + average pooling), VGG-11,
AlexNet and an MLP. Every network has ``embed(x)`` (penultimate features) and ``forward(x)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

NORMS = ("instancenorm", "batchnorm", "layernorm", "groupnorm", "none")
ACTIVATIONS = ("relu", "sigmoid", "leakyrelu", "swish")
POOLINGS = ("avgpooling", "maxpooling", "none")


def make_norm(norm: str, channels: int, spatial: int | None = None) -> nn.Module:
    """Normalisation layer by reference name (instance norm = GroupNorm(C, C), affine)."""
    if norm == "instancenorm":
        return nn.GroupNorm(channels, channels, affine=True)
    if norm == "batchnorm":
        return nn.BatchNorm2d(channels)
    if norm == "layernorm":
        if spatial is None:
            raise ValueError("layernorm needs the spatial size")
        return nn.LayerNorm([channels, spatial, spatial], elementwise_affine=True)
    if norm == "groupnorm":
        return nn.GroupNorm(4, channels, affine=True)
    if norm == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {norm!r}; known: {NORMS}")


def make_activation(name: str) -> nn.Module:
    """Activation by reference name."""
    if name == "relu":
        return nn.ReLU(inplace=True)
    if name == "sigmoid":
        return nn.Sigmoid()
    if name == "leakyrelu":
        return nn.LeakyReLU(0.01)
    if name == "swish":
        return nn.SiLU()
    raise ValueError(f"unknown activation {name!r}; known: {ACTIVATIONS}")


class ConvNet(nn.Module):
    """ConvNet-D: ``depth`` × [conv3×3 → norm → act → pool] then a linear classifier.

    The first conv pads by 3 when the input has one channel (28×28 MNIST becomes 32×32), as in
    the reference.
    """

    def __init__(self, in_channels: int, num_classes: int, image_size: int, width: int = 128,
                 depth: int = 3, norm: str = "instancenorm", activation: str = "relu",
                 pooling: str = "avgpooling"):
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"unknown pooling {pooling!r}; known: {POOLINGS}")
        layers: list[nn.Module] = []
        channels, size = in_channels, image_size
        for d in range(depth):
            pad = 3 if in_channels == 1 and d == 0 else 1
            layers.append(nn.Conv2d(channels, width, kernel_size=3, padding=pad))
            size = size + 2 * pad - 2
            layers.append(make_norm(norm, width, size))
            layers.append(make_activation(activation))
            channels = width
            if pooling != "none":
                if size < 2:
                    raise ValueError(f"ConvNet depth {depth} is too deep for {image_size}px "
                                     "inputs; use a smaller depth")
                layers.append(nn.AvgPool2d(2, 2) if pooling == "avgpooling" else nn.MaxPool2d(2, 2))
                size //= 2
        self.features = nn.Sequential(*layers)
        self.feature_dim = channels * size * size
        self.classifier = nn.Linear(self.feature_dim, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(x))


class MLP(nn.Module):
    """Three-layer MLP (128 hidden units), as in the reference."""

    def __init__(self, in_channels: int, num_classes: int, image_size: int, hidden: int = 128):
        super().__init__()
        self.body = nn.Sequential(
            nn.Flatten(), nn.Linear(in_channels * image_size * image_size, hidden), nn.ReLU(True),
            nn.Linear(hidden, hidden), nn.ReLU(True))
        self.classifier = nn.Linear(hidden, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(x))


class _FeaturesThenLinear(nn.Module):
    """A convolutional ``features`` stack, flattened, then one linear ``classifier``."""

    def _attach_classifier(self, in_channels: int, num_classes: int, image_size: int) -> None:
        self.feature_dim = _flat_size(self.features, in_channels, image_size)
        self.classifier = nn.Linear(self.feature_dim, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(x))


class AlexNet(_FeaturesThenLinear):
    """The DD reference AlexNet (5 convs, 128-192-256-192-192 channels)."""

    def __init__(self, in_channels: int, num_classes: int, image_size: int):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 128, 5, padding=4 if in_channels == 1 else 2), nn.ReLU(True),
            nn.MaxPool2d(2, 2),
            nn.Conv2d(128, 192, 5, padding=2), nn.ReLU(True), nn.MaxPool2d(2, 2),
            nn.Conv2d(192, 256, 3, padding=1), nn.ReLU(True),
            nn.Conv2d(256, 192, 3, padding=1), nn.ReLU(True),
            nn.Conv2d(192, 192, 3, padding=1), nn.ReLU(True), nn.MaxPool2d(2, 2))
        self._attach_classifier(in_channels, num_classes, image_size)


class VGG11(_FeaturesThenLinear):
    """VGG-11 with instance norm (reference default) or batch norm."""

    CFG = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")

    def __init__(self, in_channels: int, num_classes: int, image_size: int,
                 norm: str = "instancenorm"):
        super().__init__()
        layers: list[nn.Module] = []
        channels, size = in_channels, image_size
        for i, v in enumerate(self.CFG):
            if v == "M":
                if size >= 2:
                    layers.append(nn.MaxPool2d(2, 2))
                    size //= 2
                continue
            pad = 3 if in_channels == 1 and i == 0 else 1
            layers += [nn.Conv2d(channels, int(v), 3, padding=pad), make_norm(norm, int(v)),
                       nn.ReLU(True)]
            size = size + 2 * pad - 2
            channels = int(v)
        self.features = nn.Sequential(*layers)
        self._attach_classifier(in_channels, num_classes, image_size)


class BasicBlock(nn.Module):
    """ResNet basic block; ``avgpool_downsample`` is the DD "AP" variant (``BasicBlock_AP``:
    stride-1 convs, 2×2 average pooling after the first activation and in the shortcut)."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int, norm: str,
                 avgpool_downsample: bool):
        super().__init__()
        conv_stride = 1 if avgpool_downsample else stride
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=conv_stride, padding=1, bias=False)
        self.bn1 = make_norm(norm, planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = make_norm(norm, planes)
        self.pool = nn.AvgPool2d(2, 2) if avgpool_downsample and stride != 1 else nn.Identity()
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            short: list[nn.Module] = [nn.Conv2d(in_planes, planes, 1, stride=conv_stride,
                                                bias=False)]
            if avgpool_downsample and stride != 1:
                short.append(nn.AvgPool2d(2, 2))
            short.append(make_norm(norm, planes))
            self.shortcut = nn.Sequential(*short)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.pool(F.relu(self.bn1(self.conv1(x))))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet18(nn.Module):
    """ResNet-18 for small images (3×3 stem, no max-pool), DD reference style.

    The standard variant average-pools the last feature map globally (512 features); the "AP"
    variant, like the reference ``ResNet_AP``, flattens it (512·4·4 for 32×32 inputs).
    """

    def __init__(self, in_channels: int, num_classes: int, image_size: int,
                 norm: str = "instancenorm", avgpool_downsample: bool = False):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
        self.bn1 = make_norm(norm, 64)
        blocks: list[nn.Module] = []
        in_planes = 64
        for planes, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            for s in (stride, 1):
                blocks.append(BasicBlock(in_planes, planes, s, norm, avgpool_downsample))
                in_planes = planes
        self.layers = nn.Sequential(*blocks)
        self.flatten_map = avgpool_downsample
        size = image_size // 8
        self.feature_dim = 512 * size * size if avgpool_downsample else 512
        self.classifier = nn.Linear(self.feature_dim, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layers(F.relu(self.bn1(self.conv1(x))))
        if self.flatten_map:
            return out.flatten(1)
        return F.adaptive_avg_pool2d(out, 1).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(x))


def _flat_size(features: nn.Module, in_channels: int, image_size: int) -> int:
    with torch.no_grad():
        return int(features(torch.zeros(1, in_channels, image_size, image_size)).numel())
