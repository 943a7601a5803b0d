"""StyleGAN2 generator (config-f, skip architecture) whose parameter and buffer names equal rosinality's `g_ema` keys.

Mapping: z -> PixelNorm -> n_mlp equalised-lr linear layers with leaky ReLU -> w. Synthesis: a learned 4x4 constant,
then per resolution a modulated 3x3 conv that upsamples and one that does not, each followed by scaled noise and
bias + leaky ReLU, and a 1x1 modulated ToRGB whose output is added to the upsampled RGB of the previous resolution.
The fused ops (bias + activation, FIR up-sampling) run through `stylegan2_ops`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from stylegan2_ops import bias_act, fused_leaky_relu, setup_filter, upfirdn2d

BLUR_TAPS = (1, 3, 3, 1)


def default_channels(size: int, channel_multiplier: int = 2, channel_max: int = 512) -> dict[int, int]:
    """Feature maps per resolution of config-f: 512 up to 32 px, then 256*m at 64 px, halving per octave."""
    channels = {}
    for log_res in range(2, int(math.log2(size)) + 1):
        res = 2**log_res
        full = 512 if res <= 32 else 2 ** (14 - log_res) * channel_multiplier
        channels[res] = min(channel_max, full)
    return channels


def blur_kernel(gain: float) -> torch.Tensor:
    """The 4x4 binomial filter (outer product of [1,3,3,1], sum 1) times `gain`, as rosinality stores it."""
    # Built on the default device so that `with torch.device("meta"):` constructs a network without memory.
    return setup_filter(list(BLUR_TAPS), device=torch.get_default_device(), gain=gain)


class PixelNorm(nn.Module):
    """Scale each latent vector to unit root-mean-square: x * rsqrt(mean(x^2) + 1e-8)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.square().mean(dim=1, keepdim=True) + 1e-8)


class EqualLinear(nn.Module):
    """Linear layer with equalised learning rate: weights stored as N(0, 1/lr_mul), scaled by lr_mul/sqrt(fan_in)
    at run time; the bias is stored divided by lr_mul. Optionally followed by bias + leaky ReLU (gain sqrt 2)."""

    def __init__(
        self, in_dim: int, out_dim: int, bias_init: float = 0.0, lr_mul: float = 1.0, activation: bool = False
    ):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim) / lr_mul)
        self.bias = nn.Parameter(torch.full((out_dim,), float(bias_init)))
        self.scale = lr_mul / math.sqrt(in_dim)
        self.lr_mul = lr_mul
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = self.bias * self.lr_mul
        if self.activation:
            return fused_leaky_relu(F.linear(x, self.weight * self.scale), bias)
        return F.linear(x, self.weight * self.scale, bias)


class ConstantInput(nn.Module):
    """The learned 4x4 input of the synthesis network, shared by every sample."""

    def __init__(self, channels: int, size: int = 4):
        super().__init__()
        self.input = nn.Parameter(torch.randn(1, channels, size, size))

    def forward(self, batch: int) -> torch.Tensor:
        return self.input.expand(batch, -1, -1, -1)


class Blur(nn.Module):
    """FIR low-pass with the binomial filter after a stride-2 transposed conv (filter gain 4 = up^2)."""

    def __init__(self, pad: tuple[int, int], gain: float):
        super().__init__()
        self.register_buffer("kernel", blur_kernel(gain))
        self.pad = pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p0, p1 = self.pad
        return upfirdn2d(x, self.kernel, padding=(p0, p1, p0, p1))


