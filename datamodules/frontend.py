"""Waveform -> normalised log-mel spectrogram, and SpecAugment; both run on the model's device.

Defaults (16 kHz audio): n_fft 1024 (64 ms Hann window), hop 160 (10 ms, so a 10 s clip gives 1001
frames), 128 mel bands (the official model's count) on the HTK mel scale without area normalisation
(every triangle peaks at 1), f_min 0 Hz, f_max = Nyquist (8 kHz), power spectrum.

Log and normalisation are fixed, not per clip: dB relative to a full-scale sine (whose peak STFT bin
has power (win_length/4)^2 for a Hann window), floored at -top_db, then mapped affinely so that
[-top_db, 0] dB -> [-1, 1]. The official code instead uses `power_to_db(ref=max)`, which erases loudness
and blows a near-silent clip up to full scale.
"""

from __future__ import annotations

import math

import torch
import torchaudio.transforms as T
from torch import nn


class LogMelFrontEnd(nn.Module):
    """(B, T) float waveform -> (B, 1, n_mels, frames) float32 normalised log-mel spectrogram."""

    def __init__(
        self,
        sample_rate: int = 16000,
        n_fft: int = 1024,
        hop_length: int = 160,
        n_mels: int = 128,
        f_min: float = 0.0,
        f_max: float | None = None,
        win_length: int | None = None,
        top_db: float = 100.0,
    ) -> None:
        super().__init__()
        win_length = win_length or n_fft
        f_max = float(f_max) if f_max is not None else sample_rate / 2
        if not 0 <= f_min < f_max <= sample_rate / 2:
            raise ValueError(f"LogMelFrontEnd: need 0 <= f_min < f_max <= sample_rate/2, got {f_min}, {f_max}")
        self.sample_rate, self.n_fft, self.hop_length, self.win_length = sample_rate, n_fft, hop_length, win_length
        self.n_mels, self.f_min, self.f_max, self.top_db = n_mels, float(f_min), f_max, float(top_db)
        self.mel = T.MelSpectrogram(
            sample_rate=sample_rate,
            n_fft=n_fft,
            win_length=win_length,
            hop_length=hop_length,
            f_min=f_min,
            f_max=f_max,
            n_mels=n_mels,
            power=2.0,
            center=True,
            pad_mode="reflect",
            norm=None,
            mel_scale="htk",
        )
        # A unit-amplitude sine puts |X| = sum(hann)/2 = win_length/4 into its peak bin.
        self.ref_db = 20.0 * math.log10(win_length / 4)

    @property
    def filterbank(self) -> torch.Tensor:
        """The (n_fft // 2 + 1, n_mels) triangular filter matrix applied to the power spectrum."""
        return self.mel.mel_scale.fb

    def num_frames(self, num_samples: int) -> int:
        """Frames produced for a waveform of `num_samples` (centred STFT)."""
        return num_samples // self.hop_length + 1

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        if waveform.dim() != 2:
            raise ValueError(f"LogMelFrontEnd expects a (batch, samples) waveform, got shape {tuple(waveform.shape)}")
        # The STFT is done in float32 even under autocast: half precision loses the quiet bins.
        with torch.autocast(device_type=waveform.device.type, enabled=False):
            power = self.mel(waveform.float())
            db = 10.0 * torch.log10(power.clamp_min(1e-20)) - self.ref_db
            db = db.clamp_min(-self.top_db)
            return (db / (self.top_db / 2) + 1.0).unsqueeze(1)

    def extra_repr(self) -> str:
        return (
            f"sample_rate={self.sample_rate}, n_fft={self.n_fft}, hop_length={self.hop_length}, "
            f"n_mels={self.n_mels}, f_min={self.f_min}, f_max={self.f_max}, top_db={self.top_db}"
        )


class SpecAugment(nn.Module):
    """Frequency and time masking (Park et al. 2019) of (B, C, F, T) spectrograms, only in training mode.

    Defaults are the paper's: 2 masks per axis, each up to 15 % of the mel bands and up to 30 % of the
    frames. Masked cells get the spectrogram's per-example mean (the SpecAugment paper masks with the
    mean, which is 0 for their normalised input). Pass a `generator` for reproducible masks. `shard`
    (rank, world) draws the masks of a global batch of world * B examples and keeps rows rank, rank + world, ...:
    the rows a `datamodules.sampling.EpochSampler` deals this rank, so a clip gets the same masks on any number of
    ranks as in one process ((0, 1), the default, is the one-process draw).
    """

    def __init__(
        self, freq_masks: int = 2, max_freq_fraction: float = 0.15, time_masks: int = 2, max_time_fraction: float = 0.30
    ) -> None:
        super().__init__()
        for name, value in (("max_freq_fraction", max_freq_fraction), ("max_time_fraction", max_time_fraction)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"SpecAugment: {name} must lie in [0, 1], got {value}")
        self.freq_masks, self.max_freq_fraction = freq_masks, max_freq_fraction
        self.time_masks, self.max_time_fraction = time_masks, max_time_fraction

    def forward(self, spec: torch.Tensor, generator: torch.Generator | None = None,
                shard: tuple[int, int] = (0, 1)) -> torch.Tensor:
        if not self.training:
            return spec
        if spec.dim() != 4:
            raise ValueError(f"SpecAugment expects (batch, channels, freq, time), got shape {tuple(spec.shape)}")
        b, _, f, t = spec.shape
        keep = torch.ones(b, 1, f, t, dtype=torch.bool, device=spec.device)
        rank, world = shard
        if not 0 <= rank < world:
            raise ValueError(f"SpecAugment: shard (rank, world) = {shard} is not a rank of the world")
        masks = [self._masks(b * world, size, count, fraction, generator, spec.device)[rank::world]
                 for size, count, fraction in ((f, self.freq_masks, self.max_freq_fraction),
                                               (t, self.time_masks, self.max_time_fraction))]
        keep &= masks[0].view(b, 1, f, 1)
        keep &= masks[1].view(b, 1, 1, t)
        fill = spec.mean(dim=(1, 2, 3), keepdim=True)
        return torch.where(keep, spec, fill)

    @staticmethod
    def _masks(
        batch: int, size: int, count: int, fraction: float, generator: torch.Generator | None, device: torch.device
    ) -> torch.Tensor:
        """(batch, size) bool, False inside `count` bands of width uniform in [0, fraction * size] per example."""
        keep = torch.ones(batch, size, dtype=torch.bool, device=device)
        max_width = int(fraction * size)
        if count == 0 or max_width == 0:
            return keep
        pos = torch.arange(size, device=device)
        for _ in range(count):
            # Draw on the CPU with the caller's generator so masks do not depend on the device's RNG.
            u = torch.rand(batch, 2, generator=generator)
            width = (u[:, 0] * (max_width + 1)).long().clamp_max(max_width)
            start = (u[:, 1] * (size - width + 1)).long().clamp_max(size - width)
            width, start = width.to(device), start.to(device)
            keep &= ~((pos >= start[:, None]) & (pos < (start + width)[:, None]))
        return keep
