"""AudioCLIPModule: step 1 of the paper, training an audio encoder into frozen CLIP's text embedding space (Eq. 1).

Each clip's target is CLIP's text embedding of its class prompt ("This is a sound of {label}."),
computed once per run and cached in a non-persistent buffer; CLIP itself is held in a plain
attribute, so its weights never enter checkpoints (it is reloaded from `clip_model`). Under DDP the
audio embeddings and labels are gathered from every rank with gradients, so every clip in the global
batch is a negative (or, for the same class, a positive) for every other.

Validation is zero-shot classification against the class prompts (top-1/top-5) and text->audio
retrieval with each class prompt as a query over the clips (mAP, R@1/5/10); with frame embeddings in the
batches, also instance-level audio->image retrieval R@1 over the validation clips that have frames.

With `audio_image_weight` > 0 (the CVPR 2022 paper's audio<->image term) the batches must carry cached CLIP
image embeddings of the clips' frames (`data.frame_cache`); the cache must come from this run's CLIP (checked
by weights hash at the start), and CLIP's image tower never runs during training.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Literal

import pytorch_lightning as pl
import torch

from datamodules.sampling import item_generator
from lightning_modules.audio_export import CHECKPOINT_CONFIG_KEY
from lightning_modules.clip_wrapper import CLIPWrapper
from lightning_modules.frame_embedder import clip_weights_sha256
from lightning_modules.gather import gather_no_grad, gather_with_grad, rank, world_size
from lightning_modules.losses import AudioTextLoss, LossKind
from lightning_modules.networks.audio_encoder import AudioEncoder
from lightning_modules.zero_shot import DEFAULT_TEMPLATE, class_prompt_embeddings
from lightning_modules.zero_shot_metrics import accuracy_metrics, retrieval_metrics, text_to_audio_queries


def check_optim_settings(*, lr: float, weight_decay: float, betas: tuple[float, float], eps: float, momentum: float,
                         warmup_steps: int, cyclic_max_lr: float, cyclic_step_size: int, scheduler: str,
                         max_logit_scale: float, temperature_init: float | None, audio_audio_weight: float) -> None:
    """Refuse impossible optimiser / loss settings at construction, so a run fails before it writes anything
    (LightningCLI builds the module before the run directory, config.yaml or checkpoints exist)."""
    rules = [
        ("lr", lr, lr > 0, "> 0"), ("weight_decay", weight_decay, weight_decay >= 0, ">= 0"),
        ("betas", betas, len(betas) == 2 and all(0 <= b < 1 for b in betas), "two values in [0, 1)"),
        ("eps", eps, eps > 0, "> 0"), ("momentum", momentum, 0 <= momentum < 1, "in [0, 1)"),
        ("warmup_steps", warmup_steps, warmup_steps >= 0, ">= 0"),
        ("cyclic_max_lr", cyclic_max_lr, scheduler != "cyclic" or cyclic_max_lr >= lr, ">= lr"),
        ("cyclic_step_size", cyclic_step_size, cyclic_step_size >= 1, ">= 1"),
        ("max_logit_scale", max_logit_scale, max_logit_scale > 0, "> 0"),
        ("temperature_init", temperature_init, temperature_init is None or temperature_init > 0, "> 0"),
        ("audio_audio_weight", audio_audio_weight, audio_audio_weight >= 0, ">= 0"),
    ]
    bad = [f"model.{name} must be {rule}, got {value!r}" for name, value, ok, rule in rules if not ok]
    if bad:
        raise ValueError("; ".join(bad))


class AudioCLIPModule(pl.LightningModule):
    """Trains `encoder` so that a clip's embedding matches CLIP's embedding of its class prompt.

    Args (defaults: the paper where it says, CLIP's training recipe otherwise; see experiments/audio_clip/*.yaml):
        encoder: the audio encoder; its `embed_dim` must equal CLIP's.
        clip_model: CLIP model name ("ViT-B/32", the paper's) or a local CLIP file.
        prompt_templates: templates averaged into each class embedding; "{label}" is replaced.
        class_names: class list; default the datamodule's `class_names`.
        loss: "paper_bce" (Eq. 1), "infonce" or "classes"; see `lightning_modules.losses`.
        temperature_init: initial 1/logit scale; default per loss (0.1 paper_bce, 0.07 infonce/classes).
        max_logit_scale: clamp of the learnable logit scale (CLIP: 100).
        logit_bias_init: initial bias of paper_bce (SigLIP: -10).
        audio_audio_weight: weight of the audio<->SpecAugmented-audio InfoNCE term (0 = off).
        audio_image_weight: weight of the audio<->video-frame InfoNCE term (0 = off, text only as the released
            code; vggsound_av.yaml sets 1); needs `data.frame_cache`.
        image_temperature_init: initial 1/logit scale of the audio<->image term (learnable, clamped like the text's).
        optimizer: "adamw" (default) or "sgd" (the official code's, with momentum).
        lr, weight_decay, betas, eps, momentum: optimiser settings; weight decay skips biases, norm gains and
            the logit scale/bias.
        scheduler: "cosine" (linear warm-up over `warmup_steps`, cosine decay to 0 at the last step),
            "cyclic" (the official code's triangular cycle between lr and `cyclic_max_lr`, half-period
            `cyclic_step_size` steps) or "constant".
        seed: seed of the SpecAugment masks, drawn per (epoch, batch, rank) so a resumed run repeats them.
    """

    def __init__(
        self,
        encoder: AudioEncoder,
        clip_model: str = "ViT-B/32",
        prompt_templates: tuple[str, ...] = (DEFAULT_TEMPLATE,),
        class_names: list[str] | None = None,
        loss: LossKind = "paper_bce",
        temperature_init: float | None = None,
        max_logit_scale: float = 100.0,
        logit_bias_init: float = -10.0,
        audio_audio_weight: float = 0.0,
        audio_image_weight: float = 0.0,
        image_temperature_init: float = 0.07,
        optimizer: Literal["adamw", "sgd"] = "adamw",
        lr: float = 5e-4,
        weight_decay: float = 0.2,
        betas: tuple[float, float] = (0.9, 0.98),
        eps: float = 1e-6,
        momentum: float = 0.9,
        scheduler: Literal["cosine", "cyclic", "constant"] = "cosine",
        warmup_steps: int = 2000,
        cyclic_max_lr: float = 0.1,
        cyclic_step_size: int = 2000,
        seed: int = 0,
    ) -> None:
        super().__init__()
        check_optim_settings(lr=lr, weight_decay=weight_decay, betas=betas, eps=eps, momentum=momentum,
                             warmup_steps=warmup_steps, cyclic_max_lr=cyclic_max_lr, cyclic_step_size=cyclic_step_size,
                             scheduler=scheduler, max_logit_scale=max_logit_scale, temperature_init=temperature_init,
                             audio_audio_weight=audio_audio_weight)
        self.save_hyperparameters(ignore=["encoder"])
        # The encoder is stored as its config, not as a module, so checkpoints stay weights_only-loadable;
        # `load_from_checkpoint` rebuilds it through jsonargparse, as it does for LightningCLI runs.
        self.hparams["encoder"] = {"class_path": f"{type(encoder).__module__}.{type(encoder).__qualname__}",
                                   "init_args": dict(encoder.config)}
        self.hparams.setdefault("_instantiator", "pytorch_lightning.cli.instantiate_module")
        self.encoder = encoder
        self.criterion = AudioTextLoss(loss, temperature_init, max_logit_scale, logit_bias_init, audio_audio_weight,
                                       audio_image_weight, image_temperature_init)
        self.clip: CLIPWrapper | None = None  # plain attribute: never in state_dict
        self.class_names = list(class_names) if class_names is not None else None
        self.register_buffer("class_text", torch.empty(0), persistent=False)

    # ----------------------------------------------------------------- setup
    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        data_names = list(getattr(datamodule, "class_names", None) or [])
        if self.class_names is None:
            if not data_names:
                raise ValueError("AudioCLIPModule: no class_names given and the datamodule exposes none")
            self.class_names = data_names
        elif data_names and data_names != self.class_names:  # label i must mean prompt i
            raise ValueError(f"AudioCLIPModule: class_names ({len(self.class_names)}, first {self.class_names[:3]}) "
                             f"differ from the datamodule's ({len(data_names)}, first {data_names[:3]})")
        num_classes = len(self.class_names)
        if not hasattr(self, "val_top1"):
            accuracy = accuracy_metrics(num_classes)
            self.val_top1, self.val_top5 = accuracy["top1"], accuracy["top5"]
            self.val_retrieval = retrieval_metrics(prefix="val/")

    def prepare_class_text(self) -> torch.Tensor:
        """Load CLIP (once) on this module's device and cache the class-prompt embeddings."""
        if self.clip is None:
            self.clip = CLIPWrapper(self.hparams.clip_model, device=self.device)
            if self.clip.embed_dim != self.encoder.embed_dim:
                raise ValueError(f"AudioCLIPModule: encoder.embed_dim={self.encoder.embed_dim} but CLIP "
                                 f"{self.hparams.clip_model!r} embeds into {self.clip.embed_dim} dimensions")
        self.clip.to(self.device)
        if self.class_text.numel() == 0 or self.class_text.device != self.device:
            if self.class_names is None:
                raise ValueError("AudioCLIPModule: class names unknown; call setup() or pass class_names")
            self.class_text = class_prompt_embeddings(self.clip, self.class_names, self.hparams.prompt_templates)
        return self.class_text

    def check_frame_cache(self) -> None:
        """Refuse a datamodule frame cache made by another CLIP, and a missing one when the image term is on."""
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        cache = getattr(datamodule, "frame_cache", None)
        if cache is None:
            if self.criterion.audio_image_weight > 0:
                raise ValueError("AudioCLIPModule: audio_image_weight > 0 needs frame embeddings: set data.frame_cache "
                                 "(python -m experiments.embed_frames DATA_ROOT --clip CLIP)")
            return
        cache.check_clip(self.hparams.clip_model, clip_weights_sha256(self.hparams.clip_model))
        if cache.info.dim != self.encoder.embed_dim:
            raise ValueError(f"AudioCLIPModule: frame cache {cache.path} holds {cache.info.dim}-d embeddings, the "
                             f"encoder embeds into {self.encoder.embed_dim}")

    def on_fit_start(self) -> None:
        self.prepare_class_text()
        self.check_frame_cache()

    def on_validation_start(self) -> None:
        self.prepare_class_text()

    def on_test_start(self) -> None:
        self.prepare_class_text()

    def on_predict_start(self) -> None:
        self.prepare_class_text()

    # -------------------------------------------------------------- training
    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        return self.encoder(waveform)

    def training_loss(self, batch: dict[str, Any], batch_idx: int) -> dict[str, torch.Tensor]:
        """Loss terms of one batch; under DDP the columns are the whole global batch."""
        waveform, labels = batch["waveform"], batch["label"]
        # SpecAugment masks from (seed, epoch, batch) alone, so a resumed run draws the same; drawn for the global
        # batch and sharded like EpochSampler deals it, so a clip's masks do not depend on the number of ranks.
        gen = item_generator(self.hparams.seed, self.current_epoch, batch_idx)
        audio = self.encoder(waveform, generator=gen, shard=(rank(), world_size()))
        clean = self.encoder(waveform, augment=False) if self.criterion.audio_audio_weight > 0 else None
        image = batch.get("image") if self.criterion.audio_image_weight > 0 else None
        mask = batch.get("image_mask") if image is not None else None
        with torch.autocast(self.device.type, enabled=False):  # the loss in float32 under mixed precision
            return self.criterion(
                audio, labels, self.class_text,
                audio_all=gather_with_grad(audio), labels_all=gather_no_grad(labels),
                clean=clean, clean_all=gather_with_grad(clean) if clean is not None else None,
                image=image, image_mask=mask,
                image_all=gather_no_grad(image) if image is not None else None,
                image_mask_all=gather_no_grad(mask) if mask is not None else None,
                offset=rank() * labels.shape[0],
            )

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        terms = self.training_loss(batch, batch_idx)
        size = batch["label"].shape[0]
        self.log("train/loss", terms["loss"], prog_bar=True, on_step=True, on_epoch=True, batch_size=size)
        for name, value in terms.items():
            if name == "image_masked":  # clips without frames: a count, summed over the epoch and the ranks
                self.log("train/image_masked", value, on_step=False, on_epoch=True, reduce_fx="sum", sync_dist=True,
                         batch_size=size)
            elif name != "loss":
                self.log(f"train/{name}", value, on_step=True, on_epoch=True, batch_size=size)
        self.log("train/logit_scale", self.criterion.logit_scale.detach(), on_step=True, on_epoch=False)
        if self.criterion.log_image_scale is not None:
            self.log("train/image_logit_scale", self.criterion.image_scale.detach(), on_step=True, on_epoch=False)
        if self.criterion.logit_bias is not None:
            self.log("train/logit_bias", self.criterion.logit_bias.detach(), on_step=True, on_epoch=False)
        # Bad clips were replaced inside (possibly) worker processes: count them here, summed over the epoch.
        self.log("train/bad_clips", batch["bad"].sum().float(), on_step=False, on_epoch=True,
                 reduce_fx="sum", sync_dist=True, batch_size=size)
        return terms["loss"]

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.criterion.clamp_()

    # ------------------------------------------------------------ validation
    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        labels = batch["label"]
        audio = self.encoder(batch["waveform"])
        with torch.autocast(self.device.type, enabled=False):
            logits = audio.float() @ self.class_text.T  # (B, C) cosine similarities
            # The main objective on this batch (without SpecAugment there is no second view to compare).
            loss = self.criterion.main_term(audio, labels, self.class_text)
        self.val_top1.update(logits, labels)
        self.val_top5.update(logits, labels)
        # Text -> audio retrieval: class c's prompt is query c, every clip of class c is relevant.
        scores, relevant, query = text_to_audio_queries(logits, labels)
        self.val_retrieval.update(scores, relevant, indexes=query)
        if getattr(self, "_val_pairs", None) is not None and "image" in batch:  # for audio->image R@1 at epoch end
            mask = batch["image_mask"].bool()
            self._val_pairs.append((audio.detach().float()[mask], batch["image"].float()[mask]))
        size = labels.shape[0]
        self.log("val/loss", loss, on_epoch=True, sync_dist=True, batch_size=size)
        self.log("val/bad_clips", batch["bad"].sum().float(), on_epoch=True, reduce_fx="sum", sync_dist=True,
                 batch_size=size)

    def on_validation_epoch_start(self) -> None:
        # Decided by the datamodule (the same on every rank), so that all ranks join the gathers below.
        datamodule = getattr(self.trainer, "datamodule", None)
        self._val_pairs: list[tuple[torch.Tensor, torch.Tensor]] | None = (
            [] if getattr(datamodule, "frame_cache", None) is not None else None)

    def on_validation_epoch_end(self) -> None:
        if getattr(self, "_val_pairs", None) is not None:
            dim = self.encoder.embed_dim
            audio = torch.cat([a for a, _ in self._val_pairs] or [torch.zeros(0, dim, device=self.device)])
            image = torch.cat([v for _, v in self._val_pairs] or [torch.zeros(0, dim, device=self.device)])
            if world_size() > 1:  # ranks may hold different numbers of clips with frames: pad to the largest
                audio, image = _gather_ragged(self, audio), _gather_ragged(self, image)
            if len(audio):
                self.log("val/a2i_r1", audio_to_image_recall(audio, image), rank_zero_only=True)
            self._val_pairs = None
        self.log("val/top1", self.val_top1.compute(), prog_bar=True)  # metrics sync across ranks themselves
        self.log("val/top5", self.val_top5.compute())
        self.log_dict(self.val_retrieval.compute())
        for metric in (self.val_top1, self.val_top5, self.val_retrieval):
            metric.reset()

    # ------------------------------------------------------------ optimisers
    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        decay, no_decay = [], []
        for p in self.parameters():
            if p.requires_grad:
                # Biases, norm gains and the scalar logit scale/bias are not decayed (as in CLIP).
                (decay if p.ndim >= 2 else no_decay).append(p)
        groups = [{"params": decay, "weight_decay": hp.weight_decay, "name": "decay"},
                  {"params": no_decay, "weight_decay": 0.0, "name": "no_decay"}]
        if hp.optimizer == "adamw":
            optimizer = torch.optim.AdamW(groups, lr=hp.lr, betas=tuple(hp.betas), eps=hp.eps)
        else:
            optimizer = torch.optim.SGD(groups, lr=hp.lr, momentum=hp.momentum)
        if hp.scheduler == "constant":
            return {"optimizer": optimizer}
        if hp.scheduler == "cyclic":
            scheduler = torch.optim.lr_scheduler.CyclicLR(
                optimizer, base_lr=hp.lr, max_lr=hp.cyclic_max_lr, step_size_up=hp.cyclic_step_size,
                mode="triangular", cycle_momentum=hp.optimizer == "sgd")
        else:
            # The horizon is read when first needed (after warm-up), not here: calling
            # `estimated_stepping_batches` in configure_optimizers makes Lightning 2.6 set up the train
            # loader before a checkpoint is restored, and it then never restores the loader's position.
            scheduler = torch.optim.lr_scheduler.LambdaLR(
                optimizer, warmup_cosine(hp.warmup_steps, lambda: int(self.trainer.estimated_stepping_batches)))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # ----------------------------------------------------------- checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Lets `load_audio_encoder` rebuild the encoder from a checkpoint without this module or the CLI.
        checkpoint[CHECKPOINT_CONFIG_KEY] = dict(self.encoder.config)


def audio_to_image_recall(audio: torch.Tensor, image: torch.Tensor, k: int = 1) -> float:
    """Instance-level audio->image R@k: share of clips i whose own image j = i is among the k most similar."""
    sims = audio.float() @ image.float().T
    top = sims.topk(min(k, sims.shape[1]), dim=1).indices
    return (top == torch.arange(len(audio), device=top.device)[:, None]).any(dim=1).float().mean().item()


def _gather_ragged(module: pl.LightningModule, x: torch.Tensor) -> torch.Tensor:
    """Concatenate (N_r, D) tensors of different N_r from every rank (padded for the all-gather, then trimmed)."""
    n = torch.tensor([len(x)], device=x.device)
    sizes = module.all_gather(n).reshape(-1)
    padded = x.new_zeros(int(sizes.max()), x.shape[1])
    padded[: len(x)] = x
    gathered = module.all_gather(padded)
    return torch.cat([gathered[r, : int(s)] for r, s in enumerate(sizes)])


def warmup_cosine(warmup_steps: int, total_steps: Callable[[], int]) -> Callable[[int], float]:
    """lr multiplier: linear 0->1 over `warmup_steps`, then cosine 1->0 at `total_steps()` (asked once, lazily).

    A closure, not an object: LambdaLR then keeps it out of its state dict (checkpoints stay weights_only).
    """
    total: list[int] = []

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        if step == warmup_steps:
            return 1.0
        if not total:
            total.append(max(int(total_steps()), warmup_steps + 1))
        progress = min((step - warmup_steps) / (total[0] - warmup_steps), 1.0)
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor
