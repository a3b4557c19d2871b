"""Small model wrappers shared by the attack tests."""

from __future__ import annotations

import torch
from torch import nn


class RowSpy(nn.Module):
    """Records the rows of every forward pass."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner, self.rows = inner, []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.rows.append(int(x.shape[0]))
        return self.inner(x)


class Shifted(nn.Module):
    """Adds a constant to every logit: predictions, gradients and CW margins are unchanged, but
    all logits become positive, where torchattacks' zero-masked max equals the real max."""

    def __init__(self, inner: nn.Module, shift: float = 50.0) -> None:
        super().__init__()
        self.inner, self.shift = inner, shift

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x) + self.shift
