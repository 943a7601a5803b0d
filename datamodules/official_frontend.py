"""The audio preprocessing of the official code of "Sound-guided semantic image manipulation" (CVPR 2022).

Its released audio encoder (`resnet18_57.pth`) only works on inputs made exactly the way it was trained
(docs/reference.md §official-frontend): mono at 44.1 kHz; 128-band Slaney mel power spectrogram (n_fft 2048,
hop 512, Hann window, centred frames); `power_to_db(ref=max) / 80 + 1`, the dB reference being the loudest bin
of the *whole* clip; crop or zero-pad to 864 frames (~10 s); bilinear resize of the (128, 864) array to 512 rows x 128
columns (OpenCV's `cv2.resize(spec, (128, 512))`, whose size argument is (width, height)); and a raw
reshape of that (512, 128) array to (1, 128, 512), which scrambles mel and time: it is not a transpose.

That code used librosa 0.8.1 and opencv 4.5 (its env.yaml). This module redoes every step in torch, in
float64, so it runs on the GPU and needs neither library; the tests compare it with librosa + OpenCV.
Our own models use the plain (mel, time) layout of `datamodules/frontend.py` instead.
"""

from __future__ import annotations

import math
import os
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from datamodules.audio_io import load_audio

CropMode = Literal["train", "center", "manipulation"]

# librosa 0.8.1 (the official environment) resampled with resampy's "kaiser_best" filter by default.
# torchaudio's Kaiser-windowed sinc with these parameters is that filter (torchaudio's resampling tutorial).
KAISER_BEST = {
    "lowpass_filter_width": 64,
    "rolloff": 0.9475937167399596,
    "resampling_method": "sinc_interp_kaiser",
    "beta": 14.769656459379492,
}


def load_official_audio(path: str | os.PathLike, sample_rate: int = 44100) -> torch.Tensor:
    """Decode `path` to mono float32 (T,) at `sample_rate`, resampled like librosa 0.8.1 (`kaiser_best`)."""
    return load_audio(path, sample_rate, resample_kwargs=KAISER_BEST)


def _hz_to_slaney_mel(hz: torch.Tensor) -> torch.Tensor:
    # Slaney's Auditory Toolbox scale (librosa's default, htk=False): linear up to 1 kHz, logarithmic above.
    f_sp, min_log_hz, logstep = 200.0 / 3, 1000.0, math.log(6.4) / 27.0
    min_log_mel = min_log_hz / f_sp
    linear = hz / f_sp
    log = min_log_mel + torch.log(hz.clamp_min(min_log_hz) / min_log_hz) / logstep
    return torch.where(hz >= min_log_hz, log, linear)


def _slaney_mel_to_hz(mel: torch.Tensor) -> torch.Tensor:
    f_sp, min_log_hz, logstep = 200.0 / 3, 1000.0, math.log(6.4) / 27.0
    min_log_mel = min_log_hz / f_sp
    return torch.where(mel >= min_log_mel, min_log_hz * torch.exp(logstep * (mel - min_log_mel)), f_sp * mel)


