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


class AudioTextLoss(nn.Module):
    """The selected audio-text objective plus the optional audio<->augmented-audio term.

    Owns the learnable logit scale (stored as its log, like CLIP; used as min(exp(.), max_logit_scale))
    and, for `paper_bce`, the learnable bias. The audio<->audio term shares the logit scale.
    """

    def __init__(
        self,
        kind: LossKind = "paper_bce",
        temperature_init: float | None = None,
        max_logit_scale: float = 100.0,
        logit_bias_init: float = -10.0,
        audio_audio_weight: float = 0.0,
    ) -> None:
        super().__init__()
        if kind not in DEFAULT_TEMPERATURE:
            raise ValueError(f"loss: unknown kind {kind!r}; choose one of {sorted(DEFAULT_TEMPERATURE)}")
        temperature = DEFAULT_TEMPERATURE[kind] if temperature_init is None else temperature_init
        if not 1.0 / max_logit_scale <= temperature:
            raise ValueError(f"loss: temperature_init {temperature} is below 1/max_logit_scale = {1 / max_logit_scale}")
        if audio_audio_weight < 0:
            raise ValueError(f"loss: audio_audio_weight must be >= 0, got {audio_audio_weight}")
        self.kind, self.max_logit_scale, self.audio_audio_weight = kind, max_logit_scale, audio_audio_weight
        self.log_logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / temperature)))
        self.logit_bias = nn.Parameter(torch.tensor(float(logit_bias_init))) if kind == "paper_bce" else None

    @property
    def logit_scale(self) -> torch.Tensor:
        """exp(log scale) clamped at `max_logit_scale` (no gradient past the clamp, as in CLIP)."""
        return self.log_logit_scale.exp().clamp(max=self.max_logit_scale)

    @torch.no_grad()
    def clamp_(self) -> None:
        """Keep the stored parameter inside the clamp so that it cannot drift while frozen there."""
        self.log_logit_scale.clamp_(max=math.log(self.max_logit_scale))

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
    ) -> dict[str, torch.Tensor]:
        """Loss terms for local `audio` (B, D) with class ids `labels` (B,) against `class_text` (C, D).

        `audio_all`/`labels_all`: the same gathered from every rank (default: the local batch).
        `clean`/`clean_all`: embeddings of the same clips without SpecAugment, for the audio<->audio term.
        Returns {"loss": weighted total, <kind>: main term[, "audio_audio": term]}; computed in float32.
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
        return {"loss": loss, **terms}
