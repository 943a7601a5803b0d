"""Edit metrics beyond the optimised CLIP cosine: how much of the source an edit preserves, and per-sound summaries.

Preservation is LPIPS (Zhang et al. 2018) between source and edit when LPIPS' ImageNet backbone is available
(lower = closer), otherwise the cosine similarity of CLIP image embeddings of source and edit (higher = closer),
named `clip_image_similarity` in every output, with the reason LPIPS is missing: never silently one for the
other. LPIPS is computed at most at 256 px (larger images are area-downsampled first), as the projector does.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from lightning_modules.clip_wrapper import CLIPWrapper
from lightning_modules.lpips_distance import lpips_or_none

LPIPS_MAX_RESOLUTION = 256


@dataclass
class Preservation:
    """Scores (B,) how close edits stay to their sources; `metric` names what the numbers are."""

    metric: str  # "lpips_<net>" (lower = closer) or "clip_image_similarity" (higher = closer)
    score: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    note: str | None = None  # why the fallback is used

    @property
    def higher_is_closer(self) -> bool:
        return self.metric == "clip_image_similarity"

    def describe(self) -> dict:
        return {"metric": self.metric, "higher_is_closer": self.higher_is_closer, "note": self.note}

    @torch.no_grad()
    def __call__(self, source: torch.Tensor, edited: torch.Tensor) -> torch.Tensor:
        """Per-pair scores of images (B, 3, H, W) in [-1, 1]."""
        return self.score(source.float(), edited.float()).flatten().cpu()


def _area_resize(images: torch.Tensor, max_size: int) -> torch.Tensor:
    return images if images.shape[-1] <= max_size else F.interpolate(images, size=(max_size, max_size), mode="area")


def clip_image_similarity(clip_model: CLIPWrapper) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Cosine between CLIP image embeddings of source and edit."""
    return lambda a, b: (clip_model.encode_image(a) * clip_model.encode_image(b)).sum(-1)


def make_preservation(kind: str, clip_model: CLIPWrapper, lpips_net: str = "vgg", lpips_download: bool = True,
                      device: torch.device | str = "cpu") -> Preservation:
    """`kind` "lpips" (falling back to CLIP image similarity, with the reason, when LPIPS is unavailable) or
    "clip_image_similarity"."""
    if kind not in ("lpips", "clip_image_similarity"):
        raise ValueError(f"preservation must be 'lpips' or 'clip_image_similarity', got {kind!r}")
    if kind == "lpips":
        lpips, reason = lpips_or_none(lpips_net, device, lpips_download)
        if lpips is not None:
            return Preservation(f"lpips_{lpips_net}", lambda a, b: lpips(_area_resize(a, LPIPS_MAX_RESOLUTION),
                                                                       _area_resize(b, LPIPS_MAX_RESOLUTION)))
        return Preservation("clip_image_similarity", clip_image_similarity(clip_model),
                            f"{reason}; preservation is the CLIP image-image cosine instead")
    return Preservation("clip_image_similarity", clip_image_similarity(clip_model), "chosen in the config")


def _mean(values: Sequence[float]) -> float | None:
    values = [v for v in values if v is not None and not math.isnan(v)]
    return sum(values) / len(values) if values else None


def per_sound_summary(pairs: list[dict], columns: Sequence[str]) -> list[dict]:
    """One row per sound (in first-seen order): the number of pairs and the mean of each column present."""
    rows = []
    for sound in dict.fromkeys(p["sound"] for p in pairs):
        mine = [p for p in pairs if p["sound"] == sound]
        row: dict = {"sound": sound, "pairs": len(mine)}
        for col in columns:
            if any(col in p for p in mine):
                row[col] = _mean([p.get(col) for p in mine])
        rows.append(row)
    return rows


def format_table(rows: list[dict], columns: Sequence[str]) -> str:
    """Plain-text table of `per_sound_summary` rows (missing values as '-')."""
    columns = [c for c in columns if any(c in r for r in rows)]
    width = max([len("sound")] + [len(r["sound"]) for r in rows])
    head = f"{'sound':<{width}} {'pairs':>5}" + "".join(f" {c:>{max(len(c), 8)}}" for c in columns)
    lines = [head]
    for r in rows:
        cells = "".join(f" {r[c]:>{max(len(c), 8)}.4f}" if r.get(c) is not None else f" {'-':>{max(len(c), 8)}}"
                        for c in columns)
        lines.append(f"{r['sound']:<{width}} {r['pairs']:>5}{cells}")
    return "\n".join(lines)
