"""Hand-written attribute detectors: plain image statistics that judge edits independently of the toy CLIP.

Each detector maps images (N, 3, H, W) in [0, 1] to a score (N,); higher = more of the attribute. They
know nothing learned, so an edit that fools the toy CLIP with invisible changes does not fool them.

    fire crackling  warm-colour mass (red over blue, times brightness) in the lower half
    rain            thin bright structures that continue vertically (slanted streaks) over the whole image,
                    plus the share of the grey-blue wash (desaturated, not dark, grey or blue-grey pixels)
    wind            thin bright horizontal-ish curves (swirl and gust strokes) in the upper half, minus upright
                    lines (rain, lightning)
    explosion       a large bright warm blob brighter than its surround (centre-surround contrast)
    thunderstorm    overall darkness times the brightness of the thinnest (1 px) bright lines (lightning)
    folk music      share of muted earthy (brown/ochre) pixels minus share of cool-hued (green/blue/violet) ones
    latin music     saturation x brightness of violet/magenta/turquoise pixels (vivid non-fire hues)

Thresholds (`THRESHOLDS`) were calibrated once on procedural paintings with seeds in CALIBRATION_SEEDS
(the threshold maximising balanced accuracy, rounded); `validate()` reports accuracy on other seeds.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from experiments.toyworld.paintings import ATTRIBUTES, render_dataset

CALIBRATION_SEEDS = range(500_000, 501_600)


def rgb_to_hsv(img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Hue in degrees [0, 360), saturation and value in [0, 1], each (N, H, W)."""
    r, g, b = img.unbind(1)
    v, _ = img.max(1)
    c = v - img.min(1)[0]
    s = c / v.clamp_min(1e-6)
    safe = c.clamp_min(1e-6)
    h = torch.where(v == r, ((g - b) / safe) % 6, torch.where(v == g, (b - r) / safe + 2, (r - g) / safe + 4))
    return (h * 60.0) % 360.0, s, v


def _band(x: torch.Tensor, lo: float, hi: float, soft: float) -> torch.Tensor:
    """Soft membership of x in [lo, hi] with linear ramps of width `soft`."""
    return ((x - lo) / soft + 0.5).clamp(0, 1) * ((hi - x) / soft + 0.5).clamp(0, 1)


def _luma(img: torch.Tensor) -> torch.Tensor:
    return 0.299 * img[:, 0] + 0.587 * img[:, 1] + 0.114 * img[:, 2]


def _ridge(lum: torch.Tensor, axis: int, d: int = 2) -> torch.Tensor:
    """How much each pixel is brighter than both neighbours at distance d along `axis` (thin bright lines)."""
    a, b = torch.roll(lum, d, axis), torch.roll(lum, -d, axis)
    return (lum - torch.maximum(a, b)).clamp_min(0)


