"""What an edit job leaves on disk: a fresh run directory, PNGs, the captioned grid, GIFs of the optimisation.

Images arrive as generator output in [-1, 1]; everything written or logged is uint8 (W&B versions disagree on
float images: older ones min-max stretch them, 0.31 casts them to uint8 unscaled; uint8 means the same to all).
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont


def new_run_dir(root: str | Path, name: str) -> Path:
    """Create and return ``root/name-YYYYmmdd-HHMMSS`` (suffixed -2, -3, ... if taken); never reuses a directory."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    stem = f"{slug(name)}-{time.strftime('%Y%m%d-%H%M%S')}"
    for n in range(1, 10_000):
        path = root / (stem if n == 1 else f"{stem}-{n}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise RuntimeError(f"could not create a new run directory under {root}")


def unused_path(path: str | Path) -> Path:
    """``path`` if free, else the first free ``stem-2.ext``, ``stem-3.ext``, ... so nothing existing is overwritten."""
    path = Path(path)
    candidate, n = path, 2
    while candidate.exists():
        candidate = path.with_name(f"{path.stem}-{n}{path.suffix}")
        n += 1
    return candidate


def slug(text: str) -> str:
    """A file-name-safe version of a label: 'Latin music' -> 'latin-music'."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "x"


def unique_names(names: Sequence[str]) -> list[str]:
    """`names` with repeats numbered ('fire', 'fire (2)'), so that no two give the same `slug` (file name)."""
    out: list[str] = []
    taken: set[str] = set()
    for name in names:
        candidate, n = name, 2
        while slug(candidate) in taken:
            candidate, n = f"{name} ({n})", n + 1
        taken.add(slug(candidate))
        out.append(candidate)
    return out


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) images in [-1, 1] -> uint8 (N, 3, H, W) on the CPU."""
    x = (images.detach().float().clamp(-1, 1) + 1) * 127.5
    return x.round().to(torch.uint8).cpu()


def resize_uint8(images: torch.Tensor, size: int) -> torch.Tensor:
    """Square-resize uint8 (N, 3, H, W): antialiased when shrinking, nearest when enlarging (keeps pixels crisp)."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    x = images.float()
    if size < max(images.shape[-2:]):
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    else:
        x = F.interpolate(x, size=(size, size), mode="nearest")
    return x.round().clamp(0, 255).to(torch.uint8)


def save_png(image: torch.Tensor, path: str | Path) -> Path:
    """Write one uint8 (3, H, W) image; refuses to overwrite."""
    path = Path(path)
    if path.exists():
        raise FileExistsError(f"{path} exists; edit outputs are never overwritten")
    Image.fromarray(image.permute(1, 2, 0).numpy()).save(path)
    return path


def save_gif(frames: Sequence[torch.Tensor], path: str | Path, frame_ms: int = 120) -> Path:
    """Write uint8 (3, H, W) frames as a looping GIF; the last frame is held for a second."""
    path = Path(path)
    if path.exists():
        raise FileExistsError(f"{path} exists; edit outputs are never overwritten")
    pics = [Image.fromarray(f.permute(1, 2, 0).numpy()) for f in frames]
    durations = [frame_ms] * (len(pics) - 1) + [1000]
    pics[0].save(path, save_all=True, append_images=pics[1:], duration=durations, loop=0)
    return path


def caption_height(cell: int) -> int:
    return max(16, cell // 8)


def make_grid(cells: Sequence[Sequence[torch.Tensor | None]], column_titles: Sequence[str],
              row_titles: Sequence[str], cell: int) -> np.ndarray:
    """A captioned grid (H, W, 3) uint8 from rows of uint8 (3, h, w) images (None = empty cell).

    Layout: one caption band of ``caption_height(cell)`` px on top with a title per column, then one row per source
    of ``cell`` px squares; each row's title sits in a dark box at the top-left of its first cell.
    Size: (caption_height(cell) + rows * cell, columns * cell).
    """
    rows, cols = len(cells), len(column_titles)
    cap = caption_height(cell)
    canvas = Image.new("RGB", (cols * cell, cap + rows * cell), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=max(10, int(cap * 0.7)))
    for c, title in enumerate(column_titles):
        _draw_text_fit(draw, title, (c * cell, 0, cell, cap), font, fill=(0, 0, 0))
    for r, row in enumerate(cells):
        if len(row) != cols:
            raise ValueError(f"grid row {r} has {len(row)} cells for {cols} columns")
        for c, img in enumerate(row):
            if img is None:
                continue
            tile = Image.fromarray(resize_uint8(img[None], cell)[0].permute(1, 2, 0).numpy())
            canvas.paste(tile, (c * cell, cap + r * cell))
        if row_titles[r]:
            box = draw.textbbox((0, 0), row_titles[r], font=font)
            x0, y0 = 2, cap + r * cell + 2
            draw.rectangle((x0, y0, x0 + box[2] + 4, y0 + box[3] + 4), fill=(0, 0, 0))
            draw.text((x0 + 2, y0 + 1), row_titles[r], font=font, fill=(255, 255, 255))
    return np.array(canvas)


def _draw_text_fit(draw: ImageDraw.ImageDraw, text: str, box: tuple[int, int, int, int], font, fill) -> None:
    """Centre ``text`` in box (x, y, w, h), shortening it with an ellipsis when it does not fit."""
    x, y, w, h = box
    shown = text
    while shown and draw.textlength(shown, font=font) > w - 4:
        shown = shown[:-2] + "…" if len(shown) > 2 else ""
    tw = draw.textlength(shown, font=font)
    bbox = draw.textbbox((0, 0), shown or " ", font=font)
    draw.text((x + (w - tw) / 2, y + (h - (bbox[3] - bbox[1])) / 2 - bbox[1]), shown, font=font, fill=fill)
