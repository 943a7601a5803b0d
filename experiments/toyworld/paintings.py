"""Procedural paintings with captions: the data of the toy world, deterministic by seed.

A painting is a landscape (sky with a time-of-day gradient, horizon, ground, optional water, sun or
moon, trees) painted with brush-stroke texture, either neutral or carrying one of the seven paper
sounds' visual attributes at a strength in [0.35, 1]:

    fire crackling  flames rising from the ground, orange glow in the lower half, smoky red sky
    rain            grey-blue desaturation, thin slanted light streaks
    wind            bent trees, swirling light strokes in the sky, stroke texture following the swirls
    explosion       radial burst: white-yellow core, orange rays, dark smoke ring
    thunderstorm    dark blue-grey scene and clouds, thin bright jagged lightning
    folk music      warm earthy palette (dark brown, umber, ochre, cream), muted saturation
    latin music     vivid saturated palette (violet, magenta, turquoise, yellow)

Each painting comes with a caption from a small grammar ("a painting of a lake at dusk with fire
crackling", "a calm painting of a meadow by day", "a painting with rain") whose attribute words are
the sound classes' labels, so the toy CLIP learns the words the audio side's prompts use.
Everything is rendered at twice the output size and box-downsampled (anti-aliasing).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# The seven paper sounds that have a visual attribute, in datamodules.soundzoo.SOUND_CLASSES order.
ATTRIBUTES = ("fire crackling", "rain", "wind", "explosion", "thunderstorm", "folk music", "latin music")
NEUTRAL = "none"
PLACES = ("lake", "sea", "meadow", "hills", "forest", "field")
TIMES = ("dawn", "day", "dusk", "night")
P_NEUTRAL = 0.3  # the remaining mass is split evenly over ATTRIBUTES
STRENGTH_RANGE = (0.35, 1.0)
# The class prompt the toy world uses for sounds (audio side) and for zero-shot evaluation.
PROMPT_TEMPLATE = "a painting with {label}"
NEUTRAL_PROMPT = "a calm painting"

_PLACE_NOUN = {"lake": "a lake", "sea": "the sea", "meadow": "a meadow", "hills": "hills",
               "forest": "a forest", "field": "a field"}
_TIME_PHRASE = {"dawn": "at dawn", "day": "by day", "dusk": "at dusk", "night": "at night"}
# Attribute phrases after "with"; weak/strong variants are chosen by strength. Every list keeps the label.
_ATTR_PHRASES = {
    "fire crackling": (["a small fire", "fire crackling"], ["fire crackling", "fire"],
                       ["a big fire", "fire crackling"]),
    "rain": (["light rain", "rain"], ["rain"], ["heavy rain", "rain"]),
    "wind": (["a light wind", "wind"], ["wind"], ["strong wind", "wind"]),
    "explosion": (["a small explosion", "an explosion"], ["an explosion", "explosion"],
                  ["a huge explosion", "an explosion"]),
    "thunderstorm": (["a distant thunderstorm", "a thunderstorm"], ["a thunderstorm", "thunderstorm"],
                     ["a violent thunderstorm", "lightning and a thunderstorm"]),
    "folk music": (["folk music"], ["folk music"], ["folk music"]),
    "latin music": (["latin music"], ["latin music"], ["latin music"]),
}

# Sky colours (top, bottom), light level of the ground and the colour of the sun (moon at night).
_SKY = {
    "dawn": ((0.45, 0.50, 0.75), (0.95, 0.75, 0.62), 0.8, (1.00, 0.85, 0.60)),
    "day": ((0.30, 0.52, 0.85), (0.70, 0.83, 0.95), 1.0, (1.00, 0.96, 0.75)),
    "dusk": ((0.28, 0.22, 0.48), (0.95, 0.55, 0.32), 0.7, (1.00, 0.62, 0.30)),
    "night": ((0.04, 0.06, 0.18), (0.14, 0.17, 0.34), 0.38, (0.90, 0.90, 0.80)),
}
# Ground colours (near horizon, bottom).
_GROUND = {
    "lake": ((0.36, 0.58, 0.30), (0.24, 0.44, 0.20)),
    "sea": ((0.80, 0.74, 0.55), (0.70, 0.62, 0.42)),
    "meadow": ((0.40, 0.64, 0.30), (0.26, 0.48, 0.20)),
    "hills": ((0.34, 0.52, 0.28), (0.42, 0.38, 0.22)),
    "forest": ((0.22, 0.40, 0.20), (0.16, 0.30, 0.14)),
    "field": ((0.80, 0.72, 0.36), (0.62, 0.50, 0.24)),
}
_N_TREES = {"lake": (0, 3), "sea": (0, 1), "meadow": (0, 3), "hills": (0, 2), "forest": (6, 12), "field": (0, 2)}
_EARTHY = np.array([(0.22, 0.13, 0.07), (0.45, 0.29, 0.14), (0.70, 0.54, 0.28), (0.92, 0.82, 0.60)], np.float32)
_VIVID = np.array([(0.35, 0.03, 0.50), (0.92, 0.08, 0.58), (0.05, 0.78, 0.76), (1.00, 0.90, 0.12)], np.float32)


@dataclass(frozen=True)
class Scene:
    """Everything that decides a painting; `paint(scene)` is a pure function of it."""

    seed: int
    place: str
    time: str
    attribute: str  # one of ATTRIBUTES or NEUTRAL
    strength: float  # 0 for neutral scenes
    caption: str

    @property
    def label(self) -> int:
        """Class index: 0..6 for ATTRIBUTES, 7 for neutral."""
        return ATTRIBUTES.index(self.attribute) if self.attribute in ATTRIBUTES else len(ATTRIBUTES)


def sample_scene(seed: int, attribute: str | None = None, strength: float | None = None) -> Scene:
    """Draw a scene from `seed`; `attribute` / `strength` force those choices (seeded the same way)."""
    rng = np.random.default_rng([seed, 0])
    place = PLACES[rng.integers(len(PLACES))]
    time = TIMES[rng.integers(len(TIMES))]
    draw_attr = rng.random()
    draw_strength = rng.uniform(*STRENGTH_RANGE)
    if attribute is None:
        i = int((draw_attr - P_NEUTRAL) / (1 - P_NEUTRAL) * len(ATTRIBUTES))
        attribute = NEUTRAL if draw_attr < P_NEUTRAL else ATTRIBUTES[min(i, len(ATTRIBUTES) - 1)]
    elif attribute != NEUTRAL and attribute not in ATTRIBUTES:
        raise ValueError(f"attribute={attribute!r}: expected one of {ATTRIBUTES} or {NEUTRAL!r}")
    if attribute == NEUTRAL:
        strength = 0.0
    elif strength is None:
        strength = float(draw_strength)
    return Scene(seed, place, time, attribute, float(strength), caption(place, time, attribute, strength, rng))


def caption(place: str, time: str, attribute: str, strength: float, rng: np.random.Generator) -> str:
    """A caption from the grammar: [a (calm) painting of] PLACE [TIME] [with ATTRIBUTE | in the rain/wind]."""
    noun, when = _PLACE_NOUN[place], _TIME_PHRASE[time]
    if attribute == NEUTRAL:
        forms = [f"a calm painting of {noun} {when}", f"a painting of {noun} {when}", f"{noun} {when}",
                 f"a calm painting of {noun}", f"a quiet painting of {noun}", NEUTRAL_PROMPT]
        return forms[rng.integers(len(forms))]
    level = 0 if strength < 0.55 else (1 if strength < 0.8 else 2)
    choices = _ATTR_PHRASES[attribute][level]
    phrase = choices[rng.integers(len(choices))]
    forms = [f"a painting of {noun} {when} with {phrase}", f"a painting of {noun} with {phrase}",
             f"{noun} {when} with {phrase}", f"a painting with {phrase}", PROMPT_TEMPLATE.format(label=attribute)]
    if attribute in ("rain", "wind"):
        forms.append(f"a painting of {noun} in the {attribute}")
    return forms[rng.integers(len(forms))]


# ----------------------------------------------------------------------------------------------------------------
# Rendering. All coordinates are in [0, 1] (x right, y down); images are float32 (R, R, 3) in [0, 1].


def _smoothstep(a: float, b: float, v: np.ndarray) -> np.ndarray:
    t = np.clip((v - a) / (b - a), 0.0, 1.0)
    return t * t * (3 - 2 * t)


def _blend(img: np.ndarray, color, alpha: np.ndarray) -> np.ndarray:
    alpha = np.clip(alpha, 0.0, 1.0)[..., None]
    return img * (1 - alpha) + np.asarray(color, np.float32) * alpha


def _segment_distance(x: np.ndarray, y: np.ndarray, p0, p1) -> np.ndarray:
    """Distance of every pixel to the segment p0-p1."""
    dx, dy = p1[0] - p0[0], p1[1] - p0[1]
    t = np.clip(((x - p0[0]) * dx + (y - p0[1]) * dy) / max(dx * dx + dy * dy, 1e-12), 0.0, 1.0)
    return np.hypot(x - p0[0] - t * dx, y - p0[1] - t * dy)


def _smooth_noise(rng: np.random.Generator, x: np.ndarray, y: np.ndarray, n: int = 4, freq=(1.0, 4.0)):
    """A low-frequency field in about [-1, 1] from a few random sinusoids."""
    out = np.zeros_like(x)
    for _ in range(n):
        f = rng.uniform(*freq)
        a = rng.uniform(0, 2 * np.pi)
        out += np.sin(2 * np.pi * f * (x * np.cos(a) + y * np.sin(a)) + rng.uniform(0, 2 * np.pi))
    return out / np.sqrt(n)


def _sample(img: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Nearest-neighbour lookup of img (R, R, C) at continuous coordinates (clamped to the border)."""
    r = img.shape[0]
    xi = np.clip((x * r).astype(np.int32), 0, r - 1)
    yi = np.clip((y * r).astype(np.int32), 0, r - 1)
    return img.reshape(r * r, -1)[yi * r + xi]


