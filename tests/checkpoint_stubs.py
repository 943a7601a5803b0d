"""Tiny generator checkpoints in the real structure of the NVlabs and TensorFlow-1 StyleGAN2 pickles, for tests.

Parameters are drawn at random directly in each format's names and layouts (no converter of ours is involved).
The pickler writes the real global paths (`torch_utils.persistence._reconstruct_persistent_obj`,
`dnnlib.util.EasyDict`, `dnnlib.tflib.network.Network`, numpy-1's `numpy.core.multiarray._reconstruct`) for local
stand-ins, without installing any module under those names: a loader that imported or ran them would fail. The
embedded module source and the stand-ins would create a marker file if anything ever executed them.
"""

from __future__ import annotations

import math
import pickle
import types
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

_BINOMIAL = torch.tensor([1.0, 3.0, 3.0, 1.0])
RESAMPLE_FILTER = torch.outer(_BINOMIAL, _BINOMIAL) / 64  # setup_filter([1,3,3,1]): 2-D, sum 1


def _marker_source(marker: Path) -> str:
    return f"open({str(marker)!r}, 'w').write('the pickle ran its embedded code')\n"


# ------------------------------------------------------------------------------------------------------------------
# A pickler that writes chosen global paths for local objects


class _ForeignPickler(pickle._Pickler):
    """Pure-Python pickler writing `remap[obj] = (module, name)` as the global for obj, and numpy arrays and scalars
    with numpy 1's `numpy.core.multiarray` paths (as pickles written before numpy 2 have them)."""

    def __init__(self, file, protocol: int, remap: dict[Any, tuple[str, str]]):
        super().__init__(file, protocol)
        self.remap = {**remap, _np1_reconstruct: ("numpy.core.multiarray", "_reconstruct")}
        self.remap[_np1_scalar] = ("numpy.core.multiarray", "scalar")

    def reducer_override(self, obj):
        if type(obj) is np.ndarray:
            _, args, state = obj.__reduce__()
            return _np1_reconstruct, args, state
        if isinstance(obj, np.generic):
            _, args = obj.__reduce__()[:2]
            return _np1_scalar, args
        return NotImplemented

    def save_global(self, obj, name=None):
        target = next((path for key, path in self.remap.items() if key is obj), None)
        if target is None:
            return super().save_global(obj, name)
        module, qualname = target
        if self.proto >= 4:
            self.save(module)
            self.save(qualname)
            self.write(pickle.STACK_GLOBAL)
        else:
            self.write(pickle.GLOBAL + f"{module}\n{qualname}\n".encode())
        self.memoize(obj)

    dispatch = dict(pickle._Pickler.dispatch)
    dispatch[types.FunctionType] = save_global


def _np1_reconstruct(*args):  # stands for numpy.core.multiarray._reconstruct in the written file
    raise AssertionError("never called")


def _np1_scalar(*args):  # stands for numpy.core.multiarray.scalar
    raise AssertionError("never called")


def _dump(obj: Any, path: Path, protocol: int, remap: dict[Any, tuple[str, str]]) -> None:
    with open(path, "wb") as f:
        _ForeignPickler(f, protocol, remap).dump(obj)


# ------------------------------------------------------------------------------------------------------------------
# NVlabs stylegan2-ada-pytorch


class EasyDictStub(dict):
    """Pickled as dnnlib.util.EasyDict."""


class PersistentStub(nn.Module):
    """A module pickled the way torch_utils.persistence pickles its objects: reconstruct(meta) with the class name,
    the embedded module source and the module's __dict__ as state."""

    def __init__(self, class_name: str, module_src: str, init_kwargs: dict | None = None):
        super().__init__()
        self._persistent_class = class_name
        self._module_src = module_src
        self._init_args = ()
        self._init_kwargs = EasyDictStub(init_kwargs or {})

    def __reduce__(self):
        state = {k: v for k, v in self.__dict__.items() if k not in ("_persistent_class", "_module_src")}
        meta = dict(
            type="class", version=4, module_src=self._module_src, class_name=self._persistent_class, state=state
        )
        return _persistent_reconstruct_stub, (meta,)


def _persistent_reconstruct_stub(meta):  # pickled as torch_utils.persistence._reconstruct_persistent_obj
    exec(meta["module_src"])  # what the real one does first; a loader must never get here
    raise AssertionError("never called")


_NVLABS_BUFFERS = ("resample_filter", "noise_const", "w_avg")


def _nvlabs_class(path: str) -> str:
    last = path.split(".")[-1]
    if path == "":
        return "Generator"
    if last == "mapping":
        return "MappingNetwork"
    if last == "synthesis":
        return "SynthesisNetwork"
    if last.startswith("fc") or last == "affine":
        return "FullyConnectedLayer"
    if last.startswith("conv"):
        return "SynthesisLayer"
    if last == "torgb":
        return "ToRGBLayer"
    return "SynthesisBlock"


