"""VGGSound (and anything in its layout, e.g. the embedded sound set) as a LightningDataModule.

Layout: a headerless CSV with rows `youtube_id, start_seconds, label, split` (split is train or test;
labels with commas are quoted) and clip files named `{youtube_id}_{start:06d}` with extension .flac, .wav
or .ogg anywhere under `root`. Rows whose file is absent (dead YouTube links: 10-25 % of VGGSound) are
counted and reported once at setup, with the list written to `missing_clips.txt` next to the logs.

Splits: the CSV's test rows are the test set; the train rows are split into train and a class-stratified
validation carve-out chosen by a hash of (seed, clip), so the carve-out is the same on every run and does
not move when other clips appear or disappear.

Items are mono float32 waveforms at `sample_rate`: a random crop (or zero-pad at a random offset) of
`crop_seconds` for training, the centre `clip_seconds` for validation and test. The log-mel front end
runs on the model's device, not here, so loading stays cheap.

Video frames (optional, `frame_cache`): with a cache of CLIP image embeddings of each clip's frames
(`prepare_vggsound --frames K`, then `experiments.embed_frames`), items also carry `image`, the embedding of one
of the clip's K frames (a random one per item and epoch in training, the middle one in validation and test), and
`image_mask`, False for clips the cache lacks (their `image` is zeros).

Bad clips: a file that fails to decode, is empty, or is silent is replaced by another clip drawn at
random and the item carries `bad=True` (in every split; evaluation may drop flagged items). Counters inside
worker processes would never reach the main process, so the training module sums the flags and logs them.

Recording chain (optional, `recording_chain_p` > 0): after the crop, a training item passes through
`datamodules.recording_chain.record` (reverb, noise bed, two-mic mix, EQ, codec, onset/length, mic AGC, gain and
clipping, each step with probability `recording_chain_p`), so an encoder trained on clean clips also hears them
as a room and a microphone would. The chain's rng is its own stream seeded with (seed, epoch, index), so the crop
is the same with and without it and epochs, workers and DDP ranks are reproducible. Validation and test items never
go through it. Off (0.0) by default: items are then exactly those of a datamodule without the option.

Determinism: the training sampler yields `(epoch, index)` keys and every random choice for an item (crop
offset, replacement clips) comes from a generator seeded with (seed, epoch, index), never from global RNG
state. The train loader records its position in checkpoints, so a run killed mid-epoch and resumed sees
exactly the batches an uninterrupted run would have seen (see `datamodules.sampling`).
"""

from __future__ import annotations

import csv
import hashlib
import logging
import os
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_only
from torch.utils.data import DataLoader, Dataset

from datamodules.audio_io import AudioDecodeError, crop_or_pad, load_audio
from datamodules.frame_cache import FrameCache
from datamodules.loudness import DIGITAL_SILENCE_PEAK
from datamodules.output_root import default_output_dir
from datamodules.recording_chain import record
from datamodules.sampling import EpochSampler, ResumableDataLoader, item_generator
from datamodules.vggsound_csv import CSVRow, read_vggsound_csv

log = logging.getLogger(__name__)

AUDIO_EXTENSIONS = (".flac", ".wav", ".ogg")  # lookup preference when one clip exists in several formats


class Clip(NamedTuple):
    """A clip with a file on disk."""

    path: str
    label: int
    key: str


def index_audio_files(root: str | os.PathLike) -> dict[str, str]:
    """Map clip stem -> path for every audio file under `root`, reading each directory once.

    One listing per directory instead of up to three `stat` calls per CSV row: half the time on a local disk
    with warm caches (benchmarks/RESULTS.md), far less than that on network filesystems, where every `stat`
    is a round trip. Symbolic links to folders are followed, each real folder once.
    """
    rank = {ext: i for i, ext in enumerate(AUDIO_EXTENSIONS)}
    found: dict[str, tuple[int, str]] = {}
    stack, visited = [os.fspath(root)], set()
    while stack:
        folder = stack.pop()
        real = os.path.realpath(folder)
        if real in visited:
            continue
        visited.add(real)
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=True):
                    stack.append(entry.path)
                    continue
                stem, dot, ext = entry.name.rpartition(".")
                pref = rank.get(f".{ext.lower()}") if dot else None
                if pref is not None and (stem not in found or pref < found[stem][0]):
                    found[stem] = (pref, entry.path)
    return {stem: path for stem, (_, path) in found.items()}


