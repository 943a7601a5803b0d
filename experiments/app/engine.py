"""The models of the page, loaded once, and the per-request edit: the same functions `experiments.edit` calls.

`EditEngine` holds the generator, CLIP, the audio encoder and (when configured) the mapper, shared by every
session. Each request passes its own `EditSettings`; nothing about a request is stored on shared objects, so two
visitors with different sliders cannot race. The per-request Eq. 2 math is `ManipulationModule`'s (a fresh,
model-sharing instance per request embeds the sound with that request's settings) and Eq. 2 itself is the
stateless `lightning_modules.manipulation.optimise`, whose per-step callback streams preview frames and cancels.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
import torch.nn.functional as F

from datamodules.audio_windows import POLICIES
from datamodules.latent_sources import Source, read_latent_file, source_wplus
from experiments.animate import animate
from experiments.app.config import MODES, AppConfig
from experiments.project import load_config as load_projection_config
from experiments.project import project_cached
from lightning_modules.animation import loudness_strength
from lightning_modules.audio_export import load_audio_encoder
from lightning_modules.clip_wrapper import CLIPWrapper
from lightning_modules.edit_modes import run_edit
from lightning_modules.edit_outputs import to_uint8
from lightning_modules.manipulation import ManipulationModule
from lightning_modules.networks.checkpoints import load_generator

# The window reader's policies (what ManipulationModule.sound_crop accepts); the page starts at the module's own
# default, so a page edit and `experiments.edit` read the same part of a clip.
WINDOW_POLICIES = POLICIES
DEFAULT_WINDOW = inspect.signature(ManipulationModule.__init__).parameters["sound_crop"].default
PROGRESS_FRAME = Callable[[int, int, torch.Tensor], None]  # (step, steps, uint8 (3, H, W) preview)


class EditCancelled(RuntimeError):
    """The visitor pressed Cancel (or left) while the edit was running."""


class ModeUnavailable(ValueError):
    """A mode the configured models cannot run (mapper modes without a mapper)."""


@dataclass(frozen=True)
class EditSettings:
    """One request's edit settings (the page's controls); defaults are the paper's."""

    mode: str = "optimise"
    strength: float = 1.0
    steps: int = 300
    lr: float = 0.1
    lambda_sim: float = 0.008
    text_prompt: str | None = None
    audio_weight: float = 1.0
    loudness: bool = False  # strength x loudness_strength(level of the window used), as animate does
    window: str = DEFAULT_WINDOW

    def check(self, max_steps: int) -> None:
        """Raise ValueError naming the setting that is out of range."""
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.window not in WINDOW_POLICIES:
            raise ValueError(f"window must be one of {WINDOW_POLICIES}, got {self.window!r}")
        if not 0 <= self.steps <= max_steps:
            raise ValueError(f"steps must lie in [0, {max_steps}], got {self.steps}")
        if self.lambda_sim < 0 or self.lr <= 0:
            raise ValueError(f"need lambda_sim >= 0 and lr > 0, got {self.lambda_sim}, {self.lr}")
        if not 0.0 <= self.audio_weight <= 1.0:
            raise ValueError(f"text mixing weight must lie in [0, 1], got {self.audio_weight}")


@dataclass
class Painting:
    """A source painting: its W+ code (1, L, D) and where it came from."""

    name: str
    w: torch.Tensor
    origin: str
    key: str