def _smear(img: np.ndarray, x, y, angle: np.ndarray, length: float, taps: int = 7) -> np.ndarray:
    """Average img (R, R, C) along a stroke of `length` (image units) in direction `angle` at every pixel."""
    acc = np.zeros_like(img)
    dx, dy = np.cos(angle), np.sin(angle)
    for t in np.linspace(-length / 2, length / 2, taps, dtype=np.float32):
        acc += _sample(img, x + t * dx, y + t * dy)
    return acc / taps


def _luma(img: np.ndarray) -> np.ndarray:
    return img @ np.array([0.299, 0.587, 0.114], np.float32)


def _colormap(lum: np.ndarray, stops: np.ndarray) -> np.ndarray:
    """Piecewise-linear colour map of luminance in [0, 1] through evenly spaced colour stops."""
    pos = np.clip(lum, 0.0, 1.0) * (len(stops) - 1)
    i = np.minimum(pos.astype(np.int64), len(stops) - 2)
    f = (pos - i)[..., None]
    return stops[i] * (1 - f) + stops[i + 1] * f


class _Canvas:
    """Rendering state of one painting: pixel grid, generator, horizon profile."""

    def __init__(self, scene: Scene, res: int):
        self.scene, self.res = scene, res
        self.rng = np.random.default_rng([scene.seed, 1])
        c = (np.arange(res, dtype=np.float32) + 0.5) / res
        self.y, self.x = np.meshgrid(c, c, indexing="ij")
        self.jitter = lambda col, s=0.04: np.clip(np.asarray(col) + self.rng.normal(0, s, 3), 0, 1)


