"""LPIPS through torchmetrics' public metric: offline answers, safe loading of the backbone file, per-image values.

A randomly initialised torchvision SqueezeNet 1.1 stands in for the ImageNet file, so everything runs offline.
"""

from __future__ import annotations

import os

import pytest
import torch
import torchvision

from lightning_modules.lpips_distance import (
    LPIPSUnavailableError,
    load_lpips,
    lpips_backbone_file,
    lpips_or_none,
)


@pytest.fixture
def hub(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    _, path = lpips_backbone_file("squeeze")
    os.makedirs(os.path.dirname(path))
    return path


def write_random_squeezenet(path: str, seed: int) -> None:
    torch.manual_seed(seed)
    torch.save(torchvision.models.squeezenet1_1().state_dict(), path)


def images(n: int, seed: int) -> torch.Tensor:
    return torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_offline_without_the_backbone_file_names_it(hub):
    with pytest.raises(LPIPSUnavailableError, match="squeezenet1_1-b8a52dc0.pth.*downloading is off"):
        load_lpips("squeeze", download=False)
    model, reason = lpips_or_none("squeeze")
    assert model is None and "squeezenet1_1-b8a52dc0.pth" in reason
    assert not os.path.exists(hub)  # nothing was fetched or created


def test_distance_per_image_reads_the_file_and_has_gradients(hub, single_thread):
    write_random_squeezenet(hub, seed=0)
    lpips = load_lpips("squeeze", download=False)
    a, b = images(3, 1), images(3, 2)
    d = lpips(a, b)
    assert d.shape == (3,) and (d > 0).all()
    assert torch.allclose(lpips(a, a), torch.zeros(3), atol=1e-6)
    # Each image stands alone: batch values equal one-by-one values, and calls do not accumulate.
    singles = torch.cat([lpips(a[i:i + 1], b[i:i + 1]) for i in range(3)])
    assert torch.allclose(d, singles, atol=1e-5) and torch.allclose(lpips(a, b), d)
    # Generator output overshoots [-1, 1]: accepted (the public metric's call would refuse it), with gradients there.
    x = (a * 1.05).requires_grad_(True)
    lpips(x, b).sum().backward()
    outside = x.detach().abs() > 1
    assert outside.any() and x.grad[outside].abs().sum() > 0
    # Another backbone file gives other distances: the file in the hub cache is what is used.
    write_random_squeezenet(hub, seed=1)
    assert not torch.allclose(load_lpips("squeeze", download=False)(a, b), d)


class _Payload:
    def __reduce__(self):
        return (os.mkdir, (os.environ["LPIPS_PAYLOAD_MARKER"],))


def test_a_pickle_payload_in_the_cache_is_refused_unexecuted(hub, tmp_path, monkeypatch):
    marker = tmp_path / "payload-ran"
    monkeypatch.setenv("LPIPS_PAYLOAD_MARKER", str(marker))
    torch.save({"features.0.weight": _Payload()}, hub)
    switch = os.environ.get("TORCH_FORCE_WEIGHTS_ONLY_LOAD")
    with pytest.raises(LPIPSUnavailableError, match="squeezenet1_1-b8a52dc0.pth"):
        load_lpips("squeeze", download=False)
    assert not marker.exists()
    assert os.environ.get("TORCH_FORCE_WEIGHTS_ONLY_LOAD") == switch  # the switch is scoped to the load
