"""Decoding media files through PyAV (FFmpeg's libraries, shipped in the `av` wheels): no system ffmpeg needed.

`decode_audio` gives a mono float32 waveform at a chosen rate (FFmpeg's own resampler and downmix, as
`ffmpeg -ac 1 -ar RATE` would produce); `decode_frames` gives K frames evenly spaced over the clip, each the
centre square of the frame resized to `size` x `size` (the input CLIP expects). Any failure raises
`MediaDecodeError` naming the file.
"""

from __future__ import annotations

import os

import av
import numpy as np

from datamodules.image_io import center_crop_resize


class MediaDecodeError(RuntimeError):
    """A media file that cannot be decoded (corrupt, empty, or without the stream asked for)."""


def decode_audio(path: str | os.PathLike, sample_rate: int) -> np.ndarray:
    """The first audio stream of `path` as mono float32 samples (T,) at `sample_rate` Hz."""
    chunks = []
    try:
        with av.open(os.fspath(path)) as container:
            if not container.streams.audio:
                raise MediaDecodeError(f"{path}: no audio stream")
            resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
            for frame in container.decode(container.streams.audio[0]):
                chunks.extend(out.to_ndarray().reshape(-1) for out in resampler.resample(frame))
            chunks.extend(out.to_ndarray().reshape(-1) for out in resampler.resample(None))
    except av.FFmpegError as err:
        raise MediaDecodeError(f"{path}: cannot decode audio ({err})") from err
    wave = np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)
    if wave.size == 0:
        raise MediaDecodeError(f"{path}: the audio stream holds no samples")
    if not np.isfinite(wave).all():
        raise MediaDecodeError(f"{path}: the audio stream holds NaN or infinite samples")
    return wave


def frame_times(duration: float, k: int, start: float = 0.0) -> np.ndarray:
    """Centres of K equal parts of [start, start + duration]: K frames evenly spaced within the clip."""
    return start + (np.arange(k) + 0.5) * duration / k


def _duration(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / av.time_base
    return None


def decode_frames(path: str | os.PathLike, k: int, size: int) -> np.ndarray:
    """K frames of the first video stream, evenly spaced in time, as uint8 (K, size, size, 3) RGB.

    Frame k is the decoded frame nearest to the centre of the k-th of K equal parts of the clip. When the
    container states no duration, every frame is kept (already resized) and K are picked evenly by index.
    """
    if k < 1:
        raise ValueError(f"frames: k must be >= 1, got {k}")
    try:
        with av.open(os.fspath(path)) as container:
            if not container.streams.video:
                raise MediaDecodeError(f"{path}: no video stream")
            stream = container.streams.video[0]
            duration = _duration(container, stream)
            start = float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0
            if duration is not None and duration > 0:
                picked = _nearest_frames(container.decode(stream), frame_times(duration, k, start), size)
            else:
                every = [_square(f, size) for f in container.decode(stream)]
                picked = [every[i] for i in np.linspace(0, len(every) - 1, k).round().astype(int)] if every else []
    except av.FFmpegError as err:
        raise MediaDecodeError(f"{path}: cannot decode video ({err})") from err
    if len(picked) != k:
        raise MediaDecodeError(f"{path}: the video stream holds no decodable frame")
    return np.stack(picked)


def _nearest_frames(frames, targets: np.ndarray, size: int) -> list[np.ndarray]:
    """Walk the decoded frames once, keeping for every target time the nearest frame (resized)."""
    picked: list[np.ndarray] = []
    previous = None  # (time, frame)
    for frame in frames:
        t = float(frame.time) if frame.time is not None else 0.0
        while len(picked) < len(targets) and t >= targets[len(picked)]:
            target = targets[len(picked)]
            near = frame if previous is None or t - target <= target - previous[0] else previous[1]
            picked.append(_square(near, size))
        if len(picked) == len(targets):
            return picked
        previous = (t, frame)
    while previous is not None and len(picked) < len(targets):  # clip shorter than stated: the last frame
        picked.append(_square(previous[1], size))
    return picked


def _square(frame: av.VideoFrame, size: int) -> np.ndarray:
    return np.asarray(center_crop_resize(frame.to_image(), size), dtype=np.uint8)
