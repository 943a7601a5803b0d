"""Sound-guided editing of StyleGAN2 W+ codes (paper Eq. 2), one batch of (source, sound) pairs at a time.

For each pair, with w_s the source code and a the sound's embedding in CLIP space,

    w* = argmin_w  (1 - cos(CLIP_img(G(w)), a))  +  lambda_sim * ||w - w_s||^2

with the squared distance summed over all W+ entries (the form the lambda values are calibrated for). Each pair
owns its own W+ code; the batch loss is the sum over pairs, and Adam is element-wise, so a batch of B pairs gives
exactly the B single-pair edits, B times cheaper on a GPU. The learning rate follows StyleCLIP's schedule
(`styleclip_lr`). The loss (`eq2_loss`) and one Adam step of it, eager or replayed from a CUDA graph, live in
`eq2_step.py`. `optimise` is the stateless edit every entry point calls (jobs, the edit command, the page);
`ManipulationModule` runs it as a job under `Trainer.predict(inference_mode=False)`, so pairs spread over GPUs.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import clip as clip_pkg
import numpy as np
import pytorch_lightning as pl
import torch
import torch.distributed as dist
import torch.nn.functional as F
from pytorch_lightning.utilities import rank_zero_info
from tqdm.auto import tqdm

from datamodules.audio_windows import POLICIES as SOUND_WINDOW_POLICIES
from datamodules.audio_windows import read_windows
from datamodules.latent_sources import Source, source_wplus
from datamodules.loudness import MIN_DURATION_S, SILENCE_FLOOR_DBFS, QuietAudioError, quiet_reason, rms_dbfs
from datamodules.official_frontend import load_official_audio
from datamodules.output_root import default_output_dir
from lightning_modules.audio_export import load_audio_encoder
from lightning_modules.clip_wrapper import CLIPWrapper, clip_cache_file
from lightning_modules.edit_metrics import format_table, make_preservation, per_sound_summary
from lightning_modules.edit_outputs import (
    make_grid,
    new_run_dir,
    resize_uint8,
    save_gif,
    save_png,
    slug,
    to_uint8,
    unique_names,
)
from lightning_modules.eq2_step import PRECISIONS, Eq2Step, GraphedEq2Step, eq2_loss
from lightning_modules.layer_masking import AdaptiveLayerMask, row_dist2
from lightning_modules.networks.checkpoints import load_generator
from lightning_modules.networks.mapper import SoundMapper, load_mapper
from lightning_modules.networks.official_audio_encoder import OfficialAudioEncoder
from lightning_modules.sound_embedding import embed_windows


def styleclip_lr(step: int, steps: int, lr: float, rampdown: float = 0.25, rampup: float = 0.05) -> float:
    """StyleCLIP's learning rate at ``step`` of ``steps``: linear warm-up over the first 5 %, cosine decay over
    the last 25 %. With t = step / steps: ramp = min(1, (1 - t) / 0.25); ramp = 0.5 - 0.5 cos(pi ramp);
    ramp *= min(1, t / 0.05); lr_t = lr * ramp (so step 0 takes no step, as in StyleCLIP).
    """
    t = step / steps
    ramp = min(1.0, (1.0 - t) / rampdown)
    ramp = 0.5 - 0.5 * math.cos(math.pi * ramp)
    ramp *= min(1.0, t / rampup)
    return lr * ramp


def intensity_lambda(lambda_sim: float, level_db: float, floor_db: float = SILENCE_FLOOR_DBFS,
                     gain: float = 4.0) -> float:
    """Loudness-scaled lambda_sim: the level, normalised to [0, 1] over [floor_db, 0] dB, maps to
    lambda_sim * gain ** (1 - 2 * level), so a silent clip pulls ``gain`` times harder towards the source, a
    full-scale one ``gain`` times weaker (a stronger edit). Strictly decreasing in loudness for gain > 1.
    """
    level = min(1.0, max(0.0, (level_db - floor_db) / -floor_db))
    return lambda_sim * gain ** (1.0 - 2.0 * level)


def not_padding(seen: int, n: int, world: int, rank: int, n_items: int) -> torch.Tensor:
    """Mask (n,) of a rank's next n items that are real, not padding duplicates of a distributed sampler.

    Distributed samplers (Lightning's unrepeated one for predict, torch's DistributedSampler) deal the item at global
    position j * world + rank to rank `rank` as its j-th item; DistributedSampler pads the global list past the
    dataset's length with repeats, so positions >= n_items are duplicates. ``seen`` counts the rank's earlier items.
    """
    positions = (seen + torch.arange(n)) * world + rank
    return positions < n_items


@dataclass
class EditResult:
    """The outcome of optimising one batch of pairs (tensors on the CPU unless noted)."""

    w: torch.Tensor  # (B, L, D) edited codes
    images: torch.Tensor  # (B, 3, H, W) edited images in [-1, 1] (device of the generator)
    source_images: torch.Tensor  # (B, 3, H, W) G(w_s) in [-1, 1]
    losses: torch.Tensor  # (steps, B) loss of each pair at each step, before that step's update
    cos_before: torch.Tensor  # (B,)
    cos_after: torch.Tensor  # (B,)
    loss_after: torch.Tensor  # (B,)
    w_dist: torch.Tensor  # (B,) ||w - w_s|| (L2 norm over all W+ entries)
    frames: list[torch.Tensor] = field(default_factory=list)  # uint8 (B, 3, h, w) every `gif_every` steps
    layer_weights: torch.Tensor | None = None  # (B, L) final sigmoid(m) of adaptive layer masking (None: off)


StepCallback = Callable[[int, torch.Tensor, torch.Tensor], bool | None]


def optimise(
    G: torch.nn.Module,
    clip_model: CLIPWrapper,
    w_source: torch.Tensor,
    target: torch.Tensor,
    lambda_sim: torch.Tensor | float,
    *,
    steps: int = 300,
    lr: float = 0.1,
    w_init: torch.Tensor | None = None,
    callback: StepCallback | None = None,
    gif_every: int = 0,
    frame_size: int = 128,
    progress: bool = False,
    precision: str = "fp32",
    cuda_graph: bool = False,
    adaptive_layer_masking: bool = False,
) -> EditResult:
    """Eq. 2 for a batch of pairs: w_source (B, L, D), target (B, D), lambda_sim (B,), (B, L) or a scalar.

    Stateless: everything an edit depends on is an argument, so concurrent callers (the page, jobs) cannot race.
    ``w_init`` starts the search elsewhere than at the source (e.g. a mapper's output: `refine` mode); the distance
    term is always to ``w_source``. ``callback(step, images, loss)`` runs after each step with that step's images
    (B, 3, H, W) in [-1, 1] and per-pair losses (B,), detached (copy them to keep them: with ``cuda_graph`` they are
    overwritten by the next step); returning True stops the optimisation after that step (a cancel button).
    ``precision`` 'bf16' runs the forward pass under bfloat16 autocast; ``cuda_graph`` replays each step from a
    captured CUDA graph (`GraphedEq2Step`; CUDA only). ``adaptive_layer_masking`` weights each W+ row's distance by
    sigmoid(m_l), updated after every step by the official rule (`lightning_modules.layer_masking`): the step's
    per-row lambda (B, L) is rewritten in place, so a captured graph reads the new weights too. Gradients are
    enabled here even under no_grad (as Lightning's predict loop runs); inference mode cannot be undone from inside
    and raises.
    """
    if torch.is_inference_mode_enabled():
        raise RuntimeError("Eq. 2 optimises W+ codes: call it outside inference mode (in a Lightning predict job, "
                           "run the Trainer with inference_mode=False)")
    w_source = w_source.detach().float()
    target = F.normalize(target.detach().float().to(w_source.device), dim=-1)
    lam = torch.as_tensor(lambda_sim, dtype=torch.float32, device=w_source.device)
    lam = lam.expand(w_source.shape[0], *lam.shape[1:]) if lam.ndim == 2 else lam.expand(w_source.shape[0])
    start = w_source if w_init is None else w_init.detach().float().to(w_source.device)
    if start.shape != w_source.shape:
        raise ValueError(f"w_init has shape {tuple(start.shape)}, the sources {tuple(w_source.shape)}")
    losses, frames = [], []
    source_images = cos_before = None
    if w_init is not None:  # the first step sees G(w_init), not the source: score the source on its own
        with torch.no_grad():
            source_images = G.synthesis(w_source)
            cos_before = (clip_model.encode_image(source_images) * target).sum(-1)
    mask = None
    if adaptive_layer_masking:
        mask = AdaptiveLayerMask(*w_source.shape[:2], device=w_source.device)
        base = lam if lam.ndim == 2 else lam[:, None].expand(*w_source.shape[:2])
        lam = base * mask.weights()
    step_fn = None
    if steps > 0:
        kind = GraphedEq2Step if cuda_graph else Eq2Step
        step_fn = kind(G, clip_model, start, w_source, target, lam, precision=precision)
    bar = tqdm(range(steps), desc="Eq. 2", leave=False, disable=not progress)
    for step in bar:
        rows = row_dist2(step_fn.w.detach(), w_source) if mask is not None else None  # at this step's forward pass
        images, loss, cos = step_fn(styleclip_lr(step, steps, lr))
        if mask is not None:  # the rule, then the new weights into the step's lambda (in place)
            mask.update_(rows)
            step_fn.lambda_sim.copy_(base * mask.weights())
        if source_images is None:
            source_images, cos_before = images.clone(), cos.clone()
        if gif_every and step % gif_every == 0:
            frames.append(resize_uint8(to_uint8(images), min(frame_size, images.shape[-1])))
        losses.append(loss.clone())
        if not bar.disable:  # .item() waits for the GPU: only when someone watches
            bar.set_postfix(cos=f"{cos.mean().item():.3f}")
        if callback is not None and callback(step, images, loss):
            break
    with torch.no_grad():
        w = start.clone() if step_fn is None else step_fn.w.detach().clone()
        images = G.synthesis(w)
        loss, cos, dist2 = eq2_loss(clip_model.encode_image(images), target, w, w_source, lam)
    if source_images is None:  # steps == 0: the edit is the source
        source_images, cos_before = images, cos
    if gif_every:
        frames.append(resize_uint8(to_uint8(images), min(frame_size, images.shape[-1])))
    return EditResult(
        w=w.cpu(), images=images, source_images=source_images,
        losses=torch.stack(losses).cpu() if losses else torch.zeros(0, w.shape[0]),
        cos_before=cos_before.cpu(), cos_after=cos.cpu(), loss_after=loss.cpu(), w_dist=dist2.sqrt().cpu(),
        frames=frames, layer_weights=mask.weights().cpu() if mask is not None else None,
    )

class ManipulationModule(pl.LightningModule):
    """Edits a batch of (source, sound) pairs per predict step; writes PNGs, W+ codes, a grid and metrics.

    Args:
        generator: StyleGAN2 checkpoint (any format `load_generator` reads).
        audio_encoder: exported audio encoder (`export_audio_encoder`); needed whenever the job has sounds.
        clip: CLIP model name (downloaded to the cache) or file; must share the audio encoder's embedding space.
        steps, lr: Adam steps and peak learning rate on W+ (paper/StyleCLIP: 300, 0.1).
        lambda_sim: weight of the squared W+ distance to the source (0.008 as for faces and paintings;
            the official code uses 0.002 for landscapes).
        truncation: psi for seed sources (0.7).
        sound_crop: which part of a clip the encoder hears (`datamodules.audio_windows`): 'mean' (normalised mean
            of the embeddings of the clip's consecutive windows; the default), 'center', 'loudest' window, or a
            'random' (seeded) crop; clips shorter than the window are zero-padded. The official encoder takes
            whole clips ('random' selects its editing script's crop, anything else its centre crop).
        text_prompt, audio_weight: optional guidance mixing, target = normalise(a * audio + (1 - a) * text).
        intensity: scale lambda_sim by the clip's loudness (`intensity_lambda`); intensity_gain, loudness_floor_db
            (level 0 of the scale, and the silence floor below which a clip counts as too quiet to guide an edit).
        allow_silence: a clip quieter than loudness_floor_db or shorter than min_sound_seconds is edited anyway and
            flagged (`quiet` in job.json and metrics.json, counted in the summary) when True, the batch default;
            when False the job is refused before any output, naming the clip (the edit command's default).
        adaptive_layer_masking: weight each W+ row's distance by sigmoid(m_l), adapted after every step by the
            CVPR 2022 code's rule (`lightning_modules.layer_masking`); off, as in the official code.
        eval_clip, eval_prompt: a second, independent CLIP that scores edited images against
            eval_prompt.format(label=<sound label>) before/after (None: off).
        preservation: how close each edit stays to its source (`lightning_modules.edit_metrics`): "lpips" (LPIPS-
            `lpips_net` between source and edit when its ImageNet backbone is cached, or downloadable with
            `lpips_download`; otherwise the CLIP image-image cosine, named so with the reason) or
            "clip_image_similarity". The CLIP image similarity uses eval_clip when set, else clip.
        output_dir, run_name: outputs go to a new directory output_dir/run_name-<time> ($AIARTIST_OUTPUT_DIR or
            ./outputs when output_dir is None); nothing existing is overwritten.
        gif_every: record a frame every k steps and write one GIF per pair (0: off).
        grid_cell: side of one grid cell in px; save_latents: also write each edited W+ code (.pt).
        seed: seeds random sound crops; mean_latent_samples: z samples for the mean latent when the checkpoint
            stores none.
        progress: show a per-step progress bar (rank 0).
        precision: 'fp32' (default) or 'bf16' (forward pass under bfloat16 autocast; the loss stays float32).
        cuda_graph: on CUDA, capture one Eq. 2 step in a CUDA graph and replay it (`GraphedEq2Step`): the same
            edit with one launch per step instead of hundreds; ignored on the CPU. benchmarks/RESULTS.md has the
            numbers for both knobs.
        trust_pickle: let a generator pickle you trust name code outside the StyleGAN allowlist (off: refused).
        mode: 'optimise' (Eq. 2 from the source, the paper's method), 'mapper' (one forward pass of a trained
            SoundMapper) or 'refine' (the mapper's output as the start of refine_steps Eq. 2 steps); see edit_modes.
        mapper: the SoundMapper file for modes mapper/refine (experiments.train_mapper; toy world: toy_mapper.pt).
        strength: scales the edit's displacement from the source, w_s + strength * (w - w_s), in every mode
            (1: as found; 0: the source; negative: away from the sound).
        refine_steps: Eq. 2 steps after the mapper in refine mode.
    """

    def __init__(
        self,
        generator: str,
        audio_encoder: str | None = None,
        clip: str = "ViT-B/32",
        steps: int = 300,
        lr: float = 0.1,
        lambda_sim: float = 0.008,
        truncation: float = 0.7,
        sound_crop: str = "mean",
        text_prompt: str | None = None,
        audio_weight: float = 1.0,
        intensity: bool = False,
        intensity_gain: float = 4.0,
        loudness_floor_db: float = SILENCE_FLOOR_DBFS,
        allow_silence: bool = True,
        min_sound_seconds: float = MIN_DURATION_S,
        adaptive_layer_masking: bool = False,
        eval_clip: str | None = None,
        eval_prompt: str = "This is a sound of {label}.",
        preservation: str = "lpips",
        lpips_net: str = "vgg",
        lpips_download: bool = False,
        output_dir: str | None = None,
        run_name: str = "manipulation",
        gif_every: int = 0,
        grid_cell: int = 256,
        save_latents: bool = True,
        seed: int = 0,
        mean_latent_samples: int = 4096,
        progress: bool = True,
        precision: str = "fp32",
        cuda_graph: bool = False,
        trust_pickle: bool = False,
        mode: str = "optimise",
        mapper: str | None = None,
        strength: float = 1.0,
        refine_steps: int = 20,
    ) -> None:
        super().__init__()
        from lightning_modules.edit_modes import check_mode  # (edit_modes builds on this file's optimise)

        check_mode(mode, mapper or None)
        if steps < 0 or lr <= 0 or lambda_sim < 0:
            raise ValueError(f"need steps >= 0, lr > 0, lambda_sim >= 0; got {steps}, {lr}, {lambda_sim}")
        if not 0.0 <= audio_weight <= 1.0:
            raise ValueError(f"audio_weight must lie in [0, 1], got {audio_weight}")
        if audio_weight < 1.0 and not text_prompt:
            raise ValueError("audio_weight < 1 mixes in a text prompt: set text_prompt")
        if sound_crop not in SOUND_WINDOW_POLICIES:
            raise ValueError(f"sound_crop must be one of {', '.join(SOUND_WINDOW_POLICIES)}, got {sound_crop!r}")
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        if preservation not in ("lpips", "clip_image_similarity"):
            raise ValueError(f"preservation must be 'lpips' or 'clip_image_similarity', got {preservation!r}")
        if intensity and intensity_gain <= 1.0:
            raise ValueError(f"intensity_gain must be > 1 for a monotonic intensity mode, got {intensity_gain}")
        self.job_warnings: list[str] = []
        if steps == 0:
            self.job_warnings.append("steps=0: no optimisation step runs, every edit is its source unchanged")
            warnings.warn(self.job_warnings[-1], stacklevel=2)
        self.save_hyperparameters()
        self.generator: torch.nn.Module | None = None
        self.audio_encoder: torch.nn.Module | None = None
        # Frozen CLIP models are plain objects (not submodules): they never enter state dicts.
        self.clip_model: CLIPWrapper | None = None
        self.eval_clip_model: CLIPWrapper | None = None
        self.mapper: SoundMapper | None = None
        self.run_dir: Path | None = None

    # ----------------------------------------------------------------------------------------------- models
    def configure_model(self) -> None:
        """Load the generator and CLIP(s) once; the audio encoder loads when a job has sounds."""
        if self.generator is None:
            self.generator = load_generator(self.hparams.generator, trust_pickle=self.hparams.trust_pickle)
            self.generator.eval().requires_grad_(False)
        if self.clip_model is None:
            self.clip_model = CLIPWrapper(self.hparams.clip)
        if self.hparams.eval_clip and self.eval_clip_model is None:
            self.eval_clip_model = CLIPWrapper(self.hparams.eval_clip)
        if self.hparams.mode != "optimise" and self.mapper is None:
            self.mapper = load_mapper(self.hparams.mapper)

    def missing_inputs(self) -> list[tuple[str, str]]:
        """(what, expected path) for each weight file the job needs that is not on disk (CLIP names: the cache)."""
        hp, missing = self.hparams, []
        if not Path(hp.generator).is_file():
            missing.append(("generator checkpoint (model.generator)", hp.generator))
        if hp.audio_encoder and not Path(hp.audio_encoder).is_file():
            missing.append(("audio encoder (model.audio_encoder)", hp.audio_encoder))
        if hp.mode != "optimise" and not Path(hp.mapper).is_file():
            missing.append(("sound mapper (model.mapper)", hp.mapper))
        for key in ("clip", "eval_clip"):
            name = hp[key]
            if name and not Path(name).is_file():
                expected = clip_cache_file(name) if name in clip_pkg.available_models() else name
                if not Path(expected).is_file():
                    missing.append((f"CLIP {name!r} (model.{key})", expected))
        return missing

    def _load_audio_encoder(self) -> torch.nn.Module:
        if self.audio_encoder is None:
            if not self.hparams.audio_encoder:
                raise ValueError("the job has sounds, so model.audio_encoder (an exported audio encoder) is required")
            self.audio_encoder = load_audio_encoder(self.hparams.audio_encoder).eval().requires_grad_(False)
            self.audio_encoder.to(self.device)
        return self.audio_encoder

    def mean_latent(self) -> torch.Tensor:
        """The generator's mean W (1, D): the stored one, else a fixed-seed estimate (same on every rank)."""
        with torch.no_grad():
            return self.generator.mean_latent(self.hparams.mean_latent_samples)

    # ----------------------------------------------------------------------------------------------- targets
    @torch.no_grad()
    def embed_sounds(self, paths: list[str]) -> tuple[torch.Tensor, list[float]]:
        """Embed each clip once: (K, D) L2-normalised embeddings and each clip's loudness in dBFS.

        Clips of any rate/length go through the window reader (`datamodules.audio_windows`) by `sound_crop`. Which
        part of each clip was used, and why a clip is too quiet or short to guide an edit (None if it is not), go to
        ``self.sound_info`` (one dict per clip, in order).
        """
        encoder = self._load_audio_encoder()
        if isinstance(encoder, OfficialAudioEncoder):
            # The official preprocessing takes whole clips (dB reference = the clip's loudest bin, crop in frames)
            # and its own resampler; 'random' is its editing script's policy (random crop, zero-padding after).
            waves = [load_official_audio(path) for path in paths]
            policy = "manipulation" if self.hparams.sound_crop == "random" else "center"
            emb = encoder.embed_clips(waves, crop=policy, generator=torch.Generator().manual_seed(self.hparams.seed))
            rate = encoder.sample_rate
            self.sound_info = [{"duration_s": w.shape[-1] / rate, "used": f"whole clip ({policy} crop of the official "
                                "preprocessing)", "quiet": self._quiet(w, rate)} for w in waves]
            return F.normalize(emb.float(), dim=-1), [rms_dbfs(w) for w in waves]
        clips = [read_windows(path, encoder.sample_rate, encoder.clip_samples, policy=self.hparams.sound_crop,
                              seed=self.hparams.seed * 100_003 + k) for k, path in enumerate(paths)]
        self.sound_info = [{**clip.as_dict(), "quiet": self._quiet(clip.content(), encoder.sample_rate)}
                           for clip in clips]
        return embed_windows(encoder, clips), [rms_dbfs(clip.content()) for clip in clips]

    def _quiet(self, used: torch.Tensor, sample_rate: int) -> str | None:
        return quiet_reason(used, sample_rate, self.hparams.loudness_floor_db, self.hparams.min_sound_seconds)

    def check_sounds(self) -> None:
        """Refuse quiet or too short clips (allow_silence=False) or warn about each one; before any output."""
        for (label, path), info in zip(self.sounds, self.sound_info):
            if info["quiet"] is None:
                continue
            if not self.hparams.allow_silence:
                raise QuietAudioError(f"{path}: {info['quiet']}; refusing to edit with it (pass allow_silence=True "
                                      "to edit anyway)")
            self.job_warnings.append(f"sound {label!r} ({path}): {info['quiet']}; edited anyway, flagged as quiet")
            warnings.warn(self.job_warnings[-1], stacklevel=2)

    @torch.no_grad()
    def targets_for(self, sound_emb: torch.Tensor) -> torch.Tensor:
        """Guidance targets (K, D): the sound embeddings, optionally mixed with a CLIP text prompt."""
        a = self.hparams.audio_weight
        if self.hparams.text_prompt and a < 1.0:
            text = self.clip_model.encode_text([self.hparams.text_prompt]).to(sound_emb)
            return F.normalize(a * sound_emb + (1.0 - a) * text, dim=-1)
        return sound_emb

    def lambdas_for(self, levels_db: list[float]) -> torch.Tensor:
        """Per-sound lambda_sim (K,): constant, or loudness-scaled in intensity mode."""
        hp = self.hparams
        if not hp.intensity:
            return torch.full((len(levels_db),), float(hp.lambda_sim))
        return torch.tensor([intensity_lambda(hp.lambda_sim, lv, hp.loudness_floor_db, hp.intensity_gain)
                             for lv in levels_db])

    # ----------------------------------------------------------------------------------------------- Eq. 2
    def optimise(self, w_source: torch.Tensor, target: torch.Tensor, lambda_sim: torch.Tensor | float,
                 gif_every: int = 0, frame_size: int = 128, w_init: torch.Tensor | None = None,
                 callback: StepCallback | None = None) -> EditResult:
        """`optimise` (Eq. 2) with this module's generator, CLIP, steps and learning rate."""
        hp = self.hparams
        return optimise(self.generator, self.clip_model, w_source, target, lambda_sim, steps=hp.steps, lr=hp.lr,
                        w_init=w_init, callback=callback, gif_every=gif_every, frame_size=frame_size,
                        progress=hp.progress and self.global_rank == 0, precision=hp.precision,
                        cuda_graph=hp.cuda_graph and self.device.type == "cuda",
                        adaptive_layer_masking=hp.adaptive_layer_masking)

    # ----------------------------------------------------------------------------------------------- the job
    def prepare_job(self, sources: list[Source], sounds: list[tuple[str, str]]) -> None:
        """Resolve source codes and embed every sound once for the whole job (not per step, not per batch)."""
        self.configure_model()
        self.clip_model.to(self.device)
        if self.eval_clip_model is not None:
            self.eval_clip_model.to(self.device)
        self.sources, self.sounds = list(sources), list(sounds)
        self.w_sources = source_wplus(self.sources, self.generator, self.hparams.truncation, self.mean_latent())
        sound_emb, self.loudness = self.embed_sounds([path for _, path in self.sounds])
        self.check_sounds()
        for (label, path), info in zip(self.sounds, self.sound_info):  # which part of each clip the job uses
            rank_zero_info(f"sound {label!r} ({path}): {info['used']}")
        if sound_emb.shape[-1] != self.clip_model.embed_dim:
            raise ValueError(
                f"audio encoder {self.hparams.audio_encoder} embeds into {sound_emb.shape[-1]} dims but CLIP "
                f"{self.hparams.clip} into {self.clip_model.embed_dim}: use the CLIP the encoder was trained against"
            )
        self.targets = self.targets_for(sound_emb)
        self.lambdas = self.lambdas_for(self.loudness).to(self.device)
        hp = self.hparams
        self.preservation = make_preservation(hp.preservation, self.eval_clip_model or self.clip_model, hp.lpips_net,
                                              hp.lpips_download, self.device)
        self.eval_text = None
        if self.eval_clip_model is not None:
            prompts = [self.hparams.eval_prompt.format(label=label) for label, _ in self.sounds]
            self.eval_text = self.eval_clip_model.encode_text(prompts)

    def on_predict_start(self) -> None:
        if torch.is_inference_mode_enabled():
            raise RuntimeError("ManipulationModule needs gradients inside predict: set trainer.inference_mode=false")
        dm = self.trainer.datamodule
        if dm is None or not hasattr(dm, "sources") or not hasattr(dm, "sounds"):
            raise RuntimeError("ManipulationModule.predict needs an EditPairsDataModule (sources x sounds)")
        self.prepare_job(dm.sources, dm.sounds)
        self.n_pairs = len(dm.sources) * len(dm.sounds)
        run_dir = None
        if self.global_rank == 0:
            run_dir = str(new_run_dir(self.hparams.output_dir or default_output_dir() / "manipulation",
                                      self.hparams.run_name))
            for sub in ("edits", "sources") + (("latents",) if self.hparams.save_latents else ()) + (
                    ("gifs",) if self.hparams.gif_every else ()):
                Path(run_dir, sub).mkdir()
            self._write_json(Path(run_dir, "job.json"), self._job_description())
        self.run_dir = Path(self.trainer.strategy.broadcast(run_dir, src=0))
        self._records: list[dict] = []
        self._seen = 0

    def predict_step(self, batch: dict, batch_idx: int) -> list[dict]:
        keep = self._not_padding(len(batch["index"]))
        index = batch["index"].cpu()[keep]
        if index.numel() == 0:
            return []
        src, snd = batch["source_index"].cpu()[keep], batch["sound_index"].cpu()[keep]
        from lightning_modules.edit_modes import run_edit  # (edit_modes builds on this file's optimise)

        hp = self.hparams
        if self.mapper is not None:
            self.mapper.to(self.device)
        result = run_edit(self.generator, self.clip_model, self.w_sources[src.to(self.w_sources.device)],
                          self.targets[snd.to(self.device)], self.lambdas[snd.to(self.device)], mode=hp.mode,
                          mapper=self.mapper, strength=hp.strength, steps=hp.steps, lr=hp.lr,
                          refine_steps=hp.refine_steps, gif_every=hp.gif_every, frame_size=min(256, hp.grid_cell),
                          progress=hp.progress and self.global_rank == 0, precision=hp.precision,
                          cuda_graph=hp.cuda_graph and self.device.type == "cuda")
        eval_before = eval_after = None
        if self.eval_clip_model is not None:
            with torch.no_grad():
                text = self.eval_text[snd.to(self.eval_text.device)]
                eval_before = (self.eval_clip_model.encode_image(result.source_images) * text).sum(-1).cpu()
                eval_after = (self.eval_clip_model.encode_image(result.images) * text).sum(-1).cpu()
        edited = to_uint8(result.images)
        source = to_uint8(result.source_images)
        pixel_l2 = (result.images - result.source_images).float().pow(2).flatten(1).mean(1).sqrt().cpu()
        preserved = self.preservation(result.source_images, result.images)
        records = []
        for b in range(index.numel()):
            i, s, k = int(index[b]), int(src[b]), int(snd[b])
            name = f"{i:04d}_{slug(self.sources[s].name)}_{slug(self.sounds[k][0])}"
            save_png(edited[b], self.run_dir / "edits" / f"{name}.png")
            if self.hparams.save_latents:
                torch.save({"w_plus": result.w[b].clone(), "w_source": self.w_sources[s].cpu().clone(),
                            "source": self.sources[s].name, "sound": self.sounds[k][0]},
                           self.run_dir / "latents" / f"{name}.pt")
            if result.frames:
                save_gif([f[b] for f in result.frames], self.run_dir / "gifs" / f"{name}.gif")
            rec = dict(
                index=i, source=self.sources[s].name, sound=self.sounds[k][0], sound_file=self.sounds[k][1],
                file=f"edits/{name}.png", lambda_sim=float(self.lambdas[k]), loudness_db=self.loudness[k],
                sound_used=self.sound_info[k]["used"], quiet=self.sound_info[k]["quiet"],
                clip_cos_before=float(result.cos_before[b]), clip_cos_after=float(result.cos_after[b]),
                loss_before=float(result.losses[0, b]) if len(result.losses) else float(result.loss_after[b]),
                loss_after=float(result.loss_after[b]), w_dist=float(result.w_dist[b]),
                pixel_l2=float(pixel_l2[b]), clip_gain=float(result.cos_after[b] - result.cos_before[b]),
                **{self.preservation.metric: float(preserved[b])},
            )
            if eval_before is not None:
                rec.update(eval_cos_before=float(eval_before[b]), eval_cos_after=float(eval_after[b]),
                           eval_gain=float(eval_after[b] - eval_before[b]))
            records.append(rec)
            self._records.append({**rec, "thumb": resize_uint8(edited[b][None], self.hparams.grid_cell)[0],
                                  "source_thumb": resize_uint8(source[b][None], self.hparams.grid_cell)[0]})
        return records

    def _not_padding(self, n: int) -> torch.Tensor:
        world = self.trainer.world_size if self._trainer is not None else 1
        keep = not_padding(self._seen, n, world, self.global_rank, self.n_pairs)
        self._seen += n
        return keep

    def on_predict_end(self) -> None:
        """Gather every rank's results; rank 0 writes the grid, metrics.json and logs to W&B."""
        records = self._gather(self._records)
        if self.global_rank == 0:
            unique = {r["index"]: r for r in records}  # drops any duplicate a sampler added
            self.write_summary([unique[i] for i in sorted(unique)])
        if dist.is_available() and dist.is_initialized():
            dist.barrier()

    @staticmethod
    def _gather(records: list[dict]) -> list[dict]:
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return records
        parts: list[list[dict] | None] = [None] * dist.get_world_size()
        dist.all_gather_object(parts, records)
        return [r for part in parts for r in part]

    def write_summary(self, records: list[dict]) -> None:
        """Grid (sources x [source | sounds]), source PNGs, metrics.json and W&B images for finished pairs."""
        cell = self.hparams.grid_cell
        by_pair = {(r["source"], r["sound"]): r for r in records}
        source_thumbs = {r["source"]: r["source_thumb"] for r in records}
        rows = []
        for src in self.sources:
            thumb = source_thumbs.get(src.name)
            if thumb is None:  # a source without finished pairs still gets its own image
                with torch.no_grad():
                    img = self.generator.synthesis(self.w_sources[self.sources.index(src)][None])
                thumb = resize_uint8(to_uint8(img), cell)[0]
            rows.append([thumb] + [by_pair.get((src.name, label), {}).get("thumb") for label, _ in self.sounds])
        for name, row in zip(unique_names([s.name for s in self.sources]), rows):  # 'a b' and 'a_b' both get a file
            save_png(row[0], self.run_dir / "sources" / f"{slug(name)}.png")
        grid = make_grid(rows, ["source"] + [label for label, _ in self.sounds], [s.name for s in self.sources], cell)
        grid_path = self.run_dir / "grid.png"
        save_png(torch.from_numpy(grid).permute(2, 0, 1), grid_path)
        pairs = [{k: v for k, v in r.items() if k not in ("thumb", "source_thumb")} for r in records]
        summary = {
            "pairs": len(pairs),
            "clip_cos_before_mean": float(np.mean([p["clip_cos_before"] for p in pairs])) if pairs else None,
            "clip_cos_after_mean": float(np.mean([p["clip_cos_after"] for p in pairs])) if pairs else None,
            "quiet_pairs": sum(p["quiet"] is not None for p in pairs),
            "warnings": list(self.job_warnings),
        }
        if pairs and "eval_cos_before" in pairs[0]:
            summary["eval_cos_before_mean"] = float(np.mean([p["eval_cos_before"] for p in pairs]))
            summary["eval_cos_after_mean"] = float(np.mean([p["eval_cos_after"] for p in pairs]))
        columns = self.per_sound_columns()
        per_sound = per_sound_summary(pairs, columns)
        table = format_table(per_sound, columns)
        summary["preservation"] = self.preservation.describe()
        self._write_json(self.run_dir / "metrics.json", {"summary": summary, "per_sound": per_sound, "pairs": pairs})
        (self.run_dir / "per_sound.txt").write_text(table + "\n")
        self.per_sound = per_sound
        self.grid_path, self.summary, self.pair_metrics = grid_path, summary, pairs
        logger = self.logger
        if logger is not None and hasattr(logger, "log_image"):
            caption = "rows: " + ", ".join(s.name for s in self.sources) + " | columns: source, " + ", ".join(
                label for label, _ in self.sounds)
            # uint8 (H, W, 3): W&B 0.31 casts float images straight to uint8 (a [0, 1] float grid would log black),
            # older versions min-max stretch floats; uint8 is shown as is by both.
            logger.log_image(key="manipulation/grid", images=[grid], caption=[caption])
            logger.log_metrics({f"manipulation/{k}": v for k, v in summary.items()
                                if isinstance(v, int | float) and not isinstance(v, bool)})
            if hasattr(logger, "log_table"):
                logger.log_table(key="manipulation/per_sound", columns=["sound", "pairs", *columns],
                                 data=[[r["sound"], r["pairs"], *(r.get(c) for c in columns)] for r in per_sound])
        if pairs:
            note = f" ({self.preservation.note})" if self.preservation.note else ""
            rank_zero_info(f"per sound (preservation: {self.preservation.metric}{note}):\n{table}")
        rank_zero_info(f"manipulation: {len(pairs)} edits in {self.run_dir} (grid: {grid_path}); mean CLIP cosine "
                       f"to target {summary['clip_cos_before_mean']:.4f} -> {summary['clip_cos_after_mean']:.4f}"
                       if pairs else f"manipulation: no pairs finished; outputs in {self.run_dir}")

    def per_sound_columns(self) -> list[str]:
        """Columns of the per-sound table: the CLIP scores and their gain, the independent CLIP's gain when
        configured, preservation, and the W+ / pixel distances."""
        cols = ["clip_cos_before", "clip_cos_after", "clip_gain"]
        if self.eval_clip_model is not None:
            cols += ["eval_cos_before", "eval_cos_after", "eval_gain"]
        return cols + [self.preservation.metric, "w_dist", "pixel_l2"]

    def _job_description(self) -> dict:
        return {
            "hparams": {k: v for k, v in self.hparams.items()},
            "sources": [{"name": s.name, "kind": s.kind, "seed": s.seed, "file": s.origin} for s in self.sources],
            "sounds": [{"label": label, "file": path, "loudness_db": lv, "lambda_sim": float(lam), **info}
                       for (label, path), lv, lam, info in zip(self.sounds, self.loudness, self.lambdas.tolist(),
                                                               self.sound_info)],
            "quiet_sounds": sum(info["quiet"] is not None for info in self.sound_info),
            "warnings": list(self.job_warnings),
            "generator": {"size": self.generator.size, "n_latent": self.generator.n_latent},
            "world_size": self.trainer.world_size if self._trainer is not None else 1,
        }

    @staticmethod
    def _write_json(path: Path, obj: dict) -> None:
        if path.exists():
            raise FileExistsError(f"{path} exists; outputs are never overwritten")
        path.write_text(json.dumps(obj, indent=2, default=str) + "\n")
