"""The page's settings: one YAML file (experiments/app/toyworld.yaml, wikiart.yaml) read into `AppConfig`.

Every field is documented in the YAML files; defaults are the paper's values where the paper has one (steps 300,
lr 0.1, lambda_sim 0.008, truncation 0.7). Relative paths are resolved against the repository root, so the page
starts from any working directory.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING

import clip as clip_pkg
import yaml

from datamodules.input_limits import MAX_AUDIO_BYTES, MAX_AUDIO_SECONDS, MAX_IMAGE_PIXELS
from lightning_modules.clip_wrapper import clip_cache_file

if TYPE_CHECKING:
    from lightning_modules.animation import AnimationSettings

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CONFIG = Path(__file__).with_name("toyworld.yaml")
MODES = ("optimise", "mapper", "refine")


class AppConfigError(ValueError):
    """A config file that cannot be used, with the file and the field named."""


@dataclass
class AppConfig:
    """Models, edit defaults, inputs, limits and server settings of the page (see toyworld.yaml for each field)."""

    generator: str
    clip: str
    audio_encoder: str
    mapper: str | None = None
    generator_licence: str | None = None
    truncation: float = 0.7
    steps: int = 300
    lr: float = 0.1
    lambda_sim: float = 0.008
    max_steps: int = 1000
    gallery_seeds: list[int] = field(default_factory=lambda: list(range(8)))
    example_sounds: list[str] = field(default_factory=list)
    example_seconds: float = 2.0
    example_seed: int = 10000
    examples_dir: str | None = None
    projection_config: str = "experiments/projection/default.yaml"
    projection_steps: int | None = None
    projection_cache: str | None = None
    max_upload_mb: float = MAX_AUDIO_BYTES / 2**20  # the CLIs' shared limits (datamodules/input_limits.py)
    max_audio_seconds: float = MAX_AUDIO_SECONDS
    max_image_megapixels: float = MAX_IMAGE_PIXELS / 1e6
    concurrency_limit: int = 2
    cache_entries: int = 64
    preview_every: int = 5
    live_chunk_seconds: float = 0.1
    live_frames_per_chunk: int = 1
    display_size: int = 256
    animate_config: str = "experiments/animate/toyworld.yaml"
    video_settings: dict = field(default_factory=dict)
    missing_hint: str = "make weights"

    def animation_settings(self) -> AnimationSettings:
        """The page's video settings: `animate_config`'s settings with `video_settings` over them (an
        `AnimationSettings`; loudness -> strength uses its silence floor and full-strength level too)."""
        from experiments.animate import load_config as load_animate_config
        from lightning_modules.animation import AnimationSettings

        path = self.resolve(self.animate_config)
        _, settings = load_animate_config(path) if Path(path).is_file() else ({}, {})  # missing: listed on start
        return AnimationSettings(**{**settings, **self.video_settings})

    def resolve(self, path: str | None) -> str | None:
        """A config path made absolute against the repository root (None and absolute paths pass through)."""
        if path is None:
            return None
        p = Path(path).expanduser()
        return str(p if p.is_absolute() else REPO_ROOT / p)

    def clip_spec(self) -> str:
        """What CLIPWrapper loads: a CLIP model name as is (read from the clip cache), else the resolved file."""
        return self.clip if self.clip in clip_pkg.available_models() else self.resolve(self.clip)

    def model_files(self) -> list[tuple[str, str]]:
        """(field, absolute path) of each weight file the page loads (a CLIP name: its file in the cache)."""
        clip_file = clip_cache_file(self.clip) if self.clip in clip_pkg.available_models() else self.resolve(self.clip)
        named = [("generator", self.resolve(self.generator)), ("clip", clip_file),
                 ("audio_encoder", self.resolve(self.audio_encoder))]
        if self.mapper:
            named.append(("mapper", self.resolve(self.mapper)))
        return named

    def missing_files(self) -> list[tuple[str, str]]:
        """(field, expected path) of each configured file that is not on disk."""
        files = self.model_files() + [("projection_config", self.resolve(self.projection_config)),
                                      ("animate_config", self.resolve(self.animate_config))]
        if self.examples_dir:
            files.append(("examples_dir", self.resolve(self.examples_dir)))
        return [(name, path) for name, path in files if not Path(path).exists()]


def load_app_config(path: str | Path = DEFAULT_CONFIG, **overrides) -> AppConfig:
    """Read an AppConfig from YAML; unknown or invalid fields raise AppConfigError naming the file."""
    path = Path(path)
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise AppConfigError(f"{path}: config file not found") from None
    except yaml.YAMLError as err:
        raise AppConfigError(f"{path}: not valid YAML ({err})") from err
    if not isinstance(values, dict):
        raise AppConfigError(f"{path}: expected a mapping of settings, found {type(values).__name__}")
    known = {f.name for f in fields(AppConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise AppConfigError(f"{path}: unknown setting(s) {unknown}; known: {sorted(known)}")
    values.update({k: v for k, v in overrides.items() if v is not None})
    try:
        cfg = AppConfig(**values)
    except TypeError as err:
        raise AppConfigError(f"{path}: {err}") from err
    checks = [("steps", cfg.steps >= 0), ("max_steps", cfg.max_steps >= cfg.steps), ("lr", cfg.lr > 0),
              ("lambda_sim", cfg.lambda_sim >= 0), ("max_upload_mb", cfg.max_upload_mb > 0),
              ("max_audio_seconds", cfg.max_audio_seconds > 0), ("max_image_megapixels", cfg.max_image_megapixels > 0),
              ("concurrency_limit", cfg.concurrency_limit >= 1), ("cache_entries", cfg.cache_entries >= 0),
              ("preview_every", cfg.preview_every >= 1), ("live_chunk_seconds", 0 < cfg.live_chunk_seconds <= 0.5),
              ("live_frames_per_chunk", 1 <= cfg.live_frames_per_chunk <= 8)]
    bad = [name for name, ok in checks if not ok]
    if bad:
        raise AppConfigError(f"{path}: invalid value for {', '.join(f'{n}={getattr(cfg, n)!r}' for n in bad)}")
    from lightning_modules.animation import AnimationSettings  # torch-heavy: only once the file parsed

    known_video = {f.name for f in fields(AnimationSettings)}
    if not isinstance(cfg.video_settings, dict) or set(cfg.video_settings) - known_video:
        raise AppConfigError(f"{path}: video_settings must map animate settings ({sorted(known_video)}) to values, "
                             f"got {cfg.video_settings!r}")
    try:  # bad values fail here, naming the file, not when the models load
        cfg.animation_settings()
    except (ValueError, TypeError, yaml.YAMLError) as err:
        raise AppConfigError(f"{path}: animate_config / video_settings: {err}") from err
    return cfg