@dataclass
class EditOutcome:
    """A finished edit: uint8 (3, H, W) source and edit, codes (1, L, D), and its metrics."""

    source: torch.Tensor
    edited: torch.Tensor
    w: torch.Tensor
    w_source: torch.Tensor
    metrics: dict = field(default_factory=dict)


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class EditEngine:
    """Generator, CLIP, audio encoder and mapper loaded once; stateless edits per request; an LRU result cache."""

    def __init__(self, cfg: AppConfig, device: str = "cpu") -> None:
        self.cfg, self.device = cfg, torch.device(device)
        self.generator = load_generator(cfg.resolve(cfg.generator)).eval().requires_grad_(False).to(self.device)
        self.clip = CLIPWrapper(cfg.clip_spec(), device=self.device)
        self.encoder = load_audio_encoder(cfg.resolve(cfg.audio_encoder)).eval().requires_grad_(False)
        self.encoder.to(self.device)
        self.mapper = None
        if cfg.mapper:
            from lightning_modules.networks.mapper import load_mapper  # issue 16's SoundMapper

            self.mapper = load_mapper(cfg.resolve(cfg.mapper)).eval().requires_grad_(False).to(self.device)
        with torch.no_grad():
            self.mean_latent = self.generator.mean_latent()
        self.animation = cfg.animation_settings()  # the videos' settings; also the loudness -> strength map
        self._cache: OrderedDict[str, EditOutcome] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def window_seconds(self) -> float:
        """The audio encoder's window: sounds longer than this also get a video."""
        return self.encoder.clip_samples / self.encoder.sample_rate

    @property
    def video_mode(self) -> str:
        """animate's mode for the videos: the mapper whenever one is configured (whatever the still's mode: one
        forward pass per frame), else animate's per-frame Eq. 2 (`optimise_steps` warm-started steps per frame)."""
        return "mapper" if self.mapper is not None else "optimise"

    @property
    def modes(self) -> tuple[str, ...]:
        """The modes these models can run: the mapper modes only with a mapper."""
        return MODES if self.mapper is not None else ("optimise",)

    # ------------------------------------------------------------------------------------------ paintings
    def seed_painting(self, seed: int) -> Painting:
        w = source_wplus([Source(name=f"seed{seed}", kind="seed", seed=seed)], self.generator,
                         self.cfg.truncation, self.mean_latent)
        return Painting(f"seed{seed}", w.cpu(), f"generator sample, seed {seed}", f"seed:{seed}")

    def latent_painting(self, w: torch.Tensor, name: str) -> Painting:
        key = hashlib.sha256(w.numpy().tobytes()).hexdigest()
        return Painting(name, w, f"uploaded W+ file {name}", f"w:{key}")

    def image_painting(self, path: str | Path, name: str, progress: bool = True) -> Painting:
        """Project an uploaded image into W+ (cached by the image's, the generator's and the settings' hashes)."""
        cfg = self.cfg
        settings = load_projection_config(cfg.resolve(cfg.projection_config), steps=cfg.projection_steps)
        latent = project_cached(path, cfg.resolve(cfg.generator), cache_dir=cfg.projection_cache, config=settings,
                                generator=self.generator, progress=progress)
        w = read_latent_file(latent)[0][1][None]
        return Painting(name, w, f"projection of {name}", f"image:{sha256_file(path)}")

    @torch.no_grad()
    def render(self, w: torch.Tensor) -> torch.Tensor:
        """uint8 (3, H, W) image of one code (1, L, D)."""
        return to_uint8(self.generator.synthesis(w.to(self.device)))[0].cpu()

    # ------------------------------------------------------------------------------------------ edits
    def request_module(self, settings: EditSettings) -> ManipulationModule:
        """A ManipulationModule holding this request's settings and sharing the loaded models (no copies)."""
        cfg = self.cfg
        module = ManipulationModule(
            generator=cfg.resolve(cfg.generator), audio_encoder=cfg.resolve(cfg.audio_encoder),
            clip=cfg.clip_spec(), steps=settings.steps, lr=settings.lr, lambda_sim=settings.lambda_sim,
            truncation=cfg.truncation, sound_crop=settings.window, text_prompt=settings.text_prompt or None,
            audio_weight=settings.audio_weight if settings.text_prompt else 1.0, progress=False,
        )
        module.generator, module.clip_model, module.audio_encoder = self.generator, self.clip, self.encoder
        return module

    def cache_key(self, painting: Painting, sound_sha: str, settings: EditSettings) -> str:
        payload = json.dumps({"painting": painting.key, "sound": sound_sha, "settings": asdict(settings)},
                             sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()

    def edit(self, painting: Painting, sound_path: str | Path, settings: EditSettings,
             on_frame: PROGRESS_FRAME | None = None, cancel: threading.Event | None = None) -> EditOutcome:
        """Edit `painting` with the sound file: Eq. 2 (optimise), the mapper (mapper), or the mapper's edit as
        Eq. 2's start point (refine). `on_frame` receives preview frames every `preview_every` steps;
        setting `cancel` stops the optimisation at the next step."""
        settings.check(self.cfg.max_steps)
        if settings.mode not in self.modes:
            raise ModeUnavailable(f"mode {settings.mode!r} needs a mapper: set `mapper:` in the page's config")
        key = self.cache_key(painting, sha256_file(sound_path), settings)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        module = self.request_module(settings)
        sound_emb, levels = module.embed_sounds([str(sound_path)])
        target = module.targets_for(sound_emb)
        lam = module.lambdas_for(levels).to(self.device)
        gain = self.loudness_gain(levels[0]) if settings.loudness else 1.0
        w_source = painting.w.to(self.device)
        w = self._run_edit(w_source, target, lam, settings, gain * settings.strength, on_frame, cancel)
        with torch.no_grad():
            # one image per call, as the edit command renders it (batching may change the last bits)
            source_img, edited_img = self.generator.synthesis(w_source)[0], self.generator.synthesis(w)[0]
            emb = torch.cat([self.clip.encode_image(source_img[None]), self.clip.encode_image(edited_img[None])])
            cos = (emb * target.to(emb)).sum(-1).cpu()
        metrics = {
            "mode": settings.mode, "settings": asdict(settings), "source": painting.origin,
            "clip_cos_before": float(cos[0]), "clip_cos_after": float(cos[1]),
            "w_dist": float((w - w_source).flatten().norm()), "loudness_dbfs": float(levels[0]),
            "loudness_strength": gain, "strength_used": gain * settings.strength, "lambda_sim": float(lam[0]),
            "window": module.sound_info[0]["used"],
        }
        outcome = EditOutcome(to_uint8(source_img[None])[0].cpu(), to_uint8(edited_img[None])[0].cpu(),
                              w.detach().cpu(), w_source.cpu(), metrics)
        if self.cfg.cache_entries:
            with self._lock:
                self._cache[key] = outcome
                while len(self._cache) > self.cfg.cache_entries:
                    self._cache.popitem(last=False)
        return outcome

    def loudness_gain(self, level_dbfs: float) -> float:
        """The loudness toggle's factor on strength: animate's `loudness_strength` with the page's animate settings
        (0 at the shared silence floor, linear in dB to 1 at `full_dbfs`), so a still and a video agree."""
        a = self.animation
        return loudness_strength(level_dbfs, a.silence_floor_dbfs, a.full_dbfs)

    def _run_edit(self, w_source: torch.Tensor, target: torch.Tensor, lam: torch.Tensor, settings: EditSettings,
                  strength: float, on_frame: PROGRESS_FRAME | None, cancel: threading.Event | None) -> torch.Tensor:
        """The edit command's `run_edit` with this request's mode, `strength` and steps (refine runs `steps` steps
        from the mapper's edit); previews every `preview_every` steps; a set `cancel` stops it after that step."""
        every = self.cfg.preview_every

        def callback(step: int, images: torch.Tensor, loss: torch.Tensor) -> bool:
            if on_frame is not None and step % every == 0:
                on_frame(step, settings.steps, to_uint8(images[:1])[0].cpu())
            return cancel is not None and cancel.is_set()

        result = run_edit(self.generator, self.clip, w_source, target, lam, mode=settings.mode, mapper=self.mapper,
                          strength=strength, steps=settings.steps, lr=settings.lr,
                          refine_steps=settings.steps, callback=callback)
        if cancel is not None and cancel.is_set():
            raise EditCancelled("edit cancelled")
        return result.w.to(self.device)

    # ------------------------------------------------------------------------------------------ videos
    def video(self, painting: Painting, sound_path: str | Path, settings: EditSettings, folder: Path,
              progress: Callable[[int, int], None] | None = None) -> Path:
        """MP4 (with the sound) of `painting` following the whole sound: `experiments.animate.animate` with the
        page's models and animate settings, this request's strength and loudness toggle; written under `folder`,
        reused there when the same painting, sound, strength and toggle were rendered before. `progress(done,
        total)` runs per chunk of frames; an exception it raises stops the render."""
        anim = replace(self.animation, mode=self.video_mode, strength=settings.strength,
                       loudness_drives_strength=settings.loudness)
        key = hashlib.sha256(json.dumps([painting.key, sha256_file(sound_path), asdict(anim)]).encode()).hexdigest()
        out = folder / f"video-{key[:16]}"
        done = sorted(p.parent / "animation.mp4" for p in out.glob("*/frames.json"))
        if done:
            return done[-1]
        out.mkdir(parents=True, exist_ok=True)
        source = out / "source_w_plus.pt"
        torch.save({"w_plus": painting.w.detach().cpu().clone()}, source)
        models = dict(self.cfg.model_files())
        return animate(str(sound_path), str(source), out, models, anim, progress=progress or False)["video"]

    # ------------------------------------------------------------------------------------------ live mode
    @torch.no_grad()
    def live_frames(self, w_source: torch.Tensor, windows: torch.Tensor, strength: float) -> torch.Tensor:
        """Live-mode frames: encoder windows (K, T) -> embeddings -> mapper -> uint8 (K, 3, H, W), in one batch."""
        if self.mapper is None:
            raise ModeUnavailable("live mode needs a mapper: set `mapper:` in the page's config")
        emb = F.normalize(self.encoder(windows.to(self.device), augment=False).float(), dim=-1)
        w = self.mapper.edit(w_source.to(self.device).expand(len(windows), -1, -1), emb, strength=strength)
        return to_uint8(self.generator.synthesis(w)).cpu()
