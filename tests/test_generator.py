"""StyleGAN2 Generator: architecture facts, naming, W+ interface, and agreement with the naive reference."""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import TINY_GENERATOR, build_tiny_generator
from stylegan2_reference import from_rosinality

from lightning_modules.networks.stylegan2 import Generator, default_channels


def _meta_generator(size: int, **kwargs) -> Generator:
    with torch.device("meta"):
        return Generator(size, **kwargs)


@pytest.mark.parametrize(
    "size, n_latent, n_params",
    # Parameter counts of rosinality's config-f code with the 8-layer mapping (docs/reference.md §generator).
    [(256, 14, 30_034_338), (512, 16, 30_276_583), (1024, 18, 30_370_060)],
)
def test_config_f_latents_and_parameter_count_without_allocating(size, n_latent, n_params):
    G = _meta_generator(size)
    assert G.n_latent == n_latent
    assert G.num_layers == n_latent - 1  # noise maps: (log2(res) - 2) * 2 + 1
    assert all(p.is_meta for p in G.parameters())
    assert sum(p.numel() for p in G.parameters()) == n_params


def test_config_f_channels():
    # docs/reference.md §generator: 512 up to 32 px, then 512, 256, 128, 64, 32 at 64..1024 px for channel_multiplier 2.
    assert default_channels(1024) == {
        4: 512, 8: 512, 16: 512, 32: 512, 64: 512, 128: 256, 256: 128, 512: 64, 1024: 32
    }  # fmt: skip
    assert default_channels(256, channel_multiplier=1) == {4: 512, 8: 512, 16: 512, 32: 512, 64: 256, 128: 128, 256: 64}
    assert default_channels(128, channel_multiplier=4)[64] == 512  # capped by channel_max


def test_state_dict_keys_are_rosinality_g_ema_keys():
    G = Generator(8, style_dim=8, n_mlp=3, channels={4: 8, 8: 4})
    conv = ["conv.weight", "conv.modulation.weight", "conv.modulation.bias", "noise.weight", "activate.bias"]
    rgb = ["conv.weight", "conv.modulation.weight", "conv.modulation.bias", "bias"]
    expected = {f"style.{i}.{p}" for i in (1, 2, 3) for p in ("weight", "bias")}
    expected |= {"input.input", "noises.noise_0", "noises.noise_1", "noises.noise_2"}
    expected |= {f"conv1.{k}" for k in conv} | {f"to_rgb1.{k}" for k in rgb}
    expected |= {f"convs.0.{k}" for k in conv} | {"convs.0.conv.blur.kernel"} | {f"convs.1.{k}" for k in conv}
    expected |= {f"to_rgbs.0.{k}" for k in rgb} | {"to_rgbs.0.upsample.kernel"}
    assert set(G.state_dict()) == expected
    shapes = {k: tuple(v.shape) for k, v in G.state_dict().items()}
    assert shapes["convs.0.conv.weight"] == (1, 4, 8, 3, 3)
    assert shapes["to_rgbs.0.conv.weight"] == (1, 3, 4, 1, 1)
    assert shapes["to_rgb1.bias"] == (1, 3, 1, 1)
    assert shapes["noises.noise_2"] == (1, 1, 8, 8)
    assert shapes["conv1.noise.weight"] == (1,)
    # The blur kernels are the normalised [1,3,3,1] outer product times 4 (= up^2).
    kernel = G.state_dict()["convs.0.conv.blur.kernel"]
    taps = torch.tensor([1.0, 3.0, 3.0, 1.0])
    torch.testing.assert_close(kernel, torch.outer(taps, taps) / 16)


@pytest.mark.parametrize("size, channels", [(8, {4: 16, 8: 8}), (16, {4: 16, 8: 12, 16: 8}), (32, None)])
def test_shapes(size, channels):
    kwargs = dict(style_dim=16, n_mlp=2, channels=channels or {4: 8, 8: 8, 16: 8, 32: 4})
    G = Generator(size, **kwargs)
    assert G.n_latent == 2 * size.bit_length() - 4
    z = torch.randn(3, 16)
    w = G.mapping(z)
    assert w.shape == (3, 16)
    images = G.synthesis(w[:, None].expand(-1, G.n_latent, -1))
    assert images.shape == (3, 3, size, size) and images.dtype == torch.float32
    assert torch.isfinite(images).all()
    assert G.mean_latent(64).shape == (1, 16)


@pytest.mark.parametrize("clamp", [None, 0.4])
@pytest.mark.parametrize("size", [8, 16, 32])
def test_matches_naive_reference(size, clamp):
    channels = {4: 12, 8: 10, 16: 8, 32: 6}
    G = build_tiny_generator(size=size, style_dim=16, channels=channels, conv_clamp=clamp)
    ref = from_rosinality(G.state_dict(), lr_mul=0.01, clamp=clamp)
    z = torch.randn(2, 16)
    torch.testing.assert_close(G.mapping(z).double(), ref.mapping(z), rtol=1e-5, atol=1e-5)
    w_plus = torch.randn(2, G.n_latent, 16)
    expected = ref.synthesis(w_plus)
    assert (G.synthesis(w_plus).double() - expected).abs().max() <= 1e-5
    if clamp is not None:  # the clamp is active on these weights, so the comparison exercised it
        unclamped = from_rosinality(G.state_dict(), lr_mul=0.01).synthesis(w_plus)
        assert (unclamped - expected).abs().max() > 1e-2


