"""Fused bias + activation + gain + clamp: y = clamp(gain * act(x + b), -c, c), as in StyleGAN2."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from stylegan2_ops._impl import choose_impl, kernels


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
    The gradient is zero where the clamp is active. linear, relu and lrelu read that from the saved y: on float16 /
    bfloat16 tensors an output that rounds to +-clamp therefore counts as clamped (to within half a 16-bit ulp).
    """
    if act not in ACTIVATIONS:
        raise ValueError(f"bias_act: unknown act={act!r}; expected one of {sorted(ACTIVATIONS)}")
    spec = ACTIVATIONS[act]
    if x.ndim == 0:
        raise ValueError("bias_act: x must have at least one dimension")
    if b is None:
        dim = 0  # without a bias the layout does not matter
    elif not -x.ndim <= dim < x.ndim:
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


def _empty(like: torch.Tensor) -> torch.Tensor:
    return torch.empty(0, dtype=like.dtype, device=like.device)


def bias_act_kernel(
    x: torch.Tensor, b: torch.Tensor | None, dim: int, act: str, alpha: float, gain: float, clamp: float, impl: str
) -> torch.Tensor:
    """bias_act through the compiled kernels ('cpp' or 'cuda'), differentiable twice."""
    spec = ACTIVATIONS[act]
    # act' is a function of sign(y) for linear and relu, and for lrelu while its slope keeps the sign.
    from_y = spec.grad_from_y and (act != "lrelu" or alpha > 0)
    if b is not None:
        b = b.to(x.dtype)
    return _BiasAct.apply(x, b, (dim, spec.code, from_y, alpha, gain, clamp, impl))


class _BiasAct(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, b, params):
        dim, code, from_y, alpha, gain, clamp, impl = params
        bc = _empty(x) if b is None else b.contiguous()
        y = kernels(impl).bias_act_forward(x.contiguous(), bc, dim, code, alpha, gain, clamp)
        # lrelu and friends keep only y; the others keep x and b (the originals, so that double backward reaches
        # them through the graph).
        ctx.save_for_backward(*((y,) if from_y else (x, b)))
        ctx.params = params
        ctx.has_b = b is not None
        return y

    @staticmethod
    def backward(ctx, dy):
        from_y = ctx.params[2]
        if from_y:
            (y,) = ctx.saved_tensors
            x = b = None
        else:
            x, b = ctx.saved_tensors
            y = None
        want_db = ctx.has_b and ctx.needs_input_grad[1]
        if torch.is_grad_enabled():  # create_graph=True: the gradient must be differentiable itself
            dx, db = _BiasActGrad.apply(dy, x, b, y, ctx.params, want_db)
        else:
            dx, db = _bias_act_grad(dy, x, b, y, ctx.params, want_db)
        return dx, (db if want_db else None), None


def _bias_act_grad(dy, x, b, y, params, want_db):
    """(dx, db) from the kernel; db is an empty tensor unless `want_db`."""
    dim, code, from_y, alpha, gain, clamp, impl = params
    e = _empty(dy)
    dx, db = kernels(impl).bias_act_grad(
        dy.contiguous(),
        e if x is None else x.contiguous(),
        e if b is None else b.contiguous(),
        e if y is None else y,
        dim,
        code,
        1,
        alpha,
        gain,
        clamp,
        want_db,
    )
    return dx, (db if want_db else e)


class _BiasActGrad(torch.autograd.Function):
    """(dx, db) = (dy * d/dz bias_act, sum of dx over every axis but dim), itself differentiable once more."""

    @staticmethod
    def forward(ctx, dy, x, b, y, params, want_db):
        ctx.save_for_backward(dy, x, b, y)
        ctx.params = params
        return _bias_act_grad(dy, x, b, y, params, want_db)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, ddx, ddb):
        dy, x, b, y = ctx.saved_tensors
        dim, code, from_y, alpha, gain, clamp, impl = ctx.params
        ext = kernels(impl)
        e = _empty(dy)
        xc = e if x is None else x.contiguous()
        bc = e if b is None else b.contiguous()
        if ddx is None:
            ddx = torch.zeros_like(dy)
        if ddb is not None and ddb.numel() > 0:  # db = sum(dx): its gradient spreads back over dx
            ddx = ddx + ddb.reshape(_bias_shape(dy, dim))
        # dx is linear in dy with coefficient gain * act'(z): the same kernel maps ddx to d(dy).
        d_dy, _ = ext.bias_act_grad(
            ddx.contiguous(), xc, bc, e if y is None else y, dim, code, 1, alpha, gain, clamp, False
        )
        d_x = d_b = None
        if not from_y and (ctx.needs_input_grad[1] or ctx.needs_input_grad[2]):
            # d(dx)/dz = dy * gain * act''(z); act'' vanishes almost everywhere for the y-saving activations.
            d_x, d_b = ext.bias_act_grad(
                (ddx * dy).contiguous(), xc, bc, e, dim, code, 2, alpha, gain, clamp, b is not None
            )
            if b is None or not ctx.needs_input_grad[2]:
                d_b = None
        return d_dy, d_x, d_b, None, None, None
