"""Fused bias + activation + gain + clamp: y = clamp(gain * act(x + b), -c, c), as in StyleGAN2."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from stylegan2_ops._impl import choose_impl


@dataclass(frozen=True)
class Activation:
    """One activation: its id in the kernels, default alpha and gain, and whether act' is a function of y."""

    code: int
    alpha: float
    gain: float
    grad_from_y: bool


# Codes must match the switch in csrc/bias_act_math.h.
ACTIVATIONS: dict[str, Activation] = {
    "linear": Activation(0, 0.0, 1.0, True),
    "relu": Activation(1, 0.0, math.sqrt(2), True),
    "lrelu": Activation(2, 0.2, math.sqrt(2), True),
    "tanh": Activation(3, 0.0, 1.0, False),
    "sigmoid": Activation(4, 0.0, 1.0, False),
    "elu": Activation(5, 1.0, 1.0, False),
    "selu": Activation(6, 0.0, 1.0, False),
    "softplus": Activation(7, 0.0, 1.0, False),
    "swish": Activation(8, 0.0, math.sqrt(2), False),
}


def _activation_ref(x: torch.Tensor, act: str, alpha: float) -> torch.Tensor:
    if act == "linear":
        return x
    if act == "relu":
        return F.relu(x)
    if act == "lrelu":
        return F.leaky_relu(x, alpha)
    if act == "tanh":
        return torch.tanh(x)
    if act == "sigmoid":
        return torch.sigmoid(x)
    if act == "elu":
        return F.elu(x, alpha)
    if act == "selu":
        return F.selu(x)
    if act == "softplus":
        return F.softplus(x)
    return F.silu(x)  # swish


def _bias_shape(x: torch.Tensor, dim: int) -> list[int]:
    return [-1 if i == dim else 1 for i in range(x.ndim)]


def bias_act_ref(
    x: torch.Tensor, b: torch.Tensor | None, dim: int, act: str, alpha: float, gain: float, clamp: float
) -> torch.Tensor:
    """The oracle: plain PyTorch composition, differentiable by autograd to any order."""
    if b is not None:
        x = x + b.to(x.dtype).reshape(_bias_shape(x, dim))
    x = _activation_ref(x, act, alpha)
    if gain != 1:
        x = x * gain
    if clamp >= 0:
        x = x.clamp(-clamp, clamp)
    return x


def bias_act(
    x: torch.Tensor,
    b: torch.Tensor | None = None,
    dim: int = 1,
    act: str = "linear",
    alpha: float | None = None,
    gain: float | None = None,
    clamp: float | None = None,
    impl: str = "auto",
) -> torch.Tensor:
    """Add bias `b` (1-D, length x.shape[dim]) along `dim`, apply `act`, multiply by `gain`, clamp to [-clamp, clamp].

    `alpha` is the activation's parameter (lrelu's negative slope, default 0.2; elu's alpha, default 1);
    `gain` defaults to sqrt(2) for relu, lrelu and swish and 1 otherwise; `clamp=None` (or < 0) disables clamping.
    """
    if act not in ACTIVATIONS:
        raise ValueError(f"bias_act: unknown act={act!r}; expected one of {sorted(ACTIVATIONS)}")
    spec = ACTIVATIONS[act]
    if x.ndim == 0:
        raise ValueError("bias_act: x must have at least one dimension")
    if not -x.ndim <= dim < x.ndim:
        raise ValueError(f"bias_act: dim={dim} out of range for x of shape {tuple(x.shape)}")
    dim %= x.ndim
    if b is not None and (b.ndim != 1 or b.shape[0] != x.shape[dim]):
        raise ValueError(f"bias_act: b must be 1-D of length x.shape[{dim}]={x.shape[dim]}, got shape {tuple(b.shape)}")
    alpha = float(spec.alpha if alpha is None else alpha)
    gain = float(spec.gain if gain is None else gain)
    clamp = float(-1 if clamp is None else clamp)
    impl = choose_impl(impl, x, "bias_act")
    if impl == "ref":
        return bias_act_ref(x, b, dim, act, alpha, gain, clamp)
    from stylegan2_ops._bias_act_autograd import bias_act_kernel

    return bias_act_kernel(x, b, dim, act, alpha, gain, clamp, impl)


def fused_leaky_relu(
    x: torch.Tensor,
    bias: torch.Tensor | None,
    negative_slope: float = 0.2,
    scale: float = 2**0.5,
    clamp: float | None = None,
    impl: str = "auto",
) -> torch.Tensor:
    """Bias along dim 1, leaky ReLU, gain: the generator's activation (rosinality's `fused_leaky_relu`)."""
    return bias_act(x, bias, dim=1, act="lrelu", alpha=negative_slope, gain=scale, clamp=clamp, impl=impl)
