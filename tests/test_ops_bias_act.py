"""bias_act: the reference against hand-computed values, the C++ and CUDA kernels against the reference."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import require_free_gpu_memory

from stylegan2_ops import ACTIVATIONS, bias_act, fused_leaky_relu

pytestmark = pytest.mark.usefixtures("single_thread")  # the threaded path has its own test

ACTS = sorted(ACTIVATIONS)
TOL = {torch.float32: dict(rtol=1e-5, atol=1e-5), torch.float64: dict(rtol=1e-12, atol=1e-12)}
SQRT2 = math.sqrt(2)


def _case_inputs(dtype: torch.dtype, device: str = "cpu") -> list[tuple[str, torch.Tensor, torch.Tensor | None, int]]:
    """Fresh random inputs (never zeros) of the shapes the kernels must handle: (name, x, b, dim)."""
    g = torch.Generator().manual_seed(1234)

    def rnd(*shape):
        return (torch.randn(*shape, generator=g, dtype=torch.float64) * 2).to(dtype=dtype, device=device)

    nchw = rnd(3, 5, 7, 9)
    return [
        ("odd NCHW", nchw, rnd(5), 1),
        ("batch 1", rnd(1, 6, 5, 3), rnd(6), 1),
        ("non-contiguous", nchw.transpose(2, 3), rnd(5), 1),
        ("strided slice", rnd(2, 8, 6, 10)[:, ::2, :, 1::3], rnd(4), 1),
        ("dim=-1 (last)", rnd(4, 3, 11), rnd(11), 2),
        ("dim=0", rnd(7, 2, 3), rnd(7), 0),
        ("2-D N x C", rnd(13, 17), rnd(17), 1),
        ("no bias", rnd(2, 3, 4, 5), None, 1),
    ]


def _grads(impl, x, b, dim, dy, **kw):
    x = x.detach().clone().requires_grad_(True)
    inputs = [x]
    if b is not None:
        b = b.detach().clone().requires_grad_(True)
        inputs.append(b)
    y = bias_act(x, b, dim=dim, impl=impl, **kw)
    return (y, *torch.autograd.grad(y, inputs, dy))


def test_ref_matches_hand_computed_values():
    x = torch.tensor([[-2.0, 0.5], [1.0, -0.25]], dtype=torch.float64)
    b = torch.tensor([0.5, -1.0], dtype=torch.float64)  # z = [[-1.5, -0.5], [1.5, -1.25]]
    lrelu = torch.tensor([[-0.3, -0.1], [1.5, -0.25]], dtype=torch.float64) * SQRT2
    torch.testing.assert_close(bias_act(x, b, act="lrelu", impl="ref"), lrelu)
    torch.testing.assert_close(fused_leaky_relu(x, b, impl="ref"), lrelu)
    # The clamp bounds gain * act(z): +-0.3 where |lrelu| > 0.3.
    clamped = torch.tensor([[-0.3, -0.1 * SQRT2], [0.3, -0.3]], dtype=torch.float64)
    torch.testing.assert_close(bias_act(x, b, act="lrelu", clamp=0.3, impl="ref"), clamped)
    # Bias along dim 0 instead: z = [[-1.5, 1.0], [0.0, -1.25]].
    relu0 = torch.tensor([[0.0, 1.0], [0.0, 0.0]], dtype=torch.float64) * SQRT2
    torch.testing.assert_close(bias_act(x, torch.tensor([0.5, -1.0], dtype=torch.float64), dim=0, act="relu"), relu0)
    z = torch.tensor([0.0, 1.0, -1.0], dtype=torch.float64)
    e = math.exp(-1.0)
    s = 1 / (1 + e)  # sigmoid(1)
    expected = {
        "linear": [0.0, 1.0, -1.0],
        "tanh": [0.0, math.tanh(1.0), -math.tanh(1.0)],
        "sigmoid": [0.5, s, 1 - s],
        "elu": [0.0, 1.0, e - 1],
        "selu": [0.0, 1.0507009873554805, 1.0507009873554805 * 1.6732632423543772 * (e - 1)],
        "softplus": [math.log(2.0), math.log(1 + math.e), math.log(1 + e)],
        "swish": [0.0, s * SQRT2, -(1 - s) * SQRT2],
    }
    for act, values in expected.items():
        torch.testing.assert_close(bias_act(z, act=act, impl="ref"), torch.tensor(values, dtype=torch.float64))
    # alpha and gain override the defaults.
    torch.testing.assert_close(
        bias_act(z, act="lrelu", alpha=0.5, gain=3.0, impl="ref"), torch.tensor([0.0, 3.0, -1.5], dtype=torch.float64)
    )
    torch.testing.assert_close(
        bias_act(z, act="elu", alpha=2.0, impl="ref"), torch.tensor([0.0, 1.0, 2 * (e - 1)], dtype=torch.float64)
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("clamp", [None, 0.7], ids=["noclamp", "clamp"])
@pytest.mark.parametrize("act", ACTS)
def test_cpp_matches_ref_forward_and_backward(act, clamp, dtype):
    for name, x, b, dim in _case_inputs(dtype):
        dy = torch.randn(x.shape, dtype=dtype)
        want = _grads("ref", x, b, dim, dy, act=act, clamp=clamp)
        got = _grads("cpp", x, b, dim, dy, act=act, clamp=clamp)
        for what, w, g in zip(("y", "dx", "db"), want, got):
            torch.testing.assert_close(g, w, **TOL[dtype], msg=lambda m, n=name, k=what: f"{n} {k}: {m}")


@pytest.mark.parametrize("act, alpha, gain", [("lrelu", 0.1, 0.5), ("lrelu", 0.3, -2.0), ("elu", 0.4, 1.7)])
def test_cpp_matches_ref_with_custom_alpha_and_gain(act, alpha, gain):
    x = torch.randn(2, 6, 5, 3, dtype=torch.float64)
    b = torch.randn(6, dtype=torch.float64)
    dy = torch.randn_like(x)
    want = _grads("ref", x, b, 1, dy, act=act, alpha=alpha, gain=gain, clamp=0.9)
    got = _grads("cpp", x, b, 1, dy, act=act, alpha=alpha, gain=gain, clamp=0.9)
    for w, g in zip(want, got):
        torch.testing.assert_close(g, w, **TOL[torch.float64])


@pytest.mark.parametrize("act", ACTS)
def test_cpp_gradcheck(act):
    x = torch.randn(2, 3, 4, 5, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, b: bias_act(x, b, act=act, impl="cpp"), (x, b))
    # With the clamp active on part of the elements (|gain * act| > 0.8 somewhere, not everywhere).
    assert torch.autograd.gradcheck(lambda x, b: bias_act(x, b, act=act, clamp=0.8, impl="cpp"), (x, b))
    # Second order: the backward is differentiable too (act'' for the x-saving activations).
    assert torch.autograd.gradgradcheck(lambda x, b: bias_act(x, b, act=act, impl="cpp"), (x, b))


def test_cpp_second_order_matches_ref():
    """Double backward through the kernels equals double backward through autograd of the reference."""
    x = torch.randn(3, 4, 5, dtype=torch.float64)
    b = torch.randn(4, dtype=torch.float64)
    v = torch.randn_like(x)
    for act in ACTS:
        results = []
        for impl in ("ref", "cpp"):
            xi, bi = x.clone().requires_grad_(True), b.clone().requires_grad_(True)
            (gx,) = torch.autograd.grad(bias_act(xi, bi, act=act, impl=impl).sum(), xi, create_graph=True)
            out = (gx * v).sum()
            if out.requires_grad:  # for linear, the reference's first derivative is a constant
                results.append(torch.autograd.grad(out, (xi, bi), allow_unused=True, materialize_grads=True))
            else:
                results.append((torch.zeros_like(x), torch.zeros_like(b)))
        for w, g in zip(*results):
            torch.testing.assert_close(g, w, **TOL[torch.float64], msg=lambda m, a=act: f"{a}: {m}")


def test_lrelu_saves_only_the_output():
    """lrelu's backward keeps y alone: x may be modified in place after the forward pass."""
    x = torch.randn(2, 3, 4, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3, dtype=torch.float64, requires_grad=True)
    x_in = x * 1.0
    y = bias_act(x_in, b, act="lrelu", impl="cpp")
    expected = _grads("ref", x_in.detach(), b.detach(), 1, torch.ones_like(y), act="lrelu")
    x_in.mul_(-5.0)  # would raise "modified by an inplace operation" at backward if x were saved
    y.backward(torch.ones_like(y))
    torch.testing.assert_close(x.grad, expected[1])
    torch.testing.assert_close(b.grad, expected[2])


