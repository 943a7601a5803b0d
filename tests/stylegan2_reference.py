"""A naive StyleGAN2 generator for tests, written straight from the math in float64.

Every sample is convolved on its own with its own modulated (and demodulated) weight; upsampling inserts zeros and
blurs with the [1,3,3,1] filter (padding once, before upsampling); convolutions are sums of shifted slices. No
grouped or transposed convolutions, no stylegan2_ops. The layers hold one neutral convention, "upsample first, then
correlate with `kernel`"; `from_rosinality`, `from_nvlabs` and `from_tensorflow` build it from each format's own
tensors by that format's documented semantics, so a converter mistake cannot be mirrored by the reference.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

SQRT2 = math.sqrt(2)
BINOMIAL = torch.tensor([1.0, 3.0, 3.0, 1.0], dtype=torch.float64)


@dataclass
class ModConv:
    kernel: torch.Tensor  # (out, in, k, k), correlated with the (upsampled) input
    weight_gain: float  # multiplies the kernel before (de)modulation
    affine_weight: torch.Tensor  # (in, w_dim): style = affine_weight @ w / sqrt(w_dim) + affine_bias
    affine_bias: torch.Tensor  # (in,)
    demodulate: bool
    up: bool


@dataclass
class Layer:
    conv: ModConv
    noise_strength: float
    noise: torch.Tensor  # (r, r)
    bias: torch.Tensor  # (out,)


@dataclass
class RGB:
    conv: ModConv
    bias: torch.Tensor  # (3,)


@dataclass
class ReferenceGenerator:
    mapping_weights: list[tuple[torch.Tensor, torch.Tensor]]  # (out, in), (out,) as stored
    lr_mul: float
    const: torch.Tensor  # (C, 4, 4)
    layers: list[Layer]  # conv at 4x4, then (up-conv, conv) per resolution
    rgbs: list[RGB]  # one per resolution
    clamp: float | None = None

    def mapping(self, z: torch.Tensor) -> torch.Tensor:
        x = z.double()
        x = x / torch.sqrt((x**2).mean(dim=1, keepdim=True) + 1e-8)
        for weight, bias in self.mapping_weights:
            x = x @ (weight * self.lr_mul / math.sqrt(weight.shape[1])).T + bias * self.lr_mul
            x = lrelu(x)
        return x

    def synthesis(self, w_plus: torch.Tensor) -> torch.Tensor:
        return torch.stack([self._one_sample(w) for w in w_plus.double()])

    def _one_sample(self, w: torch.Tensor) -> torch.Tensor:
        x = self._layer(self.const, w[0], self.layers[0])
        rgb = self._rgb(x, w[1], self.rgbs[0])
        for j, to_rgb in enumerate(self.rgbs[1:]):
            i = 2 * j + 1  # the ToRGB of one resolution shares its w with the next resolution's up-conv
            x = self._layer(x, w[i], self.layers[2 * j + 1])
            x = self._layer(x, w[i + 1], self.layers[2 * j + 2])
            rgb = upsample(rgb) + self._rgb(x, w[i + 2], to_rgb)
        return rgb

    def _layer(self, x: torch.Tensor, w: torch.Tensor, layer: Layer) -> torch.Tensor:
        x = modulated_conv(x, w, layer.conv) + layer.noise_strength * layer.noise
        return self._clamp(lrelu(x + layer.bias[:, None, None]))

    def _rgb(self, x: torch.Tensor, w: torch.Tensor, rgb: RGB) -> torch.Tensor:
        return self._clamp(modulated_conv(x, w, rgb.conv) + rgb.bias[:, None, None])

    def _clamp(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.clamp is None else x.clamp(-self.clamp, self.clamp)


def lrelu(x: torch.Tensor) -> torch.Tensor:
    return torch.where(x >= 0, x, 0.2 * x) * SQRT2


def correlate(x: torch.Tensor, kernel: torch.Tensor, pad: int) -> torch.Tensor:
    """Correlation of one sample (C, H, W) with (O, C, k, k) after zero padding by `pad`, as a sum of shifts."""
    k = kernel.shape[-1]
    c, h, w = x.shape
    xp = torch.zeros(c, h + 2 * pad, w + 2 * pad, dtype=x.dtype)
    xp[:, pad : pad + h, pad : pad + w] = x
    oh, ow = h + 2 * pad - k + 1, w + 2 * pad - k + 1
    out = torch.zeros(kernel.shape[0], oh, ow, dtype=x.dtype)
    for a in range(k):
        for b in range(k):
            out += torch.einsum("chw,oc->ohw", xp[:, a : a + oh, b : b + ow], kernel[:, :, a, b])
    return out


def upsample(x: torch.Tensor, pad0: int = 2, pad1: int = 1) -> torch.Tensor:
    """2x: a zero after every sample, zero padding pad0 before / pad1 after, correlation with the 4x4 binomial
    filter times 4 (up^2 keeps the signal's scale). Output 2H + pad0 + pad1 - 3 (2H with the default padding)."""
    c, h, w = x.shape
    u = torch.zeros(c, 2 * h + pad0 + pad1, 2 * w + pad0 + pad1, dtype=x.dtype)
    u[:, pad0 : pad0 + 2 * h : 2, pad0 : pad0 + 2 * w : 2] = x
    f = torch.outer(BINOMIAL, BINOMIAL)
    f = f / f.sum() * 4
    oh, ow = u.shape[1] - 3, u.shape[2] - 3
    out = torch.zeros(c, oh, ow, dtype=x.dtype)
    for a in range(4):
        for b in range(4):
            out += f[a, b] * u[:, a : a + oh, b : b + ow]
    return out


def modulated_conv(x: torch.Tensor, w: torch.Tensor, conv: ModConv) -> torch.Tensor:
    style = conv.affine_weight.double() @ w / math.sqrt(w.shape[0]) + conv.affine_bias.double()
    kernel = conv.kernel.double() * conv.weight_gain * style[None, :, None, None]
    if conv.demodulate:
        kernel = kernel / torch.sqrt((kernel**2).sum(dim=(1, 2, 3), keepdim=True) + 1e-8)
    if conv.up:
        # Padding happens once, before upsampling: 3 before / 2 after gives 2H + 2, and the 3x3 kernel then runs
        # without padding. (Zero-padding the upsampled image instead would differ at the borders.)
        return correlate(upsample(x, 3, 2), kernel, pad=0)
    return correlate(x, kernel, pad=kernel.shape[-1] // 2)


def _f64(t) -> torch.Tensor:
    return torch.as_tensor(np.asarray(t) if not isinstance(t, torch.Tensor) else t).double()


def _fan_in_gain(kernel: torch.Tensor) -> float:
    return 1 / math.sqrt(kernel[0].numel())


def from_rosinality(
    state: dict[str, torch.Tensor], lr_mul: float = 0.01, clamp: float | None = None
) -> ReferenceGenerator:
    """rosinality semantics: the up-conv is a stride-2 transposed conv (zero insertion, then a full true convolution
    with W) followed by the blur with padding 1; both act on the zero-stuffed input and convolutions commute, so it
    is upsample (padding 3/2) then a valid correlation with W flipped."""
    sd = {k: _f64(v) for k, v in state.items()}
    n_mlp = sum(1 for k in sd if k.startswith("style.") and k.endswith(".weight"))
    n_rgb = sum(1 for k in sd if k.startswith("to_rgbs.") and k.endswith(".conv.weight"))

    def conv(prefix: str, up: bool, demodulate: bool = True) -> ModConv:
        weight = sd[f"{prefix}.conv.weight"][0]
        kernel = weight.flip(2, 3) if up else weight
        return ModConv(
            kernel,
            _fan_in_gain(weight),
            sd[f"{prefix}.conv.modulation.weight"],
            sd[f"{prefix}.conv.modulation.bias"],
            demodulate,
            up,
        )

    def layer(prefix: str, i: int, up: bool) -> Layer:
        return Layer(
            conv(prefix, up),
            float(sd[f"{prefix}.noise.weight"]),
            sd[f"noises.noise_{i}"][0, 0],
            sd[f"{prefix}.activate.bias"],
        )

    def rgb(prefix: str) -> RGB:
        return RGB(conv(prefix, up=False, demodulate=False), sd[f"{prefix}.bias"].reshape(3))

    layers = [layer("conv1", 0, False)]
    for j in range(n_rgb):
        layers += [layer(f"convs.{2 * j}", 2 * j + 1, True), layer(f"convs.{2 * j + 1}", 2 * j + 2, False)]
    return ReferenceGenerator(
        [(sd[f"style.{i}.weight"], sd[f"style.{i}.bias"]) for i in range(1, n_mlp + 1)],
        lr_mul,
        sd["input.input"][0],
        layers,
        [rgb("to_rgb1")] + [rgb(f"to_rgbs.{j}") for j in range(n_rgb)],
        clamp,
    )


def from_nvlabs(t: dict[str, torch.Tensor], lr_mul: float = 0.01, clamp: float | None = None) -> ReferenceGenerator:
    """NVlabs semantics (stylegan2-ada-pytorch): the up-sampling conv0 upsamples and then convolves (its
    conv2d_resample runs with flip_weight=False), every other conv correlates; synthesis layers skip the 1/sqrt(fan_in)
    gain (demodulation cancels it), ToRGB applies it to the styles."""
    t = {k: _f64(v) for k, v in t.items()}
    n_mlp = sum(1 for k in t if k.startswith("mapping.fc") and k.endswith(".weight"))
    resolutions = sorted(int(k.split(".")[1][1:]) for k in t if k.endswith(".torgb.weight"))

    def conv(prefix: str, up: bool, demodulate: bool, gain: float) -> ModConv:
        weight = t[f"{prefix}.weight"]
        kernel = weight.flip(2, 3) if up else weight
        return ModConv(kernel, gain, t[f"{prefix}.affine.weight"], t[f"{prefix}.affine.bias"], demodulate, up)

    def layer(prefix: str, up: bool) -> Layer:
        return Layer(
            conv(prefix, up, True, 1.0),
            float(t[f"{prefix}.noise_strength"]),
            t[f"{prefix}.noise_const"],
            t[f"{prefix}.bias"],
        )

    def rgb(prefix: str) -> RGB:
        return RGB(conv(prefix, False, False, _fan_in_gain(t[f"{prefix}.weight"])), t[f"{prefix}.bias"])

    layers = [layer("synthesis.b4.conv1", False)]
    for res in resolutions[1:]:
        layers += [layer(f"synthesis.b{res}.conv0", True), layer(f"synthesis.b{res}.conv1", False)]
    return ReferenceGenerator(
        [(t[f"mapping.fc{i}.weight"], t[f"mapping.fc{i}.bias"]) for i in range(n_mlp)],
        lr_mul,
        t["synthesis.b4.const"],
        layers,
        [rgb(f"synthesis.b{res}.torgb") for res in resolutions],
        clamp,
    )


def from_tensorflow(v: dict[str, np.ndarray], lr_mul: float = 0.01) -> ReferenceGenerator:
    """TensorFlow StyleGAN2 semantics: tf.nn.conv2d correlates with (kh, kw, in, out) kernels; Conv0_up is
    upsample_2d followed by conv2d (padding once); dense layers compute x @ W with W (in, out); styles add 1 to
    mod_bias at run time."""
    v = {k: _f64(a) for k, a in v.items()}
    n_mlp = sum(1 for k in v if k.startswith("G_mapping/Dense") and k.endswith("/weight"))
    resolutions = sorted(int(k.split("/")[1].split("x")[0]) for k in v if k.endswith("/ToRGB/weight"))

    def conv(prefix: str, up: bool, demodulate: bool) -> ModConv:
        kernel = v[f"{prefix}/weight"].permute(3, 2, 0, 1)
        return ModConv(
            kernel, _fan_in_gain(kernel), v[f"{prefix}/mod_weight"].T, v[f"{prefix}/mod_bias"] + 1, demodulate, up
        )

    def layer(prefix: str, i: int, up: bool) -> Layer:
        return Layer(
            conv(prefix, up, True),
            float(v[f"{prefix}/noise_strength"]),
            v[f"G_synthesis/noise{i}"][0, 0],
            v[f"{prefix}/bias"],
        )

    def rgb(prefix: str) -> RGB:
        return RGB(conv(prefix, False, False), v[f"{prefix}/bias"])

    layers = [layer("G_synthesis/4x4/Conv", 0, False)]
    for j, res in enumerate(resolutions[1:]):
        layers += [
            layer(f"G_synthesis/{res}x{res}/Conv0_up", 2 * j + 1, True),
            layer(f"G_synthesis/{res}x{res}/Conv1", 2 * j + 2, False),
        ]
    return ReferenceGenerator(
        [(v[f"G_mapping/Dense{i}/weight"].T, v[f"G_mapping/Dense{i}/bias"]) for i in range(n_mlp)],
        lr_mul,
        v["G_synthesis/4x4/Const/const"][0],
        layers,
        [rgb(f"G_synthesis/{res}x{res}/ToRGB") for res in resolutions],
    )