def _paint_landscape(cv: _Canvas) -> tuple[np.ndarray, np.ndarray, list]:
    """Sky, sun/moon, clouds, ground, water and trees; returns image, horizon per pixel and tree specs."""
    sc, rng, x, y = cv.scene, cv.rng, cv.x, cv.y
    sky_top, sky_bot, light, sun_col = _SKY[sc.time]
    sky_top, sky_bot = cv.jitter(sky_top), cv.jitter(sky_bot)
    h0 = rng.uniform(0.42, 0.62)
    amp = rng.uniform(0.06, 0.14) if sc.place == "hills" else rng.uniform(0.0, 0.025)
    if sc.place == "sea":
        amp = 0.0
    horizon = h0 + amp * _smooth_noise(rng, x, np.zeros_like(y), n=3, freq=(0.5, 2.0))
    t = np.clip(y / h0, 0, 1)[..., None]
    img = sky_top * (1 - t) + sky_bot * t
    img = img.astype(np.float32)
    # Sun or moon with a soft halo, above the horizon.
    if rng.random() < 0.75:
        sx, sy, sr = rng.uniform(0.15, 0.85), rng.uniform(0.1, h0 - 0.12), rng.uniform(0.04, 0.08)
        d = np.hypot(x - sx, y - sy)
        img = _blend(img, sun_col, 0.35 * np.exp(-((d / (3 * sr)) ** 2)))
        img = _blend(img, sun_col, _smoothstep(sr, sr * 0.7, d))
    # Clouds: soft elongated blobs.
    cloud_col = np.clip(sky_bot * 0.6 + 0.4 * light, 0, 1)
    for _ in range(rng.integers(0, 4)):
        cx, cy = rng.uniform(0, 1), rng.uniform(0.05, h0 - 0.1)
        w, h = rng.uniform(0.1, 0.25), rng.uniform(0.03, 0.06)
        img = _blend(img, cloud_col, 0.7 * np.exp(-(((x - cx) / w) ** 2 + ((y - cy) / h) ** 2)))
    # Distant mountains behind the horizon for hills.
    if sc.place == "hills" or rng.random() < 0.25:
        ridge = horizon - rng.uniform(0.05, 0.15) - 0.06 * np.abs(_smooth_noise(rng, x, 0 * y, n=3, freq=(1, 3)))
        mcol = np.clip(sky_bot * 0.5 + np.array([0.25, 0.27, 0.33]) * light, 0, 1)
        img = _blend(img, mcol, _smoothstep(ridge - 0.005, ridge + 0.005, y))
    # Ground.
    g_near, g_far = (np.asarray(c) * light for c in _GROUND[sc.place])
    g_near, g_far = cv.jitter(g_near, 0.03), cv.jitter(g_far, 0.03)
    tg = np.clip((y - horizon) / np.maximum(1 - horizon, 1e-3), 0, 1)[..., None]
    ground = g_near * (1 - tg) + g_far * tg
    below = _smoothstep(-0.004, 0.004, y - horizon)
    img = img * (1 - below[..., None]) + ground * below[..., None]
    # Water reflects the sky, darker, with horizontal ripples.
    if sc.place in ("lake", "sea"):
        if sc.place == "sea":
            shore = rng.uniform(0.8, 0.95)
            water = below * _smoothstep(shore + 0.01, shore - 0.01, y)
        else:
            lx, ly = rng.uniform(0.3, 0.7), rng.uniform(h0 + 0.15, 0.85)
            lw, lh = rng.uniform(0.25, 0.4), rng.uniform(0.08, 0.14)
            water = below * _smoothstep(1.05, 0.95, ((x - lx) / lw) ** 2 + ((y - ly) / lh) ** 2)
        refl = (sky_top * 0.3 + sky_bot * 0.3) + np.array([0.1, 0.2, 0.35]) * light
        ripples = 0.06 * np.sin(2 * np.pi * (y * rng.uniform(25, 40) + 0.3 * _smooth_noise(rng, x, y)))
        img = _blend(img, np.clip(refl, 0, 1), water)
        img = img + (ripples * water)[..., None]
    # Trees: trunk and crown; positions recorded so wind can bend them.
    trees = []
    lo, hi = _N_TREES[sc.place]
    for _ in range(rng.integers(lo, hi + 1)):
        tx = rng.uniform(0.05, 0.95)
        base = float(horizon[0, min(int(tx * cv.res), cv.res - 1)]) + rng.uniform(0.02, 0.25)
        trees.append((tx, min(base, 0.97), rng.uniform(0.12, 0.25), rng.uniform(0.05, 0.09),
                      cv.jitter(np.array([0.16, 0.34, 0.14]) * light, 0.03)))
    return np.clip(img, 0, 1), horizon, trees


