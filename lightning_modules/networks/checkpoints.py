"""StyleGAN2 generator checkpoints: read the three formats people download, save and convert to rosinality's `.pt`.

Formats (docs/reference.md §checkpoints): rosinality `.pt` ({"g_ema": state dict, "latent_avg"?, training
extras}), NVlabs stylegan2-ada-pytorch `.pkl` (dict with a persistent `G_ema` object) and TensorFlow-1 StyleGAN2 `.pkl`
(tuple (G, D, Gs) of `Network`s). Every format becomes our state dict (rosinality `g_ema` keys) plus the
`Generator` kwargs read from key names and tensor shapes; pickles are read without executing their code.

    python -m lightning_modules.networks.checkpoints convert IN OUT
"""

from __future__ import annotations

import argparse
import math
import os
import pickle
import re
import sys
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from datamodules.input_limits import file_problem
from datamodules.torch_files import load_error, refused_global
from lightning_modules.networks.pickles import PersistentObject, TFNetwork, UnsafePickleError, read_pickle
from lightning_modules.networks.stylegan2 import BLUR_TAPS, Generator, blur_kernel
from stylegan2_ops import setup_filter

ROSINALITY = "rosinality .pt"
NVLABS = "NVlabs stylegan2-ada-pytorch .pkl"
TENSORFLOW = "TensorFlow-1 StyleGAN2 .pkl"

# First pickled object of a legacy (pre-zip) torch.save file.
_TORCH_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


class CheckpointFormatError(ValueError):
    """The file is not a generator checkpoint we can read; the message names the file and what it holds."""


@dataclass
class GeneratorCheckpoint:
    """A generator as read from a file: our state dict, `Generator` kwargs, the stored average w, the format."""

    state_dict: dict[str, torch.Tensor]
    kwargs: dict[str, Any]
    latent_avg: torch.Tensor | None
    format: str


def read_checkpoint(path: str | Path, trust_pickle: bool = False) -> GeneratorCheckpoint:
    """Detect the format of `path` and convert it to our names and layouts (no network is built)."""
    path = Path(path)
    problem = file_problem(path)
    if problem == "no such file":
        raise FileNotFoundError(f"{path}: no such generator checkpoint")
    if problem is not None:
        raise CheckpointFormatError(f"{path}: {problem}, expected a generator checkpoint")
    if zipfile.is_zipfile(path):
        return _read_torch_file(path, trust_pickle)
    obj = read_pickle(path, trust=trust_pickle)
    if isinstance(obj, int) and obj == _TORCH_LEGACY_MAGIC:
        return _read_torch_file(path, trust_pickle)
    if isinstance(obj, dict) and "G_ema" in obj:
        return _from_nvlabs(obj["G_ema"], path)
    nets = obj if isinstance(obj, tuple | list) else (obj,)
    if nets and all(isinstance(n, TFNetwork) for n in nets):
        # (G, D, Gs): Gs, the moving average of G, is the one to sample from.
        return _from_tensorflow(nets[-1], path)
    raise CheckpointFormatError(f"{path}: a pickle holding {_describe(obj)}; expected {NVLABS} or {TENSORFLOW}")


def load_generator(path: str | Path, trust_pickle: bool = False) -> Generator:
    """Build the `Generator` stored in `path` (any supported format), in eval mode with frozen parameters.

    Loading is strict for parameters; derivable buffers the file lacks (blur kernels, noise maps) are rebuilt with
    a warning. `trust_pickle=True` lets a file you trust name globals outside the allowlist.
    """
    return build_generator(read_checkpoint(path, trust_pickle), path)


def build_generator(ckpt: GeneratorCheckpoint, path: str | Path) -> Generator:
    """The `Generator` for a checkpoint read from `path` (named in errors), eval mode, parameters frozen."""
    G = Generator(**ckpt.kwargs)
    _load_state(G, ckpt.state_dict, Path(path))
    if ckpt.latent_avg is not None:
        if ckpt.latent_avg.numel() != G.style_dim:
            raise CheckpointFormatError(
                f"{path}: latent_avg has shape {tuple(ckpt.latent_avg.shape)}, expected {G.style_dim} values"
            )
        G.latent_avg = ckpt.latent_avg.detach().float().reshape(G.style_dim).clone()
    return G.eval().requires_grad_(False)


