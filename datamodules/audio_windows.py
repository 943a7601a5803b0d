"""The one window reader: any audio file -> encoder-length windows, decoded block-wise in bounded memory.

Every entry point that embeds a sound (edit, manipulation jobs, `listen`, animate, the page) calls this, so
a clip is cut the same way everywhere and the caller can say which part of it was used. Policies:

- ``center``: the middle window (a shorter clip is zero-padded, centred) -- `crop_or_pad(mode="center")`;
- ``random``: a seeded crop, bit-identical to `crop_or_pad(mode="random")` with a generator seeded by ``seed``;
- ``loudest``: the window of the consecutive grid (below) with the highest RMS (the earliest on ties);
- ``mean``: every window of the grid, for the caller to average the window embeddings.

The grid is consecutive non-overlapping windows from the start; a tail of at least half a window adds one
more window aligned to the clip's end, a shorter tail is left out. A clip shorter than one window gives one
window with the clip centred in zeros. ``max_windows`` bounds a long clip's grid (evenly spaced subset).

Memory stays bounded: a file of up to ``WHOLE_FILE_SAMPLES`` samples (all channels; ~95 s of 44.1 kHz
stereo) is decoded and resampled whole, exactly as `load_audio` does, so every window is bit-identical to
cropping `load_audio`'s result; a longer file is read span by span (soundfile seeks), each span resampled
with torchaudio's sinc resampler and enough context on both sides that it equals the whole-file result up
to float rounding (torch's conv1d sums in another order for other input lengths: ~1e-7). Stereo is averaged.

`AudioTrack` is the reader under `read_windows` and `stream_blocks`, public for callers that cut windows at
times of their own: the animate command opens the track once and reads one padded span per chunk of video
frames (one window per frame, reaching before the start and past the end as zeros).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

from datamodules.audio_io import AudioDecodeError, open_audio

POLICIES = ("center", "loudest", "mean", "random")
DEFAULT_MAX_WINDOWS = 256
_LOWPASS_WIDTH, _ROLLOFF = 6, 0.99  # torchaudio.functional.resample's defaults (what load_audio uses)
_MIN_PERIODS = 256
WHOLE_FILE_SAMPLES = 1 << 23


@dataclass
class AudioWindows:
    """Windows cut from one clip, and which part of the clip they hold."""

    windows: torch.Tensor  # (N, window_samples) float32 mono at `sample_rate`
    starts_s: list[float]  # where each window's audio starts in the clip (s)
    ends_s: list[float]  # ... and ends (s); shorter than a window when the clip was padded
    duration_s: float  # the whole clip's duration
    policy: str
    padded: bool  # the clip is shorter than one window and was zero-padded
    sample_rate: int
    grid_windows: int  # windows in the clip's grid (the mean policy may use a spaced subset of them)
    pad_offset: int = 0  # where a padded clip starts inside its window (samples)

    def content(self) -> torch.Tensor:
        """The clip's audio inside the windows, without padding, as one 1-D tensor (for loudness)."""
        if self.padded:
            n = round((self.ends_s[0] - self.starts_s[0]) * self.sample_rate)
            return self.windows[0, self.pad_offset : self.pad_offset + n]
        return self.windows.flatten()

    def describe(self) -> str:
        """One line saying what was used, e.g. '0.0–2.0 s of 1200.0 s (mean of 600 windows)'."""
        span = f"{min(self.starts_s):.1f}–{max(self.ends_s):.1f} s of {self.duration_s:.1f} s"
        n = len(self.starts_s)
        if self.padded:
            how = f"{self.policy}; clip shorter than the {self.windows.shape[-1] / self.sample_rate:.1f} s window, " \
                  "zero-padded"
        elif self.policy == "mean":
            how = f"mean of {n} window{'s' * (n != 1)}" if n == self.grid_windows else \
                f"mean of {n} of {self.grid_windows} windows"
        elif self.policy == "loudest":
            how = f"loudest of {self.grid_windows} window{'s' * (self.grid_windows != 1)}"
        else:
            how = f"{self.policy} window"
        return f"{span} ({how})"

    def as_dict(self) -> dict:
        """The span record written to job.json / metrics.json."""
        return {"policy": self.policy, "start_s": round(min(self.starts_s), 4), "end_s": round(max(self.ends_s), 4),
                "starts_s": [round(s, 4) for s in self.starts_s],
                "ends_s": [round(e, 4) for e in self.ends_s], "duration_s": round(self.duration_s, 4),
                "padded": self.padded, "windows": len(self.starts_s), "used": self.describe()}


