"""The one definition of loudness and silence for every command that takes a user's sound.

Loudness is the RMS level in dBFS (dB relative to a full-scale sine's peak, 1.0) of the audio actually used,
i.e. the encoder's window after cropping, or the whole clip when it is shorter than the window (padding is not
sound). A clip is too quiet to guide an edit when that level is below `SILENCE_FLOOR_DBFS` (-60 dBFS: the floor of
the manipulation module's intensity scale, where the level maps to 0), and too short when it lasts less than
`MIN_DURATION_S` (0.25 s: a shorter clip is mostly the zero padding around it).

What was merged and what stays apart:
- `lightning_modules.manipulation`'s `loudness_db` and its intensity floor `loudness_floor_db` (-60 dB) meant this
  same RMS level and floor: both now come from here (`rms_dbfs`, `SILENCE_FLOOR_DBFS`).
- The training DataModule's `silence_threshold` (`DIGITAL_SILENCE_PEAK`, a *peak* amplitude of 1e-4, about
  -80 dBFS) is a different question: whether a training clip holds any signal at all. It stays a peak test on the
  whole clip and stays lower, because quiet but real recordings (-65 dBFS RMS rain) are still worth learning from;
  only its constant lives here so that every notion of silence is in one file.
"""

from __future__ import annotations

import math

import torch

SILENCE_FLOOR_DBFS = -60.0
MIN_DURATION_S = 0.25
LEVEL_FLOOR_DBFS = -120.0  # what rms_dbfs returns for digital silence (an RMS of 1e-6)
DIGITAL_SILENCE_PEAK = 1e-4  # training data: a clip whose peak stays below this holds no signal


class QuietAudioError(ValueError):
    """A clip too quiet or too short to guide an edit; the message names the file, the level/duration and the limit."""


def rms_dbfs(wave: torch.Tensor) -> float:
    """RMS level of `wave` in dBFS (full scale = 1.0), floored at -120 dBFS so digital silence stays finite."""
    if wave.numel() == 0:
        return LEVEL_FLOOR_DBFS
    rms = wave.detach().double().pow(2).mean().sqrt().item()
    return 20.0 * math.log10(max(rms, 10.0 ** (LEVEL_FLOOR_DBFS / 20.0)))


def quiet_reason(wave: torch.Tensor, sample_rate: int, floor_dbfs: float = SILENCE_FLOOR_DBFS,
                 min_seconds: float = MIN_DURATION_S) -> str | None:
    """Why `wave` cannot guide an edit ("lasts 0.05 s, shorter than ...", "RMS level -120.0 dBFS is below ..."),
    or None when it is long and loud enough. The duration is checked first: a click can be loud."""
    seconds = wave.shape[-1] / sample_rate
    if seconds < min_seconds:
        return f"lasts {seconds:.3g} s, shorter than the minimum of {min_seconds:g} s"
    level = rms_dbfs(wave)
    if level < floor_dbfs:
        return f"RMS level {level:.1f} dBFS is below the silence floor of {floor_dbfs:g} dBFS"
    return None


def check_audible(wave: torch.Tensor, sample_rate: int, name: str, floor_dbfs: float = SILENCE_FLOOR_DBFS,
                  min_seconds: float = MIN_DURATION_S) -> float:
    """The RMS level (dBFS) of `wave`; raises QuietAudioError naming `name` when it is too short or too quiet."""
    reason = quiet_reason(wave, sample_rate, floor_dbfs, min_seconds)
    if reason is not None:
        raise QuietAudioError(f"{name}: {reason}")
    return rms_dbfs(wave)