def _draw_trees(cv: _Canvas, img: np.ndarray, trees: list, lean: float) -> np.ndarray:
    """Trunks curve and crowns shift/stretch sideways by `lean` (wind); lean 0 = upright."""
    x, y = cv.x, cv.y
    trunk_col = np.array([0.22, 0.15, 0.08]) * _SKY[cv.scene.time][2]
    for tx, base, height, crown_r, col in sorted(trees, key=lambda t: t[1]):
        top = base - height
        # Bent trunk: x offset grows quadratically with height above the base.
        u = np.clip((base - y) / height, 0, 1)
        trunk_x = tx + lean * height * 0.8 * u**2
        trunk = (np.abs(x - trunk_x) < 0.012 + 0.006 * (1 - u)) & (y <= base) & (y >= top + crown_r * 0.5)
        img = _blend(img, trunk_col, trunk.astype(np.float32))
        cx, cy = tx + lean * height * 0.8, top + crown_r * 0.3
        rx, ry = crown_r * (1 + 0.8 * abs(lean)), crown_r * (1 - 0.3 * abs(lean))
        crown = ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2
        img = _blend(img, col, _smoothstep(1.1, 0.9, crown))
        img = _blend(img, np.clip(col * 1.5, 0, 1), 0.5 * _smoothstep(0.5, 0.1, ((x - cx + rx * 0.3) / rx) ** 2
                                                                         + ((y - cy + ry * 0.3) / ry) ** 2))
    return img