class AudioTrack:
    """An open sound file read as mono float32 at `sample_rate`, one span at a time (a context manager).

    `span` reads inside the clip; `padded_span` reads any range of the clip's timeline, zero outside it (the
    animate command's windows reach before the start and past the end). `length` is the clip's length at
    `sample_rate`; `duration_s`, `file_rate` and `channels` describe the file. Errors name the file."""

    def __init__(self, path: str | os.PathLike, sample_rate: int) -> None:
        self.path = os.fspath(path)
        self.file = open_audio(path)  # named reasons: missing, empty, not audio, damaged header
        self.file_rate, self.frames = int(self.file.samplerate), int(self.file.frames)
        self.channels = int(self.file.channels)
        self.duration_s = self.frames / self.file_rate
        if self.frames <= 0:
            self.file.close()
            raise AudioDecodeError(f"{path}: the file holds no samples")
        g = math.gcd(self.file_rate, int(sample_rate))
        self.orig, self.new = self.file_rate // g, int(sample_rate) // g  # the resampler's reduced ratio
        self.sample_rate = int(sample_rate)
        # Output length exactly as torchaudio's resample computes it: ceil(new * n / orig).
        self.length = self.frames if self.orig == self.new else -(-self.new * self.frames // self.orig)
        width = math.ceil(_LOWPASS_WIDTH * self.orig / (min(self.orig, self.new) * _ROLLOFF))
        # Input context on each side of a span, in whole resampler periods, covering the kernel's reach.
        self.context = self.orig * (math.ceil((width + self.orig) / self.orig) + 1)
        self.whole: torch.Tensor | None = None
        if self.frames * self.file.channels <= WHOLE_FILE_SAMPLES:
            wave = self._frames(0, self.frames)
            self.whole = wave if self.orig == self.new else AF.resample(wave, self.orig, self.new).contiguous()

    def __enter__(self) -> AudioTrack:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.file.close()
        self.whole = None

    def _frames(self, start: int, count: int) -> torch.Tensor:
        """Input frames [start, start + count) clipped to the file, mono float32."""
        start, stop = max(0, start), min(self.frames, start + count)
        if stop <= start:
            return torch.zeros(0)
        try:
            self.file.seek(start)
            data = self.file.read(stop - start, dtype="float32", always_2d=True)
        except (sf.LibsndfileError, RuntimeError, ValueError, OSError) as err:
            raise AudioDecodeError(f"{self.path}: truncated or corrupt audio ({err})") from err
        if not np.isfinite(data).all():
            raise AudioDecodeError(f"{self.path}: the file holds NaN or infinite samples")
        return torch.from_numpy(data.mean(axis=1) if data.shape[1] > 1 else data[:, 0].copy())

    def span(self, start: int, count: int) -> torch.Tensor:
        """Output samples [start, start + count) at the target rate (clipped to the clip's length)."""
        start, stop = max(0, start), min(self.length, start + count)
        if stop <= start:
            return torch.zeros(0)
        if self.whole is not None:
            return self.whole[start:stop]
        if self.orig == self.new:
            return self._frames(start, stop - start)
        # Output period p (new samples) comes from input period p (orig frames) and its neighbours.
        p0, p1 = start // self.new, -(-stop // self.new)
        # At least _MIN_PERIODS periods: conv1d takes another code path (other rounding) on very short inputs.
        extra = max(0, _MIN_PERIODS - (p1 - p0)) // 2 + 1
        lo = max(0, (p0 - extra) * self.orig - self.context)
        hi = (p1 + extra) * self.orig + self.context
        chunk = self._frames(lo, hi - lo)
        out = AF.resample(chunk, self.orig, self.new)  # zero padding at the file's ends, as on the whole file
        first = lo // self.orig * self.new  # output index of `out[0]`
        return out[start - first : stop - first].contiguous()

    def padded_span(self, start: int, count: int) -> tuple[torch.Tensor, int, int]:
        """`count` samples from sample `start` of the clip's timeline (either may lie outside the clip: zeros
        there); also the first and one-past-last index of the result that hold the clip's audio."""
        out = torch.zeros(count)
        lo, hi = max(0, start), min(self.length, start + count)
        if hi <= lo:
            return out, 0, 0
        out[lo - start : hi - start] = self.span(lo, hi - lo)
        return out, lo - start, hi - start


def grid_starts(length: int, window: int) -> list[int]:
    """Starts of the consecutive window grid of a clip of `length` samples (see the module docstring)."""
    if length <= window:
        return [0]
    starts = list(range(0, length - window + 1, window))
    if length - (starts[-1] + window) >= window / 2:
        starts.append(length - window)
    return starts


def read_windows(path: str | os.PathLike, sample_rate: int, window_samples: int, policy: str = "mean",
                 seed: int = 0, max_windows: int = DEFAULT_MAX_WINDOWS) -> AudioWindows:
    """Cut `path` into `window_samples`-long windows at `sample_rate` by `policy` (see the module docstring).

    ``seed`` seeds the ``random`` policy's crop (a fresh ``torch.Generator().manual_seed(seed)``).
    Raises AudioDecodeError naming the file, ValueError for a bad policy or size.
    """
    if policy not in POLICIES:
        raise ValueError(f"read_windows: policy must be one of {', '.join(POLICIES)}, got {policy!r}")
    if window_samples <= 0 or max_windows <= 0:
        raise ValueError(f"read_windows: window_samples and max_windows must be positive, got {window_samples}, "
                         f"{max_windows}")
    with AudioTrack(path, sample_rate) as src:
        n, w, sr = src.length, int(window_samples), int(sample_rate)
        grid = grid_starts(n, w)
        if n < w:  # one padded window; `random` places the clip like crop_or_pad does
            wave = src.span(0, n)
            offset = (w - n) // 2
            if policy == "random":
                gen = torch.Generator().manual_seed(seed)
                offset = int(torch.randint(0, w - n + 1, (1,), generator=gen).item())
            window = wave.new_zeros(w)
            window[offset : offset + n] = wave
            return AudioWindows(window[None], [0.0], [n / sr], n / sr, policy, True, sr, 1, offset)
        if policy in ("center", "random"):
            slack = n - w
            if policy == "center":
                start = slack // 2
            else:
                gen = torch.Generator().manual_seed(seed)
                start = int(torch.randint(0, slack + 1, (1,), generator=gen).item()) if slack else 0
            starts = [start]
        elif policy == "loudest":
            energy = [float(src.span(s, w).double().pow(2).sum()) for s in grid]
            starts = [grid[int(np.argmax(energy))]]
        else:
            pick = np.unique(np.linspace(0, len(grid) - 1, max_windows).round().astype(int)) \
                if len(grid) > max_windows else np.arange(len(grid))
            starts = [grid[i] for i in pick]
        windows = torch.stack([src.span(s, w) for s in starts])
        return AudioWindows(windows, [s / sr for s in starts], [(s + w) / sr for s in starts], n / sr, policy,
                            False, sr, len(grid))


def stream_blocks(path: str | os.PathLike, sample_rate: int, block_samples: int) -> Iterator[torch.Tensor]:
    """Yield the clip as consecutive mono float32 blocks of `block_samples` at `sample_rate` (the last may be
    shorter), decoding only one block's frames at a time: for the animate command and live input."""
    if block_samples <= 0:
        raise ValueError(f"stream_blocks: block_samples must be positive, got {block_samples}")
    with AudioTrack(path, sample_rate) as src:
        for start in range(0, src.length, block_samples):
            yield src.span(start, block_samples)


def causal_windows(history: torch.Tensor | None, chunk: torch.Tensor, window_samples: int,
                   k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Live input: the `k` causal windows (k, window_samples) ending 1/k, 2/k, ..., k/k of the way through a new
    `chunk`, and the new history (the last window). `history` is the previous call's (None: silence before)."""
    if k < 1 or window_samples < 1:
        raise ValueError(f"causal_windows: need k >= 1 and window_samples >= 1, got {k}, {window_samples}")
    past = torch.zeros(window_samples) if history is None else history[-window_samples:]
    if past.numel() < window_samples:
        past = torch.cat([torch.zeros(window_samples - past.numel()), past])
    stream = torch.cat([past, chunk.to(past.dtype)])
    n = chunk.numel()
    ends = [window_samples + (n * j) // k for j in range(1, k + 1)]  # sample j/k of the way through the chunk
    return torch.stack([stream[e - window_samples:e] for e in ends]), stream[-window_samples:]
