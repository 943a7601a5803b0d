"""Sound folders laid out by class, ``DIR/<class>/<files>``: the layout of real recordings (`listen`, the toy
world's recordings after `python -m experiments.toyworld.realsounds layout`, the mapper's `recordings`)."""

from __future__ import annotations

from pathlib import Path

HIDDEN_PREFIXES = (".", "_")


def folder_label(name: str) -> str:
    """A class folder's name as a label: underscores read as spaces, case ignored."""
    return name.replace("_", " ").strip().lower()


def list_clips(root: str | Path) -> list[tuple[str, Path]]:
    """(folder label, file) for every file in the class folders of `root` (sorted; hidden files skipped)."""
    root = Path(root)
    if not root.is_dir():
        raise NotADirectoryError(f"{root} is not a directory (expected DIR/<class>/<files>)")
    clips = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(HIDDEN_PREFIXES)):
        clips += [(folder_label(folder.name), f) for f in sorted(folder.rglob("*"))
                  if f.is_file() and not f.name.startswith(HIDDEN_PREFIXES)]
    if not clips:
        raise FileNotFoundError(f"no files in class folders under {root} (expected DIR/<class>/<files>)")
    return clips