def _fire(cv: _Canvas, img, horizon, s):
    x, y, rng = cv.x, cv.y, cv.rng
    low = _smoothstep(0.0, 1.0, (y - (horizon - 0.15)) / 0.6)
    img = _blend(img, (1.0, 0.42, 0.08), 0.55 * s * low)
    img = _blend(img, (0.35, 0.12, 0.08), 0.35 * s * (1 - low) * (y < horizon))
    for _ in range(3 + int(6 * s)):
        fx, fy = rng.uniform(0.05, 0.95), rng.uniform(np.max(horizon) + 0.05, 1.0)
        h, w = rng.uniform(0.12, 0.2) + 0.25 * s, rng.uniform(0.04, 0.08)
        v = (fy - y) / h  # 0 at the base, 1 at the tip
        sway = 0.3 * w * np.sin(v * rng.uniform(6, 10) + rng.uniform(0, 6))
        halfw = w * np.clip(1 - v, 0, 1) ** 0.6 * np.clip(v * 6, 0, 1)
        u = np.abs(x - fx - sway) / np.maximum(halfw, 1e-4)
        inside = _smoothstep(1.0, 0.7, u) * (v > 0) * (v < 1)
        col = _colormap(np.clip(1 - v + 0.3 * (1 - u), 0, 1), np.array(
            [(0.75, 0.12, 0.03), (0.98, 0.38, 0.05), (1.0, 0.72, 0.15), (1.0, 0.95, 0.55)], np.float32))
        img = img * (1 - inside[..., None]) + col * inside[..., None]
    return img


def _rain_tone(img, s):
    grey = _luma(img)[..., None] * np.array([0.85, 0.92, 1.05], np.float32) + np.array([0.02, 0.04, 0.08])
    return _blend(img * (1 - 0.2 * s), grey * (1 - 0.2 * s), np.full(img.shape[:2], 0.65 * s, np.float32))


def _rain_streaks(cv: _Canvas, img, s):
    """Sparse impulses smeared along the rain direction: thin slanted light streaks."""
    angle = np.full(img.shape[:2], np.pi / 2 + cv.rng.uniform(-0.4, 0.4), np.float32)
    drops = (cv.rng.random(img.shape[:2]) < 0.012 + 0.04 * s).astype(np.float32)
    streak = _smear(drops[..., None], cv.x, cv.y, angle, length=0.14, taps=11)[..., 0]
    return _blend(img, (0.82, 0.86, 0.95), np.clip(streak * (2.5 + 2.5 * s), 0, 0.85))


