"""Linear probe: multinomial logistic regression on frozen embeddings (the standard CLIP-style probe).

Features are standardised with the training split's mean and std, then a softmax classifier with an
L2 penalty is fitted full-batch with L-BFGS (deterministic, no learning rate to tune). Used per fold
with the other folds as training data (leave-one-fold-out), as ESC-50 and UrbanSound8K prescribe.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lightning_modules.zero_shot_metrics import classification_scores


def fit_logistic_regression(
    x: torch.Tensor, y: torch.Tensor, num_classes: int, l2: float = 1e-3, max_iter: int = 200,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Fit on (N, D) features and (N,) labels; returns (weight (C, D), bias (C,), mean, std)."""
    x = x.double()
    mean, std = x.mean(dim=0), x.std(dim=0).clamp_min(1e-8)
    z = (x - mean) / std
    weight = torch.zeros(num_classes, x.shape[1], dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(num_classes, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=max_iter, tolerance_grad=1e-9,
                            tolerance_change=1e-12, history_size=20, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(z @ weight.T + bias, y) + 0.5 * l2 * weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return weight.detach(), bias.detach(), mean, std


def probe_logits(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, mean: torch.Tensor,
                 std: torch.Tensor) -> torch.Tensor:
    return ((x.double() - mean) / std) @ weight.T + bias


def leave_one_fold_out(
    x: torch.Tensor, y: torch.Tensor, folds: torch.Tensor, num_classes: int, l2: float = 1e-3,
) -> dict[int, dict[str, float]]:
    """Per held-out fold: top-1/top-5 of a probe fitted on all other folds."""
    results = {}
    for fold in sorted(folds.unique().tolist()):
        test = folds == fold
        params = fit_logistic_regression(x[~test], y[~test], num_classes, l2)
        logits = probe_logits(x[test], *params)
        results[int(fold)] = classification_scores(logits, y[test])
    return results
