"""How many examples go through a model in one pass, per device.

On a CPU a whole attack batch is slower than the same images in small chunks. For 256 CIFAR
images the first convolution of ConvNet-3 alone writes 134 MB, far beyond the caches, and the
backward passes read it back. On our 2-core Intel CPU (docs/measurements.md, "Attack
throughput"), chunks of 4–16 CIFAR images computed an input gradient 1.4–1.7× and a ten-class
input Jacobian 1.5–1.7× faster than the whole batch. On a GPU the whole batch is the fast way
(unmeasured here), so nothing is chunked there.

Chunking is exact only for models whose output for one example does not depend on the others:
any model in eval mode, and in training mode a model without batch statistics or dropout (the
instance-norm ConvNets). Attacks run their models in eval mode; ``train_model`` chunks only
such models. Either way results change by floating-point rounding only.
"""

from __future__ import annotations

import torch
from torch import nn

# Pixels per chunk on a CPU: 16 images of 32×32, 4 of 64×64; small images go whole.
CPU_CHUNK_PIXELS = 16 * 32 * 32


def chunk_size(device: torch.device, shape: torch.Size | tuple[int, ...]) -> int | None:
    """Examples per forward pass for a batch of ``shape`` (N×C×H×W) on ``device``: a few on a
    CPU, ``None`` (all of them) elsewhere."""
    if device.type != "cpu" or len(shape) < 3:
        return None
    return max(1, CPU_CHUNK_PIXELS // max(shape[-1] * shape[-2], 1))


class ChunkedForward(nn.Module):
    """``model`` applied to consecutive chunks of its input batch, outputs concatenated.

    Autograd sees one small graph per chunk, so backward passes run chunk by chunk too. Only
    for models whose examples do not interact (eval mode).
    """

    def __init__(self, model: nn.Module, chunk: int) -> None:
        super().__init__()
        if chunk < 1:
            raise ValueError(f"chunk must be at least 1, got {chunk}")
        self.model, self.chunk = model, chunk

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] <= self.chunk:
            return self.model(x)
        return torch.cat([self.model(part) for part in x.split(self.chunk)])


def independent_in_training(model: nn.Module) -> bool:
    """Whether a training-mode forward pass treats every example on its own: no BatchNorm
    (batch statistics) and no dropout (its random draws would be split differently)."""
    coupled = (nn.modules.batchnorm._BatchNorm, nn.modules.dropout._DropoutNd)
    return not any(isinstance(m, coupled) for m in model.modules())


def chunked_for(model: nn.Module, images: torch.Tensor) -> nn.Module:
    """``model`` wrapped in :class:`ChunkedForward` when ``images``' device gains from it."""
    chunk = chunk_size(images.device, images.shape)
    if chunk is None or isinstance(model, ChunkedForward):
        return model
    return ChunkedForward(model, chunk)
