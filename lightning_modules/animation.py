"""A sound track becomes a video of a painting following it: per frame, the encoder window at that frame's time is
embedded, the embedding trajectory is smoothed, and the painting is edited towards it (mapper: one forward pass per
frame; optimise: a few Eq. 2 steps warm-started from the previous frame's code).

Timing. Frame k shows time t_k = k / fps; a track of duration T gives ceil(T * fps) frames (the last frame covers the
track's last partial frame interval). Centred windows span [t_k - W/2, t_k + W/2] (W: the encoder's window): offline
only, the picture reacts W/2 ahead of and behind the sound. Causal windows span [t_k - W, t_k]: no look-ahead, as a
live microphone allows, but the window's centre lies W/2 behind the frame (W/2 latency). Audio outside the track is
zero padding; it never counts as sound (level, silence).

Smoothing (time constant `smooth` = tau s; per-frame factor alpha = 1 - exp(-1 / (fps tau))). Offline (centred) the
embedding trajectory and the loudness strength are smoothed zero-phase: an exponential filter forwards, then the same
filter backwards over the whole track, whose impulse response alpha / (2 - alpha) (1 - alpha)^|k| is symmetric, so a
change in the sound is centred on its time, spread over about tau on each side, not delayed. Causal mode keeps the
forward filter alone (what a live microphone allows): its group delay at slow changes is tau, a step is half-way
after tau ln 2; the latency note states window + smoothing delay.

Memory. The track is read through the shared window reader (datamodules.audio_windows.AudioTrack) in spans of
`chunk_seconds` (plus one window of context) and embedded `batch_frames` windows at a time. The smoothed trajectory is
held for the whole track: two unit embeddings (D floats each, D = 64 in the toy world: 512 bytes) and three scalars
per frame, with the per-frame metrics record -- about 1 kB per frame, 90 MB for an hour at 25 fps. Codes, images and
upscaled frames exist only for one batch of `batch_frames` frames at a time (at 256 px, 32 frames: 6 MB of uint8).

Loudness drives strength through `loudness_strength`: 0 at the silence floor (frames stay at the source during
silence), rising linearly in dB to 1 at `full_dbfs`, monotone, clipped to [0, 1].
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from datamodules.audio_windows import AudioTrack
from datamodules.loudness import LEVEL_FLOOR_DBFS, SILENCE_FLOOR_DBFS, rms_dbfs
from lightning_modules.clip_wrapper import CLIPWrapper

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
    batch_frames: int = 32
    optimise_steps: int = 5
    lr: float = 0.05
    lambda_sim: float = 0.003
    crf: int = 20
    preset: str = "veryfast"

    def __post_init__(self) -> None:
        if self.fps <= 0 or self.size < 8 or self.chunk_seconds <= 0 or self.smooth < 0 or self.batch_frames < 1:
            raise ValueError(f"animate: need fps > 0, size >= 8, chunk_seconds > 0, smooth >= 0, batch_frames >= 1; "
                             f"got fps={self.fps}, size={self.size}, chunk_seconds={self.chunk_seconds}, "
                             f"smooth={self.smooth}, batch_frames={self.batch_frames}")
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


def smoothing_alpha(smooth_s: float, fps: float) -> float:
    """Per-frame factor of an exponential filter of time constant `smooth_s` (0: no smoothing, alpha = 1)."""
    return 1.0 if smooth_s == 0 else 1.0 - math.exp(-1.0 / (fps * smooth_s))


def smooth_sequence(values: torch.Tensor, previous: torch.Tensor | None, alpha: float,
                    block: int = 64) -> torch.Tensor:
    """Exponential smoothing along dim 0: y_k = y_{k-1} + alpha (x_k - y_{k-1}), from `previous` (default: x_0).

    Computed `block` steps at a time as one matrix product (y_i = (1-alpha)^(i+1) y_prev + sum_j<=i alpha
    (1-alpha)^(i-j) x_j), in float64, so a long track costs N / block small products, not N Python steps."""
    n = len(values)
    x = values.reshape(n, -1).double()
    i = torch.arange(block, dtype=torch.float64)
    lag = i[:, None] - i[None, :]
    weights = torch.where(lag >= 0, alpha * (1.0 - alpha) ** lag.clamp(min=0), 0.0)
    decay = (1.0 - alpha) ** (i + 1)
    y = x[0] if previous is None else previous.reshape(-1).double()
    out = torch.empty_like(x)
    for b in range(0, n, block):
        xb = x[b : b + block]
        m = len(xb)
        out[b : b + m] = weights[:m, :m] @ xb + decay[:m, None] * y
        y = out[b + m - 1]
    return out.to(values.dtype).reshape(values.shape)


def smooth_zero_phase(values: torch.Tensor, alpha: float) -> torch.Tensor:
    """Forward-backward exponential smoothing along dim 0: the forward filter, then the same filter run backwards.
    Zero phase: the impulse response alpha / (2 - alpha) (1 - alpha)^|k| is symmetric, nothing is delayed."""
    forward = smooth_sequence(values, None, alpha)
    return smooth_sequence(forward.flip(0), None, alpha).flip(0)


@dataclass
class Trajectory:
    """Per frame of the whole track: its window, level, the raw and smoothed unit embeddings, and the strength."""

    window_starts_s: torch.Tensor  # (N,) float64
    window_s: float
    padded: torch.Tensor  # (N,) bool: the window reaches outside the track
    level_dbfs: torch.Tensor  # (N,) RMS level of the track's audio inside the window (padding excluded)
    raw: torch.Tensor  # (N, D) unit embeddings of the windows
    emb: torch.Tensor  # (N, D) smoothed, renormalised
    silent: torch.Tensor  # (N,) bool: level at or below the silence floor
    strength: torch.Tensor  # (N,) overall strength x smoothed loudness gain; exactly 0 where silent

    def __len__(self) -> int:
        return len(self.raw)


@dataclass(slots=True)
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

    def as_dict(self) -> dict:
        return {name: getattr(self, name) for name in self.__slots__}


@dataclass
class AnimationState:
    """What carries over from one batch of frames to the next: the last code and image, and the records."""

    w: torch.Tensor | None = None
    image: torch.Tensor | None = None
    records: list[FrameRecord] = field(default_factory=list)


def upscale(images: torch.Tensor, size: int, filt: str) -> torch.Tensor:
    """uint8 (N, 3, size, size) frames from generator images in [-1, 1].

    bilinear and bicubic run torch's uint8 separable resampler (antialias=True, the same code path as PIL's
    resize; bicubic is Keys' cubic with a = -0.5, as PIL's): ~20x faster than float interpolation at 32 -> 256 px."""
    x = ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    if x.shape[-1] == size:
        return x
    if filt == "lanczos":  # torch has no Lanczos: PIL's, frame by frame
        from PIL import Image

        arr = x.permute(0, 2, 3, 1).cpu().numpy()
        return torch.from_numpy(np.stack([np.asarray(Image.fromarray(a).resize((size, size), Image.LANCZOS))
                                          for a in arr])).permute(0, 3, 1, 2).contiguous()
    if filt == "nearest":
        return F.interpolate(x, size=(size, size), mode="nearest")
    return F.interpolate(x.contiguous(memory_format=torch.channels_last), size=(size, size), mode=filt,
                         align_corners=False, antialias=True)  # channels_last: (n, h, w, 3) for the encoder


Progress = Callable[[str, int, int], None]  # (stage: "embedding" | "rendering", done, total)


class Animator:
    """Turns a track into frames (see the module docstring): `trajectory()` embeds and smooths the whole track,
    `render()` yields uint8 frames batch by batch; `frames()` does both."""

    def __init__(self, G: torch.nn.Module, clip_model: CLIPWrapper, encoder: torch.nn.Module, w_source: torch.Tensor,
                 settings: AnimationSettings, mapper: torch.nn.Module | None = None) -> None:
        if settings.mode == "mapper" and mapper is None:
            raise ValueError("animate: mode 'mapper' needs a mapper file (--mapper or the config's mapper)")
        self.G, self.clip, self.encoder, self.mapper, self.s = G, clip_model, encoder, mapper, settings
        self.w_source = w_source.reshape(1, G.n_latent, G.style_dim).float()
        self.window_samples = int(encoder.clip_samples)
        self.window_s = self.window_samples / encoder.sample_rate
        self.alpha = smoothing_alpha(settings.smooth, settings.fps)
        self.state = AnimationState()
        with torch.no_grad():
            self.source_image = G.synthesis(self.w_source)

    def latency_s(self) -> float:
        """Delay of the picture behind the sound at slow changes: 0 offline (centred windows, zero-phase
        smoothing); causal: the window's centre (W/2) plus the forward filter's group delay (tau)."""
        return self.window_s / 2 + self.s.smooth if self.s.causal else 0.0

    def latency_note(self) -> str:
        w, tau = self.window_s, self.s.smooth
        if self.s.causal:
            return (f"causal windows [t - {w:g} s, t]: no look-ahead, live-capable; latency ~{self.latency_s():g} s "
                    f"(the window's centre lies {w / 2:g} s behind the frame, forward smoothing delays slow changes "
                    f"by {tau:g} s, a step is half-way after {w / 2 + tau * math.log(2):.2f} s)")
        return (f"centred windows [t - {w / 2:g} s, t + {w / 2:g} s] and zero-phase (forward-backward) smoothing: "
                f"offline only ({w / 2:g} s look-ahead); no lag, a change in the sound is centred on its time, "
                f"spread over ~{w / 2:g} s (window) + {tau:g} s (smoothing) each side")

    @torch.no_grad()
    def trajectory(self, track: AudioTrack, progress: Progress | None = None) -> Trajectory:
        """Embed every frame's window (read chunk by chunk through `track`), then smooth in time."""
        s, sr, n_win = self.s, track.sample_rate, self.window_samples
        if sr != self.encoder.sample_rate:
            raise ValueError(f"{track.path}: opened at {sr} Hz, the encoder needs {self.encoder.sample_rate} Hz")
        total = frame_count(track.duration_s, s.fps)
        back = n_win if s.causal else n_win // 2  # window start = frame sample - back
        starts = torch.tensor([round(k / s.fps * sr) - back for k in range(total)], dtype=torch.int64)
        per_chunk = max(1, round(s.chunk_seconds * s.fps))
        raw, levels, padded = [], [], []
        for first in range(0, total, per_chunk):
            st = starts[first : first + per_chunk]
            lo = int(st[0])
            audio, real0, real1 = track.padded_span(lo, int(st[-1]) - lo + n_win)
            offsets = (st - lo).tolist()
            for i in offsets:
                r0, r1 = max(i, real0), min(i + n_win, real1)
                levels.append(rms_dbfs(audio[r0:r1]) if r1 > r0 else LEVEL_FLOOR_DBFS)
                padded.append(r1 - r0 < n_win)
            for b in range(0, len(offsets), s.batch_frames):
                waves = torch.stack([audio[i : i + n_win] for i in offsets[b : b + s.batch_frames]])
                raw.append(F.normalize(self.encoder(waves, augment=False).float(), dim=-1))
            if progress is not None:
                progress("embedding", first + len(st), total)
        raw_t = torch.cat(raw)
        level = torch.tensor(levels, dtype=torch.float64)
        gain = torch.tensor([loudness_strength(lv, s.silence_floor_dbfs, s.full_dbfs) if s.loudness_drives_strength
                             else 1.0 for lv in levels], dtype=torch.float64)
        if s.causal:
            emb, gain = smooth_sequence(raw_t, None, self.alpha), smooth_sequence(gain, None, self.alpha)
        else:
            emb, gain = smooth_zero_phase(raw_t, self.alpha), smooth_zero_phase(gain, self.alpha)
        silent = level <= s.silence_floor_dbfs
        strength = torch.where(silent, torch.zeros_like(gain), s.strength * gain).float()  # silence: the source
        return Trajectory(starts.double() / sr, self.window_s, torch.tensor(padded), level, raw_t,
                          F.normalize(emb, dim=-1), silent, strength)

    def codes(self, emb: torch.Tensor, strength: torch.Tensor) -> torch.Tensor:
        """W+ codes (N, L, D) for smoothed embeddings and per-frame strengths."""
        n = len(emb)
        w_src = self.w_source.expand(n, -1, -1)
        if self.s.mode == "mapper":
            with torch.no_grad():
                dw = self.mapper.delta(w_src, emb)
            return w_src + strength.view(-1, 1, 1) * dw
        from lightning_modules.manipulation import optimise  # only optimise mode needs Eq. 2 (and Lightning)

        out, w_prev = [], self.state.w if self.state.w is not None else self.w_source
        for k in range(n):  # warm start from the previous frame's code; distance still to the source
            r = optimise(self.G, self.clip, self.w_source, emb[k : k + 1], self.s.lambda_sim,
                         steps=self.s.optimise_steps, lr=self.s.lr, w_init=w_prev)
            w_prev = r.w
            out.append(self.w_source + strength[k] * (r.w - self.w_source))
        return torch.cat(out)

    def render(self, traj: Trajectory, progress: Progress | None = None) -> Iterator[tuple[range, torch.Tensor]]:
        """Yield (frame indices, uint8 frames (n, 3, size, size)) `batch_frames` at a time; records go to
        state.records."""
        s, total = self.s, len(traj)
        for first in range(0, total, s.batch_frames):
            idx = range(first, min(total, first + s.batch_frames))
            sl = slice(idx.start, idx.stop)
            strength = traj.strength[sl]
            w = self.codes(traj.emb[sl], strength)
            with torch.no_grad():
                images = self.G.synthesis(w)
                cos = (self.clip.encode_image(images) * traj.raw[sl]).sum(-1)
            prev = self.state.image if self.state.image is not None else images[:1]
            change = (images - torch.cat([prev, images[:-1]])).pow(2).flatten(1).mean(1).sqrt()
            w_dist = (w - self.w_source).flatten(1).norm(dim=1)
            starts = traj.window_starts_s[sl].tolist()
            for j, k in enumerate(idx):
                self.state.records.append(FrameRecord(
                    frame=k, time_s=round(k / s.fps, 4), window_start_s=round(starts[j], 4),
                    window_end_s=round(starts[j] + traj.window_s, 4), padded=bool(traj.padded[k]),
                    level_dbfs=round(float(traj.level_dbfs[k]), 2), silent=bool(traj.silent[k]),
                    strength=round(float(strength[j]), 4), cos_to_window=round(float(cos[j]), 4),
                    pixel_change=round(float(change[j]), 5), w_dist=round(float(w_dist[j]), 4)))
            self.state.w, self.state.image = w[-1:].detach(), images[-1:]
            if progress is not None:
                progress("rendering", idx.stop, total)
            yield idx, upscale(images, s.size, s.upscale_filter)

    def frames(self, track: AudioTrack, progress: Progress | None = None) -> Iterator[tuple[range, torch.Tensor]]:
        """`render(trajectory(track))`."""
        yield from self.render(self.trajectory(track, progress), progress)

    def settings_dict(self) -> dict:
        return {**asdict(self.s), "window_s": self.window_s, "smoothing_alpha_per_frame": self.alpha,
                "smoothing": "forward (causal)" if self.s.causal else "zero-phase (forward-backward)",
                "latency_s": self.latency_s()}
