"""A sound track becomes a video of a painting following it: per frame, the encoder window at that frame's time is
embedded, the embedding trajectory is smoothed, and the painting is edited towards it (mapper: one forward pass per
frame; optimise: a few Eq. 2 steps warm-started from the previous frame's code).

Timing. Frame k shows time t_k = k / fps; a track of duration T gives ceil(T * fps) frames (the last frame covers the
track's last partial frame interval). Centred windows span [t_k - W/2, t_k + W/2] (W: the encoder's window): offline
only, the picture reacts W/2 ahead of and behind the sound. Causal windows span [t_k - W, t_k]: no look-ahead, as a
live microphone allows, but the window's centre lies W/2 behind the frame (W/2 latency). The exponential smoothing of
the embedding (time constant `smooth` s) adds about `smooth` s of lag in both cases. Audio outside the track is zero
padding; it never counts as sound (level, silence).

Loudness drives strength through `loudness_strength`: 0 at the silence floor (frames stay at the source during
silence), rising linearly in dB to 1 at `full_dbfs`, monotone, clipped to [0, 1].

Memory. The track is read in chunks of `chunk_seconds` (plus one window of context); frames are encoded and written
chunk by chunk, so memory is bounded by the chunk, not by the track.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field

import numpy as np
import soundfile as sf
import torch
import torch.nn.functional as F
import torchaudio.functional as AF

from datamodules.loudness import LEVEL_FLOOR_DBFS, SILENCE_FLOOR_DBFS, rms_dbfs
from lightning_modules.clip_wrapper import CLIPWrapper
from lightning_modules.manipulation import optimise

UPSCALE_FILTERS = ("nearest", "bilinear", "bicubic", "lanczos")


@dataclass
class AnimationSettings:
    """Every knob of an animation (documented in experiments/animate/toyworld.yaml)."""

    fps: float = 25.0
    size: int = 256
    causal: bool = False
    smooth: float = 0.5  # s: time constant of the exponential smoothing of embeddings and strength (0: off)
    strength: float = 1.0
    mode: str = "mapper"  # mapper | optimise
    loudness_drives_strength: bool = True
    silence_floor_dbfs: float = SILENCE_FLOOR_DBFS
    full_dbfs: float = -40.0
    upscale_filter: str = "bicubic"
    chunk_seconds: float = 10.0
    optimise_steps: int = 5
    lr: float = 0.05
    lambda_sim: float = 0.003
    crf: int = 20
    preset: str = "veryfast"

    def __post_init__(self) -> None:
        if self.fps <= 0 or self.size < 8 or self.chunk_seconds <= 0 or self.smooth < 0:
            raise ValueError(f"animate: need fps > 0, size >= 8, chunk_seconds > 0, smooth >= 0; got fps={self.fps}, "
                             f"size={self.size}, chunk_seconds={self.chunk_seconds}, smooth={self.smooth}")
        if self.mode not in ("mapper", "optimise"):
            raise ValueError(f"animate: mode must be 'mapper' or 'optimise', got {self.mode!r}")
        if self.upscale_filter not in UPSCALE_FILTERS:
            raise ValueError(f"animate: upscale_filter must be one of {UPSCALE_FILTERS}, got {self.upscale_filter!r}")
        if self.full_dbfs <= self.silence_floor_dbfs:
            raise ValueError(f"animate: full_dbfs ({self.full_dbfs}) must lie above the silence floor "
                             f"({self.silence_floor_dbfs})")


def loudness_strength(level_dbfs: float, floor_dbfs: float = SILENCE_FLOOR_DBFS, full_dbfs: float = -40.0) -> float:
    """Strength factor of a window's RMS level: 0 at or below the silence floor, linear in dB up to 1 at full_dbfs."""
    return min(1.0, max(0.0, (level_dbfs - floor_dbfs) / (full_dbfs - floor_dbfs)))


def frame_count(duration_s: float, fps: float) -> int:
    """ceil(duration * fps) frames (at least one); a float product within 1e-9 of an integer is that integer."""
    x = duration_s * fps
    return max(1, math.ceil(x - 1e-9))


@dataclass
class Window:
    """One frame's encoder window: its span on the track (s), the samples (encoder rate), whether it was padded."""

    start_s: float
    end_s: float
    wave: torch.Tensor
    padded: bool
    level_dbfs: float


