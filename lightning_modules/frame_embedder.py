"""The one-time step that runs CLIP's image tower: embeds every clip's extracted frames into a frame cache.

`build_frame_cache(root, clip_model)` reads the JPEG strips under `root/frames/` (from `prepare_vggsound
--frames K`), embeds them with the frozen CLIP image tower in batches, and writes `datamodules.frame_cache`'s
float16 memmap with the CLIP's name and weights hash. A cache that already holds a clip is reused for it: a
second run over the same frames embeds nothing, and new clips cost only their own frames. A cache made by
another CLIP is refused, never overwritten. An unreadable strip does not stop the build: the clip is left out of
the cache (so it trains as a clip without frames) and listed in `OUT/failures.txt`.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from datamodules.frame_cache import EMBEDDINGS, INDEX, FrameCache, FrameCacheError, FrameCacheInfo, FrameCacheWriter
from datamodules.frame_files import FRAMES_DIR, FrameFileError, read_manifest, read_strip
from lightning_modules.clip_wrapper import CLIPWrapper, resolve_clip_file

DEFAULT_CACHE_DIR = "frame_cache"
FAILURES = "failures.txt"


def clip_weights_sha256(name_or_path: str) -> str:
    """SHA-256 of the CLIP weights file a name or path resolves to (the identity a frame cache records)."""
    digest = hashlib.sha256()
    with open(resolve_clip_file(name_or_path), "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class FrameCacheReport:
    path: Path
    clips: int
    embedded: int  # clips whose frames went through the image tower in this run
    reused: int  # clips taken from the existing cache
    seconds: float
    bytes: int  # size of embeddings.f16
    failed: list[tuple[str, str]] = field(default_factory=list)  # (strip, reason): clips left out of the cache


def build_frame_cache(
    root: str | os.PathLike,
    clip_model: str = "ViT-B/32",
    out: str | os.PathLike | None = None,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> FrameCacheReport:
    """Embed the frames under `root/frames` into the cache `out` (default `root/frame_cache`); see the module doc."""
    t0 = time.perf_counter()
    root = Path(root)
    frames_dir = root / FRAMES_DIR
    out = Path(out) if out is not None else root / DEFAULT_CACHE_DIR
    manifest = read_manifest(frames_dir)
    keys_on_disk = sorted(p.stem for p in frames_dir.glob("*.jpg") if not p.name.startswith("."))
    sha = clip_weights_sha256(clip_model)
    old = FrameCache(out) if (out / INDEX).exists() else None
    clip = None
    if old is not None:
        old.check_clip(clip_model, sha)
        if (old.info.frames, old.info.size) != (manifest["frames"], manifest["size"]):
            raise FrameCacheError(f"{out}: made from {old.info.frames} frames of {old.info.size} px, the strips in "
                                  f"{frames_dir} hold {manifest['frames']} of {manifest['size']} px; use another --out")
        dim = old.info.dim
    else:
        clip = CLIPWrapper(clip_model, device=device)
        dim = clip.embed_dim
    old_keys = set(old.info.keys) if old is not None else set()
    new_keys = [k for k in keys_on_disk if k not in old_keys]
    if old is not None and not new_keys:
        return FrameCacheReport(out, len(old), 0, len(old), time.perf_counter() - t0, (out / EMBEDDINGS).stat().st_size)
    keys = sorted(old_keys | set(new_keys))
    info = FrameCacheInfo(clip_model, sha, dim, manifest["frames"], manifest["size"], keys)
    failed: list[tuple[str, str]] = []
    writer = FrameCacheWriter(out, info)
    try:
        row = {k: i for i, k in enumerate(keys)}
        if old is not None:
            for i, k in enumerate(old.info.keys):
                writer.array[row[k]] = old.array[i]
        clip = clip or CLIPWrapper(clip_model, device=device)
        bar = tqdm(total=len(new_keys), desc="embed frames", unit="clip", disable=not progress)
        for start in range(0, len(new_keys), batch_size):
            chunk, strips = [], []
            for k in new_keys[start:start + batch_size]:
                try:
                    strips.append(read_strip(frames_dir / f"{k}.jpg", info.frames))  # (K, S, S, 3)
                    chunk.append(k)
                except FrameFileError as err:
                    failed.append((str(frames_dir / f"{k}.jpg"), str(err)))
            if chunk:
                for k, e in zip(chunk, embed_frames(clip, np.stack(strips))):
                    writer.array[row[k]] = e
            bar.update(len(new_keys[start:start + batch_size]))
        bar.close()
        if failed:  # rows must stay dense: write the cache again without the failed clips
            writer = _without(writer, info, {Path(path).stem for path, _ in failed})
        writer.commit()
    except BaseException:
        writer.abort()
        raise
    _write_failures(out / FAILURES, failed)
    clips = len(keys) - len(failed)
    return FrameCacheReport(out, clips, len(new_keys) - len(failed), len(keys) - len(new_keys),
                            time.perf_counter() - t0, (out / EMBEDDINGS).stat().st_size, failed)


def _without(writer: FrameCacheWriter, info: FrameCacheInfo, dropped: set[str]) -> FrameCacheWriter:
    """A new writer holding the rows of `writer` except those of `dropped` keys (the old one is aborted)."""
    kept = [i for i, k in enumerate(info.keys) if k not in dropped]
    compact = FrameCacheWriter(writer.path, replace(info, keys=[info.keys[i] for i in kept]), tag="compact.")
    for j, i in enumerate(kept):
        compact.array[j] = writer.array[i]
    writer.abort()
    return compact


def _write_failures(path: Path, failed: list[tuple[str, str]]) -> None:
    if failed:
        path.write_text("".join(f"{src}\t{reason}\n" for src, reason in sorted(failed)), encoding="utf-8")
    elif path.exists():
        path.unlink()  # a stale list from an earlier run would be misleading


@torch.no_grad()
def embed_frames(clip: CLIPWrapper, strips: np.ndarray) -> np.ndarray:
    """float16 (B, K, D) L2-normalised image embeddings of uint8 frames (B, K, S, S, 3)."""
    b, k = strips.shape[:2]
    images = torch.from_numpy(strips.reshape(b * k, *strips.shape[2:])).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    with torch.autocast(clip.device.type, enabled=False):
        emb = clip.encode_image(images.to(clip.device))
    return emb.reshape(b, k, -1).cpu().numpy().astype(np.float16)