def save_generator(G: Generator, path: str | Path, overwrite: bool = False) -> None:
    """Write `G` in rosinality's format: {"g_ema": state dict, "latent_avg": (style_dim,)}, plus our
    "generator_kwargs" (rosinality's code ignores it; it keeps lr_mlp and conv_clamp, which shapes cannot tell)."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path}: exists; pass overwrite=True to replace it")
    payload = {
        "g_ema": {k: v.detach().cpu().clone() for k, v in G.state_dict().items()},
        "latent_avg": G.mean_latent().reshape(-1).cpu(),
        "generator_kwargs": dict(G.kwargs),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    torch.save(payload, tmp)
    os.replace(tmp, path)


# --------------------------------------------------------------------------------------------------------------------
# Loading a state dict into a Generator


def _load_state(G: Generator, state: dict[str, torch.Tensor], path: Path) -> None:
    expected = G.state_dict()
    params = {name for name, _ in G.named_parameters()}
    missing = sorted(params - state.keys())
    unexpected = sorted(state.keys() - expected.keys())
    if missing or unexpected:
        raise CheckpointFormatError(
            f"{path}: parameters do not match a {G.size}px generator: missing {_short(missing)}, "
            f"unexpected {_short(unexpected)}"
        )
    wrong = [
        f"{k} {tuple(v.shape)} vs {tuple(expected[k].shape)}" for k, v in state.items() if v.shape != expected[k].shape
    ]
    if wrong:
        raise CheckpointFormatError(f"{path}: tensor shapes differ from the inferred architecture: {_short(wrong)}")
    rebuilt = sorted(expected.keys() - state.keys())
    if rebuilt:
        warnings.warn(
            f"{path}: rebuilt buffers the file does not store ({_short(rebuilt)}); noise maps drawn with seed 0",
            stacklevel=4,
        )
        gen = torch.Generator().manual_seed(0)
        state = dict(state)
        for key in rebuilt:
            state[key] = torch.randn(expected[key].shape, generator=gen) if key.startswith("noises.") else expected[key]
    G.load_state_dict(state, strict=True)


# --------------------------------------------------------------------------------------------------------------------
# rosinality .pt


def _read_torch_file(path: Path, trust: bool) -> GeneratorCheckpoint:
    # rosinality training checkpoints carry args as an argparse.Namespace: the only non-tensor global allowed.
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            ckpt = torch.load(path, map_location="cpu", weights_only=not trust)
    except Exception as err:  # noqa: BLE001 - a refusal, or a truncated/corrupt file: named, never "retry unsafely"
        glob = refused_global(err)
        if glob is None:
            raise load_error(path, err, "generator checkpoint") from err
        raise UnsafePickleError(
            f"{path}: torch.load(weights_only=True) refused the file (it {glob}); "
            "nothing was executed. If you trust this file, pass trust_pickle=True."
        ) from err
    extra: dict[str, Any] = {}
    if isinstance(ckpt, dict) and "g_ema" in ckpt:
        state, latent_avg = ckpt["g_ema"], ckpt.get("latent_avg")
        extra = ckpt.get("generator_kwargs") or {}
    elif isinstance(ckpt, dict) and "conv1.conv.weight" in ckpt:
        state, latent_avg = ckpt, None  # a bare g_ema state dict
    else:
        raise CheckpointFormatError(f"{path}: a torch file holding {_describe(ckpt)}; expected a dict with 'g_ema'")
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointFormatError(f"{path}: 'g_ema' is not a state dict of tensors")
    kwargs = _rosinality_kwargs(state, path)
    for key in ("lr_mlp", "conv_clamp", "channel_multiplier", "channel_max"):
        if key in extra:
            kwargs[key] = extra[key]
    return GeneratorCheckpoint(dict(state), kwargs, latent_avg, ROSINALITY)


def _rosinality_kwargs(state: dict[str, torch.Tensor], path: Path) -> dict[str, Any]:
    """Architecture from key names and shapes: mapping depth, style size, resolution, channels per resolution."""
    for key in ("input.input", "conv1.conv.modulation.weight"):
        if key not in state:
            raise CheckpointFormatError(f"{path}: no '{key}' in the state dict: not a StyleGAN2 generator")
    n_mlp = _count(state, "style.{}.weight", start=1)
    n_rgb = _count(state, "to_rgbs.{}.conv.weight")
    size = 4 * 2**n_rgb
    channels = {4: state["input.input"].shape[1]}
    channels.update({2 ** (j + 3): state[f"to_rgbs.{j}.conv.weight"].shape[2] for j in range(n_rgb)})
    return dict(size=size, style_dim=state["conv1.conv.modulation.weight"].shape[1], n_mlp=n_mlp, channels=channels)


# --------------------------------------------------------------------------------------------------------------------
# NVlabs stylegan2-ada-pytorch .pkl


def _from_nvlabs(g: Any, path: Path) -> GeneratorCheckpoint:
    if not isinstance(g, PersistentObject):
        raise CheckpointFormatError(f"{path}: 'G_ema' is {_describe(g)}, expected a persistent network object")
    kw = g.init_kwargs
    mapping_kw = dict(kw.get("mapping_kwargs") or {})
    synthesis_kw = dict(kw.get("synthesis_kwargs") or {})
    if kw.get("c_dim", 0):
        raise CheckpointFormatError(
            f"{path}: a conditional generator (c_dim={kw['c_dim']}); only unconditional models are supported"
        )
    if kw.get("img_channels", 3) != 3:
        raise CheckpointFormatError(f"{path}: img_channels={kw['img_channels']}; only RGB generators are supported")
    if synthesis_kw.get("architecture", "skip") != "skip":
        raise CheckpointFormatError(f"{path}: architecture={synthesis_kw['architecture']!r}; only 'skip' is supported")
    t = g.tensors()
    if "synthesis.b4.const" not in t or "mapping.fc0.weight" not in t:
        raise CheckpointFormatError(
            f"{path}: G_ema ({g.class_name}) has no synthesis.b4.const / mapping.fc0.weight: not a StyleGAN2 "
            f"generator (StyleGAN3?); found {_short(sorted(t))}"
        )
    if "z_dim" in kw and "w_dim" in kw and kw["z_dim"] != kw["w_dim"]:
        raise CheckpointFormatError(f"{path}: z_dim={kw['z_dim']} differs from w_dim={kw['w_dim']}; not supported")

    used: set[str] = set()

    def take(name: str) -> torch.Tensor:
        if name not in t:
            raise CheckpointFormatError(f"{path}: G_ema lacks {name}")
        used.add(name)
        return t[name].float()

    state: dict[str, torch.Tensor] = {}
    n_mlp = _count(t, "mapping.fc{}.weight")
    for i in range(n_mlp):
        state[f"style.{i + 1}.weight"] = take(f"mapping.fc{i}.weight")
        state[f"style.{i + 1}.bias"] = take(f"mapping.fc{i}.bias")
    state["input.input"] = take("synthesis.b4.const")[None]
    resolutions = sorted(int(m.group(1)) for k in t if (m := re.fullmatch(r"synthesis\.b(\d+)\.torgb\.weight", k)))
    size = resolutions[-1]
    if kw.get("img_resolution", size) != size or resolutions != [2**i for i in range(2, int(math.log2(size)) + 1)]:
        raise CheckpointFormatError(
            f"{path}: blocks {resolutions} do not match img_resolution={kw.get('img_resolution')}"
        )

    def conv(src: str, dst: str, noise_index: int) -> None:
        state[f"{dst}.conv.weight"] = take(f"{src}.weight")[None]
        state[f"{dst}.conv.modulation.weight"] = take(f"{src}.affine.weight")
        state[f"{dst}.conv.modulation.bias"] = take(f"{src}.affine.bias")
        state[f"{dst}.noise.weight"] = take(f"{src}.noise_strength").reshape(1)
        state[f"{dst}.activate.bias"] = take(f"{src}.bias")
        if f"{src}.noise_const" in t:
            state[f"noises.noise_{noise_index}"] = take(f"{src}.noise_const")[None, None]

    def torgb(src: str, dst: str) -> None:
        state[f"{dst}.conv.weight"] = take(f"{src}.weight")[None]
        state[f"{dst}.conv.modulation.weight"] = take(f"{src}.affine.weight")
        state[f"{dst}.conv.modulation.bias"] = take(f"{src}.affine.bias")
        state[f"{dst}.bias"] = take(f"{src}.bias").reshape(1, -1, 1, 1)

    # Weight layouts agree with ours: NVlabs' up-sampling conv is also a transposed conv with the unflipped weight.
    conv("synthesis.b4.conv1", "conv1", 0)
    torgb("synthesis.b4.torgb", "to_rgb1")
    for j, res in enumerate(resolutions[1:]):
        conv(f"synthesis.b{res}.conv0", f"convs.{2 * j}", 2 * j + 1)
        conv(f"synthesis.b{res}.conv1", f"convs.{2 * j + 1}", 2 * j + 2)
        torgb(f"synthesis.b{res}.torgb", f"to_rgbs.{j}")

    # Resampling filters are rebuilt by the Generator; refuse a model trained with a different one.
    expected_filter = setup_filter(list(BLUR_TAPS))
    for name in [k for k in t if k.endswith("resample_filter")]:
        used.add(name)
        if t[name].shape != expected_filter.shape or not torch.allclose(t[name].float(), expected_filter):
            raise CheckpointFormatError(f"{path}: {name} is not the [1,3,3,1] filter this generator uses")
    state.update(_blur_kernels(len(resolutions) - 1))
    latent_avg = t["mapping.w_avg"].float() if "mapping.w_avg" in t else None
    used.add("mapping.w_avg")
    leftover = sorted(set(t) - used)
    if leftover:
        raise CheckpointFormatError(
            f"{path}: G_ema holds tensors this StyleGAN2 reader does not know: {_short(leftover)}"
        )

    kwargs = {**_rosinality_kwargs(state, path), "lr_mlp": float(mapping_kw.get("lr_multiplier", 0.01)),
              "conv_clamp": synthesis_kw.get("conv_clamp")}
    return GeneratorCheckpoint(state, kwargs, latent_avg, NVLABS)


# --------------------------------------------------------------------------------------------------------------------
# TensorFlow-1 StyleGAN2 .pkl

_TF_IGNORED = {"G_synthesis/lod"}  # progressive-growing level of detail, unused by StyleGAN2


def _from_tensorflow(gs: TFNetwork, path: Path) -> GeneratorCheckpoint:
    v = gs.variables()
    static = dict(gs.static_kwargs)
    for comp in gs.components.values():
        if isinstance(comp, TFNetwork):
            static.update(comp.static_kwargs)
    if static.get("label_size", 0) or any("LabelConcat" in k for k in v):
        raise CheckpointFormatError(
            f"{path}: a conditional TensorFlow generator (label_size={static.get('label_size', 0)}); "
            "only unconditional models are supported"
        )
    if static.get("num_channels", 3) != 3:
        raise CheckpointFormatError(f"{path}: num_channels={static['num_channels']}; only RGB generators are supported")
    if "G_synthesis/4x4/Const/const" not in v or "G_mapping/Dense0/weight" not in v:
        raise CheckpointFormatError(
            f"{path}: network {gs.name!r} has no G_synthesis/4x4/Const/const or G_mapping/Dense0/weight: "
            f"not a StyleGAN2 generator; found {_short(sorted(v))}"
        )
    used: set[str] = set()

    def take(name: str) -> torch.Tensor:
        if name not in v:
            raise CheckpointFormatError(f"{path}: {gs.name} lacks the variable {name}")
        used.add(name)
        return torch.from_numpy(np.array(v[name], dtype=np.float32))

    state: dict[str, torch.Tensor] = {}
    n_mlp = _count(v, "G_mapping/Dense{}/weight")
    for i in range(n_mlp):
        state[f"style.{i + 1}.weight"] = take(f"G_mapping/Dense{i}/weight").t()  # TF dense weights are (in, out)
        state[f"style.{i + 1}.bias"] = take(f"G_mapping/Dense{i}/bias")
    state["input.input"] = take("G_synthesis/4x4/Const/const")
    resolutions = sorted(int(m.group(1)) for k in v if (m := re.fullmatch(r"G_synthesis/(\d+)x\d+/ToRGB/weight", k)))
    size = resolutions[-1]
    if static.get("resolution", size) != size or resolutions != [2**i for i in range(2, int(math.log2(size)) + 1)]:
        raise CheckpointFormatError(
            f"{path}: ToRGB layers at {resolutions} do not match resolution={static.get('resolution')}"
        )

    def modulated(src: str, dst: str, flip: bool = False) -> None:
        w = take(f"{src}/weight").permute(3, 2, 0, 1)  # (kh, kw, in, out) -> (out, in, kh, kw)
        if flip:
            # TF's up-sampling conv correlates after upsampling; ours is a transposed conv (a true convolution).
            w = w.flip(2, 3)
        state[f"{dst}.conv.weight"] = w[None].contiguous()
        state[f"{dst}.conv.modulation.weight"] = take(f"{src}/mod_weight").t().contiguous()
        state[f"{dst}.conv.modulation.bias"] = take(f"{src}/mod_bias") + 1  # TF adds the 1 at run time

    def conv(src: str, dst: str, noise_index: int, flip: bool = False) -> None:
        modulated(src, dst, flip)
        state[f"{dst}.noise.weight"] = take(f"{src}/noise_strength").reshape(1)
        state[f"{dst}.activate.bias"] = take(f"{src}/bias")
        if f"G_synthesis/noise{noise_index}" in v:
            state[f"noises.noise_{noise_index}"] = take(f"G_synthesis/noise{noise_index}")

    def torgb(src: str, dst: str) -> None:
        modulated(src, dst)
        state[f"{dst}.bias"] = take(f"{src}/bias").reshape(1, -1, 1, 1)

    conv("G_synthesis/4x4/Conv", "conv1", 0)
    torgb("G_synthesis/4x4/ToRGB", "to_rgb1")
    for j, res in enumerate(resolutions[1:]):
        conv(f"G_synthesis/{res}x{res}/Conv0_up", f"convs.{2 * j}", 2 * j + 1, flip=True)
        conv(f"G_synthesis/{res}x{res}/Conv1", f"convs.{2 * j + 1}", 2 * j + 2)
        torgb(f"G_synthesis/{res}x{res}/ToRGB", f"to_rgbs.{j}")
    if list(static.get("resample_kernel", BLUR_TAPS)) != list(BLUR_TAPS):
        raise CheckpointFormatError(
            f"{path}: resample_kernel={static['resample_kernel']}; this generator uses [1,3,3,1]"
        )
    state.update(_blur_kernels(len(resolutions) - 1))
    latent_avg = take("dlatent_avg") if "dlatent_avg" in v else None
    leftover = sorted(set(v) - used - _TF_IGNORED)
    if leftover:
        raise CheckpointFormatError(
            f"{path}: {gs.name} holds variables this StyleGAN2 reader does not know: {_short(leftover)}"
        )

    kwargs = {**_rosinality_kwargs(state, path), "lr_mlp": float(static.get("mapping_lrmul", 0.01)), "conv_clamp": None}
    return GeneratorCheckpoint(state, kwargs, latent_avg, TENSORFLOW)


# --------------------------------------------------------------------------------------------------------------------
# Helpers and CLI


def _blur_kernels(n_upsampling: int) -> dict[str, torch.Tensor]:
    """Our blur buffers for formats that keep the [1,3,3,1] filter elsewhere (NVlabs, normalised) or implicit (TF)."""
    kernels = {}
    for j in range(n_upsampling):
        kernels[f"convs.{2 * j}.conv.blur.kernel"] = blur_kernel(4)
        kernels[f"to_rgbs.{j}.upsample.kernel"] = blur_kernel(4)
    return kernels


def _count(names: dict[str, Any], pattern: str, start: int = 0) -> int:
    """How many consecutive indices start, start+1, ... fill `pattern` among the keys."""
    n = 0
    while pattern.format(start + n) in names:
        n += 1
    return n


def _short(items: list[str], limit: int = 8) -> str:
    if not items:
        return "none"
    more = f" ... (+{len(items) - limit} more)" if len(items) > limit else ""
    return "[" + ", ".join(items[:limit]) + "]" + more


def _describe(obj: Any) -> str:
    if isinstance(obj, dict):
        return f"a dict with keys {_short(sorted(map(str, obj)))}"
    if isinstance(obj, tuple | list):
        return f"a {type(obj).__name__} of {_short([type(o).__name__ for o in obj])}"
    return f"a {type(obj).__name__}"


def convert(src: str | Path, dst: str | Path, trust_pickle: bool = False, overwrite: bool = False) -> str:
    """Convert any supported checkpoint to a rosinality-compatible `.pt`; returns a printed summary."""
    ckpt = read_checkpoint(src, trust_pickle)
    G = build_generator(ckpt, src)
    save_generator(G, dst, overwrite=overwrite)
    n_params = sum(p.numel() for p in G.parameters())
    channels = ", ".join(f"{r}:{c}" for r, c in G.channels.items())
    return "\n".join(
        [
            f"read       {src} ({ckpt.format})",
            f"wrote      {dst} ({ROSINALITY})",
            f"resolution {G.size}px, n_latent {G.n_latent}, style_dim {G.style_dim}, mapping layers {len(G.style) - 1}",
            f"channels   {channels}",
            f"conv_clamp {G.kwargs['conv_clamp']}, lr_mlp {G.kwargs['lr_mlp']}",
            f"parameters {n_params:,}",
            f"latent_avg {'stored in the file' if ckpt.latent_avg is not None else 'estimated from 4096 samples'}",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lightning_modules.networks.checkpoints", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    conv = sub.add_parser("convert", help="write any supported generator checkpoint as a rosinality .pt")
    conv.add_argument("src", help="rosinality .pt, NVlabs stylegan2-ada-pytorch .pkl or TensorFlow-1 StyleGAN2 .pkl")
    conv.add_argument("dst", help="output .pt")
    conv.add_argument("--trust-pickle", action="store_true", help="allow globals outside the allowlist (trusted files)")
    conv.add_argument("--overwrite", action="store_true", help="replace dst if it exists")
    args = parser.parse_args(argv)
    try:
        print(convert(args.src, args.dst, trust_pickle=args.trust_pickle, overwrite=args.overwrite))
    except (OSError, CheckpointFormatError, pickle.UnpicklingError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
