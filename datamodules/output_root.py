"""The root directory every job writes under: ``$AIARTIST_OUTPUT_DIR``, else ``./outputs``.

It lives in datamodules because both layers need it (the VGGSound DataModule writes its missing-clips report there,
the edit jobs their run directories) and imports only run downward.
"""

from __future__ import annotations

import os
from pathlib import Path


def default_output_dir() -> Path:
    """Root for job outputs: $AIARTIST_OUTPUT_DIR, else ./outputs."""
    return Path(os.environ.get("AIARTIST_OUTPUT_DIR", "outputs"))
