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
from PIL import Image, UnidentifiedImageError

from datamodules.audio_io import AudioDecodeError, load_audio
from datamodules.image_io import ImageLoadError, load_image
from lightning_modules.latent_sources import read_latent_file

try:  # issue 14's shared definition of silence; until it is merged, the manipulation module's level and floor
    from datamodules.loudness import QuietAudioError, check_audible
except ImportError:  # pragma: no cover - removed once datamodules/loudness.py is on main
    from lightning_modules.manipulation import loudness_db

    class QuietAudioError(ValueError):
        """A clip too quiet or too short to guide an edit."""

    def check_audible(wave: torch.Tensor, sample_rate: int, name: str, floor_dbfs: float = -60.0,
                      min_seconds: float = 0.25) -> float:
        seconds = wave.shape[-1] / sample_rate
        if seconds < min_seconds:
            raise QuietAudioError(f"{name}: lasts {seconds:.3g} s, shorter than the minimum of {min_seconds:g} s")
        level = loudness_db(wave)
        if level < floor_dbfs:
            raise QuietAudioError(f"{name}: RMS level {level:.1f} dBFS is below the silence floor of "
                                  f"{floor_dbfs:g} dBFS")
        return level


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
    if size > max_mb * 1e6:
        raise PageInputError(f"{what} {name}: {size / 1e6:.1f} MB is above the upload limit of {max_mb:g} MB")
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


def check_image(path: str | os.PathLike, max_mb: float, max_megapixels: float) -> tuple[int, int]:
    """(width, height) of an uploaded painting, read from its header; refuses non-images and huge images."""
    name = display_name(path)
    check_size(path, "image", max_mb)
    try:
        with Image.open(path) as img:
            size = img.size
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise PageInputError(f"image {name}: not an image file that can be read (PNG, JPEG, WebP, ...)") from err
    except Image.DecompressionBombError as err:
        raise PageInputError(f"image {name}: far above the limit of {max_megapixels:g} megapixels") from err
    if size[0] * size[1] > max_megapixels * 1e6:
        raise PageInputError(f"image {name}: {size[0]}x{size[1]} px = {size[0] * size[1] / 1e6:.1f} megapixels, "
                             f"above the limit of {max_megapixels:g}")
    return size


def read_image(path: str | os.PathLike, resolution: int, max_mb: float, max_megapixels: float) -> torch.Tensor:
    """(3, R, R) in [-1, 1]: `check_image`, then the projector's own reader."""
    check_image(path, max_mb, max_megapixels)
    try:
        return load_image(path, resolution)
    except ImageLoadError as err:
        raise PageInputError(f"image {display_name(path)}: {str(err).split(': ', 1)[-1]}") from err


def read_wplus(path: str | os.PathLike, n_latent: int, style_dim: int, max_mb: float) -> torch.Tensor:
    """(1, n_latent, style_dim) W+ code from an uploaded .pt/.npy file, loaded without running any code in it."""
    name = display_name(path)
    check_size(path, "W+ file", max_mb)
    if not name.lower().endswith((".pt", ".pth", ".npy")):
        raise PageInputError(f"W+ file {name}: expected a .pt, .pth or .npy file")
    try:
        codes = read_latent_file(path)
    except Exception as err:  # torch.load(weights_only=True) raises UnpicklingError and friends
        text = str(err)
        if "weights_only" in text or "Unsupported global" in text or "GLOBAL" in text:
            raise PageInputError(f"W+ file {name}: refused, it holds Python objects that would run code when "
                                 f"loaded (only tensors are accepted)") from err
        raise PageInputError(f"W+ file {name}: not a W/W+ code file ({_first_line(err, path)})") \
            from err
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


def _first_line(err: BaseException, path: str | os.PathLike) -> str:
    """The first line of an error's text with the server-side path of the upload removed (the visitor named the
    file; where the server keeps it is none of the page's business)."""
    text = str(err).strip()
    line = text.splitlines()[0] if text else type(err).__name__
    return line.replace(f"{os.fspath(path)}: ", "").replace(os.fspath(path), display_name(path))
