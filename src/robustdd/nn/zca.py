"""ZCA whitening as MTT uses it, applied inside a model so everything else stays in pixel space.

MTT's ``--zca`` (``reference/methods.md`` §1.2, §5.3) fits Kornia's
``ZCAWhitening(eps=0.1, compute_inv=True)`` on the whole training set in [0, 1] and feeds the
whitened images to the network *instead of* mean/std normalisation. Kornia's fit, which
:meth:`ZCAWhitening.fit` reproduces with ``torch.linalg``:

* flatten every image to a row of length D = C·H·W (NCHW order), mean μ over the rows;
* unbiased covariance Σ = Xcᵀ Xc / (N − 1) with Eigen-decomposition Σ = U diag(s) Uᵀ;
* transform T = U diag((s + eps)^-½) Uᵀ, inverse T⁻¹ = U diag((s + eps)^½) Uᵀ;
* whiten(x) = (flat(x) − μ) T, reshaped back to the image shape.

The eps is added to the eigenvalues, so the whitened training covariance is
U diag(s / (s + eps)) Uᵀ rather than exactly the identity (directions with variance well below
eps are damped, not amplified).

In robustdd the whitening lives inside the model (:func:`wrap_with_zca`): a model trained on a
ZCA set takes pixels, so attacks, budgets (ε = 8/255 of a pixel) and plots are unchanged.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from robustdd.nn.normalize import NormalizedModel

__all__ = ["DEFAULT_ZCA_EPS", "ZCAModel", "ZCAWhitening", "whitened_space_augment",
           "wrap_with_zca"]

#: MTT's Kornia ``ZCAWhitening(eps=0.1)``.
DEFAULT_ZCA_EPS = 0.1


class ZCAWhitening(nn.Module):
    """Pixel-space NCHW input → ZCA-whitened tensor of the same shape.

    State: ``mean`` [D] and ``transform`` [D, D] (buffers, saved in ``state_dict``), plus the
    ``eps`` it was fitted with. The inverse is computed once, on first use.
    """

    mean: Tensor
    transform: Tensor

    def __init__(self, mean: Tensor, transform: Tensor, eps: float = DEFAULT_ZCA_EPS,
                 inverse: Tensor | None = None):
        super().__init__()
        if mean.ndim != 1 or transform.shape != (mean.numel(), mean.numel()):
            raise ValueError(f"ZCA needs mean [D] and transform [D, D], got "
                             f"{list(mean.shape)} and {list(transform.shape)}")
        if not (torch.isfinite(mean).all() and torch.isfinite(transform).all()):
            raise ValueError("ZCA mean/transform contain NaN or Inf")
        self.eps = float(eps)
        self.register_buffer("mean", mean.detach().float().contiguous())
        self.register_buffer("transform", transform.detach().float().contiguous())
        self.register_buffer("inverse_transform",
                             None if inverse is None else inverse.detach().float().contiguous(),
                             persistent=False)

    @property
    def dim(self) -> int:
        """D, the flattened image size the transform was fitted for."""
        return int(self.mean.numel())

    @classmethod
    @torch.no_grad()
    def fit(cls, images: Tensor, eps: float = DEFAULT_ZCA_EPS,
            chunk: int = 2048) -> ZCAWhitening:
        """Fit on NCHW ``images`` (uint8, or float pixels in [0, 1]) as Kornia does.

        Two passes in chunks of ``chunk`` images (mean, then centred covariance accumulated
        in float64), so a 50,000-image CIFAR split never needs a float copy in memory.
        """
        if images.ndim != 4 or images.shape[0] < 2:
            raise ValueError(f"ZCA needs at least two NCHW images, got {list(images.shape)}")
        if eps <= 0:
            raise ValueError(f"ZCA eps must be positive, got {eps}")
        n = images.shape[0]
        d = images[0].numel()

        def rows(lo: int) -> Tensor:
            x = images[lo:lo + chunk].reshape(-1, d)
            return x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()

        total = torch.zeros(d, dtype=torch.float64)
        for lo in range(0, n, chunk):
            total += rows(lo).double().sum(0)
        mean = total / n
        mean32 = mean.float()
        cov = torch.zeros(d, d, dtype=torch.float64)
        for lo in range(0, n, chunk):
            xc = rows(lo) - mean32
            cov += (xc.T @ xc).double()  # float32 GEMM per chunk, float64 accumulation
        cov /= n - 1
        evals, evecs = torch.linalg.eigh(cov)
        evals = evals.clamp_min(0.0)  # PSD; rounding can leave tiny negatives
        transform = (evecs * (evals + eps).rsqrt()) @ evecs.T
        inverse = (evecs * (evals + eps).sqrt()) @ evecs.T
        return cls(mean.float(), transform.float(), eps, inverse.float())

    def forward(self, x: Tensor) -> Tensor:
        flat = x.reshape(x.shape[0], -1)
        if flat.shape[1] != self.dim:
            raise ValueError(f"ZCA was fitted on {self.dim}-dimensional images, got "
                             f"{list(x.shape[1:])}")
        return ((flat - self.mean) @ self.transform).view_as(x)

    def _inverse_matrix(self) -> Tensor:
        if self.inverse_transform is None:
            # T is symmetric positive definite; invert in float64 for accuracy.
            inv = torch.linalg.inv(self.transform.double()).to(self.transform.dtype)
            self.inverse_transform = inv
        return self.inverse_transform

    def inverse(self, w: Tensor) -> Tensor:
        """Whitened tensor → pixels (``inverse(self(x)) ≈ x``)."""
        flat = w.reshape(w.shape[0], -1)
        return (flat @ self._inverse_matrix() + self.mean).view_as(w)

    def state_tensors(self) -> dict[str, Tensor]:
        """The state as plain CPU tensors: ``{"mean": [D], "transform": [D, D]}``."""
        return {"mean": self.mean.detach().cpu().contiguous(),
                "transform": self.transform.detach().cpu().contiguous()}

    def extra_repr(self) -> str:
        return f"dim={self.dim}, eps={self.eps}"


class ZCAModel(nn.Module):
    """``net(zca(x))`` for pixel-space ``x``; ``embed`` likewise.

    Its parameters are exactly ``net``'s (the whitening is buffers only), so flat parameter
    vectors (MTT expert trajectories) have the same layout as the bare network's.
    """

    def __init__(self, net: nn.Module, zca: ZCAWhitening):
        super().__init__()
        self.zca = zca
        self.net = net

    def forward(self, x: Tensor) -> Tensor:
        return self.net(self.zca(x))

    def embed(self, x: Tensor) -> Tensor:
        return self.net.embed(self.zca(x))


def wrap_with_zca(model: nn.Module, zca: ZCAWhitening) -> ZCAModel:
    """A model whose forward whitens its pixel input and then runs the network.

    ZCA *replaces* mean/std normalisation (MTT ``--zca`` applies no ``Normalize``): for a
    :class:`~robustdd.nn.normalize.NormalizedModel` (what ``build_model`` returns) its
    normalisation is dropped and the result computes ``model.net(zca(x))``; any other module
    gives ``model(zca(x))``. The whitening is moved (copied) to the model's device.
    """
    net = model.net if isinstance(model, NormalizedModel) else model
    first = next(iter(net.parameters()), None)
    if first is not None:
        zca = _copy_to(zca, first.device)
    return ZCAModel(net, zca)


def _copy_to(zca: ZCAWhitening, device: torch.device) -> ZCAWhitening:
    if zca.mean.device == device:
        return zca
    inv = zca.inverse_transform
    return ZCAWhitening(zca.mean.to(device), zca.transform.to(device), zca.eps,
                        None if inv is None else inv.to(device))


def whitened_space_augment(augment: Callable[[Tensor, torch.Generator], Tensor],
                           zca: ZCAWhitening) -> Callable[[Tensor, torch.Generator], Tensor]:
    """Turn an augmentation of whitened tensors into one of pixels: x ↦ zca⁻¹(augment(zca(x))).

    MTT augments (DSA) the *whitened* images; a :class:`ZCAModel` trained with this wrapper
    on pixels sees ``net(augment(zca(x)))``, the reference's input, up to float rounding.
    Use it with a DSA that has no mean/std (the whitened tensors are the reference's space).
    """

    on_device: dict[torch.device, ZCAWhitening] = {}

    def apply(x: Tensor, generator: torch.Generator) -> Tensor:
        z = on_device.get(x.device)
        if z is None:
            z = on_device[x.device] = _copy_to(zca, x.device)
        return z.inverse(augment(z(x), generator))

    return apply
