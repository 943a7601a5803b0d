"""Reading user images (paintings, photos of paintings) as generator-sized tensors.

Any size, aspect ratio and PIL mode is accepted: the image is turned upright (EXIF orientation),
converted to RGB (transparency composited onto white, 16-bit greyscale scaled to 8 bit), centre-cropped
to a square on its shorter side, and resized to the generator resolution with Lanczos filtering
(antialiased when shrinking); images past `input_limits.MAX_IMAGE_PIXELS` are refused. Tensors are (3, H, W)
float32 in [-1, 1], the generator's output range.
"""

from __future__ import annotations

import math
import re
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from datamodules.input_limits import MAX_IMAGE_PIXELS, file_problem

# Shorter sides below this are refused: upsampling a few pixels to a generator resolution makes
# a blur the projector would then faithfully reproduce.
DEFAULT_MIN_SIDE = 32
VECTOR_SUFFIXES = (".svg", ".svgz", ".eps", ".pdf", ".ai")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif")


def is_image_spec(spec: object) -> bool:
    """Whether an edit-source spec names an image file (to be projected) rather than a seed or a W+ file."""
    return isinstance(spec, str) and spec.lower().endswith(IMAGE_SUFFIXES)


class ImageLoadError(ValueError):
    """An image file that cannot be used, with the file named in the message."""


def open_image(path: str | Path, max_pixels: int = MAX_IMAGE_PIXELS) -> Image.Image:
    """Open an image file lazily (header only: nothing decoded yet), refusing it with the file named when it is a
    directory, missing, not an image Pillow reads (e.g. an SVG, a vector format), or larger than `max_pixels`."""
    path = Path(path)
    problem = file_problem(path)
    if problem is not None:
        raise ImageLoadError(f"{path}: {problem}")
    try:
        with warnings.catch_warnings():  # Pillow's bomb warning (> 89 MP): the limit below is the one that applies
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(path)
    except Image.DecompressionBombError as err:
        pixels = re.search(r"\((\d+) pixels\)", str(err))
        raise ImageLoadError(_too_large(path, int(pixels.group(1)) if pixels else None, None, max_pixels)) from err
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        hint = (" (.svg is a vector format: export it as PNG or JPEG first)" if path.suffix.lower() in VECTOR_SUFFIXES
                else "")
        raise ImageLoadError(f"{path}: not an image file (Pillow cannot read it){hint}") from err
    w, h = img.size
    if w * h > max_pixels:
        img.close()
        raise ImageLoadError(_too_large(path, w * h, (w, h), max_pixels))
    return img


def _too_large(path: Path, pixels: int | None, size: tuple[int, int] | None, max_pixels: int) -> str:
    dims = f"{size[0]}x{size[1]} = " if size else ""
    count = f"{dims}{pixels / 1e6:.4g} megapixels" if pixels else "an image past Pillow's decompression-bomb guard"
    return (f"{path}: {count}, more than the limit of {max_pixels / 1e6:g} megapixels (max_pixels); "
            f"downscale it first")


def load_image(path: str | Path, resolution: int, min_side: int = DEFAULT_MIN_SIDE,
               max_pixels: int = MAX_IMAGE_PIXELS) -> torch.Tensor:
    """Read an image file as a (3, resolution, resolution) tensor in [-1, 1].

    Raises ImageLoadError naming the file when it is missing, not an image, truncated, larger than `max_pixels`
    or smaller than `min_side` on its shorter side; warns when it has to be upsampled to `resolution` and when an
    animated image's first frame is used. JPEGs are decoded at the smallest DCT scale (1/2, 1/4, 1/8) that still
    covers the generator resolution, so a large photo never occupies full-size memory.
    """
    path = Path(path)
    with open_image(path, max_pixels) as img:
        side = min(img.size)
        if side < min_side:
            raise ImageLoadError(
                f"{path}: image is {img.size[0]}x{img.size[1]} px, smaller than the minimum of {min_side} px "
                f"on its shorter side; use a larger scan, or lower min_side if this is intended."
            )
        frames = getattr(img, "n_frames", 1)
        if frames > 1:
            warnings.warn(f"{path}: animated image with {frames} frames; using the first frame", stacklevel=2)
        if img.format == "JPEG" and side > resolution:
            scale = resolution / side  # draft keeps the decoded size >= the requested one
            img.draft(None, (math.ceil(img.size[0] * scale), math.ceil(img.size[1] * scale)))
        try:
            img.load()
            img = ImageOps.exif_transpose(img)
        except (OSError, SyntaxError, ValueError) as err:
            raise ImageLoadError(f"{path}: truncated or corrupt image ({err})") from err
    if side < resolution:
        warnings.warn(
            f"{path}: shorter side {side} px is below the generator resolution {resolution} px; "
            f"the image is upsampled and the projection will reproduce the blur.",
            stacklevel=2,
        )
    return pil_to_tensor(center_crop_resize(to_rgb(img), resolution))


def to_rgb(img: Image.Image) -> Image.Image:
    """RGB version of any PIL image: alpha composited onto white, 16/32-bit greyscale scaled to 8 bit."""
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        img = Image.fromarray(np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8))
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    return img.convert("RGB")


def center_crop_resize(img: Image.Image, resolution: int) -> Image.Image:
    """Largest centred square, resized to resolution x resolution (Lanczos)."""
    w, h = img.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    img = img.crop((left, top, left + side, top + side))
    if side != resolution:
        img = img.resize((resolution, resolution), Image.Resampling.LANCZOS)
    return img


def pil_to_tensor(img: Image.Image) -> torch.Tensor:
    """uint8 RGB PIL image -> (3, H, W) float32 in [-1, 1]."""
    arr = np.asarray(img, dtype=np.float32)
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous() / 127.5 - 1.0