def test_bad_arguments_raise_clear_errors():
    x = torch.randn(2, 3, 4)
    with pytest.raises(ValueError, match="unknown act"):
        bias_act(x, act="gelu")
    with pytest.raises(ValueError, match=r"b must be 1-D of length x.shape\[1\]=3"):
        bias_act(x, torch.randn(4))
    with pytest.raises(ValueError, match="dim=3 out of range"):
        bias_act(x, torch.randn(3), dim=3)
    with pytest.raises(ValueError, match="impl='fast'"):
        bias_act(x, impl="fast")
    with pytest.raises(ValueError, match="supports"):
        bias_act(x.half(), impl="cpp")
    with pytest.raises(ValueError, match="needs a cuda tensor"):
        bias_act(x, impl="cuda")


@pytest.mark.gpu
@pytest.mark.cuda_build  # the CUDA kernels are compiled on first use
@pytest.mark.parametrize("act", ACTS)
def test_cuda_matches_ref(act):
    for dtype in (torch.float32, torch.float64):
        for name, x, b, dim in _case_inputs(dtype, "cuda"):
            for clamp in (None, 0.7):
                dy = torch.randn(x.shape, dtype=dtype, device="cuda")
                want = _grads("ref", x, b, dim, dy, act=act, clamp=clamp)
                got = _grads("cuda", x, b, dim, dy, act=act, clamp=clamp)
                for what, w, g in zip(("y", "dx", "db"), want, got):
                    torch.testing.assert_close(g, w, **TOL[dtype], msg=lambda m, n=name, k=what: f"{n} {k}: {m}")


