"""Which implementation runs an op, and the kernel extensions behind 'cpp' and 'cuda'.

`impl='auto'` defers to $STYLEGAN2_OPS_IMPL (ref|cpp|cuda|auto); 'auto' then means cuda for CUDA tensors, cpp for
CPU tensors, and ref when the tensor's dtype has no kernel or the build is unavailable (after one warning).
"""

from __future__ import annotations

import os
import platform
import re
import sys
from pathlib import Path
from types import ModuleType

import torch

from stylegan2_ops._build import BuildError, ExtensionSpec, load_extension

IMPLS = ("auto", "ref", "cpp", "cuda")
ENV_IMPL = "STYLEGAN2_OPS_IMPL"
ENV_CUDA_ARCHS = "STYLEGAN2_OPS_CUDA_ARCHS"
DEFAULT_CUDA_ARCHS = ("80", "90")
CSRC = Path(__file__).parent / "csrc"
HEADERS = (CSRC / "bias_act_math.h", CSRC / "upfirdn2d_math.h")
KERNEL_DTYPES = {
    "cpp": (torch.float32, torch.float64),
    "cuda": (torch.float16, torch.bfloat16, torch.float32, torch.float64),
}
FALLBACK_HINT = f"stylegan2_ops falls back to impl='ref' (slower); set {ENV_IMPL}=ref to skip the build"


def host_isa() -> str:
    """The host CPU's instruction-set flags (Linux), so that a -march=native build is never loaded on a CPU that
    lacks them: nodes of a cluster sharing one home directory each get their own build."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.split(":")[0].strip() in ("flags", "Features"):
                    return f"{platform.machine()} {line.split(':', 1)[1].strip()}"
    except OSError:
        pass
    return ""


def cpu_extension() -> ExtensionSpec:
    """The C++ kernels: OpenMP through at::parallel_for (torch's own libgomp). -fno-trapping-math lets the
    compiler vectorize compares and selects (it changes no result, only FP-exception flags); on Linux the code is
    tuned for the host CPU (-march=native, 1.3-1.4x faster upfirdn2d here), keyed by its instruction sets."""
    isa = host_isa() if sys.platform.startswith("linux") else ""
    return ExtensionSpec(
        name="stylegan2_ops_cpu",
        sources=(CSRC / "ops_cpu.cpp",),
        depends=HEADERS,
        extra_cflags=("-O3", *(("-march=native",) if isa else ()), "-fno-trapping-math", "-fopenmp"),
        extra_ldflags=("-fopenmp",),
        identity=isa,
        fallback_hint=FALLBACK_HINT,
    )


def cuda_archs() -> list[str]:
    """Target compute capabilities: $STYLEGAN2_OPS_CUDA_ARCHS (e.g. "80;90" or "8.0 9.0"), else 80 and 90 plus
    the visible GPU's own. Explicit targets let the build run on machines without a GPU."""
    env = os.environ.get(ENV_CUDA_ARCHS, "").strip()
    if env:
        archs = [a.replace(".", "").removeprefix("sm_") for a in re.split(r"[;,\s]+", env) if a]
        bad = [a for a in archs if not a.isdigit()]
        if bad:
            raise BuildError(f"${ENV_CUDA_ARCHS}={env!r}: cannot parse {bad}; expected e.g. '80;90'")
        return archs
    archs = list(DEFAULT_CUDA_ARCHS)
    if torch.cuda.is_available():
        major, minor = torch.cuda.get_device_capability()
        if f"{major}{minor}" not in archs:
            archs.append(f"{major}{minor}")
    return archs


def cuda_arch_flags(archs: list[str]) -> list[str]:
    """nvcc -gencode flags: machine code for every arch, plus PTX of the newest for GPUs not yet released."""
    archs = sorted(set(archs), key=int)
    flags = [f"-gencode=arch=compute_{a},code=sm_{a}" for a in archs]
    return [*flags, f"-gencode=arch=compute_{archs[-1]},code=compute_{archs[-1]}"]


def cuda_extension() -> ExtensionSpec:
    """The CUDA kernels (torch-free .cu, compiled by nvcc) and their PyTorch bindings."""
    return ExtensionSpec(
        name="stylegan2_ops_cuda",
        sources=(CSRC / "ops_cuda.cpp", CSRC / "ops_cuda_kernels.cu"),
        depends=(*HEADERS, CSRC / "ops_cuda.h"),
        extra_cflags=("-O3",),
        extra_cuda_cflags=("-O3", "-std=c++17", *cuda_arch_flags(cuda_archs())),
        with_cuda=True,
        fallback_hint=FALLBACK_HINT,
    )


# The outcome per impl, failures included: every op call asks, and after a failed build the spec need not be made
# again (cpu_extension reads /proc/cpuinfo) only for the loader to raise its remembered error.
_loaded: dict[str, ModuleType | BuildError] = {}


def kernels(impl: str) -> ModuleType:
    """The compiled extension for 'cpp' or 'cuda' (built on first use). Raises BuildError."""
    result = _loaded.get(impl)
    if result is None:
        try:
            result = load_extension(cpu_extension() if impl == "cpp" else cuda_extension())
        except BuildError as e:
            result = e
        _loaded[impl] = result
    if isinstance(result, BuildError):
        raise result
    return result


def choose_impl(impl: str, x: torch.Tensor, op: str) -> str:
    """Resolve `impl` ('auto'|'ref'|'cpp'|'cuda') for tensor `x` to the implementation that will run."""
    if impl not in IMPLS:
        raise ValueError(f"{op}: impl={impl!r}; expected one of {IMPLS}")
    source = f"impl={impl!r}"
    if impl == "auto":
        impl = os.environ.get(ENV_IMPL, "").strip() or "auto"
        source = f"${ENV_IMPL}={impl!r}"
        if impl not in IMPLS:
            raise ValueError(f"{op}: {source}; expected one of {IMPLS}")
    if impl == "ref":
        return "ref"
    if impl == "auto":
        kind = "cuda" if x.device.type == "cuda" else "cpp"
        if x.device.type not in ("cpu", "cuda") or x.dtype not in KERNEL_DTYPES[kind]:
            return "ref"
        try:
            kernels(kind)
        except BuildError:  # warned once by the loader
            return "ref"
        return kind
    device = "cuda" if impl == "cuda" else "cpu"
    if x.device.type != device:
        raise ValueError(f"{op}: {source} needs a {device} tensor, got one on {x.device}")
    if x.dtype not in KERNEL_DTYPES[impl]:
        raise ValueError(f"{op}: {source} supports {KERNEL_DTYPES[impl]}, got {x.dtype}")
    kernels(impl)  # raises BuildError with the cause
    return impl
