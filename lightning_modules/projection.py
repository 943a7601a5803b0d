"""Projection of images into StyleGAN2's W+ space by optimisation (GAN inversion), so a user's own
painting can be edited like a generated one.

The algorithm is the StyleGAN2 projector (Karras et al. 2020, "Analyzing and Improving the Image
Quality of StyleGAN", Appendix D), with one code per synthesis layer (W+) instead of a single w:
start every layer's code at the mean latent; Adam with a linear lr warm-up and cosine ramp-down;
Gaussian noise added to w early on (scaled by the spread of W, ramped to zero) to explore; optionally
the per-layer noise maps are optimised too, kept Gaussian by a multi-scale autocorrelation penalty and
renormalised to zero mean / unit variance after every step.

The reconstruction loss is a weighted sum chosen in `ProjectionConfig`: LPIPS (`lpips_distance`: torchmetrics'
public metric, ImageNet backbone weights from torchvision's cache), CLIP image-feature distance, and a pixel L1/L2
term at reduced resolution. Every term is computed per image and summed over the batch, so each image
gets its own gradient and projecting a batch equals projecting its images one by one.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.functional.image import peak_signal_noise_ratio
from tqdm.auto import tqdm

from lightning_modules.clip_wrapper import CLIPWrapper
from lightning_modules.lpips_distance import LPIPS_NETS, LPIPSUnavailableError, load_lpips
from lightning_modules.manipulation import styleclip_lr  # the StyleGAN2 projector's schedule, same formula

LPIPS_FALLBACKS = ("drop", "clip", "error")
PIXEL_LOSSES = ("l2", "l1")


@dataclass
class ProjectionConfig:
    """Every knob of the projector; defaults (StyleGAN2 projector values) are documented in
    experiments/projection/default.yaml."""

    steps: int = 1000
    lr: float = 0.1
    lr_rampup: float = 0.05  # fraction of steps with a linear lr warm-up
    lr_rampdown: float = 0.25  # fraction of steps with a cosine lr ramp-down
    w_noise_scale: float = 0.05  # std of the exploration noise added to w, in units of W's spread
    w_noise_ramp: float = 0.75  # fraction of steps after which that noise has decayed (quadratically) to 0
    w_avg_samples: int = 10000  # mapped z used to estimate W's spread
    optimize_noise: bool = False
    noise_regularize: float = 1e5  # weight of the noise autocorrelation penalty (used when optimize_noise)
    lpips_weight: float = 1.0
    lpips_net: str = "vgg"
    lpips_resolution: int = 256  # images are resized to this before LPIPS
    lpips_download: bool = True  # fetch the ImageNet backbone weights when not cached
    lpips_fallback: str = "drop"  # LPIPS weights unavailable: "drop" the term, move its weight to "clip", "error"
    clip_weight: float = 0.0
    clip_model: str = "ViT-B/32"
    pixel_weight: float = 1.0
    pixel_loss: str = "l2"
    pixel_resolution: int = 64  # images larger than this are area-downsampled before the pixel term
    seed: int = 0  # seed of each image's exploration noise (seeds passed to project() override it)
    save_every: int = 0  # call the snapshot hook every k steps (0: never)

    def __post_init__(self):
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if self.lpips_net not in LPIPS_NETS:
            raise ValueError(f"lpips_net must be one of {LPIPS_NETS}, got {self.lpips_net!r}")
        if self.lpips_fallback not in LPIPS_FALLBACKS:
            raise ValueError(f"lpips_fallback must be one of {LPIPS_FALLBACKS}, got {self.lpips_fallback!r}")
        if self.pixel_loss not in PIXEL_LOSSES:
            raise ValueError(f"pixel_loss must be one of {PIXEL_LOSSES}, got {self.pixel_loss!r}")
        for name in ("lpips_weight", "clip_weight", "pixel_weight", "noise_regularize"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")

    def result_fields(self) -> dict:
        """The fields that change the projected code (used as a cache key); save_every does not."""
        fields = asdict(self)
        fields.pop("save_every")
        return fields


# ---------------------------------------------------------------------------------------------------------
# Noise maps


def noise_regularization(noises: Sequence[torch.Tensor]) -> torch.Tensor:
    """Per-image penalty (N,) on the spatial autocorrelation of noise maps (N, 1, r, r), at every scale.

    For each map and each of its 2x2-average-pooled versions (x2, keeping unit variance) down to 8x8, the
    squared mean product of neighbouring pixels along x and along y: zero in expectation for white noise,
    so the optimiser cannot hide image content in the noise.
    """
    reg = noises[0].new_zeros(noises[0].shape[0])
    for noise in noises:
        while True:
            reg = reg + (noise * noise.roll(1, dims=3)).mean(dim=(1, 2, 3)).square()
            reg = reg + (noise * noise.roll(1, dims=2)).mean(dim=(1, 2, 3)).square()
            if noise.shape[-1] <= 8:
                break
            noise = F.avg_pool2d(noise, 2) * 2.0
    return reg


@torch.no_grad()
def normalize_noise_(noises: Sequence[torch.Tensor]) -> None:
    """Renormalise each image's noise maps to zero mean and unit variance, in place."""
    for noise in noises:
        mean = noise.mean(dim=(1, 2, 3), keepdim=True)
        std = noise.std(dim=(1, 2, 3), keepdim=True)
        noise.sub_(mean).div_(std)


