"""Just-in-time build of C++/CUDA extensions with ninja: lazily, once per process, under a crash-safe file lock.

Known failure modes of JIT-built StyleGAN2 ops that this loader avoids: builds at import time on machines that
cannot compile, a failed build retried on every call, a stale lock (torch's FileBaton waits forever) hanging all
DDP ranks, and several ranks compiling the same extension at once.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import os
import shutil
import socket
import sys
import sysconfig
import threading
import time
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import torch

ENV_BUILD_DIR = "STYLEGAN2_OPS_BUILD_DIR"
ENV_VERBOSE = "STYLEGAN2_OPS_VERBOSE"
ENV_LOCK_TIMEOUT = "STYLEGAN2_OPS_LOCK_TIMEOUT"
DEFAULT_BUILD_DIR = "~/.cache/aiartist/torch_extensions"
# A lock older than this is taken over even if its holder may be alive (a builder on another host, or a hung one).
DEFAULT_LOCK_TIMEOUT_S = 900.0


class BuildError(RuntimeError):
    """An extension could not be built or imported; remembered for the rest of the process."""


class BuildWarning(UserWarning):
    """Issued once per extension and process when a build fails and the ops fall back to the reference."""


@dataclass(frozen=True)
class ExtensionSpec:
    """What to compile: `sources` are compiled; `depends` (headers) only enter the build hash."""

    name: str
    sources: tuple[Path, ...]
    depends: tuple[Path, ...] = ()
    extra_cflags: tuple[str, ...] = ()
    extra_cuda_cflags: tuple[str, ...] = ()
    extra_ldflags: tuple[str, ...] = ()
    with_cuda: bool = False
    identity: str = ""  # anything else the binary depends on, e.g. the host CPU's instruction sets
    fallback_hint: str = field(default="", compare=False)


def build_root() -> Path:
    """Where builds live: $STYLEGAN2_OPS_BUILD_DIR, else ~/.cache/aiartist/torch_extensions."""
    return Path(os.path.expanduser(os.environ.get(ENV_BUILD_DIR) or DEFAULT_BUILD_DIR))


@functools.lru_cache(maxsize=64)
def build_hash(spec: ExtensionSpec) -> str:
    """Hash of everything the binary depends on: sources, headers, flags, torch, CUDA and Python versions."""
    h = hashlib.sha256()
    parts = [
        spec.name,
        repr(spec.extra_cflags),
        repr(spec.extra_cuda_cflags),
        repr(spec.extra_ldflags),
        repr(spec.with_cuda),
        spec.identity,
        torch.__version__,
        str(torch.version.cuda),
        sys.version,
        str(sysconfig.get_config_var("EXT_SUFFIX")),
        os.environ.get("CXX", ""),
        _cuda_home() if spec.with_cuda else "",
    ]
    for part in parts:
        h.update(part.encode() + b"\0")
    for path in (*spec.sources, *spec.depends):
        h.update(Path(path).name.encode() + b"\0" + Path(path).read_bytes() + b"\0")
    return h.hexdigest()[:16]


_results: dict[str, ModuleType | BuildError] = {}
_results_lock = threading.Lock()


def load_extension(spec: ExtensionSpec, root: Path | None = None) -> ModuleType:
    """The built extension module, compiling it on the first call of this process. Raises BuildError.

    The outcome is remembered per process: a failure warns once (BuildWarning, with the compiler's last lines)
    and every later call raises the same BuildError at once instead of rebuilding.
    """
    try:
        module_name = f"{spec.name}_{build_hash(spec)}"
    except OSError as e:
        raise BuildError(f"{spec.name}: cannot read the sources: {e}") from e
    with _results_lock:
        result = _results.get(module_name)
        if result is None:
            directory = (root or build_root()) / module_name
            try:
                result = _build(spec, module_name, directory)
            except Exception as e:  # the cause is reported, and remembered so that no call retries the build
                result = BuildError(f"building {spec.name} in {directory} failed:\n{_last_lines(str(e))}")
                result.__cause__ = e
                hint = spec.fallback_hint or "the callers fall back to their reference implementation"
                warnings.warn(
                    f"{result}\n{hint}. Set {ENV_VERBOSE}=1 to see the full compiler output.",
                    BuildWarning,
                    stacklevel=3,
                )
            _results[module_name] = result
    if isinstance(result, BuildError):
        raise result
    return result


def _last_lines(text: str, n: int = 15) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return "\n".join(lines[-n:])


def _cpp_extension() -> ModuleType:
    """torch.utils.cpp_extension, imported only when building (its import logs a misleading "No CUDA runtime"
    warning on CPU-only machines, silenced here)."""
    logger = logging.getLogger("torch.utils.cpp_extension")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        import torch.utils.cpp_extension as cpp_extension
    finally:
        logger.setLevel(level)
    return cpp_extension


def _has_toolkit(home: str | None) -> bool:
    return bool(home) and all(os.path.isfile(os.path.join(home, *p)) for p in (("bin", "nvcc"), ("include", "cuda.h")))


def _cuda_home() -> str:
    """The CUDA toolkit: $CUDA_HOME / $CUDA_PATH if set, else the first of torch's guess, the toolkit of the
    `nvcc` on PATH and /usr/local/cuda that has both nvcc and the headers. (torch guesses dirname(dirname(nvcc)),
    wrong when nvcc is a wrapper script outside the toolkit, e.g. /usr/local/bin/nvcc.)"""
    explicit = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    if explicit:
        return explicit
    torch_guess = _cpp_extension().CUDA_HOME
    nvcc = shutil.which("nvcc")
    candidates = [torch_guess, os.path.dirname(os.path.dirname(os.path.realpath(nvcc))) if nvcc else None]
    for home in (*candidates, "/usr/local/cuda"):
        if _has_toolkit(home):
            return str(home)
    return str(torch_guess)


def _build(spec: ExtensionSpec, module_name: str, directory: Path) -> ModuleType:
    cpp_extension = _cpp_extension()
    if spec.with_cuda:
        cpp_extension.CUDA_HOME = _cuda_home()  # read by torch at build time; see _cuda_home

    directory.mkdir(parents=True, exist_ok=True)
    verbose = os.environ.get(ENV_VERBOSE, "") not in ("", "0")
    timeout = float(os.environ.get(ENV_LOCK_TIMEOUT) or DEFAULT_LOCK_TIMEOUT_S)
    with BuildLock(directory / "build.lock", timeout), _ninja_on_path():
        # Any builder holds our lock, so torch's own lock file here can only be left over by a killed build;
        # removed, it cannot make torch's FileBaton wait forever.
        with contextlib.suppress(FileNotFoundError):
            (directory / "lock").unlink()
        return cpp_extension.load(
            name=module_name,
            sources=[str(s) for s in spec.sources],
            extra_cflags=list(spec.extra_cflags),
            extra_cuda_cflags=list(spec.extra_cuda_cflags),
            extra_ldflags=list(spec.extra_ldflags),
            build_directory=str(directory),
            with_cuda=spec.with_cuda,
            verbose=verbose,
        )


def ninja_dirs() -> list[str]:
    """Directories that may hold the running interpreter's `ninja`: its bin dir, then the ninja package's."""
    dirs = [os.path.dirname(sys.executable)]
    with contextlib.suppress(ImportError, AttributeError):
        import ninja  # the PyPI package ships the binary

        dirs.append(str(ninja.BIN_DIR))
    return [d for d in dirs if os.path.isfile(os.path.join(d, "ninja"))]


@contextlib.contextmanager
def _ninja_on_path() -> Iterator[None]:
    """Put the interpreter environment's ninja first on PATH while building (the venv need not be activated)."""
    old = os.environ.get("PATH", "")
    extra = [d for d in ninja_dirs() if d not in old.split(os.pathsep)]
    if extra:
        os.environ["PATH"] = os.pathsep.join([*extra, old])
    try:
        if shutil.which("ninja") is None:
            raise BuildError("ninja not found (pip install ninja into this interpreter's environment)")
        yield
    finally:
        if extra:
            os.environ["PATH"] = old


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


class BuildLock:
    """An exclusive lock file recording its holder ("pid host time token").

    Waiters take it over when the holder process is gone (same host) or when the file is older than `timeout`
    seconds (a holder on another host, or a hung one), so a killed build never blocks the others for good.
    """

    def __init__(self, path: Path, timeout: float = DEFAULT_LOCK_TIMEOUT_S, poll: float = 0.1) -> None:
        self.path = Path(path)
        self.timeout = timeout
        self.poll = poll
        self.token = f"{os.getpid()} {socket.gethostname()} {time.time():.3f} {uuid.uuid4().hex}\n"

    def __enter__(self) -> BuildLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def acquire(self) -> None:
        while True:
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self._read(self.path)
                if holder is not None and self._stale(holder):
                    self._take_over(holder)
                else:
                    time.sleep(self.poll)
                continue
            with os.fdopen(fd, "w") as fh:
                fh.write(self.token)
            return

    def release(self) -> None:
        if self._read(self.path) == self.token:  # a waiter may have taken a timed-out lock over
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()

    @staticmethod
    def _read(path: Path) -> str | None:
        try:
            return path.read_text()
        except (FileNotFoundError, UnicodeDecodeError):
            return None

    def _stale(self, holder: str) -> bool:
        try:
            age = time.time() - self.path.stat().st_mtime
        except FileNotFoundError:
            return False  # released meanwhile; retry at once
        if age > self.timeout:
            return True
        fields = holder.split()
        if len(fields) < 2 or not fields[0].isdigit():
            return False  # being written right now (or foreign): only the timeout applies
        return fields[1] == socket.gethostname() and not pid_alive(int(fields[0]))

    def _take_over(self, holder: str) -> None:
        """Remove the stale lock atomically; if another waiter replaced it meanwhile, put theirs back."""
        moved = self.path.with_name(f"{self.path.name}.stale-{uuid.uuid4().hex}")
        try:
            os.rename(self.path, moved)
        except FileNotFoundError:
            return
        if self._read(moved) != holder:
            with contextlib.suppress(FileExistsError):
                os.link(moved, self.path)
        with contextlib.suppress(FileNotFoundError):
            moved.unlink()
