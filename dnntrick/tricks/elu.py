"""ELU and SELU that run several times faster on the CPU than torch's own kernels.

torch's CPU kernel for ELU/SELU (torch 2.14, AVX512 build) spends ~130 µs on a [50, 300] batch:
its vectorized path calls expm1 one element at a time. exp is vectorized (~10× faster), so here
the negative side is computed as alpha·(exp(min(x, 0)) − 1), as TensorFlow/Keras compute ELU:
four to six small kernels, ~35 µs. min(x, 0) keeps exp from overflowing for large x.
exp(x) − 1 loses relative precision for x just below 0 (absolute error ≤ 1.2e-7), which is what
TF has always done. The backward is torch's own elu_backward from the saved input
(scale·alpha·exp(x) for x ≤ 0; from the output, y + scale·alpha, would cancel badly for very
negative x).

On other devices (CUDA: one fused kernel, fewer launches) the modules call torch's kernel.
The classes subclass nn.ELU/nn.SELU: same name, arguments, repr and state dict.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

SELU_ALPHA = 1.6732632423543772848170429916717  # torch's (and Klambauer et al.'s) constants
SELU_SCALE = 1.0507009873554804934193349852946


class _ExpELU(torch.autograd.Function):
    """scale · (x if x > 0 else alpha·(exp(x) − 1))."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, alpha: float, scale: float) -> torch.Tensor:
        negative = torch.clamp(x, max=0).exp_().sub_(1)
        if alpha == 1.0:  # x ≤ exp(x) − 1 for x ≤ 0, and exp(0) − 1 = 0 < x for x > 0
            y = torch.maximum(x, negative)
        else:
            y = torch.where(x > 0, x, negative.mul_(alpha))
        if scale != 1.0:
            y.mul_(scale)
        ctx.alpha, ctx.scale = alpha, scale
        ctx.save_for_backward(x)
        return y

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (x,) = ctx.saved_tensors
        dx = torch.ops.aten.elu_backward(grad, ctx.alpha, ctx.scale, 1.0, False, x)
        return dx, None, None


def elu(x: torch.Tensor, alpha: float = 1.0, scale: float = 1.0) -> torch.Tensor:
    """ELU (scale 1) or SELU (alpha, scale = SELU_ALPHA, SELU_SCALE); exp-based on the CPU."""
    if x.device.type != "cpu":
        return torch.ops.aten.elu(x, alpha, scale, 1.0)
    return _ExpELU.apply(x, alpha, scale)


class ELU(nn.ELU):
    """nn.ELU with the fast CPU path (inplace=True keeps torch's kernel)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.inplace:
            return F.elu(x, self.alpha, inplace=True)
        return elu(x, self.alpha)


class SELU(nn.SELU):
    """nn.SELU with the fast CPU path (inplace=True keeps torch's kernel)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.inplace:
            return F.selu(x, inplace=True)
        return elu(x, SELU_ALPHA, SELU_SCALE)
