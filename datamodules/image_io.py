"""Reading user images (paintings, photos of paintings) as generator-sized tensors.

Any size, aspect ratio and PIL mode is accepted: the image is turned upright (EXIF orientation),
converted to RGB (transparency composited onto white, 16-bit greyscale scaled to 8 bit), centre-cropped
to a square on its shorter side, and resized to the generator resolution with Lanczos filtering
(antialiased when shrinking). Tensors are (3, H, W) float32 in [-1, 1], the generator's output range.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

# Shorter sides below this are refused: upsampling a few pixels to a generator resolution makes
# a blur the projector would then faithfully reproduce.
DEFAULT_MIN_SIDE = 32


class ImageLoadError(ValueError):
    """An image file that cannot be used, with the file named in the message."""


def load_image(path: str | Path, resolution: int, min_side: int = DEFAULT_MIN_SIDE) -> torch.Tensor:
    """Read an image file as a (3, resolution, resolution) tensor in [-1, 1].

    Raises ImageLoadError naming the file when it is missing, not an image, or smaller than
    `min_side` on its shorter side; warns when it has to be upsampled to `resolution`.
    """
    path = Path(path)
    try:
        with Image.open(path) as img:
            img.load()
            img = ImageOps.exif_transpose(img)
    except FileNotFoundError as err:
        raise ImageLoadError(f"{path}: no such file") from err
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise ImageLoadError(f"{path}: not a readable image ({err})") from err
    side = min(img.size)
    if side < min_side:
        raise ImageLoadError(
            f"{path}: image is {img.size[0]}x{img.size[1]} px, smaller than the minimum of {min_side} px "
            f"on its shorter side; use a larger scan, or lower min_side if this is intended."
        )
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
