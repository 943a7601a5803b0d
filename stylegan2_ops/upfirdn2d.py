"""upfirdn2d: upsample (zero insertion), pad, FIR-filter, downsample — per channel of an NCHW tensor.

Conventions (those StyleGAN2 users know): `up`/`down` an int or [x, y]; `padding` an int, [px, py] or
[x0, x1, y0, y1] (negative values crop); filters from `setup_filter`; `flip_filter=False` is true convolution.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from stylegan2_ops._impl import choose_impl, kernels

IntOrPair = int | Sequence[int]
Padding = int | Sequence[int]


def parse_scaling(s: IntOrPair, name: str = "up") -> tuple[int, int]:
    """An int or [sx, sy] -> (sx, sy), each >= 1."""
    sx, sy = (s, s) if isinstance(s, int) else tuple(int(v) for v in s)
    if sx < 1 or sy < 1:
        raise ValueError(f"upfirdn2d: {name}={s!r} must be >= 1 along both axes")
    return sx, sy


def parse_padding(p: Padding) -> tuple[int, int, int, int]:
    """An int, [px, py] or [x0, x1, y0, y1] -> (x0, x1, y0, y1)."""
    if isinstance(p, int):
        return p, p, p, p
    p = [int(v) for v in p]
    if len(p) == 2:
        return p[0], p[0], p[1], p[1]
    if len(p) == 4:
        return p[0], p[1], p[2], p[3]
    raise ValueError(f"upfirdn2d: padding={p!r} must be an int, [px, py] or [x0, x1, y0, y1]")


def filter_size(f: torch.Tensor | None) -> tuple[int, int]:
    """(width, height) of a filter; a 1-D filter is separable and square."""
    if f is None:
        return 1, 1
    if f.ndim == 1:
        return f.shape[0], f.shape[0]
    return f.shape[1], f.shape[0]


def setup_filter(
    f: float | Sequence[float] | np.ndarray | torch.Tensor | None,
    device: torch.device | str = "cpu",
    normalize: bool = True,
    flip_filter: bool = False,
    gain: float = 1,
    separable: bool | None = None,
) -> torch.Tensor:
    """Turn filter taps into the float32 tensor the ops take.

    A 1-D filter stays separable (1-D) only when it has >= 8 taps (or `separable=True`); otherwise it becomes the
    2-D outer product with itself. `normalize` makes the taps sum to 1; `gain` is applied as gain^(ndim/2) so that
    the separable (two-pass) and 2-D forms scale the signal by the same `gain`.
    """
    if f is None:
        f = 1
    f = torch.as_tensor(f, dtype=torch.float32)
    if f.ndim == 0:
        f = f[None]
    if f.ndim not in (1, 2) or f.numel() == 0:
        raise ValueError(f"setup_filter: expected 1-D or 2-D taps, got shape {tuple(f.shape)}")
    if separable is None:
        separable = f.ndim == 1 and f.numel() >= 8
    if f.ndim == 1 and not separable:
        f = torch.outer(f, f)
    if normalize:
        f = f / f.sum()
    if flip_filter:
        f = f.flip(list(range(f.ndim)))
    f = f * (gain ** (f.ndim / 2))
    return f.to(device=device)


def upfirdn2d_ref(
    x: torch.Tensor,
    f: torch.Tensor,
    up: tuple[int, int],
    down: tuple[int, int],
    padding: tuple[int, int, int, int],
    flip_filter: bool,
    gain: float,
) -> torch.Tensor:
    """The oracle: zero insertion, F.pad / slicing, depthwise conv2d, strided slice. Autograd to any order."""
    n, c, h, w = x.shape
    upx, upy = up
    downx, downy = down
    px0, px1, py0, py1 = padding
    # Insert up-1 zeros after every sample.
    x = x.reshape(n, c, h, 1, w, 1)
    x = F.pad(x, [0, upx - 1, 0, 0, 0, upy - 1])
    x = x.reshape(n, c, h * upy, w * upx)
    # Pad with zeros, then crop where the padding is negative.
    x = F.pad(x, [max(px0, 0), max(px1, 0), max(py0, 0), max(py1, 0)])
    x = x[:, :, max(-py0, 0) : x.shape[2] - max(-py1, 0), max(-px0, 0) : x.shape[3] - max(-px1, 0)]
    # conv2d correlates; a true convolution flips the filter first. A separable filter filters the rows, then
    # the columns; the gain is applied once.
    f = f.to(x.dtype)
    if not flip_filter:
        f = f.flip(list(range(f.ndim)))
    if f.ndim == 2:
        x = F.conv2d(x, (f * gain)[None, None].expand(c, 1, *f.shape), groups=c)
    else:
        x = F.conv2d(x, (f * gain)[None, None, None, :].expand(c, 1, 1, -1), groups=c)
        x = F.conv2d(x, f[None, None, :, None].expand(c, 1, -1, 1), groups=c)
    return x[:, :, ::downy, ::downx]


def upfirdn2d(
    x: torch.Tensor,
    f: torch.Tensor | None,
    up: IntOrPair = 1,
    down: IntOrPair = 1,
    padding: Padding = 0,
    flip_filter: bool = False,
    gain: float = 1,
    impl: str = "auto",
) -> torch.Tensor:
    """Upsample by zero insertion, pad (negative crops), FIR-filter with `f`, keep every down-th sample.

    x: (N, C, H, W); f: 1-D (separable) or 2-D filter, or None for identity. Output height
    (H * up_y + py0 + py1 - fh + down_y) // down_y, likewise for the width.
    """
    if x.ndim != 4:
        raise ValueError(f"upfirdn2d: x must be (N, C, H, W), got shape {tuple(x.shape)}")
    if f is None:
        f = torch.ones(1, 1, dtype=torch.float32, device=x.device)
    if f.ndim not in (1, 2):
        raise ValueError(f"upfirdn2d: f must be 1-D or 2-D, got shape {tuple(f.shape)}")
    if f.device != x.device:
        raise ValueError(f"upfirdn2d: f is on {f.device} but x on {x.device} (setup_filter(..., device=x.device))")
    up = parse_scaling(up, "up")
    down = parse_scaling(down, "down")
    padding = parse_padding(padding)
    fw, fh = filter_size(f)
    out_w = (x.shape[3] * up[0] + padding[0] + padding[1] - fw + down[0]) // down[0]
    out_h = (x.shape[2] * up[1] + padding[2] + padding[3] - fh + down[1]) // down[1]
    if out_w < 1 or out_h < 1:
        raise ValueError(
            f"upfirdn2d: empty output ({out_h}x{out_w}) for input {tuple(x.shape)}, filter {tuple(f.shape)}, "
            f"up={up}, down={down}, padding={padding}"
        )
    impl = choose_impl(impl, x, "upfirdn2d")
    if impl == "ref":
        return upfirdn2d_ref(x, f, up, down, padding, flip_filter, float(gain))
    return _Upfirdn2d.apply(x, f, up, down, padding, flip_filter, float(gain), impl)


def _centered_padding(
    f: torch.Tensor | None, padding: Padding, up: tuple[int, int], down: tuple[int, int]
) -> list[int]:
    """`padding` plus the padding that centres a filter of size k after up-sampling by u and before keeping every
    d-th sample, so that the output is in * u / d samples long: (k + u - d) // 2 before, (k - u - d + 1) // 2 after
    (k // 2 and (k - 1) // 2 for a plain filter)."""
    px0, px1, py0, py1 = parse_padding(padding)
    (fw, fh), (ux, uy), (dx, dy) = filter_size(f), up, down
    return [
        px0 + (fw + ux - dx) // 2,
        px1 + (fw - ux - dx + 1) // 2,
        py0 + (fh + uy - dy) // 2,
        py1 + (fh - uy - dy + 1) // 2,
    ]


def filter2d(
    x: torch.Tensor,
    f: torch.Tensor | None,
    padding: Padding = 0,
    flip_filter: bool = False,
    gain: float = 1,
    impl: str = "auto",
) -> torch.Tensor:
    """FIR-filter keeping the size ("same" padding), plus any extra `padding`."""
    p = _centered_padding(f, padding, (1, 1), (1, 1))
    return upfirdn2d(x, f, padding=p, flip_filter=flip_filter, gain=gain, impl=impl)


def upsample2d(
    x: torch.Tensor,
    f: torch.Tensor | None,
    up: IntOrPair = 2,
    padding: Padding = 0,
    flip_filter: bool = False,
    gain: float = 1,
    impl: str = "auto",
) -> torch.Tensor:
    """Upsample by `up` with FIR filter `f` (output size = input * up); gain up^2 keeps the signal's scale."""
    upx, upy = parse_scaling(up, "up")
    p = _centered_padding(f, padding, (upx, upy), (1, 1))
    return upfirdn2d(x, f, up=(upx, upy), padding=p, flip_filter=flip_filter, gain=gain * upx * upy, impl=impl)


def downsample2d(
    x: torch.Tensor,
    f: torch.Tensor | None,
    down: IntOrPair = 2,
    padding: Padding = 0,
    flip_filter: bool = False,
    gain: float = 1,
    impl: str = "auto",
) -> torch.Tensor:
    """Low-pass with FIR filter `f`, then keep every down-th sample (output size = input / down)."""
    downx, downy = parse_scaling(down, "down")
    p = _centered_padding(f, padding, (1, 1), (downx, downy))
    return upfirdn2d(x, f, down=(downx, downy), padding=p, flip_filter=flip_filter, gain=gain, impl=impl)


def _correlate(
    x: torch.Tensor,
    f: torch.Tensor,
    up: tuple[int, int],
    down: tuple[int, int],
    padding: tuple[int, int, int, int],
    flip_filter: bool,
    gain: float,
    impl: str,
) -> torch.Tensor:
    """One call of the compiled kernel per filter axis (two for a separable filter), taps flipped and scaled."""
    ext = kernels(impl)
    w = f.to(torch.float64 if x.dtype == torch.float64 else torch.float32)
    if not flip_filter:
        w = w.flip(list(range(w.ndim)))
    upx, upy = up
    downx, downy = down
    px0, px1, py0, py1 = padding
    x = x.contiguous()
    if f.ndim == 2:
        return ext.upfirdn2d_forward(x, (w * gain).contiguous(), upx, upy, downx, downy, px0, px1, py0, py1)
    x = ext.upfirdn2d_forward(x, (w * gain)[None, :].contiguous(), upx, 1, downx, 1, px0, px1, 0, 0)
    return ext.upfirdn2d_forward(x, w[:, None].contiguous(), 1, upy, 1, downy, 0, 0, py0, py1)


class _Upfirdn2d(torch.autograd.Function):
    """upfirdn2d whose gradient is upfirdn2d again (so gradients of every order exist); none for the filter."""

    @staticmethod
    def forward(ctx, x, f, up, down, padding, flip_filter, gain, impl):
        ctx.save_for_backward(f)
        ctx.params = (up, down, padding, flip_filter, gain, impl)
        ctx.in_hw = (x.shape[2], x.shape[3])
        return _correlate(x, f, up, down, padding, flip_filter, gain, impl)

    @staticmethod
    def backward(ctx, dy):
        (f,) = ctx.saved_tensors
        (upx, upy), (downx, downy), (px0, px1, py0, py1), flip_filter, gain, impl = ctx.params
        in_h, in_w = ctx.in_hw
        out_h, out_w = dy.shape[2], dy.shape[3]
        fw, fh = filter_size(f)
        # The adjoint: up and down swap, the filter flips, and the padding makes the output the input's size.
        p = (
            fw - px0 - 1,
            in_w * upx - out_w * downx + px0 - upx + 1,
            fh - py0 - 1,
            in_h * upy - out_h * downy + py0 - upy + 1,
        )
        dx = _Upfirdn2d.apply(dy, f, (downx, downy), (upx, upy), p, not flip_filter, gain, impl)
        return dx, None, None, None, None, None, None, None
