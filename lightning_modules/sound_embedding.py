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
def embed_each_window(encoder: torch.nn.Module, clips: list[AudioWindows], batch_size: int = 64
                      ) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """(K, D) L2-normalised embeddings of K clips (per clip, the normalised mean of its windows' embeddings), and
    per clip its windows' own L2-normalised embeddings (W_k, D), from one pass of the encoder."""
    if not clips:
        raise ValueError("embed_each_window: no clips given")
    device = next(encoder.parameters()).device
    every = torch.cat([c.windows for c in clips])
    parts = [encoder(chunk.to(device), augment=False).float() for chunk in every.split(batch_size)]
    per_clip = torch.cat(parts).split([c.windows.shape[0] for c in clips])
    return (F.normalize(torch.stack([e.mean(0) for e in per_clip]), dim=-1),
            [F.normalize(e, dim=-1) for e in per_clip])


def embed_windows(encoder: torch.nn.Module, clips: list[AudioWindows], batch_size: int = 64) -> torch.Tensor:
    """(K, D) L2-normalised embeddings of K clips' windows: per clip, the normalised mean of its windows'."""
    return embed_each_window(encoder, clips, batch_size)[0]


def embed_sound(encoder: torch.nn.Module, path: str | os.PathLike, policy: str = "mean", seed: int = 0
                ) -> tuple[torch.Tensor, AudioWindows]:
    """Read `path` at the encoder's rate and window length by `policy`; its (D,) embedding and the windows used."""
    windows = read_windows(path, encoder.sample_rate, encoder.clip_samples, policy=policy, seed=seed)
    return embed_windows(encoder, [windows])[0], windows
