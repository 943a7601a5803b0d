"""Adaptive layer masking: the CVPR 2022 sound-guided manipulation paper's option for Eq. 2's similarity term.

With the option (`--adaptive_layer_masking` in the official `optimization/run_optimization.py`) the term
lambda_sim * ||w - w_s||^2 becomes lambda_sim * sum_l sigmoid(m_l) * ||w_l - w_s,l||^2, one weight m_l per W+
row l (initialised to 1, so every row starts at sigmoid(1) = 0.731 of the plain term), and after every step

    m_l <- m_l - 0.1 * d_l * (1 - d_l),    d_l = sigmoid(m_l) * ||w_l - w_s,l||^2   (a number: no gradient via m)

where d_l is that row's weighted term at the step's forward pass, before lambda_sim. The official code hard-codes
14 rows (its 256 px generators) and one pair; here every row of the generator's W+ and every pair of a batch has
its own weights (a batch equals its single-pair edits).

What the rule does: for 0 < d_l < 1 the row's weight falls (fastest at d_l = 0.5), so rows that have begun to move
are held less and move further; a row that has not moved (d_l = 0) keeps its weight. For d_l > 1 the product
d_l * (1 - d_l) is negative and m_l *rises*, by 0.1 * d_l * (d_l - 1), quadratically in d_l: a row that has moved
far is pulled back harder. The update has no step size tied to lambda_sim or the learning rate, so whether a
row's distance crosses 1 (and the rule switches from releasing to restraining it) depends on the W+ scale of the
generator: StyleGAN2's W rows have per-entry spread ~1, so with lr 0.1 a row of 512 entries crosses 1 after a
few steps.
"""

from __future__ import annotations

import torch

MASK_INIT = 1.0  # the official code's torch.ones
MASK_RATE = 0.1  # the official code's step of the rule


class AdaptiveLayerMask:
    """Per-pair, per-row mask logits m (B, L) with the official update rule; no autograd."""

    def __init__(self, batch: int, rows: int, device: torch.device | str = "cpu") -> None:
        self.logits = torch.full((batch, rows), MASK_INIT, device=device)

    def weights(self) -> torch.Tensor:
        """sigmoid(m) (B, L): the row weights of the similarity term."""
        return torch.sigmoid(self.logits)

    @torch.no_grad()
    def update_(self, row_dist2: torch.Tensor) -> torch.Tensor:
        """Apply m <- m - 0.1 d (1 - d) with d = sigmoid(m) * row_dist2 (B, L) (the rows' squared distances at this
        step's forward pass); returns d."""
        d = self.weights() * row_dist2.detach()
        self.logits -= MASK_RATE * d * (1.0 - d)
        return d


def row_dist2(w: torch.Tensor, w_source: torch.Tensor) -> torch.Tensor:
    """Squared distance of each W+ row to the source: (B, L, D) -> (B, L)."""
    return (w - w_source).pow(2).sum(-1)
