"""The audio<->image InfoNCE term: a hand computation, masked items, global negatives, its place in the total."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from lightning_modules.losses import AudioTextLoss, masked_instance_infonce


def _unit(n, d, seed):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=-1)


def _hand(a, v, valid, scale):
    """Mean over valid i of (-log softmax_j(s a_i.v_j)[i] - log softmax_j(s v_i.a_j)[i]) / 2, j over valid items."""
    idx = [i for i in range(len(a)) if valid[i]]
    total = 0.0
    for i in idx:
        for x, y in ((a, v), (v, a)):
            logits = [scale * float(x[i] @ y[j]) for j in idx]
            m = max(logits)
            total -= 0.5 * (logits[idx.index(i)] - m - math.log(sum(math.exp(z - m) for z in logits)))
    return total / len(idx)


def test_matches_hand_computation_with_a_masked_item():
    a, v = _unit(4, 5, 0), _unit(4, 5, 1)
    valid = [True, False, True, True]
    mask = torch.tensor(valid)
    got = masked_instance_infonce(a, v, a, v, mask, mask, torch.tensor(3.0, dtype=torch.float64))
    assert got.item() == pytest.approx(_hand(a, v, valid, 3.0), rel=1e-12)
    full = masked_instance_infonce(a, v, a, v, torch.ones(4, dtype=torch.bool), torch.ones(4, dtype=torch.bool),
                                   torch.tensor(3.0, dtype=torch.float64))
    assert full.item() == pytest.approx(_hand(a, v, [True] * 4, 3.0), rel=1e-12)


def test_masked_items_get_zero_gradient_and_do_not_change_the_term():
    a, v = _unit(5, 6, 2).requires_grad_(), _unit(5, 6, 3)
    mask = torch.tensor([True, True, False, True, False])
    term = masked_instance_infonce(a, v, a, v, mask, mask, torch.tensor(4.0, dtype=torch.float64))
    (grad,) = torch.autograd.grad(term, a)
    assert torch.equal(grad[~mask], torch.zeros_like(grad[~mask]))
    assert grad[mask].abs().sum() > 0
    # Replacing the masked items' audio and image by anything leaves the term unchanged.
    a2, v2 = a.detach().clone(), v.clone()
    a2[~mask], v2[~mask] = _unit(2, 6, 9), _unit(2, 6, 10)
    other = masked_instance_infonce(a2, v2, a2, v2, mask, mask, torch.tensor(4.0, dtype=torch.float64))
    assert other.item() == pytest.approx(term.item(), rel=1e-12)
    # Nothing valid: an exact zero that still has a gradient path (every DDP rank joins the backward).
    none = torch.zeros(5, dtype=torch.bool)
    zero = masked_instance_infonce(a, v, a, v, none, none, torch.tensor(4.0, dtype=torch.float64))
    assert zero.item() == 0.0 and zero.requires_grad


def test_two_ranks_with_global_negatives_equal_one_process():
    """Each rank's rows against the gathered columns, DDP-averaged, give the single-process loss and gradient,
    also when the ranks hold different numbers of masked clips."""
    a, v = _unit(6, 4, 4), _unit(6, 4, 5)
    mask = torch.tensor([True, False, False, True, True, True])  # rank 0: 1 valid, rank 1: 3 valid
    scale = torch.tensor(2.5, dtype=torch.float64)
    whole_a = a.clone().requires_grad_()
    whole = masked_instance_infonce(whole_a, v, whole_a, v, mask, mask, scale)
    (whole_grad,) = torch.autograd.grad(whole, whole_a)
    gathered = a.clone().requires_grad_()  # what gather_with_grad hands every rank (gradients summed over ranks)
    per_rank = [masked_instance_infonce(gathered[r * 3:(r + 1) * 3], v[r * 3:(r + 1) * 3], gathered, v,
                                        mask[r * 3:(r + 1) * 3], mask, scale, offset=3 * r) for r in range(2)]
    averaged = sum(per_rank) / 2  # DDP averages the ranks' gradients
    (grad,) = torch.autograd.grad(averaged, gathered)
    assert averaged.item() == pytest.approx(whole.item(), rel=1e-12)
    assert torch.allclose(grad, whole_grad, rtol=1e-10, atol=1e-12)


def test_gradcheck_float64():
    v = _unit(4, 3, 6)
    mask = torch.tensor([True, True, False, True])

    def f(a, log_scale):
        return masked_instance_infonce(a, v, a, v, mask, mask, log_scale.exp())

    assert torch.autograd.gradcheck(f, (_unit(4, 3, 7).requires_grad_(), torch.tensor(1.2, dtype=torch.float64,
                                                                                        requires_grad=True)))


def test_audio_text_loss_adds_the_weighted_term_and_counts_masked_items():
    a, t, v = _unit(4, 5, 8).float(), _unit(3, 5, 9).float(), _unit(4, 5, 10).float()
    labels, mask = torch.tensor([0, 1, 2, 0]), torch.tensor([True, False, True, True])
    loss = AudioTextLoss("infonce", audio_image_weight=0.5, image_temperature_init=0.1)
    terms = loss(a, labels, t, image=v, image_mask=mask)
    expected_image = _hand(a.double(), v.double(), mask.tolist(), 10.0)
    assert terms["audio_image"].item() == pytest.approx(expected_image, rel=1e-5)
    assert terms["loss"].item() == pytest.approx(terms["infonce"].item() + 0.5 * expected_image, rel=1e-5)
    assert terms["image_masked"].item() == 1
    # Masked items are ordinary items of the text term: it is the same as without any image.
    assert terms["infonce"].item() == pytest.approx(AudioTextLoss("infonce")(a, labels, t)["infonce"].item())
    with pytest.raises(ValueError, match="frame embedding"):
        loss(a, labels, t)
    # Off by default, and then without a parameter (text-only checkpoints keep their keys).
    assert "log_image_scale" not in dict(AudioTextLoss("infonce").named_parameters())
    with pytest.raises(ValueError, match="audio_image_weight must be >= 0"):
        AudioTextLoss(audio_image_weight=-1.0)
