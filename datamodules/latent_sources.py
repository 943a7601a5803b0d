"""Where an edit starts: a source W+ code from a seed, a W/W+ file, or the generator's mean latent.

Specs are plain strings so configs and command lines stay readable: ``seed:7`` (or the int 7), ``mean``, or a path
to a ``.pt`` / ``.npy`` file. Files are read without executing code. The number of W+ layers always comes from the
generator (``G.n_latent``: 14 at 256 px, 16 at 512 px, 18 at 1024 px), never from a constant.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from datamodules.torch_files import load_torch_file

LATENT_SUFFIXES = (".pt", ".pth", ".npy")


@dataclass(frozen=True)
class Source:
    """One source of an edit. ``kind`` is 'seed', 'mean' or 'latent' (a W (D,) or W+ (L, D) code read from a file)."""

    name: str
    kind: str
    seed: int | None = None
    latent: torch.Tensor | None = None
    origin: str | None = None  # the file a latent came from, for messages


def parse_sources(specs: list[int | str]) -> list[Source]:
    """Turn source specs into Sources; a file holding N codes yields N sources. Raises naming a bad spec or file."""
    sources: list[Source] = []
    for spec in specs:
        if isinstance(spec, int) or (isinstance(spec, str) and re.fullmatch(r"(seed:)?\d+", spec.strip())):
            seed = int(str(spec).strip().removeprefix("seed:"))
            sources.append(Source(name=f"seed{seed}", kind="seed", seed=seed))
        elif isinstance(spec, str) and spec.strip() == "mean":
            sources.append(Source(name="mean", kind="mean"))
        elif isinstance(spec, str) and spec.lower().endswith(LATENT_SUFFIXES):
            codes = read_latent_file(spec)
            stem = Path(spec).stem
            for i, (name, code) in enumerate(codes):
                label = name or (stem if len(codes) == 1 else f"{stem}-{i}")
                sources.append(Source(name=label, kind="latent", latent=code, origin=spec))
        else:
            raise ValueError(
                f"source {spec!r}: expected a seed ('seed:7' or 7), 'mean', or a W/W+ file ending in "
                f"{', '.join(LATENT_SUFFIXES)}"
            )
    names = [s.name for s in sources]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"sources repeat {dupes}: each source must be listed once (outputs are named after it)")
    return sources


def read_latent_file(path: str | Path) -> list[tuple[str | None, torch.Tensor]]:
    """Read W/W+ codes from a file, returning (name or None, code) pairs with code (D,) or (L, D), float32.

    Accepted layouts: a tensor/array (D,), (1, D), (L, D), (1, L, D) or (N, L, D) (e.g. an encoder's batch of
    inversions); a dict with one of the keys 'w_plus', 'latents', 'latent', 'w' holding such a tensor (and
    optionally 'names'); or a projector dict {image name: {'latent': code, ...}}.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"W+ source file {path} does not exist")
    if path.suffix == ".npy":
        try:
            obj = np.load(path, allow_pickle=False)
        except ValueError as err:
            raise ValueError(f"{path}: not a plain numpy array ({err})") from err
    else:
        obj = load_torch_file(path, "W+ code file")
    names: list[str] | None = None
    if isinstance(obj, dict):
        key = next((k for k in ("w_plus", "latents", "latent", "w") if k in obj), None)
        if key is not None:
            names = obj.get("names")
            obj = obj[key]
        elif obj and all(isinstance(v, dict) and "latent" in v for v in obj.values()):
            names = [Path(str(k)).stem for k in obj]
            obj = [v["latent"] for v in obj.values()]
        else:
            raise ValueError(f"{path}: dict without a latent tensor (keys found: {sorted(map(str, obj))[:10]})")
    codes = _as_code_list(obj, path)
    if names is not None and len(names) != len(codes):
        raise ValueError(f"{path}: {len(names)} names for {len(codes)} latent codes")
    return list(zip(names or [None] * len(codes), codes))


def _as_code_list(obj, path: Path) -> list[torch.Tensor]:
    if isinstance(obj, list | tuple):
        return [c for item in obj for c in _as_code_list(item, path)]
    t = torch.as_tensor(np.asarray(obj) if not isinstance(obj, torch.Tensor) else obj).float()
    if t.ndim == 1:
        return [t]
    if t.ndim == 2:
        return [t[0]] if t.shape[0] == 1 else [t]  # (1, D) is a W code, (L, D) a W+ code
    if t.ndim == 3:
        return list(t.unbind(0))
    raise ValueError(f"{path}: latent of shape {tuple(t.shape)}; expected (D,), (L, D) or (N, L, D)")


@torch.no_grad()
def seed_to_z(seed: int, style_dim: int) -> torch.Tensor:
    """z for a seed, drawn as NVlabs' generate.py draws it (numpy RandomState), so seeds name the same samples."""
    return torch.from_numpy(np.random.RandomState(seed).randn(1, style_dim)).float()


@torch.no_grad()
def source_wplus(sources: list[Source], generator: torch.nn.Module, truncation: float = 0.7,
                 mean_latent: torch.Tensor | None = None) -> torch.Tensor:
    """W+ codes (N, G.n_latent, G.style_dim) for the sources, on the generator's device.

    Seeds map z -> w with truncation towards ``mean_latent`` (the generator's own when None); W codes and the mean
    latent are broadcast over all layers. A file code of the wrong shape raises an error naming the file.
    """
    n_latent, dim = generator.n_latent, generator.style_dim
    device = next(generator.parameters()).device
    if mean_latent is None:
        mean_latent = generator.mean_latent()
    mean_latent = mean_latent.reshape(1, dim).to(device)
    codes = []
    for src in sources:
        if src.kind == "seed":
            w = generator.mapping(seed_to_z(src.seed, dim).to(device), truncation=truncation,
                                  truncation_latent=mean_latent)
        elif src.kind == "mean":
            w = mean_latent
        elif src.kind == "latent":
            w = src.latent.to(device)
            if w.shape[-1] != dim or (w.ndim == 2 and w.shape[0] != n_latent):
                raise ValueError(
                    f"W+ code {src.name!r} from {src.origin} has shape {tuple(w.shape)}, but the generator "
                    f"({generator.size} px) needs ({n_latent}, {dim}) or ({dim},)"
                )
        else:
            raise ValueError(f"unknown source kind {src.kind!r}")
        codes.append(w.reshape(-1, dim).expand(n_latent, dim) if w.numel() == dim else w.reshape(n_latent, dim))
    return torch.stack(codes).float()
