"""ESC-50 and UrbanSound8K in their released layouts, with their official folds, for evaluation.

- ESC-50: `meta/esc50.csv` (header: filename, fold, target, category, esc10, src_file, take), clips in
  `audio/`; 50 classes, 5 folds of 5 s clips.
- UrbanSound8K: `metadata/UrbanSound8K.csv` (header: slice_file_name, fsID, start, end, salience, fold,
  classID, class), clips in `audio/fold{k}/`; 10 classes, 10 folds of clips up to 4 s.

Class index = the dataset's own id (target / classID); class names are kept as released
("crackling_fire"; prompts turn underscores into spaces). Folds must not be reshuffled: clips cut from
one recording share a fold, and random splits leak them between train and test.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import Dataset

from datamodules.audio_io import AudioDecodeError, crop_or_pad, load_audio


@dataclass(frozen=True)
class FoldClip:
    path: str
    fold: int
    label: int


@dataclass
class FoldSet:
    """Clips with official folds; `missing` lists CSV rows whose file is absent."""

    name: str
    clips: list[FoldClip]
    class_names: list[str]
    missing: list[str]


def _read_rows(csv_path: Path, required: tuple[str, ...]) -> list[tuple[int, dict[str, str]]]:
    if not csv_path.is_file():
        raise FileNotFoundError(f"metadata file not found: {csv_path}")
    with open(csv_path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        absent = [c for c in required if c not in (reader.fieldnames or [])]
        if absent:
            raise ValueError(f"{csv_path}:1: header lacks columns {absent} (found {reader.fieldnames})")
        return [(reader.line_num, row) for row in reader]


def _build(name: str, root: Path, csv_path: Path, cols: tuple[str, str, str, str], audio_path) -> FoldSet:
    file_col, fold_col, label_col, class_col = cols
    names: dict[int, str] = {}
    clips, missing = [], []
    for line, row in _read_rows(csv_path, cols):
        try:
            fold, label = int(row[fold_col]), int(row[label_col])
        except ValueError:
            raise ValueError(f"{csv_path}:{line}: {fold_col}/{label_col} must be integers, got "
                             f"{row[fold_col]!r}/{row[label_col]!r}") from None
        if names.setdefault(label, row[class_col]) != row[class_col]:
            raise ValueError(f"{csv_path}:{line}: class id {label} is named {row[class_col]!r} here but "
                             f"{names[label]!r} earlier")
        path = audio_path(root, row[file_col], fold)
        if os.path.isfile(path):
            clips.append(FoldClip(str(path), fold, label))
        else:
            missing.append(str(path))
    if sorted(names) != list(range(len(names))):
        raise ValueError(f"{csv_path}: class ids are not 0..{len(names) - 1}: {sorted(names)}")
    if not clips:
        raise FileNotFoundError(f"{name}: none of the {len(missing)} clips listed in {csv_path} exist under {root}")
    return FoldSet(name, clips, [names[i] for i in range(len(names))], missing)


def read_esc50(root: str | os.PathLike) -> FoldSet:
    root = Path(root)
    return _build("ESC-50", root, root / "meta" / "esc50.csv", ("filename", "fold", "target", "category"),
                  lambda r, f, fold: r / "audio" / f)


def read_urbansound8k(root: str | os.PathLike) -> FoldSet:
    root = Path(root)
    return _build("UrbanSound8K", root, root / "metadata" / "UrbanSound8K.csv",
                  ("slice_file_name", "fold", "classID", "class"), lambda r, f, fold: r / "audio" / f"fold{fold}" / f)


class FoldClipDataset(Dataset):
    """Centre-cropped / zero-padded waveforms of `num_samples`; an undecodable file yields `ok=False`.

    `length` is the number of the clip's own samples in the waveform. With `pad_end`, a short clip is padded
    after its end instead of centred, so `waveform[:length]` is the whole clip (what the official encoder
    needs); `resample_kwargs` choose the resampling filter (`load_audio`).
    """

    def __init__(self, clips: list[FoldClip], sample_rate: int, num_samples: int, pad_end: bool = False,
                 resample_kwargs: dict | None = None) -> None:
        self.clips, self.sample_rate, self.num_samples = clips, sample_rate, num_samples
        self.pad_end, self.resample_kwargs = pad_end, resample_kwargs

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor | int | bool]:
        clip = self.clips[index]
        try:
            wave, ok = load_audio(clip.path, self.sample_rate, self.resample_kwargs), True
        except AudioDecodeError:
            wave, ok = torch.zeros(0), False
        length = min(wave.numel(), self.num_samples)
        if self.pad_end and wave.numel() < self.num_samples:
            wave = torch.nn.functional.pad(wave, (0, self.num_samples - wave.numel()))
        else:
            wave = crop_or_pad(wave, self.num_samples, "center")
        return {"waveform": wave, "length": length, "index": index, "ok": ok}
