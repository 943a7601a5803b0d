"""Audio-text losses against hand computations on tiny tensors; multi-positive targets; the logit scale."""

import math

import pytest
import torch
import torch.nn.functional as F

from lightning_modules.losses import (
    AudioTextLoss,
    multi_positive_cross_entropy,
    paper_bce,
    same_label_targets,
    symmetric_infonce,
)


def _unit(n, d, seed):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=-1)


def _sigmoid(z):
    return 1.0 / (1.0 + math.exp(-z))


def _softmax_row(row):
    m = max(row)
    e = [math.exp(v - m) for v in row]
    return [v / sum(e) for v in e]


def _hand_multi_positive_ce(logits, row_labels, col_labels):
    """Mean over rows of -sum_j q_ij log p_ij, q uniform over the columns with the row's label."""
    total = 0.0
    for i, row in enumerate(logits):
        p = _softmax_row(row)
        pos = [j for j, c in enumerate(col_labels) if c == row_labels[i]]
        total += -sum(math.log(p[j]) for j in pos) / len(pos)
    return total / len(logits)


def test_same_label_targets():
    y = same_label_targets(torch.tensor([0, 2, 0]), torch.tensor([0, 1, 2, 0]))
    expect = torch.tensor([[1, 0, 0, 1], [0, 0, 1, 0], [1, 0, 0, 1]], dtype=torch.float)
    assert torch.equal(y, expect)


def test_paper_bce_matches_hand_computation():
    audio, text = _unit(3, 4, 0), _unit(3, 4, 1)
    labels = [0, 1, 0]
    s, b = 7.0, -2.5
    hand = 0.0
    for i in range(3):
        for j in range(3):
            z = s * float(audio[i] @ text[j]) + b
            y = 1.0 if labels[i] == labels[j] else 0.0
            hand -= y * math.log(_sigmoid(z)) + (1 - y) * math.log(1 - _sigmoid(z))
    hand /= 3  # SigLIP normalisation: sum over pairs / rows
    lab = torch.tensor(labels)
    got = paper_bce(s * audio @ text.T + b, same_label_targets(lab, lab))
    assert got.item() == pytest.approx(hand, rel=1e-12)


def test_infonce_matches_hand_computation_single_positive():
    """Distinct labels: CLIP's symmetric loss, (CE(a->t, arange) + CE(t->a, arange)) / 2."""
    a, t = _unit(4, 5, 2), _unit(4, 5, 3)
    labels = torch.arange(4)
    scale = 3.0
    logits = (scale * a @ t.T).tolist()
    hand_a2t = sum(-math.log(_softmax_row(logits[i])[i]) for i in range(4)) / 4
    cols = [[logits[i][j] for i in range(4)] for j in range(4)]  # t -> a rows
    hand_t2a = sum(-math.log(_softmax_row(cols[j])[j]) for j in range(4)) / 4
    got = symmetric_infonce(a, t, a, t, labels, labels, torch.tensor(scale, dtype=torch.float64))
    assert got.item() == pytest.approx((hand_a2t + hand_t2a) / 2, rel=1e-12)


def test_infonce_multi_positive_targets_hand_computation():
    """Same-class clips are positives: row 0 (class 0) puts 1/2 on columns 0 and 2."""
    a, t = _unit(4, 6, 4), _unit(4, 6, 5)
    labels = [0, 1, 0, 2]
    scale = 5.0
    logits = (scale * a @ t.T).tolist()
    lab = torch.tensor(labels)
    got = multi_positive_cross_entropy(torch.tensor(logits, dtype=torch.float64), same_label_targets(lab, lab))
    assert got.item() == pytest.approx(_hand_multi_positive_ce(logits, labels, labels), rel=1e-12)


def test_multi_positive_same_class_column_is_not_a_negative():
    """From a uniform softmax, the loss pulls a same-class column up; arange targets would push it down."""
    labels = torch.tensor([0, 0, 1])
    logits = torch.full((3, 3), 0.7, dtype=torch.float64, requires_grad=True)
    multi_positive_cross_entropy(logits, same_label_targets(labels, labels)).backward()
    assert logits.grad[0, 1] < 0 and logits.grad[1, 0] < 0  # d loss / d logit = (p - q) / rows = (1/3 - 1/2) / 3
    assert logits.grad[0, 2] > 0  # the other class stays a negative
    logits.grad = None
    F.cross_entropy(logits, torch.arange(3)).backward()
    assert logits.grad[0, 1] > 0  # the official code's defect: same-class clips pushed apart


