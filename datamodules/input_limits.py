"""What a user's input file must satisfy before any work starts: the shared limits and the basic file checks.

The limits are the defaults every entry point uses (the edit and project commands, the Gradio page), so a file
accepted by one is accepted by all:

- `MAX_IMAGE_PIXELS` (50 megapixels, e.g. 7071 x 7071): larger images are refused naming the file. A 50 MP RGB
  image decodes to 150 MB; Pillow's own decompression-bomb guard starts at 89 MP and crashes without the file name.
- `MAX_AUDIO_BYTES` (20 MB) and `MAX_AUDIO_SECONDS` (10 minutes): the upload limits of an interactive page
  (a 10-minute 48 kHz stereo 16-bit WAV is 110 MB, so the byte limit bites first for uncompressed files).
"""

from __future__ import annotations

import os
from pathlib import Path

MAX_IMAGE_PIXELS = 50_000_000
MAX_AUDIO_BYTES = 20 * 1024 * 1024
MAX_AUDIO_SECONDS = 600.0


def file_problem(path: str | os.PathLike) -> str | None:
    """What is wrong with `path` as an input file ("is a directory", "no such file", "empty file (0 bytes)"), or
    None for a non-empty regular file."""
    path = Path(path)
    if path.is_dir():
        return "is a directory"
    if not path.exists():
        return "no such file"
    if path.is_file() and path.stat().st_size == 0:
        return "empty file (0 bytes)"
    return None
