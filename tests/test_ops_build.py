"""Which implementation runs, and the JIT loader: lazy, once per process, lock-safe, never hanging.

Loader tests build a tiny pybind11-only extension (seconds), not the real kernels.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import pytest
import torch

import stylegan2_ops._build as build
import stylegan2_ops._impl as impl_mod
from stylegan2_ops import bias_act, setup_filter, upfirdn2d

TINY_SOURCE = """
#include <pybind11/pybind11.h>
int add_one(int v) { return v + 1; }
PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) { m.def("add_one", &add_one); }
"""


@pytest.fixture
def tiny_spec(tmp_path) -> build.ExtensionSpec:
    """A tiny extension with sources unique to the test (so that its build hash, and directory, is too)."""
    source = tmp_path / "tiny.cpp"
    source.write_text(TINY_SOURCE + f"// {tmp_path}\n")
    return build.ExtensionSpec(name="sg2_tiny", sources=(source,))


def _build_dir(spec: build.ExtensionSpec, root: Path) -> Path:
    return root / f"{spec.name}_{build.build_hash(spec)}"


def _compiles(build_dir: Path) -> int:
    """How many object files ninja compiled in this directory (its log lists each build step)."""
    log = build_dir / ".ninja_log"
    return sum(line.split("\t")[3].endswith(".o") for line in log.read_text().splitlines()[1:]) if log.exists() else 0


def _dead_pid() -> int:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(proc.stdout)


def test_auto_on_cpu_really_runs_the_cpp_kernels(monkeypatch):
    """Not skippable: with a C++ compiler, impl='auto' must run cpp (a silent fallback to ref fails CI)."""
    monkeypatch.delenv(impl_mod.ENV_IMPL, raising=False)
    x = torch.randn(2, 3, 8, 8)
    b = torch.randn(3)
    f = setup_filter([1, 3, 3, 1])
    want_b = bias_act(x, b, act="lrelu", impl="ref")
    want_u = upfirdn2d(x, f, up=2, padding=(2, 1, 2, 1), impl="ref")
    has_compiler = shutil.which(os.environ.get("CXX", "c++")) is not None
    if not has_compiler:  # then the fallback must be loud, never silent
        with pytest.warns(build.BuildWarning):
            assert impl_mod.choose_impl("auto", x, "test") == "ref"
        return

    def forbidden(*args, **kwargs):
        raise AssertionError("impl='auto' fell back to the reference on a CPU tensor")

    monkeypatch.setattr(importlib.import_module("stylegan2_ops.bias_act"), "bias_act_ref", forbidden)
    monkeypatch.setattr(importlib.import_module("stylegan2_ops.upfirdn2d"), "upfirdn2d_ref", forbidden)
    with warnings.catch_warnings():
        warnings.simplefilter("error", build.BuildWarning)
        assert impl_mod.choose_impl("auto", x, "test") == "cpp"
        torch.testing.assert_close(bias_act(x, b, act="lrelu"), want_b)
        torch.testing.assert_close(upfirdn2d(x, f, up=2, padding=(2, 1, 2, 1)), want_u)


def test_environment_variable_selects_the_implementation(monkeypatch):
    x = torch.randn(2, 3, 4)
    monkeypatch.setenv(impl_mod.ENV_IMPL, "ref")
    monkeypatch.setattr(impl_mod, "kernels", lambda impl: pytest.fail("STYLEGAN2_OPS_IMPL=ref must not load kernels"))
    assert impl_mod.choose_impl("auto", x, "test") == "ref"
    torch.testing.assert_close(bias_act(x, act="tanh"), torch.tanh(x))
    monkeypatch.setenv(impl_mod.ENV_IMPL, "cuda")
    with pytest.raises(ValueError, match="STYLEGAN2_OPS_IMPL='cuda' needs a cuda tensor"):
        bias_act(x)
    monkeypatch.setenv(impl_mod.ENV_IMPL, "fast")
    with pytest.raises(ValueError, match="STYLEGAN2_OPS_IMPL='fast'"):
        bias_act(x)
    # An explicit impl argument wins over the environment.
    monkeypatch.setenv(impl_mod.ENV_IMPL, "cuda")
    assert impl_mod.choose_impl("ref", x, "test") == "ref"
    # auto picks ref for dtypes the CPU kernels do not have, without building anything.
    monkeypatch.delenv(impl_mod.ENV_IMPL)
    assert impl_mod.choose_impl("auto", x.half(), "test") == "ref"


def test_import_builds_nothing(tmp_path):
    env = {**os.environ, build.ENV_BUILD_DIR: str(tmp_path / "ext")}
    code = "import sys, stylegan2_ops; print('torch.utils.cpp_extension' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    assert not (tmp_path / "ext").exists()


def test_failed_build_warns_once_falls_back_to_ref_and_is_not_retried(monkeypatch, tmp_path):
    bad = dataclasses.replace(impl_mod.cpu_extension(), extra_cflags=("-fthis-flag-does-not-exist",))
    monkeypatch.setattr(impl_mod, "cpu_extension", lambda: bad)
    monkeypatch.setattr(impl_mod, "_loaded", {})
    monkeypatch.setenv(build.ENV_BUILD_DIR, str(tmp_path))
    monkeypatch.delenv(impl_mod.ENV_IMPL, raising=False)
    builds = []
    real_build = build._build
    monkeypatch.setattr(build, "_build", lambda *args: builds.append(args) or real_build(*args))
    x = torch.randn(2, 3, 5, 5)
    b = torch.randn(3)
    f = setup_filter([1, 3, 3, 1])

    with pytest.warns(build.BuildWarning) as record:
        y = bias_act(x, b, act="lrelu")
    assert len(record) == 1
    message = str(record[0].message)
    assert "this-flag-does-not-exist" in message and "error" in message  # the compiler's own words
    assert "STYLEGAN2_OPS_IMPL=ref" in message  # how to skip the build
    torch.testing.assert_close(y, bias_act(x, b, act="lrelu", impl="ref"))

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no second warning
        torch.testing.assert_close(bias_act(x, b, act="lrelu"), y)
        torch.testing.assert_close(upfirdn2d(x, f, down=2), upfirdn2d(x, f, down=2, impl="ref"))
    with pytest.raises(build.BuildError, match="this-flag-does-not-exist"):
        bias_act(x, b, impl="cpp")  # explicit cpp raises the remembered cause
    assert len(builds) == 1


def test_two_processes_building_at_once_compile_once_and_both_load(tiny_spec, tmp_path):
    root = tmp_path / "ext"
    script = tmp_path / "load_tiny.py"
    script.write_text(
        "import sys, time\n"
        "from pathlib import Path\n"
        "from stylegan2_ops._build import ExtensionSpec, load_extension\n"
        "time.sleep(max(0.0, float(sys.argv[3]) - time.time()))  # start together, imports done\n"
        "m = load_extension(ExtensionSpec(name='sg2_tiny', sources=(Path(sys.argv[1]),)), Path(sys.argv[2]))\n"
        "print('RESULT', m.add_one(41))\n"
    )
    # As when the venv is not activated: its bin directory (with ninja) is not on PATH.
    venv_bin = os.path.dirname(sys.executable)
    path = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if os.path.abspath(p) != venv_bin)
    env = {**os.environ, "PATH": path}
    start = time.time() + 8
    args = [sys.executable, str(script), str(tiny_spec.sources[0]), str(root), str(start)]
    procs = [subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in "ab"]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err
        assert "RESULT 42" in out
    build_dir = _build_dir(tiny_spec, root)
    assert _compiles(build_dir) == 1
    assert not (build_dir / "build.lock").exists()


def test_stale_locks_of_a_killed_build_are_recovered(tiny_spec, tmp_path, monkeypatch):
    """Our lock held by a dead process, and torch's FileBaton left behind: the build neither waits nor hangs."""
    monkeypatch.setenv(build.ENV_LOCK_TIMEOUT, "3600")  # only the dead holder can explain a quick take-over
    root = tmp_path / "ext"
    build_dir = _build_dir(tiny_spec, root)
    build_dir.mkdir(parents=True)
    (build_dir / "build.lock").write_text(f"{_dead_pid()} {socket.gethostname()} {time.time()} killed\n")
    (build_dir / "lock").write_text("")  # torch's FileBaton would wait for this forever
    module = build.load_extension(tiny_spec, root)
    assert module.add_one(1) == 2
    assert not (build_dir / "build.lock").exists()
    assert build.load_extension(tiny_spec, root) is module  # remembered: no second build


