"""Extracted video frames on disk: one JPEG strip per clip, `frames/{clip id}.jpg`, K frames stacked vertically.

One file per clip keeps writes atomic (temporary name, then rename) and a VGGSound-sized folder at 200 k
files instead of 200 k x K. Frame sides are multiples of 16 in practice (224 for CLIP ViT-B/32), so JPEG's
8/16-px blocks never straddle two frames. `frames/frames.json` records K and the frame size, so that a resumed
run cannot mix strips of different shapes.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from PIL import Image

FRAMES_DIR = "frames"
MANIFEST = "frames.json"
JPEG_QUALITY = 95


class FrameFileError(ValueError):
    """A frame strip or manifest that does not hold what it should, with the file named."""


def strip_path(frames_dir: str | os.PathLike, key: str) -> Path:
    return Path(frames_dir) / f"{key}.jpg"


def write_strip(path: str | os.PathLike, frames: np.ndarray) -> None:
    """Write uint8 (K, S, S, 3) frames as one vertical JPEG strip, atomically (partial file, then rename)."""
    path = Path(path)
    k, h, w, _ = frames.shape
    partial = path.with_name(f".{path.stem}.partial.jpg")
    try:
        Image.fromarray(np.ascontiguousarray(frames.reshape(k * h, w, 3))).save(
            partial, format="JPEG", quality=JPEG_QUALITY)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def read_strip(path: str | os.PathLike, k: int) -> np.ndarray:
    """uint8 (K, S, S, 3) frames of a strip written by `write_strip`."""
    try:
        with Image.open(path) as img:
            arr = np.asarray(img.convert("RGB"), dtype=np.uint8)
    except OSError as err:
        raise FrameFileError(f"{path}: not a readable frame strip ({err})") from err
    h, w, _ = arr.shape
    if h != k * w:
        raise FrameFileError(f"{path}: a strip of {k} square frames should be {w}x{k * w} px, found {w}x{h}")
    return arr.reshape(k, w, w, 3)


def check_manifest(frames_dir: str | os.PathLike, k: int, size: int) -> None:
    """Write `frames.json` for a new folder; refuse a folder whose strips have another K or size."""
    path = Path(frames_dir) / MANIFEST
    wanted = {"frames": int(k), "size": int(size)}
    if path.exists():
        found = read_manifest(frames_dir)
        if found != wanted:
            raise FrameFileError(
                f"{path}: the strips here hold {found['frames']} frames of {found['size']} px, this run asks for "
                f"{k} of {size} px; use another destination or delete {Path(frames_dir)} first")
        return
    Path(frames_dir).mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(wanted) + "\n", encoding="utf-8")


def read_manifest(frames_dir: str | os.PathLike) -> dict[str, int]:
    path = Path(frames_dir) / MANIFEST
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return {"frames": int(data["frames"]), "size": int(data["size"])}
    except FileNotFoundError as err:
        raise FrameFileError(f"{path}: no frame manifest (run prepare_vggsound --frames K first)") from err
    except (ValueError, KeyError, TypeError) as err:
        raise FrameFileError(f"{path}: not a frame manifest ({err})") from err
