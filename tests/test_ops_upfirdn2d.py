"""upfirdn2d and its wrappers: the reference against hand-computed cases, the kernels against the reference."""

from __future__ import annotations

import itertools

import pytest
import torch
from conftest import require_free_gpu_memory

from stylegan2_ops import downsample2d, filter2d, setup_filter, upfirdn2d, upsample2d

pytestmark = pytest.mark.usefixtures("single_thread")  # the threaded path has its own test

TOL = {torch.float32: dict(rtol=1e-5, atol=1e-5), torch.float64: dict(rtol=1e-12, atol=1e-12)}
PADDINGS = [0, (1, 3), (2, 0, 1, 3), (-1, 2, 3, -2), (-2, -1, 0, -1)]


def _filters(device: str = "cpu") -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(7)
    return {
        "[1,3,3,1] 4x4": setup_filter([1, 3, 3, 1], device=device),
        "8-tap separable": setup_filter(torch.rand(8, generator=g) + 0.1, device=device),
        "random 3x5": (torch.randn(3, 5, generator=g)).to(device),
        "1x1": setup_filter(2.0, device=device),
    }


def _grads(impl, x, f, dy_seed, **kw):
    x = x.detach().clone().requires_grad_(True)
    y = upfirdn2d(x, f, impl=impl, **kw)
    dy = torch.randn(y.shape, generator=torch.Generator().manual_seed(dy_seed), dtype=torch.float64)
    (dx,) = torch.autograd.grad(y, x, dy.to(dtype=y.dtype, device=y.device))
    return y, dx


def _compare_to_ref(impl: str, dtype: torch.dtype, up, down, device: str = "cpu") -> int:
    """Every input, filter and padding (flip and gain varied along) for one (up, down): forward and input gradient.
    Returns the number of cases compared."""
    g = torch.Generator().manual_seed(11)
    inputs = {
        "odd 2x3x11x13": torch.randn(2, 3, 11, 13, generator=g, dtype=torch.float64),
        "batch 1, non-contiguous": torch.randn(1, 4, 9, 14, generator=g, dtype=torch.float64).transpose(2, 3),
    }
    cases = 0
    for i, ((xname, x), (fname, f), padding) in enumerate(
        itertools.product(inputs.items(), _filters(device).items(), PADDINGS)
    ):
        flip, gain = bool(i % 2), (1.0, 2.5, -0.5)[i % 3]  # every flip and gain meets every filter and padding
        x = x.to(dtype=dtype, device=device)
        kw = dict(up=up, down=down, padding=padding, flip_filter=flip, gain=gain)
        try:
            want = _grads("ref", x, f, cases, **kw)
        except ValueError:  # empty output (large crop with a big down factor): rejected by both
            with pytest.raises(ValueError, match="empty output"):
                upfirdn2d(x, f, impl=impl, **kw)
            continue
        got = _grads(impl, x, f, cases, **kw)
        for what, w, o in zip(("y", "dx"), want, got):
            torch.testing.assert_close(o, w, **TOL[dtype], msg=lambda m, c=(xname, fname, kw, what): f"{c}: {m}")
        cases += 1
    return cases


def test_ref_matches_hand_computed_1d_cases():
    x = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64).reshape(1, 1, 1, 3)
    f = torch.tensor([[1.0, 2.0]], dtype=torch.float64)  # fh=1, fw=2

    def run(**kw):
        return upfirdn2d(x, f, impl="ref", **kw).flatten().tolist()

    # Zero-stuffed: [1,0,2,0,3,0]; true convolution with [1,2] = correlation with [2,1].
    assert run(up=(2, 1)) == [2.0, 2.0, 4.0, 3.0, 6.0]
    assert run(up=(2, 1), flip_filter=True) == [1.0, 4.0, 2.0, 6.0, 3.0]  # correlation with [1,2]
    assert run(up=(2, 1), down=(2, 1)) == [2.0, 4.0, 6.0]
    assert run(up=(2, 1), padding=(1, 0, 0, 0)) == [1.0, 2.0, 2.0, 4.0, 3.0, 6.0]
    assert run(up=(2, 1), padding=(-1, 0, 0, 0)) == [2.0, 4.0, 3.0, 6.0]
    assert run(up=(2, 1), gain=3.0) == [6.0, 6.0, 12.0, 9.0, 18.0]
    # Without upsampling: [1,2,3] correlated with [2,1], padded with one zero on the right.
    assert run(padding=(0, 1, 0, 0)) == [4.0, 7.0, 6.0]


