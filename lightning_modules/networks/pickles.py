"""Read downloaded StyleGAN pickles (NVlabs stylegan2-ada-pytorch, TensorFlow-1 StyleGAN2) without running their code.

Unpickling calls whatever globals a file names. Our unpickler resolves only an allowlist, each name to an inert
stand-in: NVlabs persistent objects become `PersistentObject` records (their embedded module source is never
executed), TensorFlow `Network`s become `TFNetwork` records, tensor storages are read from their bytes with
`torch.load(weights_only=True)`, numpy arrays are rebuilt by numpy's own array reconstruction (numpy-1 paths
`numpy.core.*` mapped to numpy 2's `numpy._core.*`). Any other global raises `UnsafePickleError` before anything
is called, unless the caller trusts the file.
"""

from __future__ import annotations

import codecs
import io
import pickle
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from datamodules.torch_files import UnsafeFileError

try:  # numpy >= 2
    from numpy._core import multiarray as _np_multiarray
except ImportError:  # numpy 1
    from numpy.core import multiarray as _np_multiarray


class UnsafePickleError(UnsafeFileError):
    """A pickle asked for a global outside the allowlist; nothing it names has been called."""


@dataclass
class PersistentObject:
    """An NVlabs `torch_utils.persistence` object: its class name, constructor kwargs and module state,
    kept as data. The source code stored with it is ignored."""

    class_name: str
    state: dict[str, Any]

    @property
    def init_kwargs(self) -> dict[str, Any]:
        return dict(self.state.get("_init_kwargs") or {})

    def tensors(self, prefix: str = "") -> dict[str, torch.Tensor]:
        """Parameters and buffers of this module and its submodules, named like `state_dict()` keys."""
        out: dict[str, torch.Tensor] = {}
        for group in ("_parameters", "_buffers"):
            for name, value in (self.state.get(group) or {}).items():
                if isinstance(value, torch.Tensor):
                    out[prefix + name] = value
        for name, child in (self.state.get("_modules") or {}).items():
            if isinstance(child, PersistentObject):
                out.update(child.tensors(f"{prefix}{name}."))
        return out


class TFNetwork:
    """A `dnnlib.tflib.network.Network` from a TensorFlow-1 StyleGAN pickle, as data: name, static kwargs,
    component networks and variables (numpy arrays). TensorFlow is not needed."""

    def __init__(self) -> None:
        self.name = ""
        self.static_kwargs: dict[str, Any] = {}
        self.components: dict[str, TFNetwork] = {}
        self.own_variables: dict[str, np.ndarray] = {}

    def __setstate__(self, state: dict[str, Any]) -> None:
        if not isinstance(state, dict):
            raise pickle.UnpicklingError(f"TensorFlow Network state is a {type(state).__name__}, expected a dict")
        self.name = str(state.get("name", ""))
        self.static_kwargs = dict(state.get("static_kwargs") or {})
        self.components = dict(state.get("components") or {})
        self.own_variables = {str(k): np.asarray(v) for k, v in state.get("variables") or []}

    def variables(self) -> dict[str, np.ndarray]:
        """Own variables plus every component's, prefixed with the component's scope: 'G_mapping/Dense0/weight'."""
        out = dict(self.own_variables)
        for comp in self.components.values():
            if isinstance(comp, TFNetwork):
                out.update({f"{comp.name}/{k}": v for k, v in comp.variables().items()})
        return out


def _load_from_bytes(data: bytes) -> Any:
    # The real torch.storage._load_from_bytes calls torch.load(weights_only=False) on these bytes.
    if not isinstance(data, bytes | bytearray):
        raise UnsafePickleError(f"tensor storage payload is a {type(data).__name__}, expected bytes")
    return torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")


def _rebuild_tensor(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None):
    if not isinstance(storage, torch.storage.TypedStorage | torch.UntypedStorage):
        raise UnsafePickleError(f"tensor rebuilt from a {type(storage).__name__}, expected a storage")
    return torch._utils._rebuild_tensor_v2(storage, storage_offset, size, stride, False, OrderedDict())


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, state=None):
    # Parameters come back as plain tensors; hooks and Python attributes stored with them are dropped.
    return data


def _reconstruct_persistent_obj(meta: dict[str, Any]) -> PersistentObject:
    if not isinstance(meta, dict) or not isinstance(meta.get("state"), dict):
        raise pickle.UnpicklingError("torch_utils.persistence object without a state dict")
    return PersistentObject(class_name=str(meta.get("class_name", "?")), state=meta["state"])


def _codecs_encode(text: str, encoding: str = "latin1") -> bytes:
    # Protocol-2 pickles store bytes as latin-1 text re-encoded by `_codecs.encode`.
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise UnsafePickleError(f"_codecs.encode called with {type(text).__name__}, {encoding!r}")
    return codecs.encode(text, "latin1")


class EasyDict(dict):
    """Stand-in for `dnnlib.util.EasyDict` (a dict with attribute access)."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


def _allowlist() -> dict[tuple[str, str], Any]:
    """The globals a model pickle may name, each mapped to a stand-in that is safe on attacker-chosen arguments."""
    names: dict[tuple[str, str], Any] = {
        ("collections", "OrderedDict"): OrderedDict,
        ("builtins", "set"): set,
        ("builtins", "frozenset"): frozenset,
        ("_codecs", "encode"): _codecs_encode,
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
        ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
        ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
        ("torch.storage", "_load_from_bytes"): _load_from_bytes,
        ("torch_utils.persistence", "_reconstruct_persistent_obj"): _reconstruct_persistent_obj,
        ("dnnlib.util", "EasyDict"): EasyDict,
        ("dnnlib.tflib.network", "Network"): TFNetwork,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
    }
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        names[(module, "_reconstruct")] = _np_multiarray._reconstruct
        names[(module, "scalar")] = _np_multiarray.scalar
    return names


class RestrictedUnpickler(pickle.Unpickler):
    """Resolves only allowlisted globals; with `trust=True` other globals are imported as plain pickle would."""

    def __init__(self, file, source: str, trust: bool = False):
        super().__init__(file)
        self.source, self.trust = source, trust
        self.allowed = _allowlist()

    def find_class(self, module: str, name: str) -> Any:
        key = ("builtins" if module == "__builtin__" else module, name)
        if key in self.allowed:
            return self.allowed[key]
        if self.trust:
            return super().find_class(module, name)
        raise UnsafePickleError(
            f"{self.source}: the pickle asks for {module}.{name}, which is not among the names a StyleGAN model "
            "file needs; refusing to load it (nothing was executed). If you trust this file, pass trust_pickle=True."
        )

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError(f"{self.source}: unexpected persistent id {pid!r} (a torch.save archive?)")


def read_pickle(path: str | Path, trust: bool = False) -> Any:
    """Unpickle a model file through `RestrictedUnpickler`; errors name the file."""
    path = Path(path)
    with open(path, "rb") as f:
        try:
            return RestrictedUnpickler(f, str(path), trust=trust).load()
        except UnsafePickleError:
            raise
        except Exception as err:  # noqa: BLE001 - any failure of a foreign pickle is reported with its file
            raise pickle.UnpicklingError(f"{path}: truncated or corrupt pickle ({type(err).__name__}: {err})") from err