class TrackReader:
    """Reads a sound file in spans, mono, resampled to the encoder's rate, without holding the whole track."""

    def __init__(self, path: str, sample_rate: int) -> None:
        try:
            self.info = sf.info(path)
        except (sf.LibsndfileError, RuntimeError) as err:
            raise ValueError(f"{path}: cannot read as audio ({err})") from err
        if self.info.frames == 0:
            raise ValueError(f"{path}: the file holds no samples")
        self.path, self.sample_rate = path, sample_rate
        self.file_rate, self.channels = self.info.samplerate, self.info.channels
        self.duration = self.info.frames / self.file_rate

    def span(self, start_s: float, end_s: float) -> tuple[torch.Tensor, int, int]:
        """Mono samples of [start_s, end_s) at the encoder rate, zero outside the track; also the first and the
        one-past-last index that hold real audio."""
        n = max(1, round((end_s - start_s) * self.sample_rate))
        out = torch.zeros(n)
        a, b = max(0.0, start_s), min(self.duration, end_s)
        if b <= a:
            return out, 0, 0
        f0, f1 = int(a * self.file_rate), min(self.info.frames, math.ceil(b * self.file_rate))
        with sf.SoundFile(self.path) as f:
            f.seek(f0)
            data = f.read(f1 - f0, dtype="float32", always_2d=True)
        if not np.isfinite(data).all():
            raise ValueError(f"{self.path}: NaN or infinite samples between {a:.2f} and {b:.2f} s")
        wave = torch.from_numpy(data.mean(axis=1))
        if self.file_rate != self.sample_rate:
            wave = AF.resample(wave, self.file_rate, self.sample_rate)
        i0 = round((a - start_s) * self.sample_rate)
        wave = wave[: max(0, n - i0)]
        out[i0 : i0 + len(wave)] = wave
        return out, i0, i0 + len(wave)


def frame_windows(reader: TrackReader, frames: range, fps: float, window_s: float, causal: bool) -> list[Window]:
    """The encoder windows of `frames`, cut from one read of the span they cover."""
    times = [k / fps for k in frames]
    lo = times[0] - (window_s if causal else window_s / 2)
    hi = times[-1] + (0.0 if causal else window_s / 2)
    audio, real0, real1 = reader.span(lo, hi)
    n_win = round(window_s * reader.sample_rate)
    out = []
    for t in times:
        start = t - (window_s if causal else window_s / 2)
        i = round((start - lo) * reader.sample_rate)
        wave = audio[i : i + n_win]
        if len(wave) < n_win:
            wave = F.pad(wave, (0, n_win - len(wave)))
        r0, r1 = max(i, real0), min(i + n_win, real1)
        real = audio[r0:r1] if r1 > r0 else audio[:0]
        padded = (r1 - r0) < n_win
        out.append(Window(start, start + window_s, wave, padded, rms_dbfs(real) if len(real) else LEVEL_FLOOR_DBFS))
    return out


@dataclass
class FrameRecord:
    """Per-frame metrics written to the JSON."""

    frame: int
    time_s: float
    window_start_s: float
    window_end_s: float
    padded: bool
    level_dbfs: float
    silent: bool
    strength: float
    cos_to_window: float
    pixel_change: float
    w_dist: float


@dataclass
class AnimationState:
    """What carries over from one chunk to the next: smoothed embedding and strength, last code and image."""

    emb: torch.Tensor | None = None
    strength: float | None = None
    w: torch.Tensor | None = None
    image: torch.Tensor | None = None
    records: list[FrameRecord] = field(default_factory=list)


def smooth_sequence(values: torch.Tensor, previous: torch.Tensor | None, alpha: float) -> torch.Tensor:
    """Exponential smoothing along dim 0: y_k = y_{k-1} + alpha (x_k - y_{k-1}), starting from `previous`."""
    out = torch.empty_like(values)
    y = values[0] if previous is None else previous
    for k in range(len(values)):
        y = y + alpha * (values[k] - y)
        out[k] = y
    return out


def upscale(images: torch.Tensor, size: int, filt: str) -> torch.Tensor:
    """uint8 (N, 3, size, size) frames from generator images in [-1, 1]."""
    x = (images.float().clamp(-1, 1) + 1) * 127.5
    if x.shape[-1] != size:
        if filt == "lanczos":  # torch has no Lanczos: PIL's, frame by frame
            from PIL import Image

            arr = x.round().byte().permute(0, 2, 3, 1).cpu().numpy()
            x = torch.from_numpy(np.stack([np.asarray(Image.fromarray(a).resize((size, size), Image.LANCZOS))
                                           for a in arr])).permute(0, 3, 1, 2).float()
        else:
            kw = {} if filt == "nearest" else {"align_corners": False}
            x = F.interpolate(x, size=(size, size), mode=filt, **kw)
    return x.round().clamp(0, 255).to(torch.uint8)


