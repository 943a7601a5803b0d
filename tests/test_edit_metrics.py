"""Edit metrics: preservation is LPIPS when its backbone is available and the named CLIP image similarity
otherwise (never silently), and the per-sound summary."""

import os

import pytest
import torch
import torchvision

from lightning_modules.clip_wrapper import CLIPWrapper
from lightning_modules.edit_metrics import format_table, make_preservation, per_sound_summary
from lightning_modules.lpips_distance import lpips_backbone_file

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture
def images():
    g = torch.Generator().manual_seed(0)
    a = torch.rand(2, 3, 32, 32, generator=g) * 2 - 1
    return a, (a + 0.5 * torch.randn(a.shape, generator=g)).clamp(-1, 1)


def test_offline_preservation_is_the_named_clip_image_similarity(tmp_path, monkeypatch, tiny_clip_path, images):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))
    clip_model = CLIPWrapper(tiny_clip_path)
    p = make_preservation("lpips", clip_model, lpips_net="vgg", lpips_download=False)
    assert p.metric == "clip_image_similarity" and p.higher_is_closer
    assert "LPIPS unavailable" in p.note and "vgg16" in p.note  # says which file is missing
    a, b = images
    torch.testing.assert_close(p(a, a), torch.ones(2), rtol=0, atol=1e-5)
    expected = (clip_model.encode_image(a) * clip_model.encode_image(b)).sum(-1)
    torch.testing.assert_close(p(a, b), expected)
    assert (p(a, b) < 1 - 1e-4).all()
    with pytest.raises(ValueError, match="preservation must be"):
        make_preservation("ssim", clip_model)


def test_lpips_preservation_with_a_random_backbone(tmp_path, monkeypatch, tiny_clip_path, images):
    """The LPIPS path offline: a randomly initialised SqueezeNet file where LPIPS looks for its backbone."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "home"))
    _, path = lpips_backbone_file("squeeze")
    os.makedirs(os.path.dirname(path))
    torch.manual_seed(0)
    torch.save(torchvision.models.squeezenet1_1().state_dict(), path)
    p = make_preservation("lpips", CLIPWrapper(tiny_clip_path), lpips_net="squeeze", lpips_download=False)
    assert p.metric == "lpips_squeeze" and not p.higher_is_closer and p.note is None
    a, b = images
    torch.testing.assert_close(p(a, a), torch.zeros(2), rtol=0, atol=1e-6)
    far = p(a, b)
    assert far.shape == (2,) and (far > 0).all()
    assert (p(a, (a + 0.5 * (b - a))) < far).all()  # half the change, closer


def test_per_sound_summary_means_and_table():
    pairs = [{"sound": "rain", "clip_gain": 0.1, "lpips_vgg": 0.2}, {"sound": "fire", "clip_gain": 0.3},
             {"sound": "rain", "clip_gain": 0.3, "lpips_vgg": 0.4}]
    rows = per_sound_summary(pairs, ["clip_gain", "lpips_vgg", "eval_gain"])
    assert [r["sound"] for r in rows] == ["rain", "fire"] and [r["pairs"] for r in rows] == [2, 1]
    assert rows[0]["clip_gain"] == pytest.approx(0.2) and rows[0]["lpips_vgg"] == pytest.approx(0.3)
    assert rows[1]["clip_gain"] == pytest.approx(0.3) and "lpips_vgg" not in rows[1] and "eval_gain" not in rows[0]
    table = format_table(rows, ["clip_gain", "lpips_vgg", "eval_gain"]).splitlines()
    assert table[0].split() == ["sound", "pairs", "clip_gain", "lpips_vgg"]  # a column nobody has is left out
    assert table[2].split() == ["fire", "1", "0.3000", "-"]
