"""Which part of a sound an edit uses: the encoder's window cut from the clip, and where it lies in the clip.

An edit embeds one encoder-length window per clip (today: the centre, or a seeded random crop; shorter clips are
zero-padded). `read_edit_sound` returns that window together with its span, the clip's duration and the samples
whose loudness counts (the crop, or the whole clip when it is shorter than the window: padding is not sound), so
commands can print and record what was used. It is the single place to switch to the window reader of
`datamodules.audio_windows` once that lands: its fields mirror that reader's `AudioWindows`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from datamodules.audio_io import crop_offset, load_audio, place


@dataclass
class EditSound:
    """One clip as an edit uses it."""

    windows: torch.Tensor  # (1, window_samples) float32: what the encoder sees
    used: torch.Tensor  # the clip's samples inside the window (no padding): what loudness is measured on
    starts_s: list[float]
    ends_s: list[float]
    duration_s: float
    policy: str
    padded: bool
    sample_rate: int

    def describe(self) -> str:
        """E.g. '4.0–6.0 s of 10.0 s (center window)' or '0.0–0.1 s of 0.1 s (whole clip, zero-padded to 2.0 s)'."""
        span = f"{self.starts_s[0]:.1f}–{self.ends_s[0]:.1f} s of {self.duration_s:.1f} s"
        if self.padded:
            return f"{span} (whole clip, zero-padded to {self.windows.shape[-1] / self.sample_rate:.1f} s)"
        return f"{span} ({self.policy} window)"

    def record(self) -> dict:
        """The JSON-able part (for job.json / metrics.json)."""
        return {"start_s": self.starts_s[0], "end_s": self.ends_s[0], "duration_s": self.duration_s,
                "policy": self.policy, "padded": self.padded, "used": self.describe()}


def read_edit_sound(path: str | os.PathLike, sample_rate: int, window_samples: int, policy: str = "center",
                    generator: torch.Generator | None = None) -> EditSound:
    """Decode `path` at `sample_rate` and cut the encoder window by `policy` ('center' or seeded 'random', exactly
    as `crop_or_pad` does), reporting which part of the clip it covers."""
    wave = load_audio(path, sample_rate)
    n = wave.shape[-1]
    offset = crop_offset(n, window_samples, policy, generator)
    padded = n < window_samples
    start = 0 if padded else offset
    used = wave if padded else wave[offset : offset + window_samples]
    return EditSound(windows=place(wave, window_samples, offset)[None], used=used, starts_s=[start / sample_rate],
                     ends_s=[(start + used.shape[-1]) / sample_rate], duration_s=n / sample_rate, policy=policy,
                     padded=padded, sample_rate=sample_rate)
