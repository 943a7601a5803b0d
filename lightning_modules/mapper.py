"""Training the SoundMapper (lightning_modules/networks/mapper.py): Eq. 2, amortised over sources and sounds.

For a source w and a target e in CLIP space (an audio embedding of a training clip or a class prompt's text
embedding), the mapper's edit w' = w + dw(w, e) pays exactly the per-pair loss the optimiser minimises (paper Eq. 2,
`eq2_loss`, the same function):

    L(w, e) = (1 - cos(CLIP_img(G(w')), e)) + lambda_delta * ||w' - w||^2

averaged over a batch of random (w, e) pairs. Sources are mapping-network samples (truncation configurable) and/or
W+ codes from a folder; targets are drawn from a cache of audio embeddings of the training sound set (computed once
per run, never per step) and the class prompts' text embeddings, in a configurable ratio. Validation renders a fixed
grid (sources x one clip per class) and logs the CLIP cosine gain and ||dw||.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.utilities import rank_zero_info
from torch.utils.data import DataLoader, Dataset

from datamodules.audio_io import AudioDecodeError, crop_or_pad, load_audio
from datamodules.audio_windows import read_windows
from datamodules.class_folders import list_clips
from datamodules.latent_sources import read_latent_file, seed_to_z
from datamodules.vggsound import index_audio_files
from datamodules.vggsound_csv import read_vggsound_csv
from lightning_modules.audio_export import load_audio_encoder
from lightning_modules.clip_wrapper import CLIPWrapper
from lightning_modules.edit_outputs import make_grid, resize_uint8, to_uint8, unused_path
from lightning_modules.eq2_step import eq2_loss
from lightning_modules.networks.checkpoints import load_generator
from lightning_modules.networks.mapper import SoundMapper, save_mapper
from lightning_modules.sound_embedding import embed_each_window
from lightning_modules.zero_shot import class_prompts


class PairSeeds(Dataset):
    """Item i is the integer i: the seed of training pair i (its source and its target are drawn from it)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        return i


def read_sound_set(root: str | Path, split: str | None, classes: list[str] | None) -> list[tuple[str, str]]:
    """(label, path) of every clip of a sound set in the VGGSound layout (vggsound.csv + audio files), in CSV order;
    `split` keeps 'train' or 'test' rows only (None: all), `classes` keeps those labels only."""
    root = Path(root)
    rows = read_vggsound_csv(root / "vggsound.csv")
    files = index_audio_files(root)
    out = []
    for row in rows:
        if (split is None or row.split == split) and (classes is None or row.label in classes) and row.key in files:
            out.append((row.label, files[row.key]))
    if not out:
        raise ValueError(f"{root}: no clips (split {split!r}, classes {classes}) in vggsound.csv with a file on disk")
    return out