@pytest.mark.gpu
@pytest.mark.cuda_build  # the CUDA kernels are compiled on first use
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["f16", "bf16"])
def test_cuda_16bit_is_computed_in_float32(dtype):
    x = torch.randn(4, 8, 16, 16, device="cuda").to(dtype)
    b = torch.randn(8, device="cuda").to(dtype)
    dy = torch.randn_like(x)
    for act in ACTS:
        # The oracle: the same 16-bit inputs, computed in float32, rounded once at the end.
        want = _grads("ref", x.float(), b.float(), 1, dy.float(), act=act, clamp=2.0)
        if ACTIVATIONS[act].grad_from_y:
            # These read the clamp mask from the saved 16-bit y: an output that rounds to +-2 counts as clamped.
            y, dx, _ = want
            dx = torch.where(y.to(dtype).abs() >= 2.0, torch.zeros_like(dx), dx)
            want = (y, dx, dx.sum((0, 2, 3)))
        got = _grads("cuda", x, b, 1, dy, act=act, clamp=2.0)
        tol = 1e-2 if dtype == torch.float16 else 5e-2  # one rounding of each result (11 or 8 bits)
        # db sums x.numel() / 8 rounded elements of dx: their rounding errors grow like the square root of that.
        atols = (tol, tol, tol * math.sqrt(x.numel() / x.shape[1]))
        for w, g, atol in zip(want, got, atols):
            assert g.dtype == dtype
            torch.testing.assert_close(g.float(), w, rtol=tol, atol=atol, msg=lambda m, a=act: f"{a}: {m}")


@pytest.mark.gpu
@pytest.mark.cuda_build  # the CUDA kernels are compiled on first use
@pytest.mark.parametrize("act", ACTS)
def test_cuda_gradcheck(act):
    x = torch.randn(2, 3, 4, 5, dtype=torch.float64, device="cuda", requires_grad=True)
    b = torch.randn(3, dtype=torch.float64, device="cuda", requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, b: bias_act(x, b, act=act, clamp=0.8, impl="cuda"), (x, b))
    assert torch.autograd.gradgradcheck(lambda x, b: bias_act(x, b, act=act, impl="cuda"), (x, b))


@pytest.mark.gpu
@pytest.mark.cuda_build  # the CUDA kernels are compiled on first use
def test_cuda_past_2_to_31_elements_uses_64_bit_indices():
    """Over 2^31 elements the kernels index in 64 bits; the channel of each element (forward, and the backward from x
    that swish takes) must still be right at the far end. The slices at both ends are checked against the reference."""
    require_free_gpu_memory(40)
    gen = torch.Generator(device="cuda").manual_seed(5)
    x = torch.randn(4, 8, 8192, 8208, device="cuda", dtype=torch.float16, generator=gen).requires_grad_(True)
    assert x.numel() > 2**31
    b = torch.randn(8, device="cuda", dtype=torch.float16, generator=gen).requires_grad_(True)
    y = bias_act(x, b, act="swish", impl="cuda")
    dy = torch.randn(y.shape, device="cuda", dtype=torch.float16, generator=gen)
    (dx,) = torch.autograd.grad(y, x, dy)
    for n in (0, 3):
        part = slice(n, n + 1)
        want_y, want_dx, _ = _grads("ref", x[part].float(), b.float(), 1, dy[part].float(), act="swish")
        torch.testing.assert_close(y[part].float(), want_y, rtol=1e-2, atol=1e-2)
        torch.testing.assert_close(dx[part].float(), want_dx, rtol=1e-2, atol=1e-2)


def test_cpp_threaded_rows_match_ref():
    """Large enough that at::parallel_for splits the rows over threads (db partial sums included)."""
    torch.set_num_threads(2)
    x = torch.randn(3, 40, 30, 33, dtype=torch.float64)
    b = torch.randn(40, dtype=torch.float64)
    dy = torch.randn_like(x)
    for act, clamp in (("lrelu", None), ("swish", 1.5)):
        for w, g in zip(
            _grads("ref", x, b, 1, dy, act=act, clamp=clamp), _grads("cpp", x, b, 1, dy, act=act, clamp=clamp)
        ):
            torch.testing.assert_close(g, w, **TOL[torch.float64])