def _wind_swirls(cv: _Canvas, img, horizon, s):
    """Light swirls and wavy gust strokes across the sky (Van Gogh-like)."""
    x, y, rng = cv.x, cv.y, cv.rng
    col = np.clip(_luma(img).mean() + 0.5, 0, 1) * np.array([0.95, 0.97, 1.0])
    sky = _smoothstep(0.03, -0.03, y - horizon)
    for _ in range(2 + int(2 * s)):
        cx, cy, r = rng.uniform(0.1, 0.9), rng.uniform(0.08, np.min(horizon) - 0.08), rng.uniform(0.08, 0.15)
        d, a = np.hypot(x - cx, y - cy), np.arctan2(y - cy, x - cx)
        spiral = r * (0.3 + 0.7 * ((a + np.pi) / (2 * np.pi)))  # one turn of an Archimedean spiral
        img = _blend(img, col, 0.9 * s * _smoothstep(0.03, 0.014, np.abs(d - spiral)) * sky)
    for _ in range(2 + int(3 * s)):
        y0, amp, f = rng.uniform(0.05, np.min(horizon) - 0.03), rng.uniform(0.02, 0.05), rng.uniform(1.0, 2.5)
        x0, x1 = np.sort(rng.uniform(0, 1, 2)) * np.array([0.6, 1.0]) + np.array([0, 0.4])
        wave = y0 + amp * np.sin(2 * np.pi * (f * x + rng.uniform(0, 1)))
        ends = _smoothstep(x0, x0 + 0.1, x) * _smoothstep(x1, x1 - 0.1, x)
        stroke = _smoothstep(0.026, 0.012, np.abs(y - wave)) * ends
        img = _blend(img, col, 0.85 * s * stroke * sky)
    return img


def _explosion(cv: _Canvas, img, horizon, s):
    x, y, rng = cv.x, cv.y, cv.rng
    cx, cy = rng.uniform(0.25, 0.75), rng.uniform(0.2, float(np.mean(horizon)))
    r = 0.13 + 0.22 * s
    d, a = np.hypot(x - cx, y - cy), np.arctan2(y - cy, x - cx)
    rays = (0.5 + 0.5 * np.cos(rng.integers(9, 15) * a + rng.uniform(0, 6))) ** 2
    img = _blend(img, (0.22, 0.18, 0.17), 0.8 * s * np.exp(-(((d - 1.15 * r) / (0.18 * r)) ** 2)))
    img = _blend(img, (1.0, 0.5, 0.08), np.clip(s * (rays * 0.8 + 0.4) * _smoothstep(1.05 * r, 0.4 * r, d), 0, 1))
    img = _blend(img, (1.0, 0.97, 0.75), _smoothstep(0.45 * r, 0.15 * r, d))
    return img


def _thunder_tone(cv: _Canvas, img, horizon, s):
    x, y = cv.x, cv.y
    dark = img * (1 - 0.6 * s) * np.array([0.85, 0.9, 1.05], np.float32)
    cloud = np.clip(0.5 + 0.5 * _smooth_noise(cv.rng, x, y, n=5, freq=(2, 6)), 0, 1)
    sky = _smoothstep(0.02, -0.02, y - horizon)
    return _blend(dark, (0.12, 0.12, 0.18), s * sky * (0.55 + 0.35 * cloud))