def test_ref_matches_hand_computed_2d_cases():
    x = torch.arange(1.0, 26.0, dtype=torch.float64).reshape(1, 1, 5, 5)
    delta = torch.zeros(3, 3, dtype=torch.float64)
    delta[0, 0] = 1.0
    # True convolution with a delta at tap (0, 0) of a centred 3x3 filter reads x[i+1, j+1].
    out = filter2d(x, delta, impl="ref")[0, 0]
    torch.testing.assert_close(out[:4, :4], x[0, 0, 1:, 1:])
    torch.testing.assert_close(out[4], torch.zeros(5, dtype=torch.float64))
    # flip_filter=True correlates instead: it reads x[i-1, j-1].
    out = filter2d(x, delta, flip_filter=True, impl="ref")[0, 0]
    torch.testing.assert_close(out[1:, 1:], x[0, 0, :4, :4])
    # The box filter [1,1] (2x2 after setup) averages; downsampling by 2 keeps every other average.
    box = setup_filter([1, 1])
    torch.testing.assert_close(box, torch.full((2, 2), 0.25))
    avg = downsample2d(torch.arange(16.0).reshape(1, 1, 4, 4), box, impl="ref")[0, 0]
    torch.testing.assert_close(avg, torch.tensor([[2.5, 4.5], [10.5, 12.5]]))
    # Upsampling a constant image with [1,3,3,1] (gain up^2) keeps it constant away from the border.
    ones = torch.ones(1, 1, 6, 6)
    up = upsample2d(ones, setup_filter([1, 3, 3, 1]), impl="ref")[0, 0]
    assert up.shape == (12, 12)
    torch.testing.assert_close(up[2:-2, 2:-2], torch.ones(8, 8))


def test_setup_filter_conventions():
    f = setup_filter([1, 3, 3, 1])
    assert f.shape == (4, 4) and f.dtype == torch.float32
    torch.testing.assert_close(f, torch.outer(torch.tensor([1.0, 3, 3, 1]), torch.tensor([1.0, 3, 3, 1])) / 64)
    f8 = setup_filter(list(range(1, 9)))  # >= 8 taps stays separable
    assert f8.shape == (8,)
    torch.testing.assert_close(f8, torch.arange(1.0, 9.0) / 36)
    assert setup_filter([1, 2], separable=True).shape == (2,)
    torch.testing.assert_close(setup_filter([1, 3, 3, 1], gain=4.0).sum(), torch.tensor(4.0))
    torch.testing.assert_close(setup_filter(list(range(1, 9)), gain=4.0).sum(), torch.tensor(2.0))  # 4^(1/2)
    torch.testing.assert_close(setup_filter([[1.0, 2.0]], flip_filter=True), torch.tensor([[2.0, 1.0]]) / 3)
    assert setup_filter(None).tolist() == [[1.0]]  # identity


def test_separable_filter_equals_its_outer_product():
    x = torch.randn(2, 3, 9, 10, dtype=torch.float64)
    f = setup_filter(torch.rand(8) + 0.1)
    f2 = torch.outer(f, f).double()
    for impl in ("ref", "cpp"):
        torch.testing.assert_close(
            upfirdn2d(x, f.double(), up=2, down=(1, 2), padding=(3, 4, 2, 5), gain=1.5, impl=impl),
            upfirdn2d(x, f2, up=2, down=(1, 2), padding=(3, 4, 2, 5), gain=1.5, impl="ref"),
        )


@pytest.mark.parametrize("impl", ["ref", "cpp"])
def test_wrapper_output_sizes(impl):
    x = torch.randn(2, 3, 10, 14)
    for taps in ([1, 3, 3, 1], [1, 2, 1], list(range(1, 9))):
        f = setup_filter(taps)
        for s in (2, 4):
            assert upsample2d(x, f, up=s, impl=impl).shape == (2, 3, 10 * s, 14 * s)
        assert downsample2d(x, f, down=2, impl=impl).shape == (2, 3, 5, 7)
        assert filter2d(x, f, impl=impl).shape == x.shape
    assert upsample2d(x, setup_filter([1, 3, 3, 1]), up=(2, 1), impl=impl).shape == (2, 3, 10, 28)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize(
    "up, down", [(u, d) for u in (1, 2, 4) for d in (1, 2, 4)] + [((2, 1), (1, 4)), ((1, 4), (2, 1))]
)
def test_cpp_matches_ref(up, down, dtype):
    assert _compare_to_ref("cpp", dtype, up, down) > 0


def test_cpp_gradcheck_and_gradgradcheck():
    f2 = torch.randn(3, 4, dtype=torch.float64)
    f1 = setup_filter(torch.rand(8) + 0.1).double()
    for f, up, down, padding in [
        (f2, 2, 1, (1, 2, 0, -1)),
        (f2, 1, 2, (2, 1, 1, 2)),
        (f2, (2, 1), (1, 2), (0, 3, 2, -1)),
        (f1, 2, 2, (4, 3, 3, 4)),
    ]:
        x = torch.randn(1, 2, 5, 6, dtype=torch.float64, requires_grad=True)

        def op(x, f=f, up=up, down=down, padding=padding):
            return upfirdn2d(x, f, up=up, down=down, padding=padding, gain=1.3, impl="cpp")

        assert torch.autograd.gradcheck(op, (x,))
        assert torch.autograd.gradgradcheck(op, (x,))


