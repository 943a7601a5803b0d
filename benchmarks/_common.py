"""What every benchmark shares: timing one call, interleaved medians, and the header that says where a number came from.

Timings are wall and process CPU time (summed over threads; steadier than wall time on a shared machine). The
header names the machine, its load, torch and its threads, the allocator environment (it changes CPU timings:
docs/reference.md §allocator) and the code version, so a row in benchmarks/RESULTS.md can be traced to a commit.
"""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable, Hashable, Mapping
from pathlib import Path
from typing import TypeVar

import torch

K = TypeVar("K", bound=Hashable)


def _sync(device: str | torch.device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def timed(fn: Callable[[], object], device: str | torch.device = "cpu") -> tuple[float, float]:
    """(wall s, process CPU s) of one call of `fn`; CUDA work is synchronised before and after."""
    _sync(device)
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    _sync(device)
    return time.perf_counter() - wall, time.process_time() - cpu


def interleaved_medians(cases: Mapping[K, Callable[[], object]], repeats: int, device: str | torch.device = "cpu",
                        warmup: int = 1, burst: int = 1) -> dict[K, tuple[float, float]]:
    """Median (wall s, CPU s) per call of every case. After `warmup` untimed calls each, the cases take turns within
    every repeat, so a change in a shared machine's load hits all of them alike (compare them by ratio). One sample
    is `burst` calls between two synchronisations, so a GPU launch's latency does not hide the kernel time."""
    for fn in cases.values():
        for _ in range(warmup):
            fn()
    _sync(device)
    samples: dict[K, list[tuple[float, float]]] = {key: [] for key in cases}
    for _ in range(repeats):
        for key, fn in cases.items():
            wall, cpu = timed(lambda fn=fn: [fn() for _ in range(burst)], device)
            samples[key].append((wall / burst, cpu / burst))
    return {key: (statistics.median(s[0] for s in ss), statistics.median(s[1] for s in ss))
            for key, ss in samples.items()}


def allocator_env() -> str:
    """The environment that changes the CPU allocator (glibc MALLOC_* tunables, LD_PRELOAD), or 'glibc defaults'."""
    items = [f"{k}={v}" for k, v in sorted(os.environ.items()) if k.startswith("MALLOC_") or k == "LD_PRELOAD"]
    return " ".join(items) or "glibc defaults"


def cpu_name() -> str:
    """The CPU's model name (from /proc/cpuinfo where there is one)."""
    try:
        with open("/proc/cpuinfo") as fh:
            return next(line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def code_version() -> str:
    """The commit the benchmark ran from (short hash, '+changes' when the work tree differs), or 'unknown'."""
    root = Path(__file__).resolve().parents[1]
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                             check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return sha + ("+changes" if dirty else "")


def machine_header(device: str | torch.device = "cpu") -> str:
    """One line naming the machine, its load, torch and its threads, the allocator environment and the code version."""
    device = torch.device(device)
    where = (f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda}); CPU {cpu_name()}"
             if device.type == "cuda" else cpu_name())
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"machine: {where}, {os.cpu_count()} logical cores, load average {load:.1f}; torch {torch.__version__}, "
            f"{torch.get_num_threads()} intra-op thread(s); allocator: {allocator_env()}; code {code_version()}")
