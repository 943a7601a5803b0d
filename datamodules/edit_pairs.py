"""The job of an edit run: every (source, sound) pair, served in batches to `ManipulationModule` under predict.

Items are only indices (pair, source, sound); the module resolves sources to W+ codes and embeds each sound once
per job. Pairs are ordered source-major, so index = source_index * n_sounds + sound_index.
"""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
from torch.utils.data import DataLoader, Dataset

from datamodules.input_limits import file_problem
from datamodules.latent_sources import LATENT_SUFFIXES, Source, parse_sources


class PairIndex(Dataset):
    def __init__(self, n_sources: int, n_sounds: int):
        self.n_sources, self.n_sounds = n_sources, n_sounds

    def __len__(self) -> int:
        return self.n_sources * self.n_sounds

    def __getitem__(self, i: int) -> dict[str, int]:
        if not 0 <= i < len(self):
            raise IndexError(i)
        return {"index": i, "source_index": i // self.n_sounds, "sound_index": i % self.n_sounds}


class EditPairsDataModule(pl.LightningDataModule):
    """Sources x sounds for an edit job.

    Args:
        sources: seeds ('seed:7' or 7), 'mean', or W/W+ files (.pt/.npy; a file with N codes gives N sources).
        sounds: sound label -> audio file (any format soundfile reads, any rate/length). Labels caption the grid
            columns and name the class prompt for the optional evaluation CLIP.
        batch_size: pairs optimised together per step (each with its own W+ code).
        num_workers: DataLoader workers (items are indices: 0 is right).
    """

    def __init__(self, sources: list[int | str] | None = None, sounds: dict[str, str] | None = None,
                 batch_size: int = 8, num_workers: int = 0) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.source_specs = list(sources if sources is not None else [0, 1])
        self.sound_files = dict(sounds or {})
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size, self.num_workers = batch_size, num_workers
        self.sources: list[Source] = []
        self.sounds: list[tuple[str, str]] = []

    def missing_inputs(self) -> list[tuple[str, str]]:
        """(what, path) for every sound clip or W+ source file that does not exist (or is a directory)."""
        missing = [(f"sound clip '{label}'" + ("" if file_problem(path) == "no such file" else
                                               f" ({file_problem(path)})"), path)
                   for label, path in self.sound_files.items() if not Path(path).is_file()]
        missing += [("W+ source file", str(s)) for s in self.source_specs
                    if isinstance(s, str) and s.lower().endswith(LATENT_SUFFIXES) and not Path(s).is_file()]
        return missing

    def setup(self, stage: str | None = None) -> None:
        if self.sources:
            return
        if not self.sound_files:
            raise ValueError("data.sounds is empty: give at least one 'label: path/to/clip.wav'")
        missing = self.missing_inputs()
        if missing:
            raise FileNotFoundError("missing inputs:\n" + "\n".join(f"  {what}: {path}" for what, path in missing))
        self.sources = parse_sources(self.source_specs)
        if not self.sources:
            raise ValueError("data.sources is empty: give seeds, 'mean', or W+ files")
        self.sounds = list(self.sound_files.items())

    def predict_dataloader(self) -> DataLoader:
        return DataLoader(PairIndex(len(self.sources), len(self.sounds)), batch_size=self.batch_size,
                          shuffle=False, num_workers=self.num_workers)
