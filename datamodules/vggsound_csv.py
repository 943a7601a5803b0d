"""The VGGSound CSV: headerless rows `youtube_id, start_seconds, label, split`, labels with commas quoted.

Kept apart from the DataModule so that command-line tools (prepare_vggsound) read it without importing
Lightning.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from typing import Any

SPLITS = ("train", "test")


class VGGSoundCSVError(ValueError):
    """A malformed row in a VGGSound-layout CSV; the message names the file and line."""


@dataclass(frozen=True)
class CSVRow:
    """One row of the CSV; `line` is its 1-based line number in the file (for error messages)."""

    youtube_id: str
    start: int
    label: str
    split: str
    line: int

    @property
    def key(self) -> str:
        return f"{self.youtube_id}_{self.start:06d}"


def read_vggsound_csv(csv_path: str | os.PathLike) -> list[CSVRow]:
    """Parse a headerless `youtube_id, start_seconds, label, split` CSV; malformed rows raise naming the line."""
    rows = []
    with open(csv_path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f, skipinitialspace=True)
        line = 1  # first line of the current record (a quoted field may span lines)
        for record in reader:
            if record and any(field.strip() for field in record):
                rows.append(_parse_row(record, csv_path, line))
            line = reader.line_num + 1
    return rows


def _parse_row(record: list[str], csv_path: Any, line: int) -> CSVRow:
    where = f"{csv_path}:{line}"
    if len(record) != 4:
        raise VGGSoundCSVError(
            f"{where}: expected 4 columns (youtube_id, start_seconds, label, split), got {len(record)}: {record!r}"
        )
    youtube_id, start, label, split = (field.strip() for field in record)
    if not youtube_id:
        raise VGGSoundCSVError(f"{where}: empty youtube_id")
    try:
        start_s = int(start)
    except ValueError:
        raise VGGSoundCSVError(f"{where}: start_seconds must be a whole number of seconds, got {start!r}") from None
    if start_s < 0:
        raise VGGSoundCSVError(f"{where}: start_seconds must be non-negative, got {start_s}")
    if not label:
        raise VGGSoundCSVError(f"{where}: empty label")
    if split not in SPLITS:
        raise VGGSoundCSVError(f"{where}: split must be one of {SPLITS}, got {split!r}")
    return CSVRow(youtube_id, start_s, label, split, line)
