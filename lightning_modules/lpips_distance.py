"""LPIPS (Zhang et al. 2018) through torchmetrics' public metric, with its ImageNet backbone loaded safely and offline
use made explicit: the one place the projector and the edit metrics get a perceptual distance from.

torchmetrics' `LearnedPerceptualImagePatchSimilarity` ships LPIPS' calibrated linear heads and builds the torchvision
backbone (VGG16, AlexNet or SqueezeNet 1.1) from torch's hub cache, downloading it when absent. Two things are added
here: the backbone file is located (and fetched, sha256-prefix checked) by us, so an offline machine answers with
`LPIPSUnavailableError` naming the file instead of a network error; and it is built with torch's documented
`TORCH_FORCE_WEIGHTS_ONLY_LOAD` switch set, because torchvision reads hub files with ``weights_only=False``.
"""

from __future__ import annotations

import os
import pickle
import re
import urllib.error
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

LPIPS_NETS = ("vgg", "alex", "squeeze")


class LPIPSUnavailableError(RuntimeError):
    """The ImageNet backbone weights LPIPS needs are neither cached nor downloadable, or are not those weights."""


def lpips_backbone_file(net: str) -> tuple[str, str]:
    """(url, local path) of the torchvision ImageNet weights LPIPS-`net` needs, in torch's hub cache
    (the file torchvision itself reads; TORCH_HOME moves it)."""
    import torchvision

    if net not in LPIPS_NETS:
        raise ValueError(f"LPIPS net must be one of {LPIPS_NETS}, got {net!r}")
    weights = {
        "vgg": torchvision.models.VGG16_Weights,
        "alex": torchvision.models.AlexNet_Weights,
        "squeeze": torchvision.models.SqueezeNet1_1_Weights,
    }[net].DEFAULT
    path = os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(weights.url))
    return weights.url, path


def fetch_lpips_backbone(net: str = "vgg", download: bool = True) -> str:
    """Local path of the ImageNet backbone weights LPIPS-`net` needs, downloading them (sha256-prefix
    checked) when missing and `download` is set. Raises LPIPSUnavailableError naming the file and URL."""
    url, path = lpips_backbone_file(net)
    if os.path.isfile(path):
        return path
    if not download:
        raise LPIPSUnavailableError(
            f"LPIPS ({net}) needs the ImageNet weights {path} (from {url}): not cached, and downloading is off."
        )
    os.makedirs(os.path.dirname(path), exist_ok=True)
    hash_prefix = re.search(r"-([a-f0-9]+)\.", os.path.basename(url))
    try:
        torch.hub.download_url_to_file(url, path, hash_prefix=hash_prefix.group(1) if hash_prefix else None)
    except (urllib.error.URLError, OSError, RuntimeError) as err:
        raise LPIPSUnavailableError(
            f"LPIPS ({net}) needs the ImageNet weights {path}: not cached, and downloading {url} failed "
            f"({err}). Run the projector once with network access (it fetches the file) or copy the file "
            f"there (TORCH_HOME moves the cache)."
        ) from err
    return path


def lpips_available(net: str = "vgg", download: bool = True) -> bool:
    """Whether LPIPS-`net` can be built here (fetching its backbone weights if allowed)."""
    try:
        fetch_lpips_backbone(net, download)
        return True
    except LPIPSUnavailableError:
        return False


@contextmanager
def _weights_only_loads() -> Iterator[None]:
    """Make every torch.load inside the block use weights_only=True (torch's TORCH_FORCE_WEIGHTS_ONLY_LOAD)."""
    previous = os.environ.get("TORCH_FORCE_WEIGHTS_ONLY_LOAD")
    os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = "1"
    try:
        yield
    finally:
        if previous is None:
            del os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"]
        else:
            os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = previous


class LPIPSDistance(nn.Module):
    """Per-image LPIPS distance (N,) between two batches of images in [-1, 1], differentiable in both.

    Built through the public metric, evaluated through its network (`metric.net`): the metric's own call refuses
    any value below -1, which generator output reaches (clamping it first changed what the projector converges to,
    see tests/test_projection.py), and it accumulates every score with its graph across calls.
    """

    def __init__(self, net: str = "vgg"):
        super().__init__()
        from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity

        self.net_name = net
        with _weights_only_loads():
            self.metric = LearnedPerceptualImagePatchSimilarity(net_type=net, reduction="none", sync_on_compute=False)
        self.requires_grad_(False).eval()

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.metric.net(a, b, normalize=False).reshape(-1)


def load_lpips(net: str = "vgg", device: str | torch.device = "cpu", download: bool = True) -> LPIPSDistance:
    """LPIPS-`net` on `device`. Raises LPIPSUnavailableError naming the backbone file when it is not cached (and
    cannot or may not be downloaded) or is not the torchvision ImageNet weights file."""
    path = fetch_lpips_backbone(net, download)
    try:
        model = LPIPSDistance(net)
    except (RuntimeError, pickle.UnpicklingError, KeyError, EOFError) as err:
        raise LPIPSUnavailableError(f"{path}: not the torchvision {net} ImageNet weights ({err})") from err
    return model.to(device)


def lpips_or_none(net: str = "vgg", device: str | torch.device = "cpu",
                  download: bool = False) -> tuple[LPIPSDistance | None, str | None]:
    """(LPIPS-`net`, None), or (None, the reason) when its backbone weights are unavailable: for metrics that are
    reported when possible and said to be missing otherwise. Never downloads unless asked."""
    try:
        return load_lpips(net, device, download), None
    except LPIPSUnavailableError as err:
        return None, f"LPIPS unavailable: {err}"