def nvlabs_tensors(
    size: int, w_dim: int, n_mlp: int, channels: dict[int, int], seed: int = 0, lr_mul: float = 0.01
) -> dict[str, torch.Tensor]:
    """Random G_ema tensors under NVlabs names and layouts (weights (out, in, k, k), const (C, 4, 4),
    noise_const (r, r), noise_strength a 0-d tensor), the mapping stored as N(0, 1/lr_mul)."""
    g = torch.Generator().manual_seed(seed)

    def randn(*shape, std=1.0):
        return torch.randn(*shape, generator=g) * std

    t: dict[str, torch.Tensor] = {}
    for i in range(n_mlp):
        t[f"mapping.fc{i}.weight"] = randn(w_dim, w_dim) / lr_mul
        t[f"mapping.fc{i}.bias"] = randn(w_dim, std=0.3) / lr_mul
    t["mapping.w_avg"] = randn(w_dim, std=0.5)
    t["synthesis.b4.const"] = randn(channels[4], 4, 4)
    t["synthesis.b4.resample_filter"] = RESAMPLE_FILTER.clone()

    def layer(prefix: str, cin: int, cout: int, res: int) -> None:
        t[f"{prefix}.weight"] = randn(cout, cin, 3, 3)
        t[f"{prefix}.bias"] = randn(cout, std=0.3)
        t[f"{prefix}.noise_strength"] = randn((), std=0.3)
        t[f"{prefix}.noise_const"] = randn(res, res)
        t[f"{prefix}.resample_filter"] = RESAMPLE_FILTER.clone()
        t[f"{prefix}.affine.weight"] = randn(cin, w_dim)
        t[f"{prefix}.affine.bias"] = 1 + randn(cin, std=0.3)

    def torgb(prefix: str, cin: int) -> None:
        t[f"{prefix}.weight"] = randn(3, cin, 1, 1)
        t[f"{prefix}.bias"] = randn(3, std=0.3)
        t[f"{prefix}.affine.weight"] = randn(cin, w_dim)
        t[f"{prefix}.affine.bias"] = 1 + randn(cin, std=0.3)

    layer("synthesis.b4.conv1", channels[4], channels[4], 4)
    torgb("synthesis.b4.torgb", channels[4])
    for log_res in range(3, int(math.log2(size)) + 1):
        res = 2**log_res
        cin, cout = channels[res // 2], channels[res]
        t[f"synthesis.b{res}.resample_filter"] = RESAMPLE_FILTER.clone()
        layer(f"synthesis.b{res}.conv0", cin, cout, res)
        layer(f"synthesis.b{res}.conv1", cout, cout, res)
        torgb(f"synthesis.b{res}.torgb", cout)
    return t


def nvlabs_network(
    tensors: dict[str, torch.Tensor], init_kwargs: dict, module_src: str, class_name: str = "Generator"
) -> PersistentStub:
    """The persistent module tree holding `tensors` (submodules by dotted prefix; buffers by NVlabs' names)."""
    modules: dict[str, PersistentStub] = {"": PersistentStub(class_name, module_src, init_kwargs)}

    def module(path: str) -> PersistentStub:
        if path not in modules:
            parent, _, name = path.rpartition(".")
            modules[path] = PersistentStub(_nvlabs_class(path), module_src)
            setattr(module(parent), name, modules[path])
        return modules[path]

    for key, value in tensors.items():
        parent, _, name = key.rpartition(".")
        if name in _NVLABS_BUFFERS:
            module(parent).register_buffer(name, value.clone())
        else:
            setattr(module(parent), name, nn.Parameter(value.clone()))
    return modules[""]


def write_nvlabs_pickle(
    path: Path,
    tensors: dict[str, torch.Tensor],
    init_kwargs: dict,
    marker: Path,
    extra: dict[str, Any] | None = None,
) -> None:
    """{G, D, G_ema, augment_pipe, training_set_kwargs} as stylegan2-ada-pytorch's training loop pickles it."""
    src = _marker_source(marker)
    init_kwargs = {
        k: EasyDictStub(v) if isinstance(v, dict) else v for k, v in init_kwargs.items()
    }  # mapping_kwargs / synthesis_kwargs are EasyDicts in real files
    discriminator = PersistentStub("Discriminator", src, dict(c_dim=0, img_resolution=init_kwargs["img_resolution"]))
    discriminator.b4 = PersistentStub("DiscriminatorEpilogue", src)
    discriminator.b4.out = PersistentStub("FullyConnectedLayer", src)
    discriminator.b4.out.weight = nn.Parameter(torch.randn(1, 8))
    data = dict(
        G=nvlabs_network(tensors, init_kwargs, src),
        D=discriminator,
        G_ema=nvlabs_network(tensors, init_kwargs, src),
        augment_pipe=None,
        training_set_kwargs=EasyDictStub(path="~/datasets/wikiart.zip", use_labels=False, xflip=True),
        **(extra or {}),
    )
    remap = {
        _persistent_reconstruct_stub: ("torch_utils.persistence", "_reconstruct_persistent_obj"),
        EasyDictStub: ("dnnlib.util", "EasyDict"),
    }
    _dump(data, path, protocol=4, remap=remap)


# ------------------------------------------------------------------------------------------------------------------
# TensorFlow-1 StyleGAN2


class TFNetworkStub:
    """Pickled as dnnlib.tflib.network.Network with the state its __getstate__ returns (version 4)."""

    def __init__(self, name: str, variables: dict[str, np.ndarray], static_kwargs: dict, components: dict, src: str):
        self.state = dict(
            version=4,
            name=name,
            static_kwargs=static_kwargs,
            components=components,
            build_module_src=src,
            build_func_name={"G_mapping": "G_mapping", "G_synthesis": "G_synthesis_stylegan2"}.get(name, "G_main"),
            variables=list(variables.items()),
        )

    def __getstate__(self):
        return self.state

    def __setstate__(self, state):  # what the real Network does: exec the build module source
        exec(state["build_module_src"])
        raise AssertionError("never called")


def tf_variables(
    size: int, dim: int, n_mlp: int, channels: dict[int, int], seed: int = 0, label_size: int = 0, lr_mul: float = 0.01
) -> dict[str, np.ndarray]:
    """Random Gs variables under TF names and layouts: conv kernels (kh, kw, in, out), dense (in, out), mod_bias
    without the +1 TF adds at run time, noise_strength 0-d, noise maps (1, 1, r, r), const (1, C, 4, 4)."""
    rng = np.random.default_rng(seed)

    def randn(*shape, std=1.0):
        return (rng.standard_normal(shape) * std).astype(np.float32)

    v: dict[str, np.ndarray] = {}
    in_dim = dim
    if label_size:
        v["G_mapping/LabelConcat/weight"] = randn(label_size, dim)
        in_dim = 2 * dim
    for i in range(n_mlp):
        v[f"G_mapping/Dense{i}/weight"] = randn(in_dim if i == 0 else dim, dim) / lr_mul
        v[f"G_mapping/Dense{i}/bias"] = randn(dim, std=0.3) / lr_mul
    v["dlatent_avg"] = randn(dim, std=0.5)
    v["G_synthesis/4x4/Const/const"] = randn(1, channels[4], 4, 4)

    def modulated(prefix: str, cin: int, cout: int, k: int) -> None:
        v[f"{prefix}/weight"] = randn(k, k, cin, cout)
        v[f"{prefix}/mod_weight"] = randn(dim, cin)
        v[f"{prefix}/mod_bias"] = randn(cin, std=0.3)
        v[f"{prefix}/bias"] = randn(cout, std=0.3)

    noise = 0

    def layer(prefix: str, cin: int, cout: int, res: int) -> None:
        nonlocal noise
        modulated(prefix, cin, cout, 3)
        v[f"{prefix}/noise_strength"] = np.array(rng.standard_normal() * 0.3, dtype=np.float32)
        v[f"G_synthesis/noise{noise}"] = randn(1, 1, res, res)
        noise += 1

    layer("G_synthesis/4x4/Conv", channels[4], channels[4], 4)
    modulated("G_synthesis/4x4/ToRGB", channels[4], 3, 1)
    for log_res in range(3, int(math.log2(size)) + 1):
        res = 2**log_res
        layer(f"G_synthesis/{res}x{res}/Conv0_up", channels[res // 2], channels[res], res)
        layer(f"G_synthesis/{res}x{res}/Conv1", channels[res], channels[res], res)
        modulated(f"G_synthesis/{res}x{res}/ToRGB", channels[res], 3, 1)
    v["G_synthesis/lod"] = np.array(0.0, dtype=np.float32)
    return v


def write_tf_pickle(path: Path, variables: dict[str, np.ndarray], marker: Path, label_size: int = 0) -> None:
    """(G, D, Gs) as NVlabs' TensorFlow code pickles it: each Network keeps its own variables (names relative to
    its scope) and its components' Networks."""
    src = _marker_source(marker)
    resolution = max(int(k.split("/")[1].split("x")[0]) for k in variables if k.endswith("/ToRGB/weight"))
    static = dict(num_channels=3, resolution=resolution, label_size=label_size, func_name="training.networks.G_main")

    def own(prefix: str) -> dict[str, np.ndarray]:
        return {k[len(prefix) + 1 :]: a for k, a in variables.items() if k.startswith(prefix + "/")}

    def generator(name: str) -> TFNetworkStub:
        mapping = TFNetworkStub("G_mapping", own("G_mapping"), dict(static), {}, src)
        synthesis = TFNetworkStub("G_synthesis", own("G_synthesis"), dict(static), {}, src)
        top = {k: a for k, a in variables.items() if "/" not in k}
        return TFNetworkStub(name, top, dict(static), dict(mapping=mapping, synthesis=synthesis), src)

    D = TFNetworkStub("D", {"Output/weight": np.ones((8, 1), np.float32)}, dict(static), {}, src)
    remap = {TFNetworkStub: ("dnnlib.tflib.network", "Network")}
    _dump((generator("G"), D, generator("Gs")), path, protocol=4, remap=remap)