def test_every_w_plus_entry_gets_a_gradient():
    G = build_tiny_generator().requires_grad_(False)
    w_plus = torch.randn(2, G.n_latent, G.style_dim, requires_grad=True)
    G.synthesis(w_plus).square().mean().backward()
    assert w_plus.grad is not None
    # Every latent index feeds a layer: a wrong index would leave one of them without gradient.
    assert (w_plus.grad.abs().sum(dim=2) > 0).all()


def test_gradcheck_w_plus_float64():
    G = build_tiny_generator(size=8, style_dim=4, channels={4: 4, 8: 3}).double().requires_grad_(False)
    w_plus = torch.randn(1, G.n_latent, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(G.synthesis, (w_plus,), eps=1e-6, atol=1e-5)


def test_fixed_noise_is_deterministic_and_random_noise_is_opt_in():
    G = build_tiny_generator()
    w_plus = torch.randn(2, G.n_latent, G.style_dim)
    a, b = G.synthesis(w_plus), G.synthesis(w_plus)
    assert torch.equal(a, b)
    # The same image as the stored noise maps passed explicitly.
    torch.testing.assert_close(G.synthesis(w_plus, noise=G.stored_noise()), a, rtol=0, atol=0)
    c = G.synthesis(w_plus, randomize_noise=True)
    assert (c - a).abs().max() > 1e-3
    noise = G.make_noise(2, generator=torch.Generator().manual_seed(1))
    again = G.make_noise(2, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(G.synthesis(w_plus, noise=noise), G.synthesis(w_plus, noise=again), rtol=0, atol=0)


def test_truncation_formula():
    G = build_tiny_generator()
    z = torch.randn(4, G.style_dim)
    w = G.mapping(z)
    avg = torch.randn(1, G.style_dim)
    torch.testing.assert_close(G.mapping(z, 0.7, avg), avg + 0.7 * (w - avg))
    torch.testing.assert_close(G.mapping(z, 0.0, avg), avg.expand(4, -1))
    # Without truncation_latent: the mean of mapped z (seeded, so repeatable) ...
    mean = G.mean_latent()
    torch.testing.assert_close(mean, G.mean_latent())
    gen = torch.Generator().manual_seed(0)
    torch.testing.assert_close(mean, G.mapping(torch.randn(4096, G.style_dim, generator=gen)).mean(0, keepdim=True))
    torch.testing.assert_close(G.mapping(z, 0.5), mean + 0.5 * (w - mean))
    # ... or the stored latent_avg when the checkpoint had one.
    G.latent_avg = torch.randn(G.style_dim)
    torch.testing.assert_close(G.mean_latent(), G.latent_avg[None])
    torch.testing.assert_close(G.mapping(z, 0.5), G.latent_avg + 0.5 * (w - G.latent_avg))


def test_forward_composes_mapping_and_synthesis():
    G = build_tiny_generator()
    z = torch.randn(2, G.style_dim)
    w = G.mapping(z, 0.8, G.mean_latent())
    expected = G.synthesis(w[:, None].repeat(1, G.n_latent, 1))
    torch.testing.assert_close(G(z, truncation=0.8, truncation_latent=G.mean_latent()), expected)


def test_runs_in_float32_under_bf16_autocast():
    G = build_tiny_generator()
    z = torch.randn(2, G.style_dim)
    w_plus = G.mapping(z)[:, None].expand(-1, G.n_latent, -1)
    expected = G.synthesis(w_plus)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        w = G.mapping(z)
        images = G.synthesis(w_plus.bfloat16())
    assert w.dtype == torch.float32 and images.dtype == torch.float32
    # Only the bf16 rounding of the input codes differs.
    torch.testing.assert_close(images, G.synthesis(w_plus.bfloat16().float()))
    assert (images - expected).abs().max() < 0.1


def test_latent_avg_is_not_in_the_state_dict_but_moves_with_the_module():
    G = build_tiny_generator()
    G.latent_avg = torch.randn(G.style_dim)
    assert "latent_avg" not in G.state_dict()
    assert G.double().latent_avg.dtype == torch.float64


def test_bad_inputs_are_named():
    G = build_tiny_generator()
    with pytest.raises(ValueError, match=r"w_plus must be \(N, 6, 32\)"):
        G.synthesis(torch.randn(2, G.style_dim))
    with pytest.raises(ValueError, match="z must be"):
        G.mapping(torch.randn(2, 5))
    with pytest.raises(ValueError, match="noise maps"):
        G.synthesis(torch.randn(1, G.n_latent, G.style_dim), noise=G.stored_noise()[:2])
    with pytest.raises(ValueError, match="power of two"):
        Generator(24)
    with pytest.raises(ValueError, match="lacks resolutions"):
        Generator(**{**TINY_GENERATOR, "size": 32})


@pytest.mark.gpu
def test_cuda_matches_cpu_and_stays_float32_under_bf16_autocast():
    G = build_tiny_generator(size=32, style_dim=16, channels={4: 12, 8: 10, 16: 8, 32: 6}, conv_clamp=0.5)
    w_plus = torch.randn(3, G.n_latent, 16)
    w_cpu = w_plus.clone().requires_grad_(True)
    expected = G.synthesis(w_cpu)
    expected.square().mean().backward()
    Gc = copy.deepcopy(G).cuda()
    tf32 = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False  # compare in true float32
    try:
        w_gpu = w_plus.cuda().requires_grad_(True)
        images = Gc.synthesis(w_gpu)
        images.square().mean().backward()
        torch.testing.assert_close(images.cpu(), expected, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(w_gpu.grad.cpu(), w_cpu.grad, rtol=1e-4, atol=1e-6)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            mixed = Gc.synthesis(w_plus.cuda())
        assert mixed.dtype == torch.float32
        torch.testing.assert_close(mixed.cpu(), expected.detach(), rtol=1e-4, atol=1e-4)
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32
