"""Frozen OpenAI CLIP, loaded by model name or file path through the `clip` package.

Shared by the audio side (text embeddings of class prompts, paper Eq. 1) and the
manipulation side (differentiable image embeddings, paper Eq. 2). CLIP is never
trained here, so it is kept out of every checkpoint: modules hold it in a plain
attribute and reload it by name/path.
"""

from __future__ import annotations

import functools
import os
import pickle
import urllib.error
from collections.abc import Sequence

import clip
import torch
import torch.nn.functional as F

from datamodules.torch_files import CorruptFileError, load_error

# CLIP's image normalisation (clip/clip.py `_transform`).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

DEFAULT_CLIP_CACHE = os.path.expanduser("~/.cache/clip")


def clip_cache_file(name: str, download_root: str | None = None) -> str:
    """Where a named CLIP model (e.g. "ViT-B/32") lives once downloaded."""
    return os.path.join(download_root or DEFAULT_CLIP_CACHE, os.path.basename(clip.clip._MODELS[name]))


def resolve_clip_file(name_or_path: str, download_root: str | None = None) -> str:
    """Return a local file for a CLIP model name or path, downloading a named model when online.

    Offline and without the file, raises FileNotFoundError naming the expected file and how to get it.
    """
    if os.path.isfile(name_or_path):
        return name_or_path
    if os.path.isdir(name_or_path):
        raise FileNotFoundError(f"{name_or_path}: is a directory, expected a CLIP model file or name")
    if name_or_path not in clip.available_models():
        raise FileNotFoundError(
            f"CLIP model {name_or_path!r}: no such file, and not a known model name "
            f"(known: {', '.join(clip.available_models())})."
        )
    expected = clip_cache_file(name_or_path, download_root)
    if os.path.isfile(expected):
        return expected
    try:
        return clip.clip._download(clip.clip._MODELS[name_or_path], os.path.dirname(expected))
    except (urllib.error.URLError, OSError, RuntimeError) as err:
        raise FileNotFoundError(
            f"CLIP model {name_or_path!r} is not in the cache ({expected}) and could not be downloaded "
            f"({err}). Run `make weights` on a machine with network access, or copy the file to "
            f"{expected}, or pass a local file path instead of the model name."
        ) from err


def clip_preprocess(images: torch.Tensor, resolution: int) -> torch.Tensor:
    """Differentiable CLIP input from images in [-1, 1], shape (N, 3, H, W).

    Mirrors CLIP's own transform on tensors: [-1,1] -> [0,1], bicubic resize of the shorter
    side to `resolution` with antialiasing, centre crop, then CLIP mean/std.
    """
    x = (images.float() + 1.0) / 2.0
    h, w = x.shape[-2:]
    if (h, w) != (resolution, resolution):
        scale = resolution / min(h, w)
        size = (max(resolution, round(h * scale)), max(resolution, round(w * scale)))
        x = F.interpolate(x, size=size, mode="bicubic", align_corners=False, antialias=True)
        top, left = (size[0] - resolution) // 2, (size[1] - resolution) // 2
        x = x[..., top : top + resolution, left : left + resolution]
    mean, std = _clip_stats(x.device)
    return (x - mean) / std


@functools.cache
def _clip_stats(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """CLIP mean and std (1, 3, 1, 1) on ``device``, made once: a copy from the host on every call would also
    break CUDA-graph capture of an edit step."""
    return (torch.tensor(CLIP_MEAN, device=device).view(1, 3, 1, 1),
            torch.tensor(CLIP_STD, device=device).view(1, 3, 1, 1))


class CLIPWrapper:
    """Frozen CLIP in eval mode (fp16 on GPU, fp32 on CPU) with normalised encoders.

    A plain object, not an nn.Module, so CLIP's weights never enter our state dicts.
    """

    def __init__(self, name_or_path: str = "ViT-B/32", device: str | torch.device = "cpu",
                 download_root: str | None = None):
        self.name_or_path = name_or_path
        path = resolve_clip_file(name_or_path, download_root)
        try:
            model, _ = clip.load(path, device="cpu", jit=False)
        except (pickle.UnpicklingError, EOFError, OSError, RuntimeError) as err:  # refused, truncated, not torch
            raise load_error(path, err, "CLIP model file") from err
        except (KeyError, ValueError, AttributeError, TypeError) as err:
            raise CorruptFileError(f"{path}: not a CLIP model (its weights do not build one: "
                                   f"{type(err).__name__}: {err})") from err
        model.float().eval().requires_grad_(False)
        self.model = model
        self.device = torch.device("cpu")
        self.to(device)

    @property
    def embed_dim(self) -> int:
        return int(self.model.text_projection.shape[1])

    @property
    def input_resolution(self) -> int:
        return int(self.model.visual.input_resolution)

    @property
    def dtype(self) -> torch.dtype:
        return self.model.visual.conv1.weight.dtype

    def to(self, device: str | torch.device) -> CLIPWrapper:
        """Move CLIP; on CUDA it runs in fp16 as OpenAI ships it, on CPU in fp32.

        fp16 goes through clip's own `convert_weights` (convs, linears, attention, projections): CLIP's LayerNorm
        computes in fp32 and needs fp32 weights, so a blanket `.half()` would fail on the first forward.
        """
        device = torch.device(device)
        if device == self.device:  # asked again at every fit/validation start: no fp16 -> fp32 -> fp16 round trip
            return self
        self.model.float().to(device)
        if device.type == "cuda":
            clip.model.convert_weights(self.model)
        self.device = device
        return self

    def tokenize(self, texts: Sequence[str]) -> torch.Tensor:
        return clip.tokenize(list(texts), context_length=self.model.context_length, truncate=True)

    @torch.no_grad()
    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        """L2-normalised float32 text embeddings (N, D), computed with autocast off."""
        tokens = self.tokenize(texts).to(self.device)
        with torch.autocast(self.device.type, enabled=False):
            emb = self.model.encode_text(tokens).float()
        return F.normalize(emb, dim=-1)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """L2-normalised float32 image embeddings (N, D) of images in [-1, 1]; differentiable."""
        x = clip_preprocess(images, self.input_resolution).to(self.device, self.dtype)
        emb = self.model.encode_image(x).float()
        return F.normalize(emb, dim=-1)
