"""Which implementation runs an op: the `impl` argument, else STYLEGAN2_OPS_IMPL, else by device."""

from __future__ import annotations

import os

import torch

IMPLS = ("auto", "ref", "cpp", "cuda")
ENV_IMPL = "STYLEGAN2_OPS_IMPL"


def choose_impl(impl: str, x: torch.Tensor, op: str) -> str:
    """Resolve `impl` ('auto'|'ref'|'cpp'|'cuda') for tensor `x`; 'auto' defers to $STYLEGAN2_OPS_IMPL."""
    if impl not in IMPLS:
        raise ValueError(f"{op}: impl={impl!r}; expected one of {IMPLS}")
    if impl == "auto":
        impl = os.environ.get(ENV_IMPL, "auto") or "auto"
        if impl not in IMPLS:
            raise ValueError(f"{op}: ${ENV_IMPL}={impl!r}; expected one of {IMPLS}")
    if impl == "auto":
        return "ref"
    if impl != "ref":
        raise RuntimeError(f"{op}: impl={impl!r} is not available yet; use impl='ref'")
    return impl