def stratified_holdout(keys_by_class: dict[int, list[str]], fraction: float, seed: int) -> set[str]:
    """Keys of a validation carve-out holding `fraction` of every class (at least one clip of any class with 2+).

    Clips are ranked by a hash of (seed, key): the choice is stable across runs and machines, and a clip's
    membership only changes when its class's size changes the quota.
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"val_fraction must lie in [0, 1), got {fraction}")
    held = set()
    if fraction == 0.0:
        return held
    for keys in keys_by_class.values():
        quota = round(fraction * len(keys))
        if len(keys) >= 2:
            quota = min(max(quota, 1), len(keys) - 1)
        else:
            quota = 0
        ranked = sorted(keys, key=lambda k: hashlib.blake2b(f"{seed}:{k}".encode(), digest_size=8).digest())
        held.update(ranked[:quota])
    return held


class AudioClipDataset(Dataset):
    """Clips as dicts {waveform, label, label_name, bad}; see the module docstring for cropping and bad clips.

    Paths and labels live in numpy arrays rather than lists of Python objects: DataLoader workers are forked,
    and touching the reference counts of 200k Python strings would copy every page they sit on into each worker.
    """

    def __init__(
        self,
        paths: Sequence[str],
        labels: Sequence[int],
        keys: Sequence[str],
        class_names: list[str],
        sample_rate: int,
        num_samples: int,
        train: bool,
        seed: int = 0,
        silence_threshold: float = DIGITAL_SILENCE_PEAK,
        max_replacements: int = 20,
        frame_cache: FrameCache | None = None,
        recording_chain_p: float = 0.0,
    ) -> None:
        check_recording_chain(recording_chain_p)
        self.paths = np.array(paths, dtype=np.str_)
        self.labels = np.array(labels, dtype=np.int64)
        self.keys = np.array(keys, dtype=np.str_)
        self.class_names = class_names
        self.sample_rate, self.num_samples, self.train, self.seed = sample_rate, num_samples, train, seed
        self.silence_threshold, self.max_replacements = silence_threshold, max_replacements
        self.frame_cache = frame_cache
        self.frame_rows = frame_cache.rows(list(keys)) if frame_cache is not None else None
        self.recording_chain_p = recording_chain_p

    @property
    def clips(self) -> list[Clip]:
        return [Clip(str(p), int(label), str(k)) for p, label, k in zip(self.paths, self.labels, self.keys)]

    def __len__(self) -> int:
        return len(self.labels)

    def _read(self, index: int) -> torch.Tensor:
        path = str(self.paths[index])
        wave = load_audio(path, self.sample_rate)
        if wave.abs().max().item() < self.silence_threshold:
            raise AudioDecodeError(f"{path}: silent (peak below {self.silence_threshold})")
        return wave

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        epoch, index = key if isinstance(key, tuple) else (0, key)
        gen = item_generator(self.seed, epoch, index)
        bad, chosen = False, index
        for _ in range(self.max_replacements + 1):
            try:
                wave = self._read(chosen)
                break
            except AudioDecodeError as err:
                log.debug("bad clip replaced: %s", err)
                bad = True
                chosen = int(torch.randint(len(self), (1,), generator=gen).item())
        else:
            raise RuntimeError(
                f"{self.max_replacements + 1} clips in a row failed to decode (last: {self.paths[chosen]}); "
                "the dataset looks broken rather than holding a few bad files"
            )
        wave = crop_or_pad(wave, self.num_samples, "random" if self.train else "center", generator=gen)
        if self.train and self.recording_chain_p > 0:
            wave = self._record(wave, epoch, index)
        label = int(self.labels[chosen])
        item = {"waveform": wave, "label": label, "label_name": self.class_names[label], "bad": bad,
                "index": index}
        if self.frame_cache is not None:
            item.update(self._frame(chosen, epoch, index))
        return item

    def _record(self, wave: torch.Tensor, epoch: int, index: int) -> torch.Tensor:
        """The recording chain on a training crop, from its own (seed, epoch, index) stream; length and range kept."""
        rng = np.random.default_rng([self.seed & 0xFFFFFFFF, epoch, index, 2])
        return torch.from_numpy(record(wave.numpy(), rng, self.sample_rate, self.recording_chain_p))

    def _frame(self, chosen: int, epoch: int, index: int) -> dict[str, Any]:
        """The clip's frame embedding (random frame per (seed, epoch, index) in training, the middle one otherwise)."""
        info = self.frame_cache.info
        row = int(self.frame_rows[chosen])
        if row < 0:
            return {"image": torch.zeros(info.dim), "image_mask": False}
        # Its own stream (not the crop's generator), so adding frames changes no audio crop.
        frame = (int(np.random.default_rng([self.seed & 0xFFFFFFFF, epoch, index, 1]).integers(info.frames))
                 if self.train else info.frames // 2)
        return {"image": torch.from_numpy(self.frame_cache.embedding(row, frame)), "image_mask": True}


def check_recording_chain(p: float) -> None:
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"recording_chain_p must lie in [0, 1], got {p}")