def test_classes_loss_matches_hand_computation():
    audio, class_text = _unit(3, 4, 8), _unit(5, 4, 9)
    labels = [4, 0, 4]
    loss = AudioTextLoss("classes", temperature_init=0.5).double()
    got = loss(audio, torch.tensor(labels), class_text)
    logits = (2.0 * audio @ class_text.T).tolist()
    hand = sum(-math.log(_softmax_row(logits[i])[labels[i]]) for i in range(3)) / 3
    assert got["classes"].item() == pytest.approx(hand, rel=1e-6)
    assert got["loss"].item() == pytest.approx(hand, rel=1e-6)


def test_paper_bce_module_uses_prompt_of_each_clip_and_learnable_bias():
    audio, class_text = _unit(3, 4, 10), _unit(4, 4, 11)
    labels = [3, 1, 3]
    loss = AudioTextLoss("paper_bce").double()
    assert loss.logit_scale.item() == pytest.approx(10.0) and loss.logit_bias.item() == -10.0
    got = loss(audio, torch.tensor(labels), class_text)["loss"]
    hand = 0.0
    for i in range(3):
        for j in range(3):
            z = 10.0 * float(audio[i] @ class_text[labels[j]]) - 10.0
            y = float(labels[i] == labels[j])
            hand -= y * math.log(_sigmoid(z)) + (1 - y) * math.log(1 - _sigmoid(z))
    assert got.item() == pytest.approx(hand / 3, rel=1e-6)
    got.backward()
    assert loss.logit_bias.grad is not None and loss.logit_bias.grad != 0


def test_audio_audio_term_weight_and_hand_value():
    aug, clean, class_text = _unit(3, 4, 12), _unit(3, 4, 13), _unit(2, 4, 14)
    labels = [0, 1, 1]
    lab = torch.tensor(labels)
    loss = AudioTextLoss("infonce", temperature_init=0.25, audio_audio_weight=0.5).double()
    terms = loss(aug, lab, class_text, clean=clean)
    logits = (4.0 * aug @ clean.T).tolist()
    transposed = [list(r) for r in zip(*logits)]
    hand = (_hand_multi_positive_ce(logits, labels, labels) + _hand_multi_positive_ce(transposed, labels, labels)) / 2
    assert terms["audio_audio"].item() == pytest.approx(hand, rel=1e-6)
    assert terms["loss"].item() == pytest.approx(terms["infonce"].item() + 0.5 * hand, rel=1e-6)
    with pytest.raises(ValueError, match="clean"):
        loss(aug, lab, class_text)


def test_logit_scale_is_learnable_and_clamped():
    loss = AudioTextLoss("infonce")
    assert loss.logit_scale.item() == pytest.approx(1 / 0.07, rel=1e-6)
    assert loss.log_logit_scale.requires_grad
    audio, class_text = _unit(4, 8, 15).float(), _unit(4, 8, 16).float()
    labels = torch.arange(4)
    opt = torch.optim.SGD(loss.parameters(), lr=0.1)
    before = loss.log_logit_scale.item()
    loss(audio, labels, class_text)["loss"].backward()
    assert loss.log_logit_scale.grad.abs() > 0
    opt.step()
    assert loss.log_logit_scale.item() != before
    # Past the clamp: the scale used is 100, no gradient flows, and clamp_() pulls the parameter back.
    with torch.no_grad():
        loss.log_logit_scale.fill_(math.log(250.0))
    assert loss.logit_scale.item() == pytest.approx(100.0)
    loss.zero_grad()
    loss(audio, labels, class_text)["loss"].backward()
    assert loss.log_logit_scale.grad.item() == 0.0
    loss.clamp_()
    assert loss.log_logit_scale.item() == pytest.approx(math.log(100.0))


def test_loss_rejects_bad_configuration():
    with pytest.raises(ValueError, match="unknown kind"):
        AudioTextLoss("cosine")
    with pytest.raises(ValueError, match="temperature_init"):
        AudioTextLoss("infonce", temperature_init=0.001)
    with pytest.raises(ValueError, match="audio_audio_weight"):
        AudioTextLoss("infonce", audio_audio_weight=-1.0)
