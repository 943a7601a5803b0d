"""Toy CLIP: OpenAI's `clip.model.CLIP` at tiny widths, trained contrastively on (painting, caption) pairs.

The saved file is a plain fp16 state dict, the format `clip.load(path, jit=False)` rebuilds the model from
(`build_model` infers every width from tensor shapes), so the rest of the code base uses it exactly like
OpenAI's ViT-B/32. The vocabulary stays at 49408 because `clip.tokenize` emits ids up to 49407; the text
width is 64 (one head: `build_model` sets heads = width // 64) to keep the token table small.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import asdict, dataclass, field

import clip
import numpy as np
import torch
import torch.nn.functional as F
from clip.model import CLIP
from tqdm import tqdm

from experiments.toyworld.paintings import ATTRIBUTES, NEUTRAL_PROMPT, PROMPT_TEMPLATE, render_dataset
from lightning_modules import zero_shot
from lightning_modules.clip_wrapper import CLIPWrapper, clip_preprocess
from lightning_modules.losses import multi_positive_cross_entropy


@dataclass
class ToyCLIPConfig:
    """Architecture and training schedule of the toy CLIP (the values `make toyworld` uses)."""

    embed_dim: int = 64
    image_resolution: int = 32
    vision_layers: int = 2
    vision_width: int = 64
    vision_patch_size: int = 4
    context_length: int = 77
    vocab_size: int = 49408
    transformer_width: int = 64
    transformer_layers: int = 2
    steps: int = 1200
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_steps: int = 100
    seed: int = 0
    augment: dict = field(default_factory=lambda: {"shift": 2, "blur_p": 0.3, "noise": 0.03})

    def architecture(self) -> dict:
        keys = ("embed_dim", "image_resolution", "vision_layers", "vision_width", "vision_patch_size",
                "context_length", "vocab_size", "transformer_width", "transformer_layers")
        arch = {k: getattr(self, k) for k in keys}
        return {**arch, "transformer_heads": self.transformer_width // 64}

    def to_dict(self) -> dict:
        return asdict(self)


@contextlib.contextmanager
def _short_context(model: CLIP, length: int):
    """Run the text transformer on the first `length` positions only.

    Exact for captions whose end-of-text token lies within `length`: the causal mask means no position
    attends to later ones, and encode_text reads the end-of-text position. Saves ~5x text compute.
    """
    blocks = list(model.transformer.resblocks)
    saved = [b.attn_mask for b in blocks]
    for b in blocks:
        b.attn_mask = b.attn_mask[:length, :length]
    try:
        yield
    finally:
        for b, m in zip(blocks, saved):
            b.attn_mask = m


def encode_text_short(model: CLIP, tokens: torch.Tensor) -> torch.Tensor:
    """`model.encode_text` on tokens truncated after the longest caption's end-of-text token (same result)."""
    length = int(tokens.argmax(-1).max()) + 1
    tokens = tokens[:, :length]
    with _short_context(model, length):
        x = model.token_embedding(tokens) + model.positional_embedding[:length]
        x = model.transformer(x.permute(1, 0, 2)).permute(1, 0, 2)
        x = model.ln_final(x)
        return x[torch.arange(x.shape[0]), tokens.argmax(-1)] @ model.text_projection


def augment(images: torch.Tensor, cfg: dict, gen: torch.Generator) -> torch.Tensor:
    """Flip, small shift (reflect padding), occasional blur and pixel noise on images in [-1, 1].

    Blur and noise make the image tower tolerant of generator output (softer, noisier than renders);
    colour is left alone because palettes and darkness are attributes.
    """
    n, _, h, w = images.shape
    flip = torch.rand(n, generator=gen) < 0.5
    images = torch.where(flip[:, None, None, None], images.flip(-1), images)
    s = cfg["shift"]
    if s:
        padded = F.pad(images, (s, s, s, s), mode="reflect")
        dx, dy = torch.randint(0, 2 * s + 1, (2,), generator=gen).tolist()
        images = padded[..., dy:dy + h, dx:dx + w]
    blur = (torch.rand(n, generator=gen) < cfg["blur_p"]).float()[:, None, None, None]
    k = torch.tensor([0.25, 0.5, 0.25])
    kernel = (k[:, None] * k[None, :]).expand(3, 1, 3, 3)
    blurred = F.conv2d(F.pad(images, (1, 1, 1, 1), mode="replicate"), kernel, groups=3)
    images = blur * blurred + (1 - blur) * images
    return images + cfg["noise"] * torch.randn(images.shape, generator=gen)