def test_upfirdn2d_bad_arguments_raise_clear_errors():
    x = torch.randn(1, 2, 4, 4)
    f = setup_filter([1, 3, 3, 1])
    with pytest.raises(ValueError, match="must be \\(N, C, H, W\\)"):
        upfirdn2d(x[0], f)
    with pytest.raises(ValueError, match="padding"):
        upfirdn2d(x, f, padding=(1, 2, 3))
    with pytest.raises(ValueError, match="down=0"):
        upfirdn2d(x, f, down=0)
    with pytest.raises(ValueError, match="empty output"):
        upfirdn2d(x, f, padding=-3)
    with pytest.raises(ValueError, match="f must be 1-D or 2-D"):
        upfirdn2d(x, f[None])


@pytest.mark.gpu
@pytest.mark.cuda_build  # the CUDA kernels are compiled on first use
@pytest.mark.parametrize("up, down", [(u, d) for u in (1, 2, 4) for d in (1, 2, 4)] + [((2, 1), (1, 4))])
def test_cuda_matches_ref(up, down):
    for dtype in (torch.float32, torch.float64):
        assert _compare_to_ref("cuda", dtype, up, down, device="cuda") > 0


@pytest.mark.gpu
@pytest.mark.cuda_build  # the CUDA kernels are compiled on first use
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["f16", "bf16"])
def test_cuda_16bit_is_computed_in_float32(dtype):
    x = torch.randn(2, 8, 16, 16, device="cuda").to(dtype)
    f = setup_filter([1, 3, 3, 1], device="cuda")
    tol = 1e-2 if dtype == torch.float16 else 5e-2
    for op in (upsample2d, downsample2d, filter2d):
        got = op(x, f, impl="cuda")
        assert got.dtype == dtype
        torch.testing.assert_close(got.float(), op(x.float(), f, impl="ref"), rtol=tol, atol=tol)


@pytest.mark.gpu
@pytest.mark.cuda_build  # the CUDA kernels are compiled on first use
def test_cuda_gradcheck_and_gradgradcheck():
    f = torch.randn(3, 4, dtype=torch.float64, device="cuda")
    x = torch.randn(1, 2, 5, 6, dtype=torch.float64, device="cuda", requires_grad=True)
    for up, down, padding in [(2, 1, (1, 2, 0, -1)), (1, 2, (2, 1, 1, 2)), ((2, 1), (1, 2), (0, 3, 2, -1))]:

        def op(x, up=up, down=down, padding=padding):
            return upfirdn2d(x, f, up=up, down=down, padding=padding, gain=1.3, impl="cuda")

        assert torch.autograd.gradcheck(op, (x,))
        assert torch.autograd.gradgradcheck(op, (x,))


@pytest.mark.gpu
@pytest.mark.cuda_build  # the CUDA kernels are compiled on first use
def test_cuda_past_2_to_31_elements_uses_64_bit_indices():
    """Inputs (downsampling) and outputs (upsampling) of over 2^31 elements switch the kernel to 64-bit indices; the
    first and last planes are checked against the reference."""
    require_free_gpu_memory(24)
    gen = torch.Generator(device="cuda").manual_seed(3)
    f = setup_filter([1, 3, 3, 1], device="cuda")
    big = torch.randn(4, 8, 8192, 8208, device="cuda", dtype=torch.float16, generator=gen)
    small = torch.randn(4, 8, 4096, 4104, device="cuda", dtype=torch.float16, generator=gen)
    for op, x in ((downsample2d, big), (upsample2d, small)):
        got = op(x, f, impl="cuda")
        assert max(x.numel(), got.numel()) > 2**31
        for n, c in ((0, 0), (3, 7)):
            want = op(x[n : n + 1, c : c + 1].float(), f, impl="ref")
            torch.testing.assert_close(got[n : n + 1, c : c + 1].float(), want, rtol=1e-2, atol=1e-2)
        del got


def test_cpp_threaded_rows_match_ref():
    """Large enough that at::parallel_for splits the output rows over threads."""
    torch.set_num_threads(2)
    x = torch.randn(2, 16, 33, 31, dtype=torch.float64)
    f = setup_filter([1, 3, 3, 1])
    for kw in (dict(up=2, padding=(2, 1, 2, 1)), dict(down=2, padding=(1, 1, 1, 1))):
        for w, g in zip(_grads("ref", x, f, 0, **kw), _grads("cpp", x, f, 0, **kw)):
            torch.testing.assert_close(g, w, **TOL[torch.float64])
