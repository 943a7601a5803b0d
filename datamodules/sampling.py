"""Reproducible, resumable sampling: a run killed mid-epoch and resumed sees exactly the same items.

`EpochSampler` shuffles with a permutation that depends only on (seed, epoch) and yields `(epoch, index)`
keys, so a dataset can derive every random choice of an item (crop offset, replacement of a bad clip)
from (seed, epoch, index) instead of from global RNG state that a restart does not restore. Under DDP it
shards that one permutation itself (rank r takes positions r, r + world, ...), so the global batch of a step
is the same set of clips on any number of ranks; being a `DistributedSampler`, Lightning keeps it instead of
wrapping it in a `DistributedSamplerWrapper` (which re-shuffles the training indices with its own seed, so a
2-rank run would see other global batches than one process). Lightning calls `set_epoch` on it.

`ResumableDataLoader` follows Lightning's `_Stateful` protocol (`state_dict`/`load_state_dict`): the
checkpoint records how many batches of which epoch were served, and after a restart the first iteration
of that epoch skips them at the index level (no decoding of skipped clips).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler

PERMUTATION_STREAM = 2**32 - 1  # the "index" whose stream shuffles an epoch; no dataset item has it


def item_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    """A CPU generator whose stream is a function of (seed, epoch, index) alone."""
    state = np.random.SeedSequence([seed & 0xFFFFFFFF, epoch, index]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 31 ^ int(state[1]))


class EpochSampler(DistributedSampler):
    """Yields `(epoch, index)` for the items of this rank: a permutation of all `size` items seeded with (seed, epoch),
    padded with its first items to a multiple of `num_replicas` (as torch's DistributedSampler pads), and every
    `num_replicas`-th position from `rank`. `num_replicas`/`rank` default to the initialised process group (1/0
    without one)."""

    def __init__(self, size: int, seed: int = 0, shuffle: bool = True, num_replicas: int | None = None,
                 rank: int | None = None) -> None:
        initialised = dist.is_available() and dist.is_initialized()
        num_replicas = num_replicas if num_replicas is not None else (dist.get_world_size() if initialised else 1)
        rank = rank if rank is not None else (dist.get_rank() if initialised else 0)
        super().__init__(range(size), num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed)
        self.size = size

    def __iter__(self) -> Iterator[tuple[int, int]]:
        if self.shuffle:
            order = torch.randperm(self.size, generator=item_generator(self.seed, self.epoch, PERMUTATION_STREAM))
        else:
            order = torch.arange(self.size)
        order = order.tolist()
        order += (order * math.ceil(self.total_size / max(self.size, 1)))[: self.total_size - self.size]
        epoch = self.epoch
        return ((epoch, i) for i in order[self.rank: self.total_size: self.num_replicas])


class _SkippingIndexSampler:
    """Wraps a DataLoader's index sampler; the first iteration after a restore skips the served batches."""

    def __init__(self, loader: ResumableDataLoader, base: Any) -> None:
        self.loader, self.base = loader, base

    def __len__(self) -> int:
        return len(self.base)

    def __iter__(self) -> Iterator[Any]:
        return itertools.islice(iter(self.base), self.loader._take_skip(), None)


class ResumableDataLoader(DataLoader):
    """A DataLoader whose position inside the current epoch is saved in and restored from checkpoints."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._served = 0  # batches handed out in the current epoch (restored ones included)
        self._served_epoch = -1
        self._restore: dict[str, int] | None = None
        self._pending_skip = 0

    @property
    def _index_sampler(self) -> Any:
        # DataLoader iterators draw indices from this; it is captured once per (persistent) iterator.
        return _SkippingIndexSampler(self, super()._index_sampler)

    def _sampler_epoch(self) -> int:
        return int(getattr(self.sampler, "epoch", 0))

    def _take_skip(self) -> int:
        skip, self._pending_skip = self._pending_skip, 0
        return skip

    def __iter__(self) -> Iterator[Any]:
        epoch = self._sampler_epoch()
        skip = 0
        if self._restore is not None and self._restore["epoch"] == epoch:
            skip = min(self._restore["batches"], len(self))
        self._restore = None
        self._pending_skip, self._served, self._served_epoch = skip, skip, epoch
        return self._count(super().__iter__())

    def _count(self, batches: Iterator[Any]) -> Iterator[Any]:
        for batch in batches:
            self._served += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self._served_epoch, "batches": self._served}

    def load_state_dict(self, state: dict[str, int]) -> None:
        epoch, batches = int(state["epoch"]), int(state["batches"])
        if epoch < 0:  # saved before the first batch
            return
        if batches >= len(self):  # the saved epoch was complete: the run resumes with the next one
            epoch, batches = epoch + 1, 0
        # Lightning creates the first iterator after a restore before it calls `set_epoch`, and worker
        # processes draw indices at creation: put the sampler on the right epoch now.
        if callable(getattr(self.sampler, "set_epoch", None)):
            self.sampler.set_epoch(epoch)
        self._restore = {"epoch": epoch, "batches": batches}