class Upsample(nn.Module):
    """2x upsampling of the RGB skip image: zero insertion, then the binomial filter with gain 4."""

    def __init__(self, factor: int = 2):
        super().__init__()
        self.register_buffer("kernel", blur_kernel(factor**2))
        self.factor = factor
        taps = len(BLUR_TAPS)
        self.pad = ((taps - factor + 1) // 2 + factor - 1, (taps - factor) // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p0, p1 = self.pad
        return upfirdn2d(x, self.kernel, up=self.factor, padding=(p0, p1, p0, p1))


class ModulatedConv2d(nn.Module):
    """Convolution whose weight is scaled per sample by a style s = A(w) on its input channels, W' = W s / sqrt(fan_in),
    and, when `demodulate`, renormalised per output channel: W'' = W' rsqrt(sum_{in,k,k} W'^2 + 1e-8).

    Computed without per-sample weights: conv(x * s, W / sqrt(fan_in)) * d equals the grouped conv with W''
    because s acts on input channels and the demodulation factor d on output channels.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        style_dim: int,
        demodulate: bool = True,
        upsample: bool = False,
    ):
        super().__init__()
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, kernel_size
        self.weight = nn.Parameter(torch.randn(1, out_channels, in_channels, kernel_size, kernel_size))
        self.modulation = EqualLinear(style_dim, in_channels, bias_init=1.0)
        self.scale = 1 / math.sqrt(in_channels * kernel_size**2)
        self.demodulate = demodulate
        self.upsample = upsample
        self.padding = kernel_size // 2
        if upsample:
            # A stride-2 transposed conv grows (H) to 2H + k - 2; the blur crops back to exactly 2H.
            factor = 2
            p = len(BLUR_TAPS) - factor - (kernel_size - 1)
            self.blur = Blur(pad=((p + 1) // 2 + factor - 1, p // 2 + 1), gain=factor**2)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        style = self.modulation(w)  # (N, in)
        weight = self.weight[0] * self.scale  # (out, in, k, k)
        x = x * style.view(n, -1, 1, 1)
        if self.upsample:
            x = F.conv_transpose2d(x, weight.transpose(0, 1), stride=2)
            x = self.blur(x)
        else:
            x = F.conv2d(x, weight, padding=self.padding)
        if self.demodulate:
            # sum_{in,k,k} (W s)^2 = sum_in s_in^2 * sum_{k,k} W^2: one (N, in) x (in, out) product.
            demod = torch.rsqrt(style.square() @ weight.square().sum(dim=(2, 3)).t() + 1e-8)
            x = x * demod.view(n, -1, 1, 1)
        return x


class NoiseInjection(nn.Module):
    """Adds a noise map scaled by one learned scalar (zero at initialisation)."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return x + self.weight * noise


class FusedLeakyReLU(nn.Module):
    """Per-channel bias, leaky ReLU (slope 0.2), gain sqrt 2, optional clamp at +-conv_clamp."""

    def __init__(self, channels: int, clamp: float | None = None):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))
        self.clamp = clamp

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fused_leaky_relu(x, self.bias, clamp=self.clamp)


