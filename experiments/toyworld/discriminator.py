"""A small StyleGAN2-style residual discriminator, used only to train the toy generator.

from-RGB 1x1 conv, then per resolution a residual block (3x3 conv, FIR blur-downsample, 3x3 conv; skip:
blur-downsample + 1x1 conv, summed and scaled by 1/sqrt 2), minibatch standard deviation, a 3x3 conv at
4x4 and two linear layers. Equalised learning rate everywhere, as in StyleGAN2.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from lightning_modules.networks.stylegan2 import BLUR_TAPS, EqualLinear
from stylegan2_ops import downsample2d, fused_leaky_relu, setup_filter


class EqualConv2d(nn.Module):
    """Conv with weights stored N(0, 1) and scaled by 1/sqrt(fan_in) at run time; then bias + leaky ReLU, or
    nothing (linear, no bias: the residual skip)."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, activate: bool = True):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_ch, in_ch, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(out_ch)) if activate else None
        self.scale = 1 / math.sqrt(in_ch * kernel * kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.conv2d(x, self.weight * self.scale, padding=self.weight.shape[-1] // 2)
        return x if self.bias is None else fused_leaky_relu(x, self.bias)


class DownBlock(nn.Module):
    """Residual block halving the resolution."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.conv0 = EqualConv2d(in_ch, in_ch, 3)
        self.conv1 = EqualConv2d(in_ch, out_ch, 3)
        self.skip = EqualConv2d(in_ch, out_ch, 1, activate=False)
        self.register_buffer("kernel", setup_filter(list(BLUR_TAPS)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = self.skip(downsample2d(x, self.kernel))
        x = self.conv1(downsample2d(self.conv0(x), self.kernel))
        return (x + skip) / math.sqrt(2)


class Discriminator(nn.Module):
    """Real/fake logit (N,) for images (N, 3, size, size) in [-1, 1]; `channels` maps resolution -> width."""

    def __init__(self, size: int, channels: dict[int, int], stddev_group: int = 4):
        super().__init__()
        res = [2**i for i in range(int(math.log2(size)), 1, -1)]  # size, ..., 4
        self.from_rgb = EqualConv2d(3, channels[size], 1)
        self.blocks = nn.Sequential(*[DownBlock(channels[r], channels[r // 2]) for r in res[:-1]])
        self.stddev_group = stddev_group
        c4 = channels[4]
        self.final_conv = EqualConv2d(c4 + 1, c4, 3)
        self.final_linear = nn.Sequential(EqualLinear(c4 * 16, c4, activation=True), EqualLinear(c4, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.from_rgb(images))
        # Minibatch standard deviation: one feature map telling D how varied the batch is (against collapse).
        n, c, h, w = x.shape
        g = math.gcd(n, self.stddev_group)
        std = (x.view(g, -1, c, h, w).var(0, unbiased=False) + 1e-8).sqrt().mean((1, 2, 3))
        x = torch.cat([x, std.view(-1, 1, 1, 1).repeat(g, 1, h, w)], dim=1)
        return self.final_linear(self.final_conv(x).flatten(1)).squeeze(1)