def class_prompts() -> list[str]:
    """Zero-shot prompts: the seven attributes through the toy world's template, then the neutral prompt."""
    return zero_shot.class_prompts(ATTRIBUTES, PROMPT_TEMPLATE) + [NEUTRAL_PROMPT]


@torch.no_grad()
def zero_shot_accuracy(clip_model: CLIPWrapper, images: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Zero-shot top-1 on paintings: 7-way over attribute paintings, and 8-way including the neutral prompt.

    images: uint8 (N, 3, H, W); labels: 0..6 attributes, 7 neutral.
    """
    text = clip_model.encode_text(class_prompts())
    feats = torch.cat([clip_model.encode_image(x.to(clip_model.device).float() / 127.5 - 1) for x in images.split(256)])
    sims = (feats @ text.T).cpu()
    attr = labels < len(ATTRIBUTES)
    acc7 = (sims[attr, : len(ATTRIBUTES)].argmax(1) == labels[attr]).float().mean()
    acc8 = (sims.argmax(1) == labels).float().mean()
    return {"zero_shot_top1_7way": round(float(acc7), 4), "zero_shot_top1_8way": round(float(acc8), 4)}


def held_out_set(n_per_class: int = 60, size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed held-out evaluation set: n_per_class paintings of each attribute and of neutral scenes.

    Seeds 900_000 + ... never occur in training (training uses seeds below 100_000).
    """
    images, labels = [], []
    for k, a in enumerate((*ATTRIBUTES, "none")):
        imgs, _ = render_dataset(range(900_000 + 1000 * k, 900_000 + 1000 * k + n_per_class), size, attribute=a)
        images.append(torch.from_numpy(imgs))
        labels.append(torch.full((n_per_class,), k))
    return torch.cat(images), torch.cat(labels)


def _lr_at(step: int, cfg: ToyCLIPConfig) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    t = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * t))


def contrastive_loss(img: torch.Tensor, txt: torch.Tensor, which: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE between B images and U distinct captions; image i's caption is txt[which[i]].

    image->text: cross-entropy over the U captions. text->image: each caption's target is spread evenly over
    all images that carry it (multi-positive), so duplicates of a caption are never treated as negatives.
    """
    logits = scale * img @ txt.T  # (B, U)
    captions_of_images = F.one_hot(which, txt.shape[0]).T  # (U, B)
    return 0.5 * (F.cross_entropy(logits, which) + multi_positive_cross_entropy(logits.T, captions_of_images))


def train_toy_clip(images: torch.Tensor, captions: list[str], cfg: ToyCLIPConfig,
                   device: torch.device | str = "cpu") -> CLIP:
    """Contrastive training (symmetric InfoNCE over the batch's distinct captions, CLIP's learnable scale).

    Images sharing a caption are all positives of that caption (text->image target spread evenly over them).
    images: uint8 (N, 3, R, R) at cfg.image_resolution.
    """
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    model = CLIP(**cfg.architecture()).to(device).train()
    vocab, caption_ids = np.unique(np.asarray(captions), return_inverse=True)
    tokens = clip.tokenize(list(vocab), context_length=cfg.context_length).to(device)
    caption_ids = torch.from_numpy(caption_ids)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.98), eps=1e-6)
    bar = tqdm(range(cfg.steps), desc="toy CLIP", mininterval=5)
    for step in bar:
        for g in opt.param_groups:
            g["lr"] = _lr_at(step, cfg)
        idx = torch.randint(0, len(images), (cfg.batch_size,), generator=gen)
        x = augment(images[idx].float() / 127.5 - 1, cfg.augment, gen).to(device)
        img = F.normalize(model.encode_image(clip_preprocess(x, cfg.image_resolution)), dim=-1)
        uniq, which = torch.unique(caption_ids[idx], return_inverse=True)
        uniq, which = uniq.to(device), which.to(device)
        txt = F.normalize(encode_text_short(model, tokens[uniq]), dim=-1)
        loss = contrastive_loss(img, txt, which, model.logit_scale.exp())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        if step % 50 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}", scale=f"{model.logit_scale.exp().item():.1f}")
    return model.cpu().eval()


def save_toy_clip(model: CLIP, path: str) -> None:
    """fp16 state dict: what `clip.load(path, jit=False)` reads (and half the bytes of fp32)."""
    torch.save({k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}, path)

