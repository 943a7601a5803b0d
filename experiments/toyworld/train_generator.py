"""Toy StyleGAN2: our `Generator` at the toy resolution, trained as a GAN on the procedural paintings.

StyleGAN2's recipe at small scale: non-saturating logistic loss, lazy R1 penalty on reals, style mixing,
Adam (beta1 0, beta2 0.99) with the equalised-lr parameterisation, random noise maps during training,
and an exponential moving average of G (the generator that is saved). Path-length regularisation is left
out (it matters for perceptual smoothness at high resolution, not at 32 px); reals are x-flipped.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from tqdm import tqdm

from experiments.toyworld.discriminator import Discriminator
from lightning_modules.networks.stylegan2 import Generator


@dataclass
class ToyGANConfig:
    """Architecture and schedule of the toy generator (the values `make toyworld` uses)."""

    size: int = 32
    style_dim: int = 128
    n_mlp: int = 4
    g_channels: dict = field(default_factory=lambda: {4: 128, 8: 128, 16: 64, 32: 32})
    d_channels: dict = field(default_factory=lambda: {4: 128, 8: 128, 16: 64, 32: 32})
    steps: int = 2000
    batch_size: int = 32
    lr: float = 0.0025
    r1_gamma: float = 0.05
    r1_every: int = 4
    mixing_prob: float = 0.5
    ema_half_life_images: int = 5000
    seed: int = 0

    def generator(self) -> Generator:
        return Generator(self.size, style_dim=self.style_dim, n_mlp=self.n_mlp, channels=self.g_channels)

    def to_dict(self) -> dict:
        return asdict(self)


def _mixed_w_plus(G: Generator, batch: int, mixing_prob: float, gen: torch.Generator) -> torch.Tensor:
    """W+ codes of random z; with probability mixing_prob a second z takes over from a random layer on."""
    device = G.input.input.device
    z = torch.randn(2, batch, G.style_dim, generator=gen).to(device)
    w = G.mapping(z.flatten(0, 1)).view(2, batch, 1, G.style_dim)
    cut = torch.randint(1, G.n_latent, (batch, 1, 1), generator=gen)
    mix = torch.rand(batch, 1, 1, generator=gen) < mixing_prob
    layer = torch.arange(G.n_latent).view(1, -1, 1)
    use_second = (mix & (layer >= cut)).to(device)
    return torch.where(use_second, w[1], w[0])


def train_toy_generator(images: torch.Tensor, cfg: ToyGANConfig, device: torch.device | str = "cpu") -> Generator:
    """Train on uint8 images (N, 3, size, size); returns the EMA generator (eval mode, latent_avg set)."""
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    G = cfg.generator().to(device).train()
    D = Discriminator(cfg.size, cfg.d_channels).to(device).train()
    G_ema = copy.deepcopy(G).eval().requires_grad_(False)
    # Lazy regularisation rescales D's Adam hyper-parameters (StyleGAN2 appendix B).
    c = cfg.r1_every / (cfg.r1_every + 1)
    opt_g = torch.optim.Adam(G.parameters(), lr=cfg.lr, betas=(0.0, 0.99))
    opt_d = torch.optim.Adam(D.parameters(), lr=cfg.lr * c, betas=(0.0, 0.99**c))
    ema_beta = 0.5 ** (cfg.batch_size / cfg.ema_half_life_images)

    def reals() -> torch.Tensor:
        idx = torch.randint(0, len(images), (cfg.batch_size,), generator=gen)
        x = images[idx].float() / 127.5 - 1
        flip = torch.rand(cfg.batch_size, generator=gen) < 0.5
        return torch.where(flip[:, None, None, None], x.flip(-1), x).to(device)

    def fakes() -> torch.Tensor:
        return G.synthesis(_mixed_w_plus(G, cfg.batch_size, cfg.mixing_prob, gen), randomize_noise=True)

    bar = tqdm(range(cfg.steps), desc="toy StyleGAN2", mininterval=5)
    for step in bar:
        # Discriminator: logistic loss, plus R1 on reals every r1_every steps.
        G.requires_grad_(False)
        D.requires_grad_(True)
        real = reals()
        with torch.no_grad():
            fake = fakes()
        loss_d = F.softplus(D(fake)).mean() + F.softplus(-D(real)).mean()
        if step % cfg.r1_every == 0:
            real.requires_grad_(True)
            (grad,) = torch.autograd.grad(D(real).sum(), real, create_graph=True)
            loss_d = loss_d + cfg.r1_gamma / 2 * grad.square().sum((1, 2, 3)).mean() * cfg.r1_every
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()
        # Generator: non-saturating loss.
        G.requires_grad_(True)
        D.requires_grad_(False)
        loss_g = F.softplus(-D(fakes())).mean()
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
        with torch.no_grad():
            for p_ema, p in zip(G_ema.parameters(), G.parameters()):
                p_ema.lerp_(p, 1 - ema_beta)
        if step % 50 == 0:
            bar.set_postfix(d=f"{loss_d.item():.3f}", g=f"{loss_g.item():.3f}")
    G_ema.latent_avg = G_ema.mean_latent().reshape(-1)
    return G_ema.cpu().requires_grad_(False)

