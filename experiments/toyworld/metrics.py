"""Sample-quality measures of the toy generator, computed in the toy CLIP's image-feature space.

- Frechet distance between Gaussians fitted to toy-CLIP image embeddings of samples and of real procedural
  paintings (FID's formula, with the toy CLIP in place of Inception).
- Attribute diversity: the distribution of toy-CLIP zero-shot classes (7 attributes + neutral) over samples,
  its entropy, and how many classes hold at least 2 % of the samples.
"""

from __future__ import annotations

import numpy as np
import torch

from lightning_modules.clip_wrapper import CLIPWrapper


@torch.no_grad()
def image_features(clip_model: CLIPWrapper, images: torch.Tensor, batch: int = 256) -> torch.Tensor:
    """L2-normalised toy-CLIP embeddings (N, D) of images in [-1, 1] (float) or uint8 [0, 255]."""
    if images.dtype == torch.uint8:
        images = images.float() / 127.5 - 1
    return torch.cat([clip_model.encode_image(x.to(clip_model.device)).cpu() for x in images.split(batch)])


def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)) of Gaussians fitted to feature sets (N, D)."""
    a, b = a.double().numpy(), b.double().numpy()
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    # Tr((S_a S_b)^(1/2)) = Tr((S_a^(1/2) S_b S_a^(1/2))^(1/2)): eigenvalues of a symmetric PSD matrix.
    vals, vecs = np.linalg.eigh(s_a)
    root_a = (vecs * np.sqrt(vals.clip(min=0))) @ vecs.T
    tr_covmean = np.sqrt(np.linalg.eigvalsh(root_a @ s_b @ root_a).clip(min=0)).sum()
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(s_a) + np.trace(s_b) - 2 * tr_covmean)


def class_distribution(features: torch.Tensor, class_text: torch.Tensor) -> np.ndarray:
    """Share of images whose nearest class prompt is each class (C,)."""
    pred = (features @ class_text.T).argmax(1)
    return np.bincount(pred.numpy(), minlength=class_text.shape[0]) / len(pred)


def diversity(dist: np.ndarray) -> dict[str, float]:
    p = dist[dist > 0]
    return {"entropy_bits": round(float(-(p * np.log2(p)).sum()), 3), "classes_over_2pct": int((dist >= 0.02).sum())}