def fire(img: torch.Tensor) -> torch.Tensor:
    r, g, b = img.unbind(1)
    # Warmth (red well above blue, green below red) times brightness: flames and glow, graded rather than
    # thresholded so that dim or muted flames still count a little.
    warm = (r - b - 0.3).clamp_min(0) * (img.amax(1) - 0.3).clamp_min(0) * (g < r).float()
    return warm[:, img.shape[2] // 2:].mean((1, 2)) * 10


def rain(img: torch.Tensor) -> torch.Tensor:
    line = _ridge(_luma(img), axis=2, d=1)  # brighter than the pixels left and right of it
    # A streak continues in the rows above and below (within one pixel sideways).
    up = F.max_pool2d(torch.roll(line, 1, 1)[:, None], (1, 3), 1, (0, 1))[:, 0]
    down = F.max_pool2d(torch.roll(line, -1, 1)[:, None], (1, 3), 1, (0, 1))[:, 0]
    streaks = torch.minimum(line, torch.minimum(up, down))[:, 1:-1].mean((1, 2)) * 100
    # The grey-blue wash: desaturated, not dark, grey or blue-grey pixels.
    h, s, v = rgb_to_hsv(img)
    greyish = (_band(h, 180, 260, 30) + _band(s, -1.0, 0.12, 0.05)).clamp(max=1)
    wash = (_band(s, -1.0, 0.3, 0.1) * _band(v, 0.3, 1.5, 0.15) * greyish).mean((1, 2))
    return streaks + 2 * wash


def wind(img: torch.Tensor) -> torch.Tensor:
    lum = _luma(img)
    across = _ridge(lum, axis=1, d=1) + _ridge(lum, axis=1, d=2)  # brighter than the rows above and below
    upright = _ridge(lum, axis=2, d=1) + _ridge(lum, axis=2, d=2)  # brighter than left/right: rain, lightning
    return (across - upright).clamp_min(0)[:, 1: img.shape[2] // 2].mean((1, 2)) * 100


def explosion(img: torch.Tensor) -> torch.Tensor:
    h, s, v = rgb_to_hsv(img)
    warm_bright = v * (_band(h, 0, 65, 10) + _band(h, 350, 370, 10)) * (0.3 + 0.7 * s)
    warm_bright = warm_bright + v * (1 - s) * _band(v, 0.85, 1.5, 0.1)  # the white-hot core
    x = warm_bright[:, None]
    centre = F.avg_pool2d(x, 7, 1, 3, count_include_pad=False)
    surround = F.avg_pool2d(x, 15, 1, 7, count_include_pad=False)
    return (centre - 0.5 * surround).amax((1, 2, 3))


def thunderstorm(img: torch.Tensor) -> torch.Tensor:
    lum = _luma(img)
    # Brighter than both neighbours one pixel away: lightning (about a pixel wide); a moon disc is not.
    line = torch.maximum(_ridge(lum, axis=2, d=1), _ridge(lum, axis=1, d=1))
    brightest_lines = line.flatten(1).topk(12, dim=1).values.mean(1)
    return (1 - lum.mean((1, 2))) ** 2 * brightest_lines * 10


def folk_music(img: torch.Tensor) -> torch.Tensor:
    h, s, v = rgb_to_hsv(img)
    earthy = _band(h, 10, 60, 10) * _band(s, 0.15, 0.7, 0.1)
    cool = _band(h, 70, 330, 10) * (s > 0.15)
    return (earthy - cool).mean((1, 2))


def latin_music(img: torch.Tensor) -> torch.Tensor:
    h, s, v = rgb_to_hsv(img)
    vivid_hue = _band(h, 265, 345, 15) + _band(h, 160, 195, 15)
    return (vivid_hue * s * v).mean((1, 2)) * 10


DETECTORS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "fire crackling": fire, "rain": rain, "wind": wind, "explosion": explosion,
    "thunderstorm": thunderstorm, "folk music": folk_music, "latin music": latin_music,
}
THRESHOLDS: dict[str, float] = {
    "fire crackling": 0.08, "rain": 0.9, "wind": 1.25, "explosion": 0.57,
    "thunderstorm": 1.03, "folk music": 0.1, "latin music": 0.36,
}


@torch.no_grad()
def detector_scores(images: torch.Tensor) -> torch.Tensor:
    """All detector scores (N, 7) in ATTRIBUTES order for images in [-1, 1] (generator output range)."""
    x = ((images.float() + 1) / 2).clamp(0, 1)
    return torch.stack([DETECTORS[a](x) for a in ATTRIBUTES], dim=1)


def _auroc(pos: np.ndarray, neg: np.ndarray) -> float:
    """Probability that a positive outscores a negative (ties count half)."""
    diff = pos[:, None] - neg[None, :]
    return float((diff > 0).mean() + 0.5 * (diff == 0).mean())


def validate(seeds, size: int = 32) -> dict[str, dict[str, float]]:
    """Per detector on procedural paintings: AUROC and balanced accuracy at THRESHOLDS, attribute vs. the rest."""
    images, scenes = render_dataset(seeds, size)
    scores = detector_scores(torch.from_numpy(images).float() / 127.5 - 1).numpy()
    labels = np.array([sc.label for sc in scenes])
    out = {}
    for k, a in enumerate(ATTRIBUTES):
        pos, neg = scores[labels == k, k], scores[labels != k, k]
        thr = THRESHOLDS[a]
        out[a] = {"auroc": _auroc(pos, neg), "balanced_accuracy": 0.5 * ((pos > thr).mean() + (neg <= thr).mean()),
                  "n_pos": int(len(pos))}
    return out
