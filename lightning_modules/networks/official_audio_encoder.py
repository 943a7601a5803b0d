"""The audio encoder of the official code of "Sound-guided semantic image manipulation" (CVPR 2022).

Architecture of its released weights `resnet18_57.pth` (docs/reference.md §official-encoder): a 3x3 convolution
from 1 to 3 channels without padding, then a timm ResNet-18 with a 512-d classifier head; the output is L2-normalised
(the official code normalises it in the loss). timm's and torchvision's ResNet-18 share every parameter
name and shape (conv1, bn1, layer1..4 with downsample.0/1, fc) and compute the same function, so the
backbone here is torchvision's and the released state dict loads without renaming, once the `module.`
prefix of a DataParallel save is stripped. Submodule names follow that file: `conv`, `feature_extractor`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from datamodules.frontend import SpecAugment
from datamodules.official_frontend import CropMode, OfficialFrontEnd

ARCH = "official_resnet18"


class OfficialAudioEncoder(nn.Module):
    """(B, T) waveform at 44.1 kHz -> (B, 512) L2-normalised embedding, with the official preprocessing.

    `crop` is the crop policy outside training ("center" for evaluation, "manipulation" as in its editing
    script); in training mode the front end crops like its training code. Pass `lengths` when the rows of
    a batch are zero-padded clips: the dB reference and the frame count depend on the true length.
    `spec_augment` (for fine-tuning; off by default) masks mel bands and frames of the (mel, time)
    spectrogram before the resize, where the official code meant them to go (it masked after the reshape).
    """

    def __init__(self, embed_dim: int = 512, crop: Literal["center", "manipulation"] = "center",
                 pad_mode: Literal["reflect", "constant"] = "reflect", spec_augment: bool = False) -> None:
        super().__init__()
        self.config = dict(arch=ARCH, embed_dim=embed_dim, crop=crop, pad_mode=pad_mode, spec_augment=spec_augment)
        self.embed_dim = embed_dim
        self.frontend = OfficialFrontEnd(crop=crop, pad_mode=pad_mode)
        self.sample_rate = self.frontend.sample_rate
        # The shortest clip that fills the 864 frames without padding (~10.02 s at 44.1 kHz).
        self.clip_samples = (self.frontend.frames - 1) * self.frontend.hop_length
        self.spec_augment = SpecAugment() if spec_augment else None
        self.conv = nn.Conv2d(1, 3, kernel_size=3)
        self.feature_extractor = torchvision.models.resnet18(num_classes=embed_dim)

    def embed_spectrogram(self, spec: torch.Tensor) -> torch.Tensor:
        """(B, 1, 128, 512) official input -> (B, embed_dim) unit vectors."""
        return F.normalize(self.feature_extractor(self.conv(spec)).float(), dim=-1)

    def forward(self, waveform: torch.Tensor, augment: bool = True, generator: torch.Generator | None = None,
                lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Embed (B, T) waveforms, with `AudioEncoder`'s call signature. In training mode `generator` drives
        the random crops and (if enabled and `augment`) SpecAugment's masks."""
        if not (augment and self.spec_augment is not None and self.training):
            return self.embed_spectrogram(self.frontend(waveform, lengths=lengths, generator=generator))
        spec = self.frontend.fitted_log_mel(waveform, lengths, generator)
        spec = self.spec_augment(spec[:, None], generator=generator)[:, 0]
        return self.embed_spectrogram(self.frontend.resize_and_reshape(spec).float())

    def embed_clips(self, waves: list[torch.Tensor], crop: CropMode | None = None,
                    generator: torch.Generator | None = None) -> torch.Tensor:
        """Whole clips of any lengths ((T_k,) at 44.1 kHz, e.g. from `load_official_audio`) -> (K, embed_dim).

        This is the exact official preprocessing: each clip's dB reference is its own loudest bin and the
        crop/pad happens on frames. A fixed-length waveform crop made beforehand would change both.
        `crop` overrides the front end's policy ("center", "manipulation", "train").
        """
        lengths = torch.tensor([w.numel() for w in waves])
        batch = torch.zeros(len(waves), int(lengths.max()), device=self.conv.weight.device)
        for i, w in enumerate(waves):
            batch[i, : w.numel()] = w
        return self.embed_spectrogram(self.frontend(batch, lengths=lengths, generator=generator, policy=crop))


def official_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The released file's state dict with the `module.` prefix of a DataParallel save removed (if present).

    `load_audio_encoder` (lightning_modules/audio_export.py) recognises that file and builds this encoder.
    """
    return {(k[len("module."):] if isinstance(k, str) and k.startswith("module.") else k): v
            for k, v in state.items()}
