"""Reading what a visitor uploads, through the project's own readers, with one clear line per bad input.

Every function takes a path that the page's upload route created (never a path the client names) plus the name
the visitor's file had, and raises `PageInputError` whose message names that file and what is wrong with it.
Sizes and durations are checked from the file's header before anything is decoded, so a huge upload is refused
without reading it into memory.
"""

from __future__ import annotations

import os
from pathlib import Path

import soundfile as sf
import torch

from datamodules.audio_io import AudioDecodeError, load_audio
from datamodules.image_io import ImageLoadError, load_image
from datamodules.latent_sources import read_latent_file
from datamodules.loudness import QuietAudioError, check_audible
from datamodules.torch_files import UnsafeFileError

MB = 2**20  # the unit of input_limits.MAX_AUDIO_BYTES (20 MB = 20 * 2**20 bytes)


class PageInputError(ValueError):
    """An upload the page refuses; the message is the one line shown to the visitor."""


def display_name(path: str | os.PathLike) -> str:
    """The visitor's file name (the upload route keeps it as the last path component)."""
    return Path(path).name


def check_size(path: str | os.PathLike, what: str, max_mb: float) -> int:
    """Bytes of an uploaded file; refuses an empty file or one above `max_mb` megabytes."""
    name = display_name(path)
    if Path(path).is_dir():
        raise PageInputError(f"{what} {name}: is a directory, not a file")
    size = os.path.getsize(path)
    if size == 0:
        raise PageInputError(f"{what} {name}: the file is empty (0 bytes)")
    if size > max_mb * MB:
        raise PageInputError(f"{what} {name}: {size / MB:.1f} MB is above the upload limit of {max_mb:g} MB")
    return size


def read_sound(path: str | os.PathLike, sample_rate: int, max_mb: float, max_seconds: float) -> torch.Tensor:
    """Mono float32 waveform at `sample_rate` of an uploaded or recorded sound (wav, flac, ogg, mp3: soundfile
    sniffs the format from the bytes, not the name); refuses empty, undecodable, too long, too short or silent
    files."""
    name = display_name(path)
    check_size(path, "sound", max_mb)
    try:
        info = sf.info(os.fspath(path))
    except (sf.LibsndfileError, RuntimeError, ValueError, TypeError, OSError) as err:
        raise PageInputError(f"sound {name}: not an audio file (wav, flac, ogg or mp3 that soundfile can read)") \
            from err
    if info.frames <= 0 or info.samplerate <= 0:
        raise PageInputError(f"sound {name}: the file holds no audio samples")
    seconds = info.frames / info.samplerate
    if seconds > max_seconds:
        raise PageInputError(f"sound {name}: lasts {seconds:.0f} s, above the limit of {max_seconds:g} s")
    try:
        wave = load_audio(path, sample_rate)
    except AudioDecodeError as err:
        raise PageInputError(f"sound {name}: truncated or corrupt audio "
                             f"({_first_line(err.__cause__ or err, path)})") from err
    try:
        check_audible(wave, sample_rate, f"sound {name}")
    except QuietAudioError as err:
        raise PageInputError(str(err)) from err
    return wave


def read_image(path: str | os.PathLike, resolution: int, max_mb: float, max_megapixels: float) -> torch.Tensor:
    """(3, R, R) in [-1, 1] through the projector's own reader (header-checked pixel limit, minimum size)."""
    check_size(path, "image", max_mb)
    try:
        return load_image(path, resolution, max_pixels=int(max_megapixels * 1e6))
    except ImageLoadError as err:
        raise PageInputError(f"image {_without_path(err, path)}") from err


def read_wplus(path: str | os.PathLike, n_latent: int, style_dim: int, max_mb: float) -> torch.Tensor:
    """(1, n_latent, style_dim) W+ code from an uploaded .pt/.npy file, loaded without running any code in it."""
    name = display_name(path)
    check_size(path, "W+ file", max_mb)
    if not name.lower().endswith((".pt", ".pth", ".npy")):
        raise PageInputError(f"W+ file {name}: expected a .pt, .pth or .npy file")
    try:
        codes = read_latent_file(path)
    except (UnsafeFileError, ValueError, OSError) as err:  # refused pickles, corrupt files, wrong layouts
        raise PageInputError(f"W+ file {_without_path(err, path)}") from err
    if len(codes) != 1:
        raise PageInputError(f"W+ file {name}: holds {len(codes)} codes; upload a file with one")
    code = codes[0][1]
    if code.shape == (style_dim,):
        code = code.expand(n_latent, style_dim)
    if tuple(code.shape) != (n_latent, style_dim):
        raise PageInputError(f"W+ file {name}: code of shape {tuple(code.shape)}, but this generator needs "
                             f"({n_latent}, {style_dim}) or ({style_dim},)")
    if not torch.isfinite(code).all():
        raise PageInputError(f"W+ file {name}: the code holds NaN or infinite values")
    return code[None].contiguous()


def _without_path(err: BaseException, path: str | os.PathLike) -> str:
    """A reader's "<path>: <reason>" message with the server-side path replaced by the visitor's file name."""
    return _first_line(err, path) if os.fspath(path) in str(err) else f"{display_name(path)}: {_first_line(err, path)}"


def _first_line(err: BaseException, path: str | os.PathLike) -> str:
    """The first line of an error's text with the server-side path of the upload removed (the visitor named the
    file; where the server keeps it is none of the page's business)."""
    text = str(err).strip()
    line = text.splitlines()[0] if text else type(err).__name__
    return line.replace(os.fspath(path), display_name(path))