def _lightning(cv: _Canvas, img, horizon, s):
    x, y, rng = cv.x, cv.y, cv.rng
    for _ in range(1 + int(s > 0.7)):
        px, py = rng.uniform(0.15, 0.85), 0.0
        end = float(np.min(horizon)) + rng.uniform(-0.05, 0.1)
        glow, core = np.full_like(x, np.inf), np.full_like(x, np.inf)
        while py < end:
            nx, ny = px + rng.uniform(-0.07, 0.07), py + rng.uniform(0.05, 0.1)
            d = _segment_distance(x, y, (px, py), (nx, ny))
            core, glow = np.minimum(core, d), np.minimum(glow, d)
            px, py = nx, ny
        img = _blend(img, (0.55, 0.6, 0.95), 0.5 * s * np.exp(-((glow / 0.03) ** 2)))
        img = _blend(img, (0.97, 0.97, 1.0), _smoothstep(0.014, 0.005, core) * (0.6 + 0.4 * s))
    return img


def _palette(img, stops, s, saturate: float, mix: float):
    """Mood palette: luminance mapped through colour stops, mixed with the (de)saturated original."""
    lum = _luma(img)
    mapped = _colormap(lum * 1.1 + 0.05, stops)
    mean = lum[..., None]
    sat = np.clip(mean + (img - mean) * saturate, 0, 1)
    return _blend(img, mix * mapped + (1 - mix) * sat, np.full(lum.shape, 0.95 * s, np.float32))


def _brush(cv: _Canvas, img: np.ndarray, swirl: float) -> np.ndarray:
    """Brush-stroke texture: colours smeared along a stroke-direction field plus streaky tone variation."""
    x, y, rng = cv.x, cv.y, cv.rng
    angle = 0.35 * _smooth_noise(rng, x, y, n=4, freq=(1, 3)) + np.where(y > 0.5, 0.1, -0.1).astype(np.float32)
    if swirl > 0:
        cx, cy = rng.uniform(0.3, 0.7), rng.uniform(0.15, 0.35)
        angle = angle * (1 - swirl) + swirl * (np.arctan2(y - cy, x - cx) + np.pi / 2)
    length = 5.0 / cv.res
    img = _smear(img, x, y, angle, length)
    noise = _smear(rng.normal(0, 1, img.shape[:2] + (4,)).astype(np.float32), x, y, angle, 2 * length)
    return img * (1 + 0.22 * noise[..., :1]) + 0.03 * noise[..., 1:]


def paint(scene: Scene, size: int = 32) -> np.ndarray:
    """Render `scene` as a float32 (size, size, 3) image in [0, 1]."""
    cv = _Canvas(scene, 2 * size)
    img, horizon, trees = _paint_landscape(cv)
    a, s = scene.attribute, scene.strength
    img = _draw_trees(cv, img, trees, lean=(0.9 * s * (1 if cv.rng.random() < 0.5 else -1)) if a == "wind" else 0.0)
    if a == "fire crackling":
        img = _fire(cv, img, horizon, s)
    elif a == "rain":
        img = _rain_tone(img, s)
    elif a == "wind":
        img = _wind_swirls(cv, img, horizon, s)
    elif a == "explosion":
        img = _explosion(cv, img, horizon, s)
    elif a == "thunderstorm":
        img = _thunder_tone(cv, img, horizon, s)
    elif a == "folk music":
        img = _palette(img, _EARTHY, s, saturate=0.4, mix=0.8)
    elif a == "latin music":
        img = _palette(img, _VIVID, s, saturate=2.2, mix=0.6)
    img = _brush(cv, np.clip(img, 0, 1), swirl=0.8 * s if a == "wind" else 0.0)
    # Thin elements are painted after the smear so they stay crisp.
    if a == "rain":
        img = _rain_streaks(cv, img, s)
    elif a == "thunderstorm":
        img = _lightning(cv, img, horizon, s)
    img = np.clip(img, 0, 1)
    return img.reshape(size, 2, size, 2, 3).mean(axis=(1, 3))


def render_dataset(seeds: Sequence[int], size: int = 32,
                   attribute: str | None = None) -> tuple[np.ndarray, list[Scene]]:
    """Paint one scene per seed: uint8 images (N, 3, size, size) and their scenes (captions, labels)."""
    scenes = [sample_scene(int(s), attribute) for s in seeds]
    images = np.stack([paint(sc, size) for sc in scenes])
    return (images * 255 + 0.5).astype(np.uint8).transpose(0, 3, 1, 2), scenes