class Animator:
    """Turns a track into frames chunk by chunk (see the module docstring); `frames()` yields uint8 chunks."""

    def __init__(self, G: torch.nn.Module, clip_model: CLIPWrapper, encoder: torch.nn.Module, w_source: torch.Tensor,
                 settings: AnimationSettings, mapper: torch.nn.Module | None = None) -> None:
        if settings.mode == "mapper" and mapper is None:
            raise ValueError("animate: mode 'mapper' needs a mapper file (--mapper or the config's mapper)")
        self.G, self.clip, self.encoder, self.mapper, self.s = G, clip_model, encoder, mapper, settings
        self.w_source = w_source.reshape(1, G.n_latent, G.style_dim).float()
        self.window_s = encoder.clip_samples / encoder.sample_rate
        self.alpha = 1.0 if settings.smooth == 0 else 1.0 - math.exp(-1.0 / (settings.fps * settings.smooth))
        self.state = AnimationState()
        with torch.no_grad():
            self.source_image = G.synthesis(self.w_source)

    def latency_note(self) -> str:
        w = self.window_s
        if self.s.causal:
            return (f"causal windows [t - {w:g} s, t]: no look-ahead; the window's centre lies {w / 2:g} s behind the "
                    f"frame, smoothing adds ~{self.s.smooth:g} s")
        return (f"centred windows [t - {w / 2:g} s, t + {w / 2:g} s]: offline only ({w / 2:g} s look-ahead); "
                f"smoothing adds ~{self.s.smooth:g} s of lag")

    @torch.no_grad()
    def embed(self, windows: list[Window], batch: int = 64) -> torch.Tensor:
        waves = torch.stack([w.wave for w in windows])
        return F.normalize(torch.cat([self.encoder(x, augment=False).float() for x in waves.split(batch)]), dim=-1)

    def codes(self, emb: torch.Tensor, strength: torch.Tensor) -> torch.Tensor:
        """W+ codes (N, L, D) for smoothed embeddings and per-frame strengths."""
        n = len(emb)
        w_src = self.w_source.expand(n, -1, -1)
        if self.s.mode == "mapper":
            with torch.no_grad():
                dw = self.mapper.delta(w_src, emb)
            return w_src + strength.view(-1, 1, 1) * dw
        out, w_prev = [], self.state.w if self.state.w is not None else self.w_source
        for k in range(n):  # warm start from the previous frame's code; distance still to the source
            r = optimise(self.G, self.clip, self.w_source, emb[k : k + 1], self.s.lambda_sim,
                         steps=self.s.optimise_steps, lr=self.s.lr, w_init=w_prev)
            w_prev = r.w
            out.append(self.w_source + strength[k] * (r.w - self.w_source))
        return torch.cat(out)

    def frames(self, reader: TrackReader,
               progress: Callable[[int, int], None] | None = None) -> Iterator[tuple[range, torch.Tensor]]:
        """Yield (frame indices, uint8 frames (n, 3, size, size)) chunk by chunk; records go to state.records."""
        s = self.s
        total = frame_count(reader.duration, s.fps)
        per_chunk = max(1, round(s.chunk_seconds * s.fps))
        for first in range(0, total, per_chunk):
            idx = range(first, min(total, first + per_chunk))
            windows = frame_windows(reader, idx, s.fps, self.window_s, s.causal)
            raw = self.embed(windows)
            emb = F.normalize(smooth_sequence(raw, self.state.emb, self.alpha), dim=-1)
            levels = [w.level_dbfs for w in windows]
            gain = torch.tensor([loudness_strength(lv, s.silence_floor_dbfs, s.full_dbfs)
                                 if s.loudness_drives_strength else 1.0 for lv in levels])
            prev_gain = None if self.state.strength is None else torch.tensor(self.state.strength)
            gain = smooth_sequence(gain, prev_gain, self.alpha)
            silent = torch.tensor([lv <= s.silence_floor_dbfs for lv in levels])
            gain = torch.where(silent, torch.zeros_like(gain), gain)  # silence: exactly the source
            strength = s.strength * gain
            w = self.codes(emb, strength)
            with torch.no_grad():
                images = self.G.synthesis(w)
                cos = (self.clip.encode_image(images) * raw).sum(-1)
            prev = self.state.image if self.state.image is not None else images[:1]
            change = (images - torch.cat([prev, images[:-1]])).pow(2).flatten(1).mean(1).sqrt()
            w_dist = (w - self.w_source).flatten(1).norm(dim=1)
            for j, k in enumerate(idx):
                win = windows[j]
                self.state.records.append(FrameRecord(
                    frame=k, time_s=round(k / s.fps, 4), window_start_s=round(win.start_s, 4),
                    window_end_s=round(win.end_s, 4), padded=win.padded, level_dbfs=round(win.level_dbfs, 2),
                    silent=bool(silent[j]), strength=round(float(strength[j]), 4),
                    cos_to_window=round(float(cos[j]), 4), pixel_change=round(float(change[j]), 5),
                    w_dist=round(float(w_dist[j]), 4)))
            self.state.emb, self.state.strength = emb[-1], float(gain[-1])
            self.state.w, self.state.image = w[-1:].detach(), images[-1:]
            if progress is not None:
                progress(idx.stop, total)
            yield idx, upscale(images, s.size, s.upscale_filter)

    def settings_dict(self) -> dict:
        return {**asdict(self.s), "window_s": self.window_s, "smoothing_alpha_per_frame": self.alpha}