class CollateClips:
    """Stacks items into the batch dict {waveform, label, label_name, bad, index, class_names}; `index` is each
    item's position in its dataset (the sampler's key, also for a replaced bad clip)."""

    def __init__(self, class_names: list[str]) -> None:
        self.class_names = list(class_names)

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        batch = {
            "waveform": torch.stack([it["waveform"] for it in items]),
            "label": torch.tensor([it["label"] for it in items], dtype=torch.long),
            "label_name": [it["label_name"] for it in items],
            "bad": torch.tensor([it["bad"] for it in items], dtype=torch.bool),
            "index": torch.tensor([it["index"] for it in items], dtype=torch.long),
            "class_names": self.class_names,
        }
        if "image" in items[0]:  # with a frame cache: (B, D) embeddings and the (B,) has-frames mask
            batch["image"] = torch.stack([it["image"] for it in items])
            batch["image_mask"] = torch.tensor([it["image_mask"] for it in items], dtype=torch.bool)
        return batch


class VGGSoundDataModule(pl.LightningDataModule):
    """VGGSound-layout audio for the audio-CLIP alignment; batches are documented in `CollateClips`.

    Args:
        root: directory searched (recursively) for clip files.
        csv_path: the headerless CSV; default `root/vggsound.csv`.
        sample_rate: rate every clip is resampled to.
        clip_seconds: length of validation/test items (centre crop or pad); VGGSound clips are 10 s.
        crop_seconds: length of training items (random crop or random-offset pad); default clip_seconds,
            as in the paper (864 frames ~ 10 s).
        val_fraction: share of every class's train rows held out for validation.
        seed: drives the validation carve-out, the shuffling and every per-item random choice.
        classes: restrict to these labels, in this order (class index = position); default all labels
            of the CSV, sorted.
        prompt_template: how a label becomes a text prompt (`.prompts`), "{label}" is replaced.
        report_dir: where `missing_clips.txt` goes; default the trainer's log dir, else $AIARTIST_OUTPUT_DIR,
            else ./outputs.
        silence_threshold: a clip whose peak amplitude is below this counts as bad (no sound to learn).
        frame_cache: folder of CLIP image embeddings of the clips' video frames (`experiments.embed_frames`); items
            then carry `image` and `image_mask` (see the module docstring). None: audio only.
        recording_chain_p: probability of each step of `datamodules.recording_chain.record` (reverb, noise bed,
            EQ, codec, level, ...) on training items; 0 (default) leaves them clean. Never on validation or test.
    """

    def __init__(
        self,
        root: str,
        csv_path: str | None = None,
        sample_rate: int = 16000,
        clip_seconds: float = 10.0,
        crop_seconds: float | None = None,
        batch_size: int = 64,
        num_workers: int = 4,
        val_fraction: float = 0.05,
        seed: int = 0,
        classes: list[str] | None = None,
        prompt_template: str = "This is a sound of {label}.",
        report_dir: str | None = None,
        silence_threshold: float = DIGITAL_SILENCE_PEAK,
        frame_cache: str | None = None,
        recording_chain_p: float = 0.0,
    ) -> None:
        super().__init__()
        check_recording_chain(recording_chain_p)
        self.save_hyperparameters()
        self.root = Path(root)
        self.csv_path = Path(csv_path) if csv_path else self.root / "vggsound.csv"
        self.sample_rate, self.seed = sample_rate, seed
        self.clip_samples = round(clip_seconds * sample_rate)
        self.crop_samples = round((crop_seconds if crop_seconds is not None else clip_seconds) * sample_rate)
        self.batch_size, self.num_workers, self.val_fraction = batch_size, num_workers, val_fraction
        self.requested_classes = list(classes) if classes is not None else None
        self.prompt_template, self.report_dir, self.silence_threshold = prompt_template, report_dir, silence_threshold
        self.frame_cache_path = frame_cache
        self.frame_cache: FrameCache | None = None
        self.class_names: list[str] = []
        self.train_set = self.val_set = self.test_set = None
        self.missing: list[CSVRow] = []
        self.num_rows = self.duplicates = 0

    @property
    def prompts(self) -> list[str]:
        return [self.prompt_template.format(label=name) for name in self.class_names]

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        if not self.csv_path.is_file():
            raise FileNotFoundError(f"VGGSound CSV not found: {self.csv_path}")
        if not self.root.is_dir():
            raise FileNotFoundError(f"VGGSound root directory not found: {self.root}")
        t0 = time.perf_counter()
        rows = read_vggsound_csv(self.csv_path)
        if self.requested_classes is not None:
            unknown = sorted(set(self.requested_classes) - {r.label for r in rows})
            if unknown:
                raise ValueError(f"classes not present in {self.csv_path}: {unknown}")
            self.class_names = self.requested_classes
            wanted = set(self.class_names)
            rows = [r for r in rows if r.label in wanted]
        else:
            self.class_names = sorted({r.label for r in rows})
        label_index = {name: i for i, name in enumerate(self.class_names)}
        unique = list({r.key: r for r in reversed(rows)}.values())[::-1]  # first row of a repeated clip wins
        self.duplicates, rows = len(rows) - len(unique), unique
        cache = FrameCache(self.frame_cache_path) if self.frame_cache_path else None
        files = index_audio_files(self.root)
        self.num_rows = len(rows)
        self.missing = [r for r in rows if r.key not in files]
        present = [r for r in rows if r.key in files]

        train_rows = [r for r in present if r.split == "train"]
        keys_by_class: dict[int, list[str]] = defaultdict(list)
        for r in train_rows:
            keys_by_class[label_index[r.label]].append(r.key)
        held = stratified_holdout(keys_by_class, self.val_fraction, self.seed)

        def dataset(selected: list[CSVRow], num_samples: int, train: bool) -> AudioClipDataset:
            paths = [files[r.key] for r in selected]
            labels = [label_index[r.label] for r in selected]
            return AudioClipDataset(paths, labels, [r.key for r in selected], self.class_names, self.sample_rate,
                                    num_samples, train, self.seed, self.silence_threshold, frame_cache=cache,
                                    recording_chain_p=self.hparams.recording_chain_p if train else 0.0)

        train = dataset([r for r in train_rows if r.key not in held], self.crop_samples, True)
        if not len(train):
            raise RuntimeError(f"no training clip of {self.csv_path} has a file under {self.root}")
        self.val_set = dataset([r for r in train_rows if r.key in held], self.clip_samples, False)
        self.test_set = dataset([r for r in present if r.split == "test"], self.clip_samples, False)
        self.frame_cache = cache
        self.train_set = train  # last: a setup that raised is redone by the next call
        self._report(time.perf_counter() - t0)

    @rank_zero_only
    def _report(self, seconds: float) -> None:
        sizes = f"train {len(self.train_set)}, val {len(self.val_set)}, test {len(self.test_set)}"
        log.info("VGGSound: %d classes, %s clips (setup %.2f s)", len(self.class_names), sizes, seconds)
        if self.hparams.recording_chain_p > 0:
            log.info("VGGSound: training items through the recording chain (p %.2f)", self.hparams.recording_chain_p)
        if self.frame_cache is not None:
            without = {name: int((ds.frame_rows < 0).sum()) for name, ds in
                       (("train", self.train_set), ("val", self.val_set), ("test", self.test_set))}
            log.info("VGGSound: frame cache %s (CLIP %s, %d frames per clip); clips without frames: %s",
                     self.frame_cache.path, self.frame_cache.info.clip_model, self.frame_cache.info.frames,
                     ", ".join(f"{k} {v}" for k, v in without.items()))
        if self.duplicates:
            log.warning("VGGSound: %d repeated rows of %s ignored (the first row of a clip wins)",
                        self.duplicates, self.csv_path)
        if not self.missing:
            return
        path = self._report_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["csv_line", "youtube_id", "start_seconds", "label", "split"])
            for r in self.missing:
                writer.writerow([r.line, r.youtube_id, r.start, r.label, r.split])
        pct = 100.0 * len(self.missing) / max(self.num_rows, 1)
        by_split = Counter(r.split for r in self.missing)
        log.warning(
            "VGGSound: %d of %d rows (%.1f %%; %s) have no audio file under %s; list written to %s",
            len(self.missing), self.num_rows, pct, ", ".join(f"{k} {v}" for k, v in sorted(by_split.items())),
            self.root, path,
        )

    def _report_path(self) -> Path:
        if self.report_dir:
            base = Path(self.report_dir)
        elif self.trainer is not None and getattr(self.trainer, "log_dir", None):
            base = Path(self.trainer.log_dir)
        else:
            base = default_output_dir()
        return base / "missing_clips.txt"

    def _loader(self, dataset: AudioClipDataset, train: bool) -> DataLoader:
        kwargs: dict[str, Any] = dict(
            batch_size=self.batch_size,
            num_workers=self.num_workers,
            collate_fn=CollateClips(self.class_names),
            pin_memory=torch.cuda.is_available(),
            persistent_workers=self.num_workers > 0,
        )
        if train:
            sampler = EpochSampler(len(dataset), seed=self.seed, shuffle=True)
            return ResumableDataLoader(dataset, sampler=sampler, drop_last=True, **kwargs)
        return DataLoader(dataset, shuffle=False, drop_last=False, **kwargs)

    def train_dataloader(self) -> DataLoader:
        self.setup("fit")
        if len(self.train_set) < self.batch_size:
            raise ValueError(
                f"only {len(self.train_set)} training clips for batch_size {self.batch_size} with drop_last=True"
            )
        return self._loader(self.train_set, train=True)

    def val_dataloader(self) -> DataLoader:
        self.setup("validate")
        return self._loader(self.val_set, train=False)

    def test_dataloader(self) -> DataLoader:
        self.setup("test")
        return self._loader(self.test_set, train=False)
