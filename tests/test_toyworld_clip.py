"""Toy CLIP: training pieces, the file format, and the committed checkpoint's zero-shot accuracy."""

from __future__ import annotations

import json
import math

import clip
import pytest
import torch
import torch.nn.functional as F

from experiments.toyworld import build
from experiments.toyworld.train_clip import (
    ToyCLIPConfig,
    augment,
    class_prompts,
    contrastive_loss,
    encode_text_short,
    held_out_set,
    save_toy_clip,
    train_toy_clip,
    zero_shot_accuracy,
)
from lightning_modules.clip_wrapper import CLIPWrapper

COMMITTED_CLIP = build.WEIGHTS_DIR / build.CLIP_FILE
COMMITTED_METRICS = build.WEIGHTS_DIR / build.METRICS_FILE


def _small_model(seed: int = 0):
    from clip.model import CLIP

    torch.manual_seed(seed)
    return CLIP(**ToyCLIPConfig().architecture()).eval()


def test_short_context_text_encoding_equals_full_context():
    model = _small_model()
    tokens = clip.tokenize(["a painting with rain", "a painting of a forest at night with lightning and a thunderstorm",
                            "hills"])
    with torch.no_grad():
        full = model.encode_text(tokens)
        short = encode_text_short(model, tokens)
    torch.testing.assert_close(short, full, rtol=1e-5, atol=1e-5)
    # The attention masks are restored afterwards.
    assert all(b.attn_mask.shape == (77, 77) for b in model.transformer.resblocks)


def test_contrastive_loss_matches_hand_computation():
    gen = torch.Generator().manual_seed(1)
    img = F.normalize(torch.randn(4, 8, generator=gen), dim=-1)
    txt = F.normalize(torch.randn(3, 8, generator=gen), dim=-1)
    which = torch.tensor([0, 2, 0, 1])  # images 0 and 2 share caption 0
    scale = torch.tensor(5.0)
    logits = (scale * img @ txt.T).tolist()
    i2t = -sum(math.log(math.exp(logits[i][which[i]]) / sum(math.exp(v) for v in logits[i])) for i in range(4)) / 4
    t2i = 0.0
    for u in range(3):
        col = [logits[i][u] for i in range(4)]
        log_z = math.log(sum(math.exp(v) for v in col))
        pos = [i for i in range(4) if which[i] == u]
        t2i += -sum(col[i] - log_z for i in pos) / len(pos)
    expected = 0.5 * (i2t + t2i / 3)
    assert contrastive_loss(img, txt, which, scale).item() == pytest.approx(expected, rel=1e-5)


def test_augment_is_seeded_and_keeps_shape():
    x = torch.rand(6, 3, 32, 32) * 2 - 1
    cfg = ToyCLIPConfig().augment
    a = augment(x, cfg, torch.Generator().manual_seed(5))
    b = augment(x, cfg, torch.Generator().manual_seed(5))
    assert a.shape == x.shape and torch.equal(a, b)
    assert not torch.equal(a, augment(x, cfg, torch.Generator().manual_seed(6)))


def test_saved_toy_clip_loads_through_clip_load(tmp_path):
    model = _small_model(3)
    path = tmp_path / "toy.pt"
    save_toy_clip(model, path)
    loaded, _ = clip.load(str(path), device="cpu", jit=False)
    assert all(v.dtype != torch.float32 for v in torch.load(path, weights_only=True).values())  # fp16 on disk
    image = torch.randn(2, 3, 32, 32)
    tokens = clip.tokenize(["a painting with fire crackling", "a calm painting"])
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode_image(image), model.encode_image(image), atol=2e-2, rtol=2e-2)
        torch.testing.assert_close(loaded.encode_text(tokens), model.encode_text(tokens), atol=2e-2, rtol=2e-2)


def test_a_few_training_steps_lower_the_loss():
    from experiments.toyworld.paintings import render_dataset

    images, scenes = render_dataset(range(64))
    images = torch.from_numpy(images)
    captions = [s.caption for s in scenes]
    cfg = ToyCLIPConfig(steps=25, batch_size=32, warmup_steps=5)

    def loss_of(model):
        with torch.no_grad():
            x = images[:32].float() / 127.5 - 1
            img = F.normalize(model.encode_image(x), dim=-1)
            uniq = sorted(set(captions[:32]))
            which = torch.tensor([uniq.index(c) for c in captions[:32]])
            txt = F.normalize(model.encode_text(clip.tokenize(uniq)), dim=-1)
            return contrastive_loss(img, txt, which, model.logit_scale.exp()).item()

    torch.manual_seed(cfg.seed)
    untrained = loss_of(_small_model(cfg.seed))
    trained = loss_of(train_toy_clip(images, captions, cfg))
    assert trained < untrained - 0.3


def test_committed_toy_clip_meets_its_recorded_zero_shot_accuracy():
    """Guards the committed file: loads through clip.load(path, jit=False), reaches what metrics.json recorded."""
    recorded = json.loads(COMMITTED_METRICS.read_text())["toy_clip"]
    model = CLIPWrapper(str(COMMITTED_CLIP))  # clip.load(path, jit=False) inside
    assert model.input_resolution == 32 and model.embed_dim == ToyCLIPConfig().embed_dim
    images, labels = held_out_set()
    acc = zero_shot_accuracy(model, images, labels)
    assert acc["zero_shot_top1_7way"] >= recorded["zero_shot_top1_7way"] - 0.005, (acc, recorded)
    assert acc["zero_shot_top1_8way"] >= recorded["zero_shot_top1_8way"] - 0.005, (acc, recorded)
    assert acc["zero_shot_top1_7way"] >= 0.9
    # The prompts distinguish the classes: no two class prompts embed (almost) alike.
    text = model.encode_text(class_prompts())
    sims = text @ text.T - 2 * torch.eye(len(text))
    assert sims.max() < 0.95


@pytest.mark.gpu
def test_committed_toy_clip_runs_in_fp16_on_cuda():
    model = CLIPWrapper(str(COMMITTED_CLIP), device="cuda")
    images, labels = held_out_set(n_per_class=20)
    acc = zero_shot_accuracy(model, images, labels)
    assert acc["zero_shot_top1_7way"] >= 0.85