def slaney_mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, f_min: float = 0.0,
                          f_max: float | None = None) -> torch.Tensor:
    """Triangular mel filters (n_mels, n_fft // 2 + 1) in float64, as librosa's `filters.mel` defaults.

    Slaney mel scale and Slaney ("area") normalisation: each triangle is scaled by 2 / its width in Hz.
    Built here in float64 because torchaudio builds its filter bank in float32 (10x further from librosa).
    """
    f_max = sample_rate / 2 if f_max is None else f_max
    fft_hz = torch.linspace(0, sample_rate / 2, n_fft // 2 + 1, dtype=torch.float64)
    mel_edges = torch.linspace(_hz_to_slaney_mel(torch.tensor(f_min, dtype=torch.float64)).item(),
                               _hz_to_slaney_mel(torch.tensor(f_max, dtype=torch.float64)).item(),
                               n_mels + 2, dtype=torch.float64)
    hz_edges = _slaney_mel_to_hz(mel_edges)
    widths = hz_edges.diff()                                       # (n_mels + 1,)
    ramps = hz_edges[:, None] - fft_hz[None, :]                    # (n_mels + 2, n_freqs)
    rising = -ramps[:-2] / widths[:-1, None]
    falling = ramps[2:] / widths[1:, None]
    weights = torch.clamp(torch.minimum(rising, falling), min=0.0)
    return weights * (2.0 / (hz_edges[2:] - hz_edges[:-2]))[:, None]


class OfficialFrontEnd(nn.Module):
    """Waveform at 44.1 kHz (B, T) -> the official encoder's input (B, 1, 128, 512), float32.

    Crop policy of the official code, applied in the frame domain after the dB conversion:
    `train` (used while `.training`): random crop, or zero-pad with the clip at a random offset in
    [0, frames - w - 1]; `center`: centre crop or centre pad (evaluation); `manipulation`: random crop when
    longer, zero-pad after the clip when shorter (its run_optimization.py). Random choices use `generator`.
    """

    def __init__(
        self,
        sample_rate: int = 44100,
        n_fft: int = 2048,
        hop_length: int = 512,
        n_mels: int = 128,
        power: float = 2.0,
        amin: float = 1e-10,
        top_db: float = 80.0,
        frames: int = 864,
        resize_height: int = 512,
        pad_mode: Literal["reflect", "constant"] = "reflect",
        crop: Literal["center", "manipulation"] = "center",
    ) -> None:
        super().__init__()
        if crop not in ("center", "manipulation"):
            raise ValueError(f"OfficialFrontEnd: crop must be 'center' or 'manipulation', got {crop!r}")
        if pad_mode not in ("reflect", "constant"):
            raise ValueError(f"OfficialFrontEnd: pad_mode must be 'reflect' or 'constant', got {pad_mode!r}")
        self.sample_rate, self.n_fft, self.hop_length, self.n_mels = sample_rate, n_fft, hop_length, n_mels
        self.power, self.amin, self.top_db, self.frames = power, amin, top_db, frames
        # cv2.resize(spec, (n_mels, resize_height)): the output has resize_height rows and n_mels columns.
        self.resize_height = resize_height
        # librosa < 0.10 (the official environment: 0.8.1) padded centred frames by reflection;
        # librosa >= 0.10 pads with zeros. Only the first and last two frames differ.
        self.pad_mode, self.crop = pad_mode, crop
        # float64 constants, not saved: the state dict stays exactly the released file's keys.
        self.register_buffer("window", torch.hann_window(n_fft, periodic=True, dtype=torch.float64), persistent=False)
        self.register_buffer("mel_fb", slaney_mel_filterbank(sample_rate, n_fft, n_mels), persistent=False)

    def num_frames(self, num_samples: int) -> int:
        """Frames of the centred STFT of a clip of `num_samples` samples."""
        return 1 + num_samples // self.hop_length

    def log_mel(self, wave: torch.Tensor) -> torch.Tensor:
        """One clip (T,) -> `power_to_db(mel, ref=max) / 80 + 1`, shape (n_mels, frames), float64."""
        if self.pad_mode == "reflect" and wave.shape[-1] <= self.n_fft // 2:
            raise ValueError(f"OfficialFrontEnd: a clip of {wave.shape[-1]} samples is too short for reflection "
                             f"padding (needs > {self.n_fft // 2}); use pad_mode='constant'")
        spec = torch.stft(wave.to(torch.float64), self.n_fft, self.hop_length, window=self.window.double(),
                          center=True, pad_mode=self.pad_mode, return_complex=True)
        mel = self.mel_fb.double() @ spec.abs().pow(self.power)
        # librosa.power_to_db: 10·log10(max(S, amin)) − 10·log10(max(ref, amin)), floored at max − top_db.
        db = 10.0 * torch.log10(mel.clamp_min(self.amin)) - 10.0 * torch.log10(mel.max().clamp_min(self.amin))
        db = torch.maximum(db, db.max() - self.top_db)
        return db / 80.0 + 1.0  # the official code's fixed scaling (not top_db): [-80, 0] dB -> [0, 1]

    def frame_offset(self, width: int, policy: CropMode, generator: torch.Generator | None) -> int:
        """Start of the crop (width > frames) or of the clip inside the zero padding (width < frames)."""
        slack = abs(width - self.frames)
        if slack == 0 or policy == "center":
            return slack // 2
        if width < self.frames and policy == "manipulation":
            return 0
        # Python's random.randint(0, hi) in the official code is inclusive; its padding used hi = slack − 1.
        high = slack if width > self.frames else slack - 1
        return int(torch.randint(0, high + 1, (1,), generator=generator).item())

    def fit_frames(self, spec: torch.Tensor, policy: CropMode, generator: torch.Generator | None = None
                   ) -> torch.Tensor:
        """Crop or zero-pad (n_mels, w) to (n_mels, frames) with the official per-mode policy."""
        width = spec.shape[-1]
        offset = self.frame_offset(width, policy, generator)
        if width >= self.frames:
            return spec[:, offset:offset + self.frames]
        out = spec.new_zeros(spec.shape[0], self.frames)
        out[:, offset:offset + width] = spec
        return out

    def resize_and_reshape(self, specs: torch.Tensor) -> torch.Tensor:
        """(B, n_mels, frames) -> (B, 1, n_mels, resize_height): `cv2.resize` then the raw reshape.

        cv2's INTER_LINEAR samples at half-pixel centres, clamps at the border and does not antialias
        when shrinking: that is exactly `F.interpolate(bilinear, align_corners=False, antialias=False)`.
        """
        resized = F.interpolate(specs[:, None], size=(self.resize_height, self.n_mels), mode="bilinear",
                                align_corners=False, antialias=False)
        return resized.reshape(specs.shape[0], 1, self.n_mels, self.resize_height)

    def fitted_log_mel(self, waveform: torch.Tensor, lengths: torch.Tensor | None = None,
                       generator: torch.Generator | None = None, policy: CropMode | None = None) -> torch.Tensor:
        """(B, T) waveforms (row i's clip is its first `lengths[i]` samples) -> (B, n_mels, frames) float64.

        `policy` defaults to "train" in training mode, else the configured `crop`.
        """
        if waveform.dim() != 2:
            raise ValueError(f"OfficialFrontEnd: expected a (B, T) waveform, got shape {tuple(waveform.shape)}")
        policy = policy or ("train" if self.training else self.crop)
        if policy not in ("train", "center", "manipulation"):
            raise ValueError(f"OfficialFrontEnd: policy must be 'train', 'center' or 'manipulation', got {policy!r}")
        with torch.autocast(waveform.device.type, enabled=False):
            specs = []
            for i, wave in enumerate(waveform):
                if lengths is not None:
                    wave = wave[: int(lengths[i])]
                specs.append(self.fit_frames(self.log_mel(wave), policy, generator))
            return torch.stack(specs)

    def forward(self, waveform: torch.Tensor, lengths: torch.Tensor | None = None,
                generator: torch.Generator | None = None, policy: CropMode | None = None) -> torch.Tensor:
        """(B, T) waveforms -> (B, 1, n_mels, resize_height) float32, the official encoder's input."""
        with torch.autocast(waveform.device.type, enabled=False):
            return self.resize_and_reshape(self.fitted_log_mel(waveform, lengths, generator, policy)).float()
