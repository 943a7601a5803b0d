"""Sound files -> embeddings in CLIP space, through the window reader (the same cut everywhere).

The ``mean`` policy embeds every window of the clip's grid and returns the normalised mean of the window
embeddings, so a long recording is heard as a whole rather than by one arbitrary slice; the other policies
embed their single window. Windows of several clips share encoder batches.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F

from datamodules.audio_windows import AudioWindows, read_windows


@torch.no_grad()
def embed_windows(encoder: torch.nn.Module, clips: list[AudioWindows], batch_size: int = 64) -> torch.Tensor:
    """(K, D) L2-normalised embeddings of K clips' windows: per clip, the normalised mean of its windows'."""
    if not clips:
        raise ValueError("embed_windows: no clips given")
    device = next(encoder.parameters()).device
    every = torch.cat([c.windows for c in clips])
    parts = [encoder(chunk.to(device), augment=False).float() for chunk in every.split(batch_size)]
    per_clip = torch.cat(parts).split([c.windows.shape[0] for c in clips])
    return F.normalize(torch.stack([e.mean(0) for e in per_clip]), dim=-1)


def embed_sound(encoder: torch.nn.Module, path: str | os.PathLike, policy: str = "mean", seed: int = 0
                ) -> tuple[torch.Tensor, AudioWindows]:
    """Read `path` at the encoder's rate and window length by `policy`; its (D,) embedding and the windows used."""
    windows = read_windows(path, encoder.sample_rate, encoder.clip_samples, policy=policy, seed=seed)
    return embed_windows(encoder, [windows])[0], windows
