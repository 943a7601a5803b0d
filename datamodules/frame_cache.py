"""Cached CLIP image embeddings of every clip's video frames: a float16 memmap keyed by clip id.

Layout of a cache folder (written once by `python -m experiments.embed_frames`, read by `VGGSoundDataModule`):

    embeddings.f16   raw float16, shape (clips, K, D): L2-normalised CLIP image embeddings of each clip's K frames
    index.json       {"clip_model", "clip_sha256", "dim", "frames", "size", "keys": [clip id, ...]} (row i = keys[i])

The index records which CLIP made the embeddings (name and SHA-256 of its weights file): embeddings of another
CLIP live in another space, so a training run with a different CLIP refuses the cache (`check_clip`). Training
reads rows from the memmap and never runs the image tower. Both files are written under temporary names and
renamed, the index last, so a killed build never leaves a cache that looks complete.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

EMBEDDINGS = "embeddings.f16"
INDEX = "index.json"


class FrameCacheError(ValueError):
    """A frame cache that is missing, damaged, or made by another CLIP than the one in use, with the folder named."""


@dataclass
class FrameCacheInfo:
    """What the index of a cache records."""

    clip_model: str
    clip_sha256: str
    dim: int
    frames: int
    size: int
    keys: list[str] = field(default_factory=list)

    def same_space(self, other: FrameCacheInfo) -> bool:
        """Rows of both caches are comparable: same CLIP weights, frames per clip, dimension and frame size."""
        return (self.clip_sha256, self.dim, self.frames, self.size) == (
            other.clip_sha256, other.dim, other.frames, other.size)


class FrameCache:
    """Read access to a cache folder; the memmap is opened on first use (so DataLoader workers open their own)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        index = self.path / INDEX
        try:
            data = json.loads(index.read_text(encoding="utf-8"))
            self.info = FrameCacheInfo(**data)
        except FileNotFoundError as err:
            raise FrameCacheError(f"{self.path}: no frame cache here ({INDEX} missing; build it with "
                                  "python -m experiments.embed_frames ROOT)") from err
        except (ValueError, TypeError) as err:
            raise FrameCacheError(f"{index}: not a frame-cache index ({err})") from err
        expected = len(self.info.keys) * self.info.frames * self.info.dim * 2
        found = (self.path / EMBEDDINGS).stat().st_size if (self.path / EMBEDDINGS).exists() else -1
        if found != expected:
            raise FrameCacheError(f"{self.path / EMBEDDINGS}: {found} bytes, the index promises {expected} "
                                  f"({len(self.info.keys)} clips x {self.info.frames} frames x {self.info.dim} x 2)")
        self._array: np.memmap | None = None

    def __len__(self) -> int:
        return len(self.info.keys)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_array": None}  # workers reopen the memmap instead of pickling it

    @property
    def array(self) -> np.ndarray:
        """The (clips, K, D) float16 memmap, read-only."""
        if self._array is None:
            shape = (len(self.info.keys), self.info.frames, self.info.dim)
            if shape[0] == 0:
                return np.zeros(shape, np.float16)
            self._array = np.memmap(self.path / EMBEDDINGS, dtype=np.float16, mode="r", shape=shape)
        return self._array

    def rows(self, keys: list[str]) -> np.ndarray:
        """int64 row of every key, -1 for keys without frames in the cache."""
        where = {k: i for i, k in enumerate(self.info.keys)}
        return np.array([where.get(k, -1) for k in keys], dtype=np.int64)

    def embedding(self, row: int, frame: int) -> np.ndarray:
        """float32 (D,) embedding of frame `frame` of row `row`."""
        return np.asarray(self.array[row, frame], dtype=np.float32)

    def check_clip(self, clip_model: str, clip_sha256: str) -> None:
        """Refuse the cache unless it was made by the CLIP whose weights hash to `clip_sha256`."""
        if clip_sha256 != self.info.clip_sha256:
            raise FrameCacheError(
                f"{self.path}: frame embeddings made by CLIP {self.info.clip_model!r} (weights sha256 "
                f"{self.info.clip_sha256[:12]}...), but this run uses {clip_model!r} (sha256 {clip_sha256[:12]}...); "
                f"their embedding spaces differ. Rebuild the cache with python -m experiments.embed_frames ROOT "
                f"--clip {clip_model} --out NEW_DIR and point data.frame_cache at it")


class FrameCacheWriter:
    """Writes a new cache folder: fill `array` (a (clips, K, D) float16 memmap), then `commit()`."""

    def __init__(self, path: str | os.PathLike, info: FrameCacheInfo, tag: str = "") -> None:
        """`tag` names the temporary file, so that two writers can fill the same folder at once."""
        self.path, self.info = Path(path), info
        self.path.mkdir(parents=True, exist_ok=True)
        self._partial = self.path / f".{EMBEDDINGS}.{tag}partial"
        shape = (len(info.keys), info.frames, info.dim)
        self.array = (np.memmap(self._partial, dtype=np.float16, mode="w+", shape=shape) if shape[0]
                      else np.zeros(shape, np.float16))

    def commit(self) -> None:
        """Flush the embeddings and make the cache visible: embeddings renamed first, the index last."""
        if isinstance(self.array, np.memmap):
            self.array.flush()
        else:
            self._partial.write_bytes(b"")
        del self.array
        index_partial = self.path / f".{INDEX}.partial"
        index_partial.write_text(json.dumps(asdict(self.info)), encoding="utf-8")
        (self.path / INDEX).unlink(missing_ok=True)  # the old index must not describe the new embeddings
        os.replace(self._partial, self.path / EMBEDDINGS)
        os.replace(index_partial, self.path / INDEX)

    def abort(self) -> None:
        self.array = None
        self._partial.unlink(missing_ok=True)