# ---------------------------------------------------------------------------------------------------------
# Reconstruction loss


def _resize(images: torch.Tensor, size: int) -> torch.Tensor:
    """Square resize: area averaging when shrinking (exact for integer factors), bilinear when enlarging."""
    if images.shape[-1] == size:
        return images
    mode = "area" if images.shape[-1] > size else "bilinear"
    return F.interpolate(images, size=(size, size), mode=mode, **({} if mode == "area" else {"align_corners": False}))


class ReconstructionLoss:
    """Weighted per-image distance (N,) between generated images and fixed targets, both in [-1, 1].

    Terms with weight 0 are not computed. Target features are computed once in `set_targets`.
    """

    def __init__(self, weights: dict[str, float], config: ProjectionConfig, lpips: nn.Module | None = None,
                 clip: CLIPWrapper | None = None):
        self.weights = {name: w for name, w in weights.items() if w > 0}
        self.config = config
        self.lpips = lpips
        self.clip = clip
        if "lpips" in self.weights and lpips is None:
            raise ValueError("the LPIPS term has a weight but no LPIPS network was given")
        if "clip" in self.weights and clip is None:
            raise ValueError("the CLIP term has a weight but no CLIP model was given")

    @torch.no_grad()
    def set_targets(self, targets: torch.Tensor) -> None:
        self.targets = targets
        if "lpips" in self.weights:
            self.lpips_targets = _resize(targets, self.config.lpips_resolution)
        if "clip" in self.weights:
            self.clip_targets = self.clip.encode_image(targets)
        if "pixel" in self.weights:
            self.pixel_targets = _resize(targets, min(self.config.pixel_resolution, targets.shape[-1]))

    def terms(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Unweighted per-image values (N,) of every active term."""
        out = {}
        if "lpips" in self.weights:
            out["lpips"] = self.lpips(_resize(images, self.config.lpips_resolution), self.lpips_targets).flatten()
        if "clip" in self.weights:
            out["clip"] = 1.0 - (self.clip.encode_image(images) * self.clip_targets).sum(dim=-1)
        if "pixel" in self.weights:
            diff = _resize(images, self.pixel_targets.shape[-1]) - self.pixel_targets
            diff = diff.square() if self.config.pixel_loss == "l2" else diff.abs()
            out["pixel"] = diff.mean(dim=(1, 2, 3))
        return out

    def total(self, terms: dict[str, torch.Tensor]) -> torch.Tensor:
        return sum(self.weights[name] * value for name, value in terms.items())


# ---------------------------------------------------------------------------------------------------------
# Projector


@dataclass
class ProjectionResult:
    """Outputs of one projected batch (all on the CPU)."""

    w_plus: torch.Tensor  # (N, n_latent, style_dim)
    images: torch.Tensor  # (N, 3, R, R) reconstructions in [-1, 1] (with the projected noise, if any)
    noise: list[torch.Tensor] | None  # per layer (N, 1, r, r) when noise maps were optimised
    history: dict[str, torch.Tensor]  # loss term -> (steps, N), "total" included
    metrics: list[dict] = field(default_factory=list)  # per image


@torch.no_grad()
def latent_stats(generator: nn.Module, n: int, seed: int = 0) -> tuple[torch.Tensor, float]:
    """Mean latent (1, style_dim) (the generator's own, stored or estimated) and the spread of W,
    sqrt(E||w - w_avg||^2), from `n` mapped z drawn with a fixed seed."""
    device = next(generator.parameters()).device
    w_avg = generator.mean_latent().to(device).reshape(1, -1)
    z = torch.randn(n, generator.style_dim, generator=torch.Generator().manual_seed(seed)).to(device)
    w = torch.cat([generator.mapping(chunk) for chunk in z.split(4096)])
    return w_avg, float((w - w_avg).square().sum(dim=1).mean().sqrt())


class Projector:
    """Finds W+ codes (and optionally noise maps) whose images reproduce the targets."""

    def __init__(self, generator: nn.Module, config: ProjectionConfig | None = None,
                 clip: CLIPWrapper | None = None, lpips: nn.Module | None = None):
        self.config = config = config or ProjectionConfig()
        self.G = generator.eval().requires_grad_(False)
        self.device = next(generator.parameters()).device
        self.notes: list[str] = []  # what deviated from the config (LPIPS missing), saved with the metrics
        self.lpips = lpips if lpips is not None else self._try_lpips()
        weights = {"lpips": config.lpips_weight, "clip": config.clip_weight, "pixel": config.pixel_weight}
        if config.lpips_weight > 0 and self.lpips is None:
            if config.lpips_fallback == "error":
                raise LPIPSUnavailableError(self.notes[-1] + " (lpips_fallback: error)")
            if config.lpips_fallback == "clip":
                weights["clip"] += weights["lpips"]
            weights["lpips"] = 0.0
            self.notes.append(f"LPIPS term dropped (lpips_fallback: {config.lpips_fallback}); weights now {weights}")
            warnings.warn("\n".join(self.notes), stacklevel=2)
        if not any(w > 0 for w in weights.values()):
            raise ValueError(
                "all reconstruction weights (lpips_weight, clip_weight, pixel_weight) are zero"
                + (" after dropping LPIPS" if config.lpips_weight > 0 else "") + ": nothing would drive the projection."
            )
        if clip is None and weights["clip"] > 0:
            clip = CLIPWrapper(config.clip_model, device=self.device)
        self.clip = clip
        self.loss = ReconstructionLoss(weights, config, lpips=self.lpips, clip=clip)
        self.w_avg, self.w_std = latent_stats(generator, config.w_avg_samples)

    def _try_lpips(self) -> nn.Module | None:
        """LPIPS for the loss and the metrics, or None with a note saying why. With lpips_weight 0 it is only a
        metric: loaded when its weights are cached, never downloaded for that."""
        cfg = self.config
        try:
            return load_lpips(cfg.lpips_net, self.device, download=cfg.lpips_download and cfg.lpips_weight > 0)
        except LPIPSUnavailableError as err:
            self.notes.append(f"LPIPS unavailable: {err}")
            return None

    def fixed_noise(self, n: int) -> list[torch.Tensor]:
        """The generator's stored noise maps, one copy per image: (n, 1, r, r) per layer."""
        return [buf.detach().to(self.device).expand(n, -1, -1, -1).clone() for buf in self.G.stored_noise()]

    def project(self, targets: torch.Tensor, seeds: Sequence[int] | None = None,
                snapshot: Callable[[int, torch.Tensor], None] | None = None, progress: bool = True) -> ProjectionResult:
        """Project targets (N, 3, R, R) in [-1, 1]; image i's exploration noise is drawn from seeds[i]
        (default: config.seed for every image), so its result does not depend on the batch it is in."""
        cfg, G = self.config, self.G
        n = targets.shape[0]
        if targets.shape[1:] != (3, G.size, G.size):
            raise ValueError(f"targets must be (N, 3, {G.size}, {G.size}) for this generator, "
                             f"got {tuple(targets.shape)}")
        seeds = [cfg.seed] * n if seeds is None else list(seeds)
        if len(seeds) != n:
            raise ValueError(f"got {len(seeds)} seeds for {n} images")
        targets = targets.to(self.device, torch.float32)
        self.loss.set_targets(targets)

        w_plus = self.w_avg.reshape(1, 1, -1).repeat(n, G.n_latent, 1).requires_grad_(True)
        noise = self.fixed_noise(n)
        params = [w_plus]
        if cfg.optimize_noise:
            params += [buf.requires_grad_(True) for buf in noise]
        optimizer = torch.optim.Adam(params, lr=cfg.lr, betas=(0.9, 0.999))
        rngs = [torch.Generator(device=self.device).manual_seed(int(s)) for s in seeds]
        history: dict[str, list[torch.Tensor]] = {}

        bar = tqdm(range(cfg.steps), desc=f"project {n} image{'s' * (n > 1)}", disable=not progress, leave=False)
        for step in bar:
            t = step / cfg.steps
            for group in optimizer.param_groups:
                group["lr"] = styleclip_lr(step, cfg.steps, cfg.lr, rampdown=cfg.lr_rampdown, rampup=cfg.lr_rampup)
            w_noise_std = self.w_std * cfg.w_noise_scale * max(0.0, 1.0 - t / cfg.w_noise_ramp) ** 2
            w_input = w_plus
            if w_noise_std > 0:
                explore = torch.stack([torch.randn(w_plus.shape[1:], generator=g, device=self.device) for g in rngs])
                w_input = w_plus + w_noise_std * explore
            images = G.synthesis(w_input, noise=noise)
            terms = self.loss.terms(images)
            total = self.loss.total(terms)
            if cfg.optimize_noise and cfg.noise_regularize > 0:
                terms["noise_reg"] = noise_regularization(noise)
                total = total + cfg.noise_regularize * terms["noise_reg"]
            optimizer.zero_grad(set_to_none=True)
            total.sum().backward()
            optimizer.step()
            if cfg.optimize_noise:
                normalize_noise_(noise)
            for name, value in {**terms, "total": total}.items():  # kept on the device: no sync per step
                history.setdefault(name, []).append(value.detach())
            if not bar.disable:
                bar.set_postfix(loss=f"{float(total.detach().mean()):.4f}")
            if snapshot is not None and cfg.save_every > 0 and (step + 1) % cfg.save_every == 0:
                snapshot(step + 1, images.detach().cpu())

        w_plus = w_plus.detach()
        with torch.no_grad():
            images = G.synthesis(w_plus, noise=noise)
            metrics = self.metrics(images, targets)
            if cfg.optimize_noise:
                plain = G.synthesis(w_plus, noise=self.fixed_noise(n))
                for m, psnr in zip(metrics, self._psnr(plain, targets).tolist()):
                    m["psnr_fixed_noise"] = psnr
        return ProjectionResult(
            w_plus=w_plus.cpu(),
            images=images.cpu(),
            noise=[buf.detach().cpu() for buf in noise] if cfg.optimize_noise else None,
            history={name: torch.stack(values).cpu() for name, values in history.items()},
            metrics=metrics,
        )

    @staticmethod
    def _psnr(images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """PSNR in dB per image, on [0, 1] images (reconstructions clipped to the valid range)."""
        to01 = lambda x: (x.clamp(-1, 1) + 1) / 2
        return peak_signal_noise_ratio(to01(images), to01(targets), data_range=1.0, reduction="none", dim=(1, 2, 3))

    @torch.no_grad()
    def metrics(self, images: torch.Tensor, targets: torch.Tensor) -> list[dict]:
        """Per image: PSNR (dB), LPIPS (None when its weights are unavailable), CLIP cosine when CLIP is loaded."""
        psnr = self._psnr(images, targets).tolist()
        lpips = [None] * len(psnr)
        if self.lpips is not None:
            lpips = self.lpips(_resize(images.clamp(-1, 1), self.config.lpips_resolution),
                               _resize(targets.clamp(-1, 1), self.config.lpips_resolution)).flatten().tolist()
        out = [{"psnr": p, "lpips": lp, "lpips_net": self.config.lpips_net} for p, lp in zip(psnr, lpips)]
        if self.clip is not None:
            cos = (self.clip.encode_image(images) * self.clip.encode_image(targets)).sum(dim=-1).tolist()
            for m, c in zip(out, cos):
                m["clip_cosine"] = c
        return out
