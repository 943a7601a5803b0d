"""Scores of a (clips x classes) similarity matrix, shared by validation and `experiments.eval` (torchmetrics).

- Classification: top-1 / top-5 accuracy (`MulticlassAccuracy(top_k=k, average="micro")`, k capped at the class
  count).
- Text -> audio retrieval: each class prompt is a query over the clips and every clip of that class is relevant;
  mean average precision and recall@k (k = 1, 5, 10: the share of a class's clips ranked in its top k, torchmetrics'
  `RetrievalRecall`), averaged over the classes that have clips. Audio -> text against the class prompts is
  not reported: it would only repeat top-k.
"""

from __future__ import annotations

import torch
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy
from torchmetrics.retrieval import RetrievalMAP, RetrievalRecall

RECALL_AT = (1, 5, 10)
TOP_K = (1, 5)


def accuracy_metrics(num_classes: int) -> dict[str, MulticlassAccuracy]:
    """{"top1": ..., "top5": ...} micro-averaged top-k accuracies (k capped at `num_classes`)."""
    return {f"top{k}": MulticlassAccuracy(num_classes, top_k=min(k, num_classes), average="micro") for k in TOP_K}


def retrieval_metrics(prefix: str = "") -> MetricCollection:
    """Text -> audio mAP and recall@k in one collection (one shared copy of the (score, relevant, query) state)."""
    return MetricCollection(
        {"t2a_map": RetrievalMAP(empty_target_action="skip"),
         **{f"t2a_r{k}": RetrievalRecall(top_k=k, empty_target_action="skip") for k in RECALL_AT}},
        prefix=prefix)


COSINE_SHIFT = 2.0


def text_to_audio_queries(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Flattened (scores, relevant, query index) of (N, C) clip-prompt cosine similarities: class c's prompt is
    query c. Scores are the cosines + 2 (a shift, so every ranking is unchanged): torchmetrics' retrieval metrics
    count a relevant item only when its score is > 0 (Lightning-AI/torchmetrics PR #3104, in 1.9), which would
    drop every relevant clip with a negative cosine from mAP and R@k."""
    num_classes = logits.shape[1]
    query = torch.arange(num_classes, device=labels.device)[:, None].expand(-1, labels.shape[0])
    return logits.T.flatten() + COSINE_SHIFT, (labels[None, :] == query).flatten(), query.flatten()


@torch.no_grad()
def classification_scores(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """{"top1", "top5", "n"} of (N, C) `logits` against (N,) `labels`."""
    out: dict[str, float] = {}
    for name, metric in accuracy_metrics(logits.shape[1]).items():
        out[name] = metric(logits.float().cpu(), labels.cpu()).item()
    out["n"] = len(labels)
    return out


@torch.no_grad()
def zero_shot_scores(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Top-1/top-5 plus text -> audio mAP and R@1/5/10 of clip-prompt similarities (N, C)."""
    retrieval = retrieval_metrics()
    scores, relevant, query = text_to_audio_queries(logits.float().cpu(), labels.cpu())
    retrieval.update(scores, relevant, indexes=query)
    return {**classification_scores(logits, labels), **{k: v.item() for k, v in retrieval.compute().items()}}
