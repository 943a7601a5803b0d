"""Slim, safe files for the trained audio encoder: architecture + front-end settings + weights, nothing else.

`export_audio_encoder` writes {"format", "version", "config", "state_dict"} (plain types and tensors,
so `torch.load(weights_only=True)` reads it). `load_audio_encoder` reads such a file, a Lightning
checkpoint of `AudioCLIPModule` (which stores the encoder config under "audio_encoder_config" and the
weights under the "encoder." prefix), or the official code's released `resnet18_57.pth` (a bare state
dict, rebuilt as `OfficialAudioEncoder`; a config with `arch: official_resnet18` selects it too).
CLIP is never part of any of these files.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from datamodules.torch_files import load_torch_file
from lightning_modules.networks.audio_encoder import AudioEncoder
from lightning_modules.networks.official_audio_encoder import ARCH as OFFICIAL_ARCH
from lightning_modules.networks.official_audio_encoder import OfficialAudioEncoder, official_state_dict

FORMAT = "aiartist.audio_encoder"
VERSION = 1
CHECKPOINT_CONFIG_KEY = "audio_encoder_config"


def export_audio_encoder(encoder: AudioEncoder | OfficialAudioEncoder, path: str | os.PathLike) -> Path:
    """Write `encoder` to `path` (parent directories created); refuses to overwrite an existing file."""
    path = Path(path)
    if path.exists():
        raise FileExistsError(f"export_audio_encoder: {path} exists; remove it or choose another path")
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in encoder.state_dict().items()}
    torch.save({"format": FORMAT, "version": VERSION, "config": dict(encoder.config), "state_dict": state}, path)
    return path


def _read(path: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    if not path.exists():
        raise FileNotFoundError(f"audio encoder file not found: {path}")
    blob = load_torch_file(path, "audio encoder or AudioCLIP checkpoint")  # named reasons, never runs code
    if not isinstance(blob, dict):
        raise ValueError(f"{path}: expected a dict, found {type(blob).__name__}")
    if blob.get("format") == FORMAT:
        if blob.get("version") != VERSION:
            raise ValueError(f"{path}: audio encoder format version {blob.get('version')}, this code reads {VERSION}")
        return blob["config"], blob["state_dict"]
    if CHECKPOINT_CONFIG_KEY in blob and "state_dict" in blob:
        prefix = "encoder."
        state = {k[len(prefix):]: v for k, v in blob["state_dict"].items() if k.startswith(prefix)}
        return blob[CHECKPOINT_CONFIG_KEY], state
    state = official_state_dict(blob)
    if "conv.weight" in state and "feature_extractor.fc.weight" in state:  # the official resnet18_57.pth
        return {"arch": OFFICIAL_ARCH, "embed_dim": state["feature_extractor.fc.weight"].shape[0]}, state
    raise ValueError(f"{path}: neither an exported audio encoder ({FORMAT!r}), an AudioCLIPModule checkpoint, "
                     f"nor the official audio encoder's state dict")


def load_audio_encoder(path: str | os.PathLike, map_location: str | torch.device = "cpu",
                       **overrides) -> AudioEncoder | OfficialAudioEncoder:
    """Rebuild the encoder from an export file, an AudioCLIPModule checkpoint or the official weights, in eval mode.

    `overrides` replace stored settings, e.g. `crop="manipulation"` for the official encoder.
    """
    config, state = _read(Path(path))
    config = {**config, **overrides}
    if config.get("arch") == OFFICIAL_ARCH:
        encoder = OfficialAudioEncoder(**{k: v for k, v in config.items() if k != "arch"})
    else:
        encoder = AudioEncoder(**{**config, "pretrained": False})
    missing, unexpected = encoder.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"{path}: weights do not match the stored architecture "
                         f"(missing {missing[:5]}, unexpected {unexpected[:5]})")
    return encoder.to(map_location).eval()
