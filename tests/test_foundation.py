"""Foundation: packages import, tiny CLIP files load through clip.load, the wheel ships its data."""

import subprocess
import sys
import zipfile
from pathlib import Path

import clip
import pytest
import torch

from lightning_modules.clip_wrapper import (
    CLIP_MEAN,
    CLIP_STD,
    CLIPWrapper,
    clip_preprocess,
    resolve_clip_file,
)

REPO = Path(__file__).resolve().parents[1]


def test_packages_import():
    import datamodules  # noqa: F401
    import experiments  # noqa: F401
    import lightning_modules  # noqa: F401
    import stylegan2_ops  # noqa: F401


@pytest.mark.parametrize("fmt", ["state_dict", "jit"])
def test_tiny_clip_loads_through_clip_load(fmt, tiny_clip_state_dict_path, tiny_clip_jit_path):
    path = tiny_clip_state_dict_path if fmt == "state_dict" else tiny_clip_jit_path
    if fmt == "jit":  # the TorchScript route is taken, as for OpenAI's real files
        torch.jit.load(path)
    model, _ = clip.load(path, device="cpu", jit=False)
    with torch.no_grad():
        img = model.encode_image(torch.randn(3, 3, 32, 32))
        txt = model.encode_text(clip.tokenize(["fire", "rain", "wind", "a painting"]))
    assert img.shape == (3, 64) and txt.shape == (4, 64)
    assert torch.isfinite(img).all() and torch.isfinite(txt).all()


def test_wrapper_encodes_normalised_and_differentiable(tiny_clip_jit_path):
    wrap = CLIPWrapper(tiny_clip_jit_path)
    assert wrap.embed_dim == 64 and wrap.input_resolution == 32
    t = wrap.encode_text(["This is a sound of fire crackling.", "rain"])
    assert t.shape == (2, 64) and torch.allclose(t.norm(dim=-1), torch.ones(2), atol=1e-5)
    images = (torch.rand(2, 3, 48, 48) * 2 - 1).requires_grad_(True)
    e = wrap.encode_image(images)
    e.sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0
    # CLIP weights stay frozen
    assert all(not p.requires_grad for p in wrap.model.parameters())


def test_clip_preprocess_matches_manual_normalisation():
    images = torch.rand(1, 3, 32, 32) * 2 - 1  # already at the input size: no resize
    out = clip_preprocess(images, 32)
    expect = ((images + 1) / 2 - torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)) / torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    torch.testing.assert_close(out, expect)


def test_missing_clip_file_error_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        resolve_clip_file(str(tmp_path / "nope.pt"))


def test_offline_named_model_error_says_where(tmp_path, monkeypatch):
    def offline(*a, **k):
        raise OSError("network unreachable")

    monkeypatch.setattr(clip.clip, "_download", offline)
    with pytest.raises(FileNotFoundError, match="make weights"):
        resolve_clip_file("ViT-B/32", download_root=str(tmp_path))


@pytest.mark.slow
def test_wheel_ships_kernel_sources_and_configs(tmp_path):
    """An editable install hides missing package data: build the wheel and read its file list."""
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path), str(REPO)],
        check=True,
    )
    wheel = next(tmp_path.glob("aiartist-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    for pkg in ("datamodules", "lightning_modules", "stylegan2_ops", "experiments"):
        assert any(n.startswith(pkg + "/") for n in names), pkg
    repo_data = [
        p.relative_to(REPO).as_posix()
        for pattern in ("stylegan2_ops/csrc/*", "experiments/**/*.yaml")
        for p in REPO.glob(pattern)
    ]
    missing = [p for p in repo_data if p not in names]
    assert not missing, f"package data missing from the wheel: {missing}"
