"""SoundMapper: one network that turns (source W+ code, sound embedding) into a W+ edit in one forward pass.

Structure after StyleCLIP's latent mapper (Patashnik et al. 2021, arXiv 2103.17249, Sec. 5): the W+ rows are split
into coarse / medium / fine groups, each group has its own MLP of PixelNorm + equalised-learning-rate linear layers
with leaky ReLU, and the MLP of a group is shared by the rows of that group. StyleCLIP trains one mapper per text
prompt; here every MLP is also conditioned on a unit-norm embedding e in CLIP space (an audio or a text embedding),
so one network serves every sound:

    dw[:, r] = output_scale * MLP_g(PixelNorm(w[:, r]), e)        for every row r of group g
    edit(w, e, strength) = w + strength_g * dw                       (per group; strength 0 leaves rows untouched)

Conditioning is by concatenation ([PixelNorm(w_r), sqrt(E) e] into the first layer) or FiLM (every hidden layer's
activations h -> h * (1 + gamma_l(e)) + beta_l(e), gamma and beta zero at initialisation).

With `row_codes`, the first layer also sees which row of its group it edits (a one-hot row index, scaled like
PixelNorm's output). Without it, rows with the same w get the same dw: a W code (every row equal) can then move
only one direction per group, where Eq. 2's optimiser moves every W+ row on its own.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
from torch import nn

from datamodules.torch_files import CorruptFileError, UnsafeFileError, load_torch_file
from lightning_modules.networks.stylegan2 import EqualLinear, PixelNorm

MAPPER_FORMAT = "aiartist-sound-mapper"
MAPPER_FORMAT_VERSION = 1
GROUP_NAMES = ("coarse", "medium", "fine")
CONDITIONINGS = ("concat", "film")


class MapperFileError(ValueError):
    """A mapper file that is not a SoundMapper file of a version this code reads."""


def row_resolution(row: int) -> int:
    """Resolution (px) a W+ row belongs to: rows 2k and 2k+1 to 4 * 2^k (rows 0-1: 4 px, 2-3: 8 px, 4-5: 16 px...).

    That is StyleCLIP's split at 1024 px (18 rows: coarse 0-3, medium 4-7, fine 8-17).
    """
    return 4 * 2 ** (row // 2)


def layer_groups(n_latent: int) -> dict[str, list[int]]:
    """W+ rows per group: coarse = 4-8 px rows, medium = 16-32 px, fine = 64 px and up; groups without rows absent."""
    groups: dict[str, list[int]] = {name: [] for name in GROUP_NAMES}
    for r in range(n_latent):
        res = row_resolution(r)
        groups["coarse" if res <= 8 else "medium" if res <= 32 else "fine"].append(r)
    return {name: rows for name, rows in groups.items() if rows}


class GroupMLP(nn.Module):
    """One group's mapper: PixelNorm(w_r) (and e) -> n_layers equalised-lr linear layers -> dw_r.

    Hidden layers use leaky ReLU (gain sqrt 2, as StyleGAN's mapping network); the last layer is linear so that dw
    can take either sign in every coordinate.
    """

    def __init__(self, style_dim: int, embed_dim: int, hidden: int, n_layers: int, conditioning: str,
                 lr_mul: float, n_rows: int = 0) -> None:
        super().__init__()
        if conditioning not in CONDITIONINGS:
            raise ValueError(f"SoundMapper: conditioning must be one of {CONDITIONINGS}, got {conditioning!r}")
        if n_layers < 2:
            raise ValueError(f"SoundMapper: n_layers must be >= 2 (hidden + output), got {n_layers}")
        self.conditioning = conditioning
        self.e_scale = math.sqrt(embed_dim)  # unit-norm e -> unit RMS, the scale PixelNorm gives w
        self.norm = PixelNorm()
        # row codes (n_rows > 0): a one-hot row index joins the input, scaled to PixelNorm's RMS; built once here
        self.register_buffer("row_code", torch.eye(n_rows) * math.sqrt(style_dim), persistent=False)
        first_in = style_dim + (embed_dim if conditioning == "concat" else 0) + n_rows
        dims = [first_in] + [hidden] * (n_layers - 1)
        self.hidden = nn.ModuleList(EqualLinear(a, b, lr_mul=lr_mul, activation=True) for a, b in zip(dims, dims[1:]))
        self.out = EqualLinear(hidden, style_dim, lr_mul=lr_mul)
        with torch.no_grad():  # dw = 0 at initialisation: training starts from the identity edit
            self.out.weight.zero_()
        if conditioning == "film":
            self.gamma = nn.ModuleList(EqualLinear(embed_dim, hidden) for _ in self.hidden)
            self.beta = nn.ModuleList(EqualLinear(embed_dim, hidden) for _ in self.hidden)
            with torch.no_grad():  # identity modulation at initialisation
                for layer in (*self.gamma, *self.beta):
                    layer.weight.zero_()

    def forward(self, w_rows: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        """w_rows (B, R, D), e (B, E) unit-norm -> dw (B, R, D) before the output scale."""
        b, r, _ = w_rows.shape
        x = self.norm(w_rows.reshape(b * r, -1))
        e_rows = (e * self.e_scale).repeat_interleave(r, dim=0)  # (B*R, E), row-major like x
        if len(self.row_code):
            if r != len(self.row_code):
                raise ValueError(f"SoundMapper: this group edits {len(self.row_code)} rows together, got {r}")
            x = torch.cat([x, self.row_code.to(x.dtype).repeat(b, 1)], dim=1)
        if self.conditioning == "concat":
            x = torch.cat([x, e_rows.to(x.dtype)], dim=1)
            for layer in self.hidden:
                x = layer(x)
        else:
            for layer, gamma, beta in zip(self.hidden, self.gamma, self.beta):
                x = layer(x) * (1 + gamma(e_rows)) + beta(e_rows)
        return self.out(x).reshape(b, r, -1)


class SoundMapper(nn.Module):
    """Delta W+ from (w, e), one MLP per layer group present at this generator's size; see the module docstring.

    Args:
        n_latent, style_dim: the generator's W+ shape (rows, width); groups follow from n_latent (`layer_groups`).
        embed_dim: CLIP embedding width of the conditioning e.
        conditioning: 'concat' or 'film'.
        n_layers: linear layers per group MLP (StyleCLIP: 4); hidden: their width (None: style_dim).
        lr_mul: equalised-lr multiplier of the MLP layers (StyleCLIP's mapper: 0.01).
        output_scale: dw = output_scale * MLP output (StyleCLIP: 0.1).
        row_codes: the group MLPs also see the row index (see the module docstring; StyleCLIP: no).
    """

    def __init__(self, n_latent: int, style_dim: int, embed_dim: int, conditioning: str = "film", n_layers: int = 4,
                 hidden: int | None = None, lr_mul: float = 0.01, output_scale: float = 0.1,
                 row_codes: bool = False) -> None:
        super().__init__()
        if n_latent < 1 or style_dim < 1 or embed_dim < 1:
            raise ValueError(f"SoundMapper: n_latent, style_dim, embed_dim must be >= 1, got "
                             f"{n_latent}, {style_dim}, {embed_dim}")
        self.config = dict(n_latent=int(n_latent), style_dim=int(style_dim), embed_dim=int(embed_dim),
                           conditioning=str(conditioning), n_layers=int(n_layers),
                           hidden=int(hidden or style_dim), lr_mul=float(lr_mul), output_scale=float(output_scale),
                           row_codes=bool(row_codes))
        self.n_latent, self.style_dim, self.embed_dim = n_latent, style_dim, embed_dim
        self.output_scale = float(output_scale)
        self.groups = layer_groups(n_latent)
        self.mlps = nn.ModuleDict({
            name: GroupMLP(style_dim, embed_dim, hidden or style_dim, n_layers, conditioning, lr_mul,
                           len(rows) if row_codes else 0)
            for name, rows in self.groups.items()
        })

    def _check(self, w: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        if w.ndim != 3 or w.shape[1:] != (self.n_latent, self.style_dim):
            raise ValueError(f"SoundMapper: w must be (B, {self.n_latent}, {self.style_dim}), got {tuple(w.shape)}")
        if e.ndim == 1:
            e = e[None]
        if e.ndim != 2 or e.shape[1] != self.embed_dim or e.shape[0] not in (1, w.shape[0]):
            raise ValueError(f"SoundMapper: e must be ({w.shape[0]} or 1, {self.embed_dim}), got {tuple(e.shape)}")
        return e.expand(w.shape[0], -1)

    def delta(self, w: torch.Tensor, e: torch.Tensor, groups: Iterable[str] | None = None) -> torch.Tensor:
        """dw (B, L, D) for w (B, L, D) and e (B, E) or (E,); rows of groups not in `groups` are zero."""
        e = self._check(w, e)
        wanted = set(self.groups if groups is None else groups)
        dw = torch.zeros_like(w)
        for name, rows in self.groups.items():
            if name in wanted:
                dw[:, rows] = self.output_scale * self.mlps[name](w[:, rows], e).to(w.dtype)
        return dw

    def strengths(self, strength: float | Mapping[str, float] = 1.0,
                  disabled: Iterable[str] = ()) -> dict[str, float]:
        """Per-group strength of an edit: one number for all groups or a {group: strength} map (groups it leaves out
        get 1.0); `disabled` groups get 0. Names that are not a group of this mapper raise."""
        unknown = [g for g in (*(strength if isinstance(strength, Mapping) else ()), *disabled)
                   if g not in GROUP_NAMES]
        if unknown:
            raise ValueError(f"SoundMapper: unknown layer group(s) {unknown}; groups are {list(GROUP_NAMES)}")
        per = {g: float(strength.get(g, 1.0)) if isinstance(strength, Mapping) else float(strength)
               for g in self.groups}
        for g in disabled:
            if g in per:
                per[g] = 0.0
        return per

    def edit(self, w: torch.Tensor, e: torch.Tensor, strength: float | Mapping[str, float] = 1.0,
             disabled: Iterable[str] = ()) -> torch.Tensor:
        """w + strength_g * dw per group. Rows of groups at strength 0 (or disabled) are copied from w bit for bit and
        their MLP does not run; negative strength edits away from the sound."""
        per = self.strengths(strength, disabled)
        e = self._check(w, e)
        out = w.clone()
        for name, rows in self.groups.items():
            s = per[name]
            if s != 0.0:
                dw = self.output_scale * self.mlps[name](w[:, rows], e).to(w.dtype)
                out[:, rows] = w[:, rows] + s * dw
        return out

    def forward(self, w: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        """dw for every group (what training optimises)."""
        return self.delta(w, e)


def save_mapper(mapper: SoundMapper, path: str | Path, meta: Mapping | None = None, overwrite: bool = False) -> Path:
    """Write {format, version, config, state_dict, meta} (plain types: loads with weights_only=True).

    `meta` records provenance (generator, CLIP, encoder, training settings, metrics); an existing file is refused
    unless `overwrite`.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().clone() for k, v in mapper.state_dict().items()}
    torch.save({"format": MAPPER_FORMAT, "version": MAPPER_FORMAT_VERSION, "config": dict(mapper.config),
                "state_dict": state, "meta": dict(meta or {})}, path)
    return path


def read_mapper_file(path: str | Path) -> dict:
    """The checked contents of a mapper file (format, version, config, state_dict, meta); raises MapperFileError."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"mapper file {path} does not exist")
    try:  # the shared reader names the file and the reason, and never suggests turning weights_only off
        obj = load_torch_file(path, "SoundMapper file")
    except (CorruptFileError, UnsafeFileError) as err:
        raise MapperFileError(str(err)) from err
    if not isinstance(obj, dict) or obj.get("format") != MAPPER_FORMAT:
        raise MapperFileError(f"{path}: not a SoundMapper file (no format {MAPPER_FORMAT!r})")
    if obj.get("version") != MAPPER_FORMAT_VERSION:
        raise MapperFileError(f"{path}: SoundMapper file version {obj.get('version')!r}; this code reads version "
                              f"{MAPPER_FORMAT_VERSION}")
    return obj


def load_mapper(path: str | Path, map_location: str | torch.device = "cpu") -> SoundMapper:
    """A SoundMapper from a `save_mapper` file, in eval mode with frozen weights; its `meta` dict is attached."""
    obj = read_mapper_file(path)
    mapper = SoundMapper(**obj["config"])
    try:
        mapper.load_state_dict(obj["state_dict"])
    except RuntimeError as err:
        raise MapperFileError(f"{path}: weights do not match the stored config ({err})") from err
    mapper.meta = dict(obj.get("meta") or {})
    return mapper.to(map_location).eval().requires_grad_(False)