class MapperModule(pl.LightningModule):
    """Trains one SoundMapper for every sound; see the module docstring for the loss.

    Args:
        generator: StyleGAN2 checkpoint (any format `load_generator` reads); frozen.
        clip: CLIP name or file (the one the audio encoder was trained against); frozen.
        audio_encoder: exported audio encoder(s) whose embeddings of `sound_set` are training targets (None: text
            only). Several encoders pool their embeddings, so one mapper serves every encoder it learned from; the
            first one's embeddings make the validation columns.
        sound_set: folder in the VGGSound layout (vggsound.csv + clips): its `train` rows are training targets, the
            first `test` clip of each class is a validation column.
        recordings: folder of real recordings by class, DIR/<class>/<files> (e.g. the toy world's training split
            after `realsounds layout`): each window's embedding and each recording's window mean are audio targets
            too, so the mapper learns where real recordings embed, not only synthetic clips (None: none).
        recording_windows: at most this many windows per recording (evenly spaced over a long one).
        classes: the labels used (None: every label of the sound set); their prompts are the text targets.
        prompt_template: class prompt, e.g. "This is a sound of {label}." (the encoder's training prompt).
        text_ratio: share of training targets drawn from the class prompts' text embeddings (rest: audio clips).
        mix_ratio: share of targets replaced by a random blend normalise(a·e1 + (1 − a)·e2), a ~ U(0, 1), of two
            drawn targets: real sounds embed between the classes, and the page mixes sounds with text prompts.
        sources: 'mapping' (z samples through the mapping network), 'folder' (W+ files in `wplus_dir`) or 'both'
            (half each).
        wplus_dir: folder of W/W+ files (e.g. experiments.project outputs) for sources 'folder'/'both'.
        truncation: psi of mapping-network sources.
        conditioning, n_layers, hidden, lr_mul, output_scale, row_codes: the SoundMapper (see its docstring).
        lambda_delta: weight of ||dw||^2 (summed over all W+ entries, as in Eq. 2).
        lr, betas, weight_decay: Adam(W) on the mapper.
        lr_schedule: 'constant' or 'cosine' (lr falls to 0 along a half cosine over trainer.max_steps: late steps
            settle instead of jittering around the minimum at the full lr).
        batch_size, pairs_per_epoch: random pairs per step / per epoch.
        val_sources: seeds of the validation grid's rows (never drawn in training: training seeds are >= 10^6).
        seed: seeds the pair draws; mean_latent_samples: z samples for the mean latent when the checkpoint has none.
        export_path: where fit's end writes the mapper file (None: <run dir>/mapper.pt); never overwrites.
    """

    def __init__(
        self,
        generator: str,
        clip: str = "ViT-B/32",
        audio_encoder: list[str] | str | None = None,
        sound_set: str | None = None,
        recordings: str | None = None,
        recording_windows: int = 16,
        classes: list[str] | None = None,
        prompt_template: str = "This is a sound of {label}.",
        text_ratio: float = 0.5,
        mix_ratio: float = 0.0,
        sources: str = "mapping",
        wplus_dir: str | None = None,
        truncation: float = 0.7,
        conditioning: str = "film",
        n_layers: int = 4,
        hidden: int | None = None,
        lr_mul: float = 0.01,
        output_scale: float = 0.1,
        row_codes: bool = False,
        lambda_delta: float = 0.003,
        lr: float = 0.5,
        betas: tuple[float, float] = (0.9, 0.999),
        weight_decay: float = 0.0,
        lr_schedule: str = "constant",
        batch_size: int = 8,
        pairs_per_epoch: int = 8000,
        val_sources: list[int] = (0, 1, 2, 3),
        seed: int = 0,
        mean_latent_samples: int = 4096,
        export_path: str | None = None,
    ) -> None:
        super().__init__()
        if not 0.0 <= text_ratio <= 1.0:
            raise ValueError(f"MapperModule: text_ratio must lie in [0, 1], got {text_ratio}")
        if text_ratio < 1.0 and not (audio_encoder and (sound_set or recordings)):
            raise ValueError("MapperModule: text_ratio < 1 trains on audio embeddings: set audio_encoder and "
                             "sound_set or recordings")
        if recording_windows < 1:
            raise ValueError(f"MapperModule: recording_windows must be >= 1, got {recording_windows}")
        if not 0.0 <= mix_ratio <= 1.0:
            raise ValueError(f"MapperModule: mix_ratio must lie in [0, 1], got {mix_ratio}")
        if lr_schedule not in ("constant", "cosine"):
            raise ValueError(f"MapperModule: lr_schedule must be 'constant' or 'cosine', got {lr_schedule!r}")
        if sources not in ("mapping", "folder", "both"):
            raise ValueError(f"MapperModule: sources must be 'mapping', 'folder' or 'both', got {sources!r}")
        if sources != "mapping" and not wplus_dir:
            raise ValueError(f"MapperModule: sources={sources!r} needs wplus_dir")
        if lambda_delta < 0 or lr <= 0 or batch_size < 1:
            raise ValueError(f"MapperModule: need lambda_delta >= 0, lr > 0, batch_size >= 1; got "
                             f"{lambda_delta}, {lr}, {batch_size}")
        self.save_hyperparameters()
        G = load_generator(generator)
        # Frozen networks are plain attributes: never in checkpoints, never trained, reloaded from their files.
        object.__setattr__(self, "generator", G.eval().requires_grad_(False))  # (not registered as a submodule)
        self.clip_model = CLIPWrapper(clip)
        self.mapper = SoundMapper(G.n_latent, G.style_dim, self.clip_model.embed_dim, conditioning=conditioning,
                                  n_layers=n_layers, hidden=hidden, lr_mul=lr_mul, output_scale=output_scale,
                                  row_codes=row_codes)
        self.encoder_calls = 0  # audio encoder forward passes this run (the cache is built once)
        self.audio_emb = self.audio_labels = self.text_emb = None

    # ------------------------------------------------------------------------------------------------ setup
    def setup(self, stage: str) -> None:
        """Move the frozen networks to the device and build the target cache once per run."""
        self.generator.to(self.device)
        self.clip_model.to(self.device)
        if self.text_emb is None:
            self.build_targets()
        with torch.no_grad():
            self.mean_w = self.generator.mean_latent(self.hparams.mean_latent_samples).to(self.device)
        self.folder_w = self._read_wplus_dir() if self.hparams.sources != "mapping" else None

    def _classes(self) -> list[str]:
        hp = self.hparams
        if hp.classes:
            return list(hp.classes)
        if hp.sound_set:
            return list(dict.fromkeys(label for label, _ in read_sound_set(hp.sound_set, None, None)))
        raise ValueError("MapperModule: set classes (the class prompts), or a sound_set to read them from")

    @property
    def encoder_paths(self) -> list[str]:
        """The audio encoders whose embeddings are targets (the `audio_encoder` field as a list)."""
        enc = self.hparams.audio_encoder
        return [] if not enc else [str(enc)] if isinstance(enc, (str, Path)) else [str(e) for e in enc]

    @torch.no_grad()
    def embed_clips(self, paths: list[str], encoder_path: str, batch: int = 32) -> torch.Tensor:
        """L2-normalised audio embeddings (N, E) of clips, centre-cropped/padded to the encoder's window."""
        encoder = load_audio_encoder(encoder_path).eval().requires_grad_(False).to(self.device)
        out = []
        for i in range(0, len(paths), batch):
            waves = [crop_or_pad(load_audio(p, encoder.sample_rate), encoder.clip_samples, mode="center")
                     for p in paths[i:i + batch]]
            out.append(encoder(torch.stack(waves).to(self.device), augment=False).float())
            self.encoder_calls += 1
        return F.normalize(torch.cat(out), dim=-1)

    @torch.no_grad()
    def embed_recordings(self, paths: list[Path], encoder_path: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised embeddings of real recordings: every window's, then each recording's window mean (as
        `embed_sound` makes it), one encoder pass per recording; and which recording each row came from. Undecodable
        files are skipped, counted."""
        encoder = load_audio_encoder(encoder_path).eval().requires_grad_(False).to(self.device)
        out, owner, bad = [], [], []
        for k, path in enumerate(paths):
            try:
                windows = read_windows(path, encoder.sample_rate, encoder.clip_samples, policy="mean",
                                       max_windows=self.hparams.recording_windows)
            except AudioDecodeError as err:
                bad.append(str(err))
                continue
            # at most recording_windows windows: one batch, so one encoder pass per recording (the count below)
            mean, (each,) = embed_each_window(encoder, [windows], batch_size=self.hparams.recording_windows)
            self.encoder_calls += 1
            out += [each, mean]
            owner += [k] * (len(each) + 1)
        if bad:
            rank_zero_info(f"mapper recordings: {len(bad)} of {len(paths)} files skipped (e.g. {bad[0]})")
        if not out:
            raise ValueError(f"recordings {self.hparams.recordings}: none of its {len(paths)} files could be read")
        return torch.cat(out), torch.tensor(owner)

    def build_targets(self) -> None:
        """Text embeddings of the class prompts, audio embeddings of the sound set's clips and of the recordings'
        windows (once per run)."""
        hp = self.hparams
        self.class_names = self._classes()
        self.text_emb = self.clip_model.encode_text(class_prompts(self.class_names, hp.prompt_template))
        self.val_names = list(self.class_names)
        self.val_emb = self.text_emb
        if not self.encoder_paths or not (hp.sound_set or hp.recordings):
            return
        index = lambda label: self.class_names.index(label) if label in self.class_names else -1  # noqa: E731
        train = val = []
        if hp.sound_set:
            train = read_sound_set(hp.sound_set, "train", self.class_names)
            first_test = {}
            for label, path in read_sound_set(hp.sound_set, "test", self.class_names):
                first_test.setdefault(label, path)
            val = [(label, first_test[label]) for label in self.class_names if label in first_test]
        recordings = list_clips(hp.recordings) if hp.recordings else []
        audio, labels = [], []
        for encoder in self.encoder_paths:
            if hp.sound_set:
                # validation clips, then training clips: separate batches (the committed toy mapper was built so;
                # a different batching changes the embeddings' last bits and with them the whole training run)
                val_emb = self.embed_clips([p for _, p in val], encoder)
                if val_emb.shape[1] != self.text_emb.shape[1]:
                    raise ValueError(f"audio encoder {encoder} embeds into {val_emb.shape[1]} dims, "
                                     f"CLIP {hp.clip} into {self.text_emb.shape[1]}: use the encoder's CLIP")
                if not audio:
                    self.val_emb = val_emb
                audio.append(self.embed_clips([p for _, p in train], encoder))
                labels += [index(label) for label, _ in train]
        n_rec = 0  # recording targets per encoder
        for encoder in self.encoder_paths if recordings else []:
            emb, owner = self.embed_recordings([p for _, p in recordings], encoder)
            n_rec = len(emb)
            if emb.shape[1] != self.text_emb.shape[1]:
                raise ValueError(f"audio encoder {encoder} embeds into {emb.shape[1]} dims, "
                                 f"CLIP {hp.clip} into {self.text_emb.shape[1]}: use the encoder's CLIP")
            audio.append(emb)
            labels += [index(recordings[k][0]) for k in owner.tolist()]
        self.audio_emb = torch.cat(audio)
        self.audio_labels = torch.tensor(labels)
        self.val_names = [label for label, _ in val] or self.val_names
        rank_zero_info(f"mapper targets: {len(train)} training clips and {len(recordings)} recordings ({n_rec} "
                       f"window/mean embeddings) x {len(self.encoder_paths)} encoder(s), {len(self.class_names)} "
                       f"class prompts (text share {hp.text_ratio}), {len(val)} validation clips")

    def _read_wplus_dir(self) -> torch.Tensor:
        files = sorted(p for p in Path(self.hparams.wplus_dir).rglob("*") if p.suffix in (".pt", ".pth", ".npy"))
        codes = [code for f in files for _, code in read_latent_file(f)]
        if not codes:
            raise ValueError(f"wplus_dir {self.hparams.wplus_dir}: no W/W+ files (.pt, .pth, .npy)")
        G = self.generator
        return torch.stack([c.expand(G.n_latent, G.style_dim) if c.ndim == 1 else c for c in codes]).to(self.device)

    # ------------------------------------------------------------------------------------------------ pairs
    @torch.no_grad()
    def sample_pairs(self, seeds: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Sources w (B, L, D) and targets e (B, E) of the training pairs named by `seeds` (deterministic)."""
        hp, G = self.hparams, self.generator
        gen = torch.Generator().manual_seed(hp.seed * 1_000_003 + int(seeds[0]))
        b = len(seeds)
        z = torch.randn(b, G.style_dim, generator=gen).to(self.device)
        w = G.mapping(z, truncation=hp.truncation, truncation_latent=self.mean_w)
        w = w[:, None].expand(-1, G.n_latent, -1).clone()
        if self.folder_w is not None:
            take = torch.ones(b, dtype=torch.bool) if hp.sources == "folder" else torch.rand(b, generator=gen) < 0.5
            pick = torch.randint(len(self.folder_w), (b,), generator=gen)
            w[take.to(self.device)] = self.folder_w[pick[take].to(self.device)]
        e = self._draw_targets(b, gen)
        if hp.mix_ratio > 0:  # blends of two targets: sounds between classes, sound + text prompt mixes
            other, mix = self._draw_targets(b, gen), torch.rand(b, generator=gen) < hp.mix_ratio
            a = torch.rand(b, 1, generator=gen).to(self.device)
            blend = F.normalize(a * e + (1 - a) * other, dim=-1)
            e = torch.where(mix[:, None].to(self.device), blend, e)
        return w, e

    def _draw_targets(self, b: int, gen: torch.Generator) -> torch.Tensor:
        """b targets: class-prompt text embeddings with probability text_ratio, else cached audio embeddings."""
        use_text = torch.rand(b, generator=gen) < self.hparams.text_ratio
        e = self.text_emb[torch.randint(len(self.text_emb), (b,), generator=gen).to(self.device)].clone()
        if self.audio_emb is not None and (~use_text).any():
            pick = torch.randint(len(self.audio_emb), (b,), generator=gen)
            e[~use_text.to(self.device)] = self.audio_emb[pick[~use_text].to(self.device)]
        return e

    def pair_loss(self, w: torch.Tensor, e: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-pair Eq. 2 at w + dw (`eq2_loss`, the optimiser's function), with the images and cosines."""
        dw = self.mapper(w, e).float()
        w_edit = w + dw
        images = self.generator.synthesis(w_edit)
        lam = torch.full((w.shape[0],), float(self.hparams.lambda_delta), device=w.device)
        loss, cos, dist2 = eq2_loss(self.clip_model.encode_image(images), e, w_edit, w, lam)
        return {"loss": loss, "cos": cos, "dist2": dist2, "images": images}

    # ------------------------------------------------------------------------------------------------ steps
    def train_dataloader(self) -> DataLoader:
        # Training pair seeds start at 10^6, so validation seeds (small ints) are never training sources.
        n = self.hparams.pairs_per_epoch
        return DataLoader(PairSeeds(n), batch_size=self.hparams.batch_size, shuffle=False,
                          collate_fn=lambda items: torch.tensor(items) + 1_000_000 + n * self.current_epoch)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(PairSeeds(1), batch_size=1)

    def training_step(self, seeds: torch.Tensor, batch_idx: int) -> torch.Tensor:
        w, e = self.sample_pairs(seeds)
        out = self.pair_loss(w, e)
        loss = out["loss"].mean()
        self.log_dict({"train/loss": loss, "train/cos": out["cos"].mean(),
                       "train/delta_norm": out["dist2"].sqrt().mean()}, prog_bar=True, batch_size=len(seeds))
        return loss

    def validation_step(self, batch, batch_idx: int) -> None:
        """The fixed grid: val_sources x one embedding per class; logs the cosine gain and ||dw||."""
        G = self.generator
        z = torch.cat([seed_to_z(s, G.style_dim) for s in self.hparams.val_sources]).to(self.device)
        w_src = G.mapping(z, truncation=self.hparams.truncation, truncation_latent=self.mean_w)
        w_src = w_src[:, None].expand(-1, G.n_latent, -1)
        n_s, n_e = len(w_src), len(self.val_emb)
        w = w_src.repeat_interleave(n_e, dim=0)
        e = self.val_emb.repeat(n_s, 1)
        out = self.pair_loss(w, e)
        source_images = G.synthesis(w_src)
        cos_before = (self.clip_model.encode_image(source_images).repeat_interleave(n_e, 0) * e).sum(-1)
        gain = (out["cos"] - cos_before).mean()
        self.log_dict({"val/loss": out["loss"].mean(), "val/cos_gain": gain, "val/cos": out["cos"].mean(),
                       "val/delta_norm": out["dist2"].sqrt().mean()}, batch_size=len(w), sync_dist=True)
        rank_zero_info(f"mapper step {self.global_step}: val loss {out['loss'].mean().item():.4f}, CLIP cosine "
                       f"gain {gain.item():+.4f}, ||dw|| {out['dist2'].sqrt().mean().item():.3f}")
        if self.global_rank == 0 and self.logger is not None and hasattr(self.logger, "log_image"):
            cell = 64
            src = resize_uint8(to_uint8(source_images), cell)
            edits = resize_uint8(to_uint8(out["images"]), cell).view(n_s, n_e, 3, cell, cell)
            rows = [[src[i]] + list(edits[i]) for i in range(n_s)]
            grid = make_grid(rows, ["source"] + self.val_names, [f"seed{s}" for s in self.hparams.val_sources], cell)
            self.logger.log_image(key="mapper/val_grid", images=[grid], step=self.global_step,
                                  caption=[f"step {self.global_step}: cosine gain {gain.item():+.3f}"])

    def configure_optimizers(self):
        hp = self.hparams
        opt = torch.optim.AdamW(self.mapper.parameters(), lr=hp.lr, betas=tuple(hp.betas),
                                weight_decay=hp.weight_decay)
        if hp.lr_schedule == "constant":
            return opt
        total = self.trainer.max_steps
        if total is None or total < 1:
            raise ValueError(f"MapperModule: lr_schedule 'cosine' needs trainer.max_steps >= 1, got {total}")
        cosine = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda step: 0.5 * (1 + math.cos(math.pi * min(step / total, 1.0))))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": cosine, "interval": "step"}}

    def on_fit_end(self) -> None:
        """Write the mapper file (format of `save_mapper`, with provenance) beside the checkpoints."""
        if self.global_rank != 0:
            return
        hp = self.hparams
        path = Path(hp.export_path) if hp.export_path else Path(self.trainer.default_root_dir) / "mapper.pt"
        path = unused_path(path)
        meta = {k: (list(v) if isinstance(v, tuple) else v) for k, v in hp.items()
                if k in ("generator", "clip", "audio_encoder", "sound_set", "recordings", "recording_windows",
                         "prompt_template", "text_ratio", "mix_ratio", "sources", "truncation", "lambda_delta", "lr",
                         "lr_schedule", "batch_size", "seed")}
        meta.update(classes=list(self.class_names), global_step=int(self.global_step),
                    val_cos_gain=_metric(self.trainer, "val/cos_gain"),
                    val_delta_norm=_metric(self.trainer, "val/delta_norm"))
        self.exported_path = save_mapper(self.mapper, path, meta=meta)
        rank_zero_info(f"mapper written to {self.exported_path}")


def _metric(trainer: pl.Trainer, key: str) -> float | None:
    value = trainer.callback_metrics.get(key)
    return None if value is None or not math.isfinite(float(value)) else round(float(value), 5)

