"""Reading torch.save files (W+ codes, audio encoders, checkpoints) without running code, with named reasons.

`torch.load(weights_only=True)` refuses a file that asks for code, but its message advises retrying with
`weights_only=False`, and a truncated file surfaces as whatever the unpickler tripped over ("[Errno 22] Invalid
argument", "persistent IDs in protocol 0 must be ASCII strings"). Here every failure becomes one typed error that
names the file and says which of "is a directory", "no such file", "truncated or corrupt", "not a PyTorch file"
or "refused: it asks for <global>" applies; the safety is never suggested away.
"""

from __future__ import annotations

import os
import pickle
import re
from typing import Any

import torch

from datamodules.input_limits import file_problem

TRUST_HINT = "If you trust this file, pass trust_pickle=True."  # CLIs rewrite the spelling (experiments.cli_errors)
_ZIP_MAGIC, _PICKLE_MAGIC = b"PK", b"\x80"


class UnsafeFileError(pickle.UnpicklingError, ValueError):
    """A file that asks for code (a global outside plain tensors) and was refused; nothing was executed.

    Also a ValueError: to callers it is one more kind of unusable input file."""


class CorruptFileError(ValueError):
    """A file that is truncated, corrupt, or not a torch.save file at all."""


def refused_global(err: BaseException) -> str | None:
    """What a weights_only refusal objected to ('asks for posix.system', 'holds pickle instructions ...'), or None
    if `err` is no such refusal."""
    text = str(err)
    if not isinstance(err, pickle.UnpicklingError) or "Weights only load failed" not in text:
        return None
    match = re.search(r"unsupported (?:global: )?GLOBAL ([\w.]+)", text, flags=re.IGNORECASE)
    if match:
        return f"asks for {match.group(1)}"
    detail = re.search(r"WeightsUnpickler error:\s*(.+?)\s*(?:\n|$)", text)
    return f"holds pickle instructions outside plain tensors ({detail.group(1) if detail else 'not a tensor'})"


def load_error(path: str | os.PathLike, err: BaseException, what: str, trust_hint: bool = False) -> Exception:
    """The typed, named error for a failed torch.load of `path` (a `what`, e.g. 'W+ code file')."""
    glob = refused_global(err)
    if glob is not None:
        hint = f" {TRUST_HINT}" if trust_hint else ""
        return UnsafeFileError(f"{path}: refused to load this {what}: it {glob}, which a file of tensors "
                               f"never needs (nothing was executed).{hint}")
    problem = file_problem(path)
    if problem is not None:
        return (FileNotFoundError if problem == "no such file" else CorruptFileError)(f"{path}: {problem}")
    with open(path, "rb") as f:
        head = f.read(2)
    if not (head.startswith(_ZIP_MAGIC) or head.startswith(_PICKLE_MAGIC)):
        return CorruptFileError(f"{path}: not a PyTorch file (neither a torch.save archive nor a pickle); "
                                f"expected a {what}")
    return CorruptFileError(f"{path}: truncated or corrupt {what} (torch.load failed: {type(err).__name__})")


def load_torch_file(path: str | os.PathLike, what: str = "file", map_location: str | torch.device = "cpu",
                    trust: bool = False, trust_hint: bool = False) -> Any:
    """`torch.load(path, weights_only=not trust)` whose every failure names the file and the reason.

    Raises FileNotFoundError, CorruptFileError or UnsafeFileError; `trust_hint` appends how a trusting caller
    could load a refused file (only for readers that offer that choice).
    """
    problem = file_problem(path)
    if problem == "no such file":
        raise FileNotFoundError(f"{path}: no such file (expected a {what})")
    if problem is not None:
        raise CorruptFileError(f"{path}: {problem}, expected a {what}")
    try:
        return torch.load(path, map_location=map_location, weights_only=not trust)
    except Exception as err:  # noqa: BLE001 - every failure of a user's file is reported with its name and kind
        raise load_error(path, err, what, trust_hint) from err
