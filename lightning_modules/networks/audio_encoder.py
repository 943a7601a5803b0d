"""Audio encoder: waveform -> log-mel (+ SpecAugment in training) -> ResNet -> projection -> unit vector in CLIP space.

The paper uses a ResNet-50 on mel spectrograms. The backbone is torchvision's ResNet with its stem
adapted to one input channel (for ImageNet init, the RGB filters of `conv1` are summed, which is
exact for a grey image fed as three equal channels) and with a configurable base width (64 as in
torchvision; smaller widths make CPU demos and tests fast). The spectrogram keeps its plain
(mel, time) layout: no resize, no reshape.
"""

from __future__ import annotations

import math
import os
import urllib.error
from typing import Any, Literal

import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

from datamodules.frontend import LogMelFrontEnd, SpecAugment

BACKBONES: dict[str, tuple[type[nn.Module], list[int], Any]] = {
    "resnet18": (BasicBlock, [2, 2, 2, 2], torchvision.models.ResNet18_Weights.IMAGENET1K_V1),
    "resnet34": (BasicBlock, [3, 4, 6, 3], torchvision.models.ResNet34_Weights.IMAGENET1K_V1),
    "resnet50": (Bottleneck, [3, 4, 6, 3], torchvision.models.ResNet50_Weights.IMAGENET1K_V1),
}


class ChannelGroupNorm(nn.GroupNorm):
    """GroupNorm over gcd(32, channels) groups, built from the channel count alone (what ResNet's `norm_layer`
    is called with). A class rather than a lambda, so that the encoder pickles (DDP spawn, worker processes)."""

    def __init__(self, channels: int) -> None:
        super().__init__(math.gcd(32, channels), channels)


def _norm_layer(kind: str):
    if kind == "batch":
        return nn.BatchNorm2d
    if kind == "group":  # batch-independent: the same result on any number of ranks
        return ChannelGroupNorm
    raise ValueError(f"AudioEncoder: norm must be 'batch' or 'group', got {kind!r}")


class ResNetTrunk(ResNet):
    """torchvision's ResNet with a 1-channel stem, base width `width` and no classifier.

    Parameter names are torchvision's, so its ImageNet state dicts load at width 64.
    """

    def __init__(self, block: type[nn.Module], layers: list[int], width: int = 64, norm: str = "batch") -> None:
        nn.Module.__init__(self)  # ResNet.__init__ hard-codes 3 input channels and width 64
        self._norm_layer = _norm_layer(norm)
        self.inplanes, self.dilation, self.groups, self.base_width = width, 1, 1, 64
        self.conv1 = nn.Conv2d(1, width, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = self._norm_layer(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, width, layers[0])
        self.layer2 = self._make_layer(block, 2 * width, layers[1], stride=2)
        self.layer3 = self._make_layer(block, 4 * width, layers[2], stride=2)
        self.layer4 = self._make_layer(block, 8 * width, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Identity()
        self.out_dim = 8 * width * block.expansion
        for m in self.modules():  # torchvision's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d | nn.GroupNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)


def imagenet_state_dict(backbone: str) -> dict[str, torch.Tensor]:
    """torchvision's ImageNet weights for `backbone` with `conv1` summed to one input channel, `fc` dropped."""
    weights = BACKBONES[backbone][2]
    try:
        state = weights.get_state_dict(progress=True)
    except (urllib.error.URLError, OSError, RuntimeError) as err:
        expected = os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(weights.url))
        raise RuntimeError(
            f"AudioEncoder(pretrained=True): ImageNet weights for {backbone} are not in the torch hub cache "
            f"({expected}) and could not be downloaded ({err}). Download {weights.url} to that path on a machine "
            f"with network access, or set pretrained: false to start from random weights."
        ) from err
    state["conv1.weight"] = state["conv1.weight"].sum(dim=1, keepdim=True)
    return {k: v for k, v in state.items() if not k.startswith("fc.")}


class AudioEncoder(nn.Module):
    """(B, T) waveform -> (B, embed_dim) L2-normalised embedding; owns its front end and SpecAugment.

    Front-end defaults are `LogMelFrontEnd`'s (16 kHz, 128 mels, 10 ms hop); SpecAugment's are the
    official code's (2 masks <= 15 % of mels, 2 masks <= 30 % of frames), applied only in training.
    """

    def __init__(
        self,
        embed_dim: int = 512,
        backbone: Literal["resnet18", "resnet34", "resnet50"] = "resnet50",
        width: int = 64,
        norm: Literal["batch", "group"] = "batch",
        pretrained: bool = False,
        sample_rate: int = 16000,
        clip_seconds: float = 10.0,
        n_fft: int = 1024,
        hop_length: int = 160,
        n_mels: int = 128,
        f_min: float = 0.0,
        f_max: float | None = None,
        top_db: float = 100.0,
        spec_augment: bool = True,
        freq_masks: int = 2,
        max_freq_fraction: float = 0.15,
        time_masks: int = 2,
        max_time_fraction: float = 0.30,
    ) -> None:
        super().__init__()
        if backbone not in BACKBONES:
            raise ValueError(f"AudioEncoder: backbone must be one of {sorted(BACKBONES)}, got {backbone!r}")
        if width < 1 or embed_dim < 1 or clip_seconds <= 0:
            raise ValueError(f"AudioEncoder: need width, embed_dim, clip_seconds > 0, got {width}, {embed_dim}, "
                             f"{clip_seconds}")
        if pretrained and width != 64:
            raise ValueError(f"AudioEncoder: ImageNet weights exist for width 64 only, got width={width}")
        # Everything needed to rebuild this encoder (the export file carries it); weights are loaded after.
        self.config = dict(
            embed_dim=embed_dim, backbone=backbone, width=width, norm=norm, pretrained=False,
            sample_rate=sample_rate, clip_seconds=clip_seconds, n_fft=n_fft, hop_length=hop_length, n_mels=n_mels,
            f_min=f_min, f_max=f_max, top_db=top_db, spec_augment=spec_augment, freq_masks=freq_masks,
            max_freq_fraction=max_freq_fraction, time_masks=time_masks, max_time_fraction=max_time_fraction,
        )
        self.embed_dim, self.sample_rate = embed_dim, sample_rate
        self.clip_samples = round(sample_rate * clip_seconds)
        self.frontend = LogMelFrontEnd(sample_rate=sample_rate, n_fft=n_fft, hop_length=hop_length, n_mels=n_mels,
                                       f_min=f_min, f_max=f_max, top_db=top_db)
        self.spec_augment = (SpecAugment(freq_masks, max_freq_fraction, time_masks, max_time_fraction)
                             if spec_augment else None)
        block, layers, _ = BACKBONES[backbone]
        self.backbone = ResNetTrunk(block, layers, width=width, norm=norm)
        if pretrained:
            self.backbone.load_state_dict(imagenet_state_dict(backbone))
        self.proj = nn.Linear(self.backbone.out_dim, embed_dim)

    def forward(self, waveform: torch.Tensor, augment: bool = True,
                generator: torch.Generator | None = None, shard: tuple[int, int] = (0, 1)) -> torch.Tensor:
        """Embed (B, T) waveforms. SpecAugment runs in training mode unless `augment=False`;
        `generator` (CPU) makes its masks reproducible, `shard` (rank, world) as in `SpecAugment`."""
        spec = self.frontend(waveform)
        if augment and self.spec_augment is not None:
            spec = self.spec_augment(spec, generator=generator, shard=shard)
        features = self.backbone(spec)
        return F.normalize(self.proj(features).float(), dim=-1)
