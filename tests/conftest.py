"""Shared test setup: offline W&B, deterministic seeds, temporary output dirs, tiny CLIP files.

The tiny CLIP checkpoints are real `clip.model.CLIP` networks at small widths, written to disk
in the two formats users have (a plain state dict, and a TorchScript archive like OpenAI's own
`ViT-B-32.pt`), and loaded back through `clip.load(path, jit=False)` by the code under test.
"""

from __future__ import annotations

import os
import random
import shutil

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("WANDB_DISABLE_GIT", "true")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

# Small enough to build in well under a second, real CLIP architecture otherwise.
# Widths are multiples of 64 because clip.model.build_model derives heads = width // 64.
TINY_CLIP = dict(
    embed_dim=64,
    image_resolution=32,
    vision_layers=2,
    vision_width=64,
    vision_patch_size=8,
    context_length=77,
    vocab_size=49408,  # clip.tokenize emits ids up to 49407
    transformer_width=64,
    transformer_heads=1,
    transformer_layers=2,
)


def pytest_collection_modifyitems(config, items):
    no_gpu = pytest.mark.skip(reason="needs a CUDA device (none present on this machine)")
    no_nvcc = pytest.mark.skip(reason="needs nvcc on PATH or in CUDA_HOME to compile the CUDA sources")
    has_gpu = torch.cuda.is_available()
    has_nvcc = _find_nvcc() is not None
    for item in items:
        if "gpu" in item.keywords and not has_gpu:
            item.add_marker(no_gpu)
        if "cuda_build" in item.keywords and not has_nvcc:
            item.add_marker(no_nvcc)


def require_free_gpu_memory(gib: float) -> None:
    """Skip (with the numbers) on a GPU with less free memory than a large-tensor test needs."""
    free = torch.cuda.mem_get_info()[0] / 2**30
    if free < gib:
        pytest.skip(f"needs {gib:.0f} GiB of free GPU memory, {free:.1f} GiB free")


def _find_nvcc() -> str | None:
    home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH") or "/usr/local/cuda"
    cand = os.path.join(home, "bin", "nvcc")
    return cand if os.path.isfile(cand) else shutil.which("nvcc")


@pytest.fixture(scope="session", autouse=True)
def _ops_build_cache(request):
    """One JIT build cache for the stylegan2_ops kernels, shared by the session (and kept between runs in
    .pytest_cache; the build hash keys every change). An exported $STYLEGAN2_OPS_BUILD_DIR takes precedence."""
    if not os.environ.get("STYLEGAN2_OPS_BUILD_DIR"):
        os.environ["STYLEGAN2_OPS_BUILD_DIR"] = str(request.config.cache.mkdir("torch_extensions"))
    yield


@pytest.fixture
def single_thread():
    """One intra-op thread for the test: tiny tensors gain nothing from threads, and OpenMP barriers stall for
    whole scheduler slices when the 2 cores are shared with other jobs."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _deterministic_seeds():
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    yield


@pytest.fixture(autouse=True)
def _tmp_outputs(tmp_path, monkeypatch):
    """Every test writes W&B runs and outputs under its own temporary directory."""
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("AIARTIST_OUTPUT_DIR", str(tmp_path / "outputs"))
    yield


def build_tiny_clip(seed: int = 0, **overrides) -> torch.nn.Module:
    from clip.model import CLIP

    torch.manual_seed(seed)
    return CLIP(**{**TINY_CLIP, **overrides}).eval()


@pytest.fixture(scope="session")
def tiny_clip_state_dict_path(tmp_path_factory) -> str:
    """A tiny CLIP saved as a plain state dict (the format of fine-tuned CLIP files)."""
    path = tmp_path_factory.mktemp("clip") / "tiny_clip_state_dict.pt"
    torch.save(build_tiny_clip().state_dict(), path)
    return str(path)


@pytest.fixture(scope="session")
def tiny_clip_jit_path(tmp_path_factory) -> str:
    """A tiny CLIP saved as a TorchScript archive (the format of OpenAI's released files)."""
    model = build_tiny_clip()
    image = torch.randn(2, 3, TINY_CLIP["image_resolution"], TINY_CLIP["image_resolution"])
    import clip

    text = clip.tokenize(["a painting", "a sound"])
    traced = torch.jit.trace(model, (image, text), check_trace=False)
    path = tmp_path_factory.mktemp("clip") / "tiny_clip_jit.pt"
    traced.save(str(path))
    return str(path)


@pytest.fixture(scope="session")
def tiny_clip_path(tiny_clip_state_dict_path) -> str:
    """Default tiny CLIP file for tests that do not care about the format."""
    return tiny_clip_state_dict_path


# A StyleGAN2 generator small enough to build and run in milliseconds; real architecture otherwise.
TINY_GENERATOR = dict(size=16, style_dim=32, n_mlp=2, channels={4: 32, 8: 32, 16: 16})


def build_tiny_generator(seed: int = 0, **overrides):
    """A tiny `Generator` (TINY_GENERATOR, overridable) whose zero-initialised noise strengths and biases are made
    random too, so that every path of the network contributes to the image."""
    from lightning_modules.networks.stylegan2 import Generator

    torch.manual_seed(seed)
    G = Generator(**{**TINY_GENERATOR, **overrides})
    with torch.no_grad():
        for name, p in G.named_parameters():
            if torch.all(p == 0):
                p.normal_(0, 0.3)
            elif name.endswith("modulation.bias"):
                p.add_(0.3 * torch.randn_like(p))
    return G.eval()


@pytest.fixture(scope="session")
def tiny_generator_path(tmp_path_factory) -> str:
    """build_tiny_generator() saved by save_generator in rosinality's .pt format; load with load_generator."""
    from lightning_modules.networks.checkpoints import save_generator

    path = tmp_path_factory.mktemp("generator") / "tiny_generator.pt"
    save_generator(build_tiny_generator(), path)
    return str(path)