def test_lock_taken_over_after_timeout_even_if_holder_looks_alive(tmp_path):
    path = tmp_path / "build.lock"
    path.write_text(f"{os.getpid()} other-host {time.time()} alive\n")  # a live-looking holder elsewhere
    old = time.time() - 120
    os.utime(path, (old, old))
    t0 = time.monotonic()
    with build.BuildLock(path, timeout=60):
        assert time.monotonic() - t0 < 30
        assert path.read_text().startswith(f"{os.getpid()} {socket.gethostname()}")
    assert not path.exists()


def test_lock_waits_for_a_live_holder_and_keeps_a_foreign_lock(tmp_path):
    path = tmp_path / "build.lock"
    holder = build.BuildLock(path, timeout=600)
    holder.acquire()
    acquired = threading.Event()

    def waiter():
        with build.BuildLock(path, timeout=600):
            acquired.set()

    thread = threading.Thread(target=waiter)
    thread.start()
    time.sleep(0.5)
    assert not acquired.is_set()  # the holder (this process) is alive and its lock fresh
    holder.release()
    thread.join(timeout=30)
    assert acquired.is_set()
    # A holder whose lock was taken over does not delete its successor's lock on release.
    first = build.BuildLock(path)
    first.acquire()
    path.write_text("123 somewhere-else 0 successor\n")
    first.release()
    assert path.read_text() == "123 somewhere-else 0 successor\n"