class StyledConv(nn.Module):
    """Modulated 3x3 conv (optionally upsampling 2x), then noise, then bias + leaky ReLU."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        style_dim: int,
        upsample: bool = False,
        conv_clamp: float | None = None,
    ):
        super().__init__()
        self.conv = ModulatedConv2d(in_channels, out_channels, 3, style_dim, upsample=upsample)
        self.noise = NoiseInjection()
        self.activate = FusedLeakyReLU(out_channels, clamp=conv_clamp)

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return self.activate(self.noise(self.conv(x, w), noise))


class ToRGB(nn.Module):
    """1x1 modulated conv to RGB without demodulation, plus bias, added to the upsampled previous RGB image."""

    def __init__(self, in_channels: int, style_dim: int, upsample: bool = True, conv_clamp: float | None = None):
        super().__init__()
        if upsample:
            self.upsample = Upsample()
        self.conv = ModulatedConv2d(in_channels, 3, 1, style_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))
        self.conv_clamp = conv_clamp

    def forward(self, x: torch.Tensor, w: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        rgb = bias_act(self.conv(x, w), self.bias.view(-1), clamp=self.conv_clamp)
        if skip is not None:
            rgb = rgb + self.upsample(skip)
        return rgb


class Generator(nn.Module):
    """StyleGAN2 generator: `mapping` z -> w, `synthesis` W+ codes (N, n_latent, style_dim) -> images in ~[-1, 1].

    `channels` maps every resolution 4..size to its feature maps and overrides channel_multiplier/channel_max
    (checkpoint loaders read it from tensor shapes). `conv_clamp` clamps every synthesis activation and ToRGB output
    (NVlabs ADA models use 256). Always computes in the parameters' dtype (float32), also under bf16 autocast.
    """

    def __init__(
        self,
        size: int,
        style_dim: int = 512,
        n_mlp: int = 8,
        channel_multiplier: int = 2,
        lr_mlp: float = 0.01,
        channel_max: int = 512,
        channels: dict[int, int] | None = None,
        conv_clamp: float | None = None,
    ):
        super().__init__()
        log_size = int(math.log2(size)) if size >= 4 else 0
        if size < 4 or 2**log_size != size:
            raise ValueError(f"Generator: size={size} must be a power of two >= 4")
        if n_mlp < 1:
            raise ValueError(f"Generator: n_mlp={n_mlp} must be >= 1")
        if channels is None:
            channels = default_channels(size, channel_multiplier, channel_max)
        channels = {int(r): int(c) for r, c in channels.items()}
        missing = [2**i for i in range(2, log_size + 1) if 2**i not in channels]
        if missing:
            raise ValueError(f"Generator: channels={channels} lacks resolutions {missing} (needs every 4..{size})")
        self.kwargs = dict(
            size=size,
            style_dim=style_dim,
            n_mlp=n_mlp,
            channel_multiplier=channel_multiplier,
            lr_mlp=lr_mlp,
            channel_max=channel_max,
            channels={2**i: channels[2**i] for i in range(2, log_size + 1)},
            conv_clamp=None if conv_clamp is None else float(conv_clamp),
        )
        self.size, self.style_dim, self.channels = size, style_dim, self.kwargs["channels"]
        self.log_size = log_size
        self.num_layers = (log_size - 2) * 2 + 1  # one noise map per StyledConv
        self.n_latent = log_size * 2 - 2  # one w per StyledConv and per ToRGB, ToRGB sharing the next conv's index

        self.style = nn.Sequential(
            PixelNorm(), *[EqualLinear(style_dim, style_dim, lr_mul=lr_mlp, activation=True) for _ in range(n_mlp)]
        )

        self.input = ConstantInput(channels[4])
        self.conv1 = StyledConv(channels[4], channels[4], style_dim, conv_clamp=conv_clamp)
        self.to_rgb1 = ToRGB(channels[4], style_dim, upsample=False, conv_clamp=conv_clamp)

        self.noises = nn.Module()
        for i in range(self.num_layers):
            res = 2 ** ((i + 5) // 2)
            self.noises.register_buffer(f"noise_{i}", torch.randn(1, 1, res, res))

        self.convs = nn.ModuleList()
        self.to_rgbs = nn.ModuleList()
        in_ch = channels[4]
        for log_res in range(3, log_size + 1):
            out_ch = channels[2**log_res]
            self.convs.append(StyledConv(in_ch, out_ch, style_dim, upsample=True, conv_clamp=conv_clamp))
            self.convs.append(StyledConv(out_ch, out_ch, style_dim, conv_clamp=conv_clamp))
            self.to_rgbs.append(ToRGB(out_ch, style_dim, conv_clamp=conv_clamp))
            in_ch = out_ch

        # The average w for truncation when a checkpoint stores one; kept out of the state dict (rosinality's g_ema
        # has no such key; its files keep it next to g_ema).
        self.register_buffer("latent_avg", None, persistent=False)

    def _compute_dtype(self) -> torch.dtype:
        return self.input.input.dtype

    def mapping(
        self, z: torch.Tensor, truncation: float = 1.0, truncation_latent: torch.Tensor | None = None
    ) -> torch.Tensor:
        """z (N, style_dim) -> w (N, style_dim); truncation w_avg + psi (w - w_avg), w_avg = mean_latent() by
        default (pass `truncation_latent` to avoid recomputing it)."""
        if z.ndim != 2 or z.shape[1] != self.style_dim:
            raise ValueError(f"Generator.mapping: z must be (N, {self.style_dim}), got {tuple(z.shape)}")
        with torch.autocast(z.device.type, enabled=False):
            w = self.style(z.to(self._compute_dtype()))
            if truncation != 1:
                if truncation_latent is None:
                    truncation_latent = self.mean_latent()
                avg = truncation_latent.to(w.dtype).reshape(1, self.style_dim)
                w = avg + truncation * (w - avg)
        return w

    @torch.no_grad()
    def mean_latent(self, n: int = 4096) -> torch.Tensor:
        """(1, style_dim): the stored `latent_avg` if the checkpoint had one, else the mean w of n seeded z."""
        if self.latent_avg is not None:
            return self.latent_avg.detach().clone().reshape(1, self.style_dim)
        device = self.input.input.device
        gen = torch.Generator(device=device).manual_seed(0)
        z = torch.randn(n, self.style_dim, generator=gen, device=device)
        return self.mapping(z).mean(dim=0, keepdim=True)

    def make_noise(self, batch: int = 1, generator: torch.Generator | None = None) -> list[torch.Tensor]:
        """Fresh noise maps (batch, 1, r, r), one per StyledConv, in synthesis order."""
        device = self.input.input.device
        return [
            torch.randn(batch, 1, buf.shape[2], buf.shape[3], generator=generator, device=device)
            for buf in self.stored_noise()
        ]

    def stored_noise(self) -> list[torch.Tensor]:
        """The fixed noise buffers `noises.noise_i` (1, 1, r, r)."""
        return [getattr(self.noises, f"noise_{i}") for i in range(self.num_layers)]

    def synthesis(
        self, w_plus: torch.Tensor, noise: list[torch.Tensor] | None = None, randomize_noise: bool = False
    ) -> torch.Tensor:
        """W+ codes (N, n_latent, style_dim) -> images (N, 3, size, size), ~[-1, 1]. Noise: the given maps, else
        the stored fixed maps, or fresh random maps if `randomize_noise`."""
        if w_plus.ndim != 3 or w_plus.shape[1:] != (self.n_latent, self.style_dim):
            raise ValueError(
                f"Generator.synthesis: w_plus must be (N, {self.n_latent}, {self.style_dim}), got {tuple(w_plus.shape)}"
            )
        n = w_plus.shape[0]
        if noise is None:
            noise = self.make_noise(n) if randomize_noise else self.stored_noise()
        if len(noise) != self.num_layers:
            raise ValueError(f"Generator.synthesis: expected {self.num_layers} noise maps, got {len(noise)}")
        dtype = self._compute_dtype()
        with torch.autocast(w_plus.device.type, enabled=False):
            w = w_plus.to(dtype)
            noise = [nz.to(dtype) for nz in noise]
            x = self.conv1(self.input(n), w[:, 0], noise[0])
            rgb = self.to_rgb1(x, w[:, 1])
            i = 1
            for j, to_rgb in enumerate(self.to_rgbs):
                x = self.convs[2 * j](x, w[:, i], noise[2 * j + 1])
                x = self.convs[2 * j + 1](x, w[:, i + 1], noise[2 * j + 2])
                rgb = to_rgb(x, w[:, i + 2], rgb)
                i += 2
        return rgb

    def forward(
        self,
        z: torch.Tensor,
        truncation: float = 1.0,
        truncation_latent: torch.Tensor | None = None,
        noise: list[torch.Tensor] | None = None,
        randomize_noise: bool = False,
    ) -> torch.Tensor:
        """z (N, style_dim) -> images: the same w at every layer."""
        w = self.mapping(z, truncation, truncation_latent)
        w_plus = w.unsqueeze(1).expand(-1, self.n_latent, -1)
        return self.synthesis(w_plus, noise=noise, randomize_noise=randomize_noise)
