"""Reading audio files into mono float32 waveforms, and cropping or padding them to a fixed length.

Decoding uses soundfile (libsndfile: WAV, FLAC, OGG/Vorbis, ...); the container format is sniffed from the
file's header, not its extension. Stereo is averaged to mono; a file at another rate is resampled with
torchaudio's band-limited sinc resampler. Any failure raises `AudioDecodeError` naming the file, so that
a dataset can replace the clip and count it instead of crashing a long run.
"""

from __future__ import annotations

import os
from typing import Literal

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

from datamodules.input_limits import file_problem

# First bytes of the containers soundfile reads: a file starting with one is audio, even when it cannot be opened.
AUDIO_MAGIC = {b"RIFF": "WAV", b"RF64": "WAV", b"fLaC": "FLAC", b"OggS": "OGG", b"FORM": "AIFF", b"ID3\x03": "MP3",
               b"ID3\x04": "MP3"}


class AudioDecodeError(RuntimeError):
    """A file that cannot be read as audio (corrupt, empty, unsupported, or containing NaN/inf samples)."""


def load_audio(path: str | os.PathLike, sample_rate: int, resample_kwargs: dict | None = None) -> torch.Tensor:
    """Decode `path` to a mono float32 waveform of shape (T,) at `sample_rate` Hz.

    `resample_kwargs` go to `torchaudio.functional.resample` (filter choice; its defaults otherwise).
    """
    with open_audio(path) as f:
        file_rate = f.samplerate
        try:
            data = f.read(dtype="float32", always_2d=True)
        except (sf.LibsndfileError, RuntimeError, ValueError, TypeError, OSError) as err:
            raise AudioDecodeError(f"{path}: truncated or corrupt audio ({err})") from err
    if data.shape[0] == 0:
        raise AudioDecodeError(f"{path}: the file holds no samples")
    if not np.isfinite(data).all():
        raise AudioDecodeError(f"{path}: the file holds NaN or infinite samples")
    # (T, C) -> (T,): average the channels (the usual downmix; ffmpeg -ac 1 does the same).
    wave = torch.from_numpy(data.mean(axis=1) if data.shape[1] > 1 else data[:, 0])
    if file_rate != sample_rate:
        wave = AF.resample(wave, int(file_rate), int(sample_rate), **(resample_kwargs or {}))
    return wave.contiguous()


def open_audio(path: str | os.PathLike) -> sf.SoundFile:
    """Open `path` for reading (header only); AudioDecodeError names the file and says "is a directory",
    "no such file", "empty file (0 bytes)" or "not an audio file" (a header no decoder recognises)."""
    problem = file_problem(path)
    if problem is not None:
        raise AudioDecodeError(f"{path}: {problem}")
    try:
        return sf.SoundFile(os.fspath(path))
    except (sf.LibsndfileError, RuntimeError, ValueError, TypeError, OSError) as err:
        with open(path, "rb") as f:
            magic = f.read(4)
        if magic in AUDIO_MAGIC:  # an audio container whose header is damaged
            raise AudioDecodeError(f"{path}: truncated or corrupt audio ({AUDIO_MAGIC[magic]} header: {err})") from err
        raise AudioDecodeError(f"{path}: not an audio file (no decoder recognises its header; readable formats: "
                               f"WAV, FLAC, OGG, MP3, AIFF)") from err


def audio_duration(path: str | os.PathLike) -> float:
    """Duration in seconds from the file's header (nothing decoded); raises AudioDecodeError like `open_audio`."""
    with open_audio(path) as f:
        return f.frames / f.samplerate


def crop_or_pad(
    wave: torch.Tensor,
    length: int,
    mode: Literal["random", "center"] = "random",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Cut or zero-pad the last dimension of `wave` to exactly `length` samples.

    "random" picks the crop start (or, for a short clip, the position of the clip inside the zero
    padding) uniformly with `generator`; "center" centres it. Training uses random, evaluation center.
    """
    return place(wave, length, crop_offset(wave.shape[-1], length, mode, generator))


def crop_offset(n: int, length: int, mode: Literal["random", "center"] = "random",
                generator: torch.Generator | None = None) -> int:
    """Where `crop_or_pad` cuts a clip of `n` samples to `length`: the crop start when n >= length, else the clip's
    position inside the zero padding (the same draw from `generator` as crop_or_pad makes)."""
    if length <= 0:
        raise ValueError(f"crop_or_pad: length must be positive, got {length}")
    if mode not in ("random", "center"):
        raise ValueError(f"crop_or_pad: mode must be 'random' or 'center', got {mode!r}")
    slack = abs(n - length)
    if mode == "center":
        return slack // 2
    return int(torch.randint(0, slack + 1, (1,), generator=generator).item()) if slack else 0


def place(wave: torch.Tensor, length: int, offset: int) -> torch.Tensor:
    """`length` samples of `wave` from `offset` (n >= length), or `wave` zero-padded with `offset` zeros before it."""
    n = wave.shape[-1]
    if n >= length:
        return wave[..., offset : offset + length]
    out = wave.new_zeros(*wave.shape[:-1], length)
    out[..., offset : offset + n] = wave
    return out
