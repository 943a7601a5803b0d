"""Audio-text alignment objectives (paper Eq. 1 and the alternatives), selectable by name.

All of them compare L2-normalised audio embeddings `a` with frozen CLIP text embeddings of class
prompts `t`, and all are label aware: two clips of the same class are a positive pair, never a
negative (the official code's `arange(B)` targets made them false negatives).

- `paper_bce`: Eq. 1 as binary cross-entropy. As printed, Eq. 1 takes `log(a_i . t_j)`, undefined for a
  cosine <= 0; we use `sigmoid(s . cos + b)` with learnable s, b (SigLIP's form: init s = 10, b = -10),
  y_ij = [label_i == label_j], summed over columns and averaged over rows (SigLIP's normalisation).
- `infonce`: CLIP's symmetric cross-entropy with a learnable logit scale (init 1/0.07, clamped at 100)
  and multi-positive targets: row i's target distribution is uniform over the columns of its class.
- `classes`: cross-entropy of each clip against the prompts of all classes (a zero-shot classifier).
- an optional audio <-> SpecAugmented-audio InfoNCE term (the official code's second term), weighted.
- an optional audio <-> image InfoNCE term (the CVPR 2022 paper's audio-visual term): each clip against the
  cached CLIP embedding of one of its own video frames. Instance-level (a clip's own frame is its only positive),
  with its own learnable logit scale; clips without frames are masked out of it as rows and as columns (counted).

Under DDP the caller passes its local rows and the embeddings/labels gathered from all ranks as the
columns; averaging the per-rank losses then equals the loss of one process on the whole batch.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

LossKind = Literal["paper_bce", "infonce", "classes"]

# Defaults of the logit scale when `temperature_init` is not given (scale = 1 / temperature).
DEFAULT_TEMPERATURE = {"paper_bce": 0.1, "infonce": 0.07, "classes": 0.07}


def same_label_targets(row_labels: torch.Tensor, col_labels: torch.Tensor) -> torch.Tensor:
    """(R, C) float matrix y_ij = [row_labels_i == col_labels_j]."""
    return (row_labels[:, None] == col_labels[None, :]).float()


def paper_bce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Eq. 1 as BCE on (R, C) pair logits `s . cos + b`: sum over columns, mean over rows."""
    return F.binary_cross_entropy_with_logits(logits, targets.to(logits.dtype), reduction="sum") / logits.shape[0]


