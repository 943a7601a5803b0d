"""A tiny audio-visual set in the toy world, written as short videos: the image carries what the label does not.

Every clip is a toy-world painting (the video, with a one-pixel camera shake per frame) paired with a sound of
the same class (the audio track). Within a class, two properties of the sound decide the painting:

    loudness (peak level, 4 steps)      -> time of day (night, dusk, dawn, day)
    pitch of a steady tone (3 steps)    -> place (sea, meadow, forest)

so a class prompt ("a painting with rain") says nothing about which of the class's 12 paintings goes with a
clip; only the audio<->image pairing teaches it. Clip i of a class gets combination i mod 12, and the last 12
clips of every class are the test split, so the held-out pairs hold every combination of every class once.

    python -m experiments.toyworld.av_set OUT [--clips-per-class 36]

writes `OUT/{id}_000000.mp4` (H.264 + AAC through PyAV) and `OUT/vggsound.csv`, the input of
`python -m datamodules.prepare_vggsound OUT DST --csv OUT/vggsound.csv --frames K`.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import os
from pathlib import Path

import av
import numpy as np

from datamodules.soundzoo import synthesize
from experiments.toyworld.paintings import paint, sample_scene

CLASSES = ("fire crackling", "rain", "wind", "latin music")
TIMES = ("night", "dusk", "dawn", "day")  # quiet -> loud
PEAK_DBFS = (-30.0, -22.0, -14.0, -6.0)
PLACES = ("sea", "meadow", "forest")  # low -> high tone
TONE_HZ = (300.0, 900.0, 2700.0)
COMBINATIONS = len(TIMES) * len(PLACES)


@dataclasses.dataclass(frozen=True)
class AVClip:
    key: str
    label: str
    split: str
    time: str
    place: str


def clip_content(label: str, index: int, seconds: float, sample_rate: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(audio (T,) float32, painting (size, size, 3) uint8) of clip `index` of class `label`."""
    combo = index % COMBINATIONS
    level, place = combo % len(TIMES), combo // len(TIMES)
    seed = 10_000 * CLASSES.index(label) + index
    wave = synthesize(label, seed, sample_rate, seconds).astype(np.float64)
    t = np.arange(len(wave)) / sample_rate
    wave = wave / max(np.abs(wave).max(), 1e-12) + 0.5 * np.sin(2 * np.pi * TONE_HZ[place] * t)
    wave = wave / np.abs(wave).max() * 10.0 ** (PEAK_DBFS[level] / 20.0)
    scene = dataclasses.replace(sample_scene(seed, label), time=TIMES[level], place=PLACES[place])
    image = (paint(scene, size) * 255 + 0.5).astype(np.uint8)
    return wave.astype(np.float32), image


def write_video(path: str | os.PathLike, frames: np.ndarray, fps: int, audio: np.ndarray, sample_rate: int) -> None:
    """uint8 (N, H, W, 3) frames and a mono float32 track as an MP4 (H.264 + AAC) through PyAV."""
    with av.open(os.fspath(path), "w") as container:
        video = container.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        video.options = {"crf": "12", "preset": "ultrafast"}
        sound = container.add_stream("aac", rate=sample_rate)
        sound.layout = "mono"
        for frame in frames:
            container.mux(video.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")))
        container.mux(video.encode(None))
        track = av.AudioFrame.from_ndarray(audio[None].astype(np.float32), format="fltp", layout="mono")
        track.sample_rate = sample_rate
        container.mux(sound.encode(track))
        container.mux(sound.encode(None))


def write_av_set(out: str | os.PathLike, clips_per_class: int = 36, test_clips: int = COMBINATIONS,
                 seconds: float = 1.0, sample_rate: int = 16000, size: int = 32, fps: int = 8) -> list[AVClip]:
    """Write the set (videos + vggsound.csv) into `out`, which must not hold a vggsound.csv yet."""
    out = Path(out)
    if (out / "vggsound.csv").exists():
        raise FileExistsError(f"{out / 'vggsound.csv'} exists; not overwriting it")
    out.mkdir(parents=True, exist_ok=True)
    clips = []
    n_frames = max(int(seconds * fps), 1)
    for label in CLASSES:
        for i in range(clips_per_class):
            wave, image = clip_content(label, i, seconds, sample_rate, size)
            shake = np.random.default_rng([CLASSES.index(label), i]).integers(-1, 2, size=(n_frames, 2))
            frames = np.stack([np.roll(image, tuple(s), axis=(0, 1)) for s in shake])
            key = f"{label.replace(' ', '_')}{i:03d}"
            write_video(out / f"{key}_000000.mp4", frames, fps, wave, sample_rate)
            time, place = TIMES[i % COMBINATIONS % len(TIMES)], PLACES[i % COMBINATIONS // len(TIMES)]
            split = "test" if i >= clips_per_class - test_clips else "train"
            clips.append(AVClip(f"{key}_000000", label, split, time, place))
    with open(out / "vggsound.csv", "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows((c.key[:-7], 0, c.label, c.split) for c in clips)
    return clips


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m experiments.toyworld.av_set", description=__doc__.splitlines()[0])
    parser.add_argument("out")
    parser.add_argument("--clips-per-class", type=int, default=36)
    args = parser.parse_args(argv)
    clips = write_av_set(args.out, args.clips_per_class)
    print(f"wrote {len(clips)} videos to {args.out}")


if __name__ == "__main__":
    main()
