"""What an animation writes: an H.264 MP4 with the original audio muxed in (PyAV), a contact sheet with a timeline,
and per-frame metrics. Video and audio are written chunk by chunk, both streams starting at t = 0."""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch
import torchaudio.functional as AF
from PIL import Image, ImageDraw, ImageFont

from datamodules.audio_io import open_audio

AAC_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000, 64000, 88200, 96000)


class VideoWriter:
    """An MP4 (H.264 video, AAC audio of the original track) written chunk by chunk; refuses an existing path."""

    def __init__(self, path: str | Path, track: str, fps: float, size: int, crf: int = 20,
                 preset: str = "veryfast") -> None:
        self.path = Path(path)
        if self.path.exists():
            raise FileExistsError(f"{self.path} exists; animations are never overwritten")
        self.track = open_audio(track)  # the original channels and rate, muxed as they are (errors name it)
        self.channels = 1 if self.track.channels == 1 else 2  # more than two channels are downmixed to stereo
        self.out_rate = self.track.samplerate if self.track.samplerate in AAC_RATES else 48000
        self.fps = Fraction(fps).limit_denominator(1001)
        self.container = av.open(str(self.path), "w")
        self.video = self.container.add_stream("libx264", rate=self.fps)
        self.video.width = self.video.height = size
        self.video.pix_fmt = "yuv420p"
        self.video.options = {"crf": str(crf), "preset": preset}
        self.audio = self.container.add_stream("aac", rate=self.out_rate)
        self.audio.layout = "mono" if self.channels == 1 else "stereo"
        self.audio_pts = 0
        self.frames_written = 0

    def _audio_until(self, end_s: float) -> None:
        """Encode the original audio from where the last call stopped up to end_s (s, on the track's clock)."""
        end = self.track.frames if math.isinf(end_s) else min(self.track.frames,
                                                              math.ceil(end_s * self.track.samplerate - 1e-6))
        n = end - self.track.tell()
        if n <= 0:
            return
        data = self.track.read(n, dtype="float32", always_2d=True).T  # (C, n)
        if data.shape[0] > 2:
            data = np.repeat(data.mean(0, keepdims=True), 2, axis=0)
        if self.out_rate != self.track.samplerate:
            data = AF.resample(torch.from_numpy(np.ascontiguousarray(data)), self.track.samplerate,
                               self.out_rate).numpy()
        data = np.ascontiguousarray(data, dtype=np.float32)
        frame = av.AudioFrame.from_ndarray(data, format="fltp", layout=self.audio.layout.name)
        frame.sample_rate, frame.pts = self.out_rate, self.audio_pts
        self.audio_pts += data.shape[1]
        for packet in self.audio.encode(frame):
            self.container.mux(packet)

    def write(self, frames: torch.Tensor) -> None:
        """Append uint8 frames (n, 3, size, size), then the audio they cover."""
        for f in frames.permute(0, 2, 3, 1).contiguous().numpy():
            for packet in self.video.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                self.container.mux(packet)
        self.frames_written += len(frames)
        self._audio_until(float(self.frames_written / self.fps))

    def close(self) -> None:
        self._audio_until(math.inf)
        for stream in (self.video, self.audio):
            for packet in stream.encode(None):
                self.container.mux(packet)
        self.container.close()
        self.track.close()


def contact_sheet(thumbs: list[tuple[float, torch.Tensor]], records: list[dict], duration_s: float,
                  path: str | Path, title: str, cell: int = 128, columns: int = 8) -> Path:
    """Thumbnails (time, uint8 (3, h, w)) in a grid above a timeline of level (dBFS), strength and the cosine to
    the window's embedding over the whole track, with the thumbnails' times marked. Refuses an existing path."""
    path = Path(path)
    if path.exists():
        raise FileExistsError(f"{path} exists; animations are never overwritten")
    rows = math.ceil(len(thumbs) / columns)
    head, plot_h, pad = 22, 140, 30
    width = columns * cell
    canvas = Image.new("RGB", (width, head + rows * (cell + 16) + plot_h + 2 * pad), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=12)
    draw.text((4, 4), title, font=font, fill=(0, 0, 0))
    for i, (t, img) in enumerate(thumbs):
        x, y = (i % columns) * cell, head + (i // columns) * (cell + 16)
        tile = torch.nn.functional.interpolate(img[None].float(), size=(cell, cell), mode="nearest")[0]
        canvas.paste(Image.fromarray(tile.round().byte().permute(1, 2, 0).numpy()), (x, y))
        draw.text((x + 2, y + cell + 1), f"{t:.2f} s", font=font, fill=(0, 0, 0))
    top = head + rows * (cell + 16) + pad
    left, right = 40, width - 10
    x_of = lambda t: left + (right - left) * (t / max(duration_s, 1e-9))
    draw.rectangle((left, top, right, top + plot_h), outline=(0, 0, 0))
    series = [("level dBFS (-80..0)", [(r["level_dbfs"] + 80) / 80 for r in records], (40, 90, 200)),
              ("strength", [r["strength"] / max(1e-9, max(abs(q["strength"]) for q in records) or 1.0)
                            for r in records], (200, 60, 40)),
              ("cos to window", [(r["cos_to_window"] + 1) / 2 for r in records], (40, 150, 60))]
    for k, (name, values, colour) in enumerate(series):
        pts = [(x_of(r["time_s"]), top + plot_h - plot_h * min(1.0, max(0.0, v))) for r, v in zip(records, values)]
        if len(pts) > 1:
            draw.line(pts, fill=colour, width=2)
        draw.text((left + 5 + 150 * k, top + plot_h + 4), name, font=font, fill=colour)
    for t, _ in thumbs:
        draw.line((x_of(t), top, x_of(t), top + plot_h), fill=(180, 180, 180))
    for s in range(0, int(duration_s) + 1, max(1, int(duration_s // 10) or 1)):
        draw.text((x_of(s) - 4, top - 14), f"{s}s", font=font, fill=(0, 0, 0))
    canvas.save(path)
    return path
