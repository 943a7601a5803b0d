"""The VGGSound CSV: headerless rows `youtube_id, start_seconds, label, split`, labels with commas quoted.

Kept apart from the DataModule so that command-line tools (prepare_vggsound) read it without importing
Lightning.
"""

from __future__ import annotations

import csv
import os
from typing import Any, NamedTuple

SPLITS = ("train", "test")


class VGGSoundCSVError(ValueError):
    """A malformed row in a VGGSound-layout CSV; the message names the file and line."""


class CSVRow(NamedTuple):
    """One row of the CSV; `line` is its 1-based line number in the file (for error messages), `key` the clip's
    file stem `{youtube_id}_{start:06d}`. A tuple, not a dataclass: 200k of them are built at every setup."""

    youtube_id: str
    start: int
    label: str
    split: str
    line: int
    key: str


def read_vggsound_csv(csv_path: str | os.PathLike) -> list[CSVRow]:
    """Parse a headerless `youtube_id, start_seconds, label, split` CSV; malformed rows raise naming the line."""
    rows = []
    with open(csv_path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f, skipinitialspace=True)
        line = 1  # first line of the current record (a quoted field may span lines)
        for record in reader:
            if record and (len(record) > 1 or record[0].strip()):
                rows.append(_parse_row(record, csv_path, line))
            line = reader.line_num + 1
    return rows


def _parse_row(record: list[str], csv_path: Any, line: int) -> CSVRow:
    if len(record) != 4:
        raise VGGSoundCSVError(
            f"{csv_path}:{line}: expected 4 columns (youtube_id, start_seconds, label, split), "
            f"got {len(record)}: {record!r}"
        )
    youtube_id, start, label, split = record[0].strip(), record[1].strip(), record[2].strip(), record[3].strip()
    try:
        start_s = int(start)
    except ValueError:
        start_s = -1
    if youtube_id and start_s >= 0 and label and split in SPLITS:
        return CSVRow(youtube_id, start_s, label, split, line, f"{youtube_id}_{start_s:06d}")
    where = f"{csv_path}:{line}"
    if not youtube_id:
        raise VGGSoundCSVError(f"{where}: empty youtube_id")
    if start_s < 0:
        raise VGGSoundCSVError(f"{where}: start_seconds must be a non-negative whole number, got {start!r}")
    if not label:
        raise VGGSoundCSVError(f"{where}: empty label")
    raise VGGSoundCSVError(f"{where}: split must be one of {SPLITS}, got {split!r}")