def multi_positive_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of softmax over each row of (R, C) `logits` against the row-normalised 0/1 `targets`.

    Every row needs at least one positive. With a single positive per row this is CLIP's loss.
    """
    targets = targets.to(logits.dtype)
    q = targets / targets.sum(dim=1, keepdim=True)
    return -(q * logits.log_softmax(dim=1)).sum(dim=1).mean()


def symmetric_infonce(
    x: torch.Tensor, y: torch.Tensor, x_all: torch.Tensor, y_all: torch.Tensor,
    labels: torch.Tensor, labels_all: torch.Tensor, scale: torch.Tensor,
) -> torch.Tensor:
    """(x -> y_all + y -> x_all) / 2 with multi-positive targets; rows local, columns global."""
    targets = same_label_targets(labels, labels_all)
    x_to_y = multi_positive_cross_entropy(scale * x @ y_all.T, targets)
    y_to_x = multi_positive_cross_entropy(scale * y @ x_all.T, targets)
    return (x_to_y + y_to_x) / 2


def masked_instance_infonce(
    x: torch.Tensor, y: torch.Tensor, x_all: torch.Tensor, y_all: torch.Tensor,
    mask: torch.Tensor, mask_all: torch.Tensor, scale: torch.Tensor, offset: int = 0,
) -> torch.Tensor:
    """(x -> y_all + y -> x_all) / 2 where row i's only positive is column offset + i; masked items take no part.

    Rows are the local items (B), columns the gathered ones (world * B; this rank's rows start at `offset`).
    The mean runs over the valid rows of *all* ranks: each rank returns its row sum times world / (valid rows
    of all ranks), so DDP's gradient average equals the gradient of one process on the whole batch. With no
    valid item anywhere the term is an exact zero that still depends on x (every rank joins the backward).
    """
    world = max(x_all.shape[0] // max(x.shape[0], 1), 1)
    total = int(mask_all.sum())
    if total == 0 or not bool(mask.any()):
        return (x * 0.0).sum()
    cols = torch.nonzero(mask_all, as_tuple=True)[0]  # global indices of the valid columns
    rows = torch.nonzero(mask, as_tuple=True)[0]
    # Row i's target: the position of its own global index among the valid columns.
    target = torch.searchsorted(cols, rows + offset)
    x_to_y = F.cross_entropy(scale * x[rows] @ y_all[cols].T, target, reduction="sum")
    y_to_x = F.cross_entropy(scale * y[rows] @ x_all[cols].T, target, reduction="sum")
    return (x_to_y + y_to_x) / 2 * world / total


class AudioTextLoss(nn.Module):
    """The selected audio-text objective plus the optional audio<->augmented-audio term.

    Owns the learnable logit scale (stored as its log, like CLIP; used as min(exp(.), max_logit_scale))
    and, for `paper_bce`, the learnable bias. The audio<->audio term shares the logit scale; the audio<->image
    term (weight `audio_image_weight` > 0) has its own, initialised at 1 / `image_temperature_init`.
    """

    def __init__(
        self,
        kind: LossKind = "paper_bce",
        temperature_init: float | None = None,
        max_logit_scale: float = 100.0,
        logit_bias_init: float = -10.0,
        audio_audio_weight: float = 0.0,
        audio_image_weight: float = 0.0,
        image_temperature_init: float = 0.07,
    ) -> None:
        super().__init__()
        if kind not in DEFAULT_TEMPERATURE:
            raise ValueError(f"loss: unknown kind {kind!r}; choose one of {sorted(DEFAULT_TEMPERATURE)}")
        temperature = DEFAULT_TEMPERATURE[kind] if temperature_init is None else temperature_init
        if not 1.0 / max_logit_scale <= temperature:
            raise ValueError(f"loss: temperature_init {temperature} is below 1/max_logit_scale = {1 / max_logit_scale}")
        if audio_audio_weight < 0:
            raise ValueError(f"loss: audio_audio_weight must be >= 0, got {audio_audio_weight}")
        if audio_image_weight < 0:
            raise ValueError(f"loss: audio_image_weight must be >= 0, got {audio_image_weight}")
        if not 1.0 / max_logit_scale <= image_temperature_init:
            raise ValueError(f"loss: image_temperature_init {image_temperature_init} is below 1/max_logit_scale")
        self.kind, self.max_logit_scale, self.audio_audio_weight = kind, max_logit_scale, audio_audio_weight
        self.audio_image_weight = audio_image_weight
        self.log_logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / temperature)))
        self.logit_bias = nn.Parameter(torch.tensor(float(logit_bias_init))) if kind == "paper_bce" else None
        # Only with the term on: checkpoints of text-only runs keep their keys.
        self.log_image_scale = (nn.Parameter(torch.tensor(math.log(1.0 / image_temperature_init)))
                                if audio_image_weight > 0 else None)

    @property
    def logit_scale(self) -> torch.Tensor:
        """exp(log scale) clamped at `max_logit_scale` (no gradient past the clamp, as in CLIP)."""
        return self.log_logit_scale.exp().clamp(max=self.max_logit_scale)

    @property
    def image_scale(self) -> torch.Tensor:
        """The audio<->image term's logit scale, clamped like `logit_scale`."""
        if self.log_image_scale is None:
            raise ValueError("loss: the audio<->image term is off (audio_image_weight = 0)")
        return self.log_image_scale.exp().clamp(max=self.max_logit_scale)

    @torch.no_grad()
    def clamp_(self) -> None:
        """Keep the stored parameters inside the clamp so that they cannot drift while frozen there."""
        self.log_logit_scale.clamp_(max=math.log(self.max_logit_scale))
        if self.log_image_scale is not None:
            self.log_image_scale.clamp_(max=math.log(self.max_logit_scale))

    def image_term(
        self,
        audio: torch.Tensor,
        image: torch.Tensor,
        image_mask: torch.Tensor,
        audio_all: torch.Tensor | None = None,
        image_all: torch.Tensor | None = None,
        image_mask_all: torch.Tensor | None = None,
        offset: int = 0,
    ) -> torch.Tensor:
        """The audio<->image InfoNCE term in float32 (see `masked_instance_infonce`); arguments as in `forward`."""
        audio_all = audio if audio_all is None else audio_all
        image_all = image if image_all is None else image_all
        image_mask_all = image_mask if image_mask_all is None else image_mask_all
        return masked_instance_infonce(audio.float(), image.float(), audio_all.float(), image_all.float(),
                                       image_mask.bool(), image_mask_all.bool(), self.image_scale, offset)

    def main_term(
        self,
        audio: torch.Tensor,
        labels: torch.Tensor,
        class_text: torch.Tensor,
        audio_all: torch.Tensor | None = None,
        labels_all: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The `kind` term alone (audio vs class text), in float32; arguments as in `forward`."""
        audio_all = audio if audio_all is None else audio_all
        labels_all = labels if labels_all is None else labels_all
        audio, audio_all, class_text = audio.float(), audio_all.float(), class_text.float()
        scale = self.logit_scale
        if self.kind == "paper_bce":
            logits = scale * audio @ class_text[labels_all].T + self.logit_bias
            return paper_bce(logits, same_label_targets(labels, labels_all))
        if self.kind == "infonce":
            return symmetric_infonce(audio, class_text[labels], audio_all, class_text[labels_all],
                                     labels, labels_all, scale)
        return F.cross_entropy(scale * audio @ class_text.T, labels)

    def forward(
        self,
        audio: torch.Tensor,
        labels: torch.Tensor,
        class_text: torch.Tensor,
        audio_all: torch.Tensor | None = None,
        labels_all: torch.Tensor | None = None,
        clean: torch.Tensor | None = None,
        clean_all: torch.Tensor | None = None,
        image: torch.Tensor | None = None,
        image_mask: torch.Tensor | None = None,
        image_all: torch.Tensor | None = None,
        image_mask_all: torch.Tensor | None = None,
        offset: int = 0,
    ) -> dict[str, torch.Tensor]:
        """Loss terms for local `audio` (B, D) with class ids `labels` (B,) against `class_text` (C, D).

        `audio_all`/`labels_all`: the same gathered from every rank (default: the local batch).
        `clean`/`clean_all`: embeddings of the same clips without SpecAugment, for the audio<->audio term.
        `image` (B, D) / `image_mask` (B,) bool: each clip's cached frame embedding and whether it has one, for the
        audio<->image term; `image_all`/`image_mask_all` gathered from every rank; `offset`: this rank's first row
        among the gathered ones.
        Returns {"loss": weighted total, <kind>: main term[, "audio_audio": term][, "audio_image": term,
        "image_masked": number of local clips without frames]}; computed in float32.
        """
        audio_all = audio if audio_all is None else audio_all
        labels_all = labels if labels_all is None else labels_all
        main = self.main_term(audio, labels, class_text, audio_all, labels_all)
        terms = {self.kind: main}
        loss = main
        if self.audio_audio_weight > 0:
            if clean is None:
                raise ValueError("loss: audio_audio_weight > 0 needs the embeddings of the clean clips")
            clean_all = clean if clean_all is None else clean_all
            terms["audio_audio"] = symmetric_infonce(audio.float(), clean.float(), audio_all.float(),
                                                     clean_all.float(), labels, labels_all, self.logit_scale)
            loss = loss + self.audio_audio_weight * terms["audio_audio"]
        if self.audio_image_weight > 0:
            if image is None or image_mask is None:
                raise ValueError("loss: audio_image_weight > 0 needs each clip's frame embedding and mask "
                                 "(set data.frame_cache)")
            terms["audio_image"] = self.image_term(audio, image, image_mask, audio_all, image_all, image_mask_all,
                                                   offset)
            terms["image_masked"] = (~image_mask.bool()).sum().float()
            loss = loss + self.audio_image_weight * terms["audio_image"]
        return {"loss": loss, **terms}