def test_ninja_of_the_interpreter_environment_is_found_without_path(monkeypatch):
    venv_bin = os.path.dirname(sys.executable)
    assert os.path.isfile(os.path.join(venv_bin, "ninja")), "ninja is a dependency of the package"
    monkeypatch.setenv("PATH", "/nonexistent")
    with build._ninja_on_path():
        assert shutil.which("ninja") == os.path.join(venv_bin, "ninja")
    assert os.environ["PATH"] == "/nonexistent"


def test_cuda_architectures(monkeypatch):
    monkeypatch.setenv(impl_mod.ENV_CUDA_ARCHS, "8.0; sm_90")
    assert impl_mod.cuda_archs() == ["80", "90"]
    flags = impl_mod.cuda_arch_flags(["90", "80"])
    assert flags == [
        "-gencode=arch=compute_80,code=sm_80",
        "-gencode=arch=compute_90,code=sm_90",
        "-gencode=arch=compute_90,code=compute_90",  # PTX for newer GPUs
    ]
    monkeypatch.setenv(impl_mod.ENV_CUDA_ARCHS, "ampere")
    with pytest.raises(build.BuildError, match="ampere"):
        impl_mod.cuda_archs()
    monkeypatch.delenv(impl_mod.ENV_CUDA_ARCHS)
    archs = impl_mod.cuda_archs()
    assert archs[:2] == ["80", "90"]
    if not torch.cuda.is_available():
        assert archs == ["80", "90"]


@pytest.mark.slow
@pytest.mark.cuda_build
def test_cuda_extension_builds_for_sm80_and_sm90_without_a_gpu(monkeypatch):
    """The real CUDA extension through the real loader; the binary holds machine code for both targets."""
    monkeypatch.setenv(impl_mod.ENV_CUDA_ARCHS, "80;90")
    spec = impl_mod.cuda_extension()
    module = build.load_extension(spec)
    assert {"bias_act_forward", "bias_act_grad", "upfirdn2d_forward"} <= set(dir(module))
    ninja_file = (Path(module.__file__).parent / "build.ninja").read_text()
    for arch in ("80", "90"):  # the flags nvcc really compiled with
        assert f"-gencode=arch=compute_{arch},code=sm_{arch}" in ninja_file
    cuobjdump = Path(build._cuda_home()) / "bin" / "cuobjdump"
    if cuobjdump.is_file():  # and, where the toolkit has the tool, the machine code in the binary
        listing = subprocess.run([str(cuobjdump), "--list-elf", module.__file__], capture_output=True, text=True)
        assert "sm_80" in listing.stdout and "sm_90" in listing.stdout, listing.stdout + listing.stderr
