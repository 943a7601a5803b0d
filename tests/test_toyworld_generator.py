"""Toy StyleGAN2: discriminator, training loop pieces, and the committed generator's sample quality."""

from __future__ import annotations

import json

import pytest
import torch

from experiments.toyworld import build
from experiments.toyworld.discriminator import Discriminator
from experiments.toyworld.metrics import class_distribution, diversity, frechet_distance, image_features
from experiments.toyworld.paintings import render_dataset
from experiments.toyworld.train_clip import class_prompts
from experiments.toyworld.train_generator import ToyGANConfig, _mixed_w_plus, train_toy_generator
from lightning_modules.clip_wrapper import CLIPWrapper
from lightning_modules.networks.checkpoints import load_generator

TINY = dict(style_dim=16, n_mlp=1, g_channels={4: 16, 8: 16, 16: 8, 32: 8}, d_channels={4: 16, 8: 16, 16: 8, 32: 8})


def test_style_mixing_switches_codes_at_one_layer():
    G = ToyGANConfig(**TINY).generator()
    w = _mixed_w_plus(G, 64, mixing_prob=1.0, gen=torch.Generator().manual_seed(0))
    assert w.shape == (64, G.n_latent, G.style_dim)
    for code in w:
        changes = [i for i in range(1, G.n_latent) if not torch.equal(code[i], code[i - 1])]
        assert len(changes) == 1  # one crossover layer; equal before it and after it
    unmixed = _mixed_w_plus(G, 8, mixing_prob=0.0, gen=torch.Generator().manual_seed(0))
    assert torch.equal(unmixed, unmixed[:, :1].expand_as(unmixed))


def test_discriminator_uses_batch_statistics_and_passes_gradients():
    torch.manual_seed(0)
    D = Discriminator(32, TINY["d_channels"])
    x = torch.randn(8, 3, 32, 32, requires_grad=True)
    out = D(x)
    assert out.shape == (8,)
    (grad,) = torch.autograd.grad(out.sum(), x)
    assert grad.abs().sum() > 0
    # Minibatch standard deviation: changing sample 7 changes the logit of sample 3 (same stddev group).
    y = x.detach().clone()
    y[7] = torch.randn(3, 32, 32)
    assert not torch.allclose(D(y)[3], out[3].detach())
    assert D(x[:6]).shape == (6,)  # batch not divisible by the group size


def test_training_steps_run_r1_and_return_an_ema_generator():
    images = torch.from_numpy(render_dataset(range(16))[0])
    cfg = ToyGANConfig(**TINY, steps=3, batch_size=4, r1_every=2)
    torch.manual_seed(cfg.seed)
    init = cfg.generator()
    G = train_toy_generator(images, cfg)
    assert not G.training and not any(p.requires_grad for p in G.parameters())
    assert G.latent_avg is not None and G.latent_avg.shape == (cfg.style_dim,)
    moved = [not torch.equal(a, b) for a, b in zip(G.parameters(), init.parameters())]
    assert any(moved)
    again = train_toy_generator(images, cfg)  # seeded: the same run
    for a, b in zip(G.parameters(), again.parameters()):
        torch.testing.assert_close(a, b)


@pytest.mark.slow
def test_committed_generator_samples_look_like_the_paintings():
    """The committed toy StyleGAN2 is far closer to the paintings in toy-CLIP space than an untrained one, and its
    samples spread over several attributes (not one mode)."""
    recorded = json.loads((build.WEIGHTS_DIR / build.METRICS_FILE).read_text())["toy_stylegan2"]
    G = load_generator(build.WEIGHTS_DIR / build.GENERATOR_FILE)
    assert (G.size, G.n_latent) == (32, 8)
    toy_clip = CLIPWrapper(str(build.WEIGHTS_DIR / build.CLIP_FILE))
    real = image_features(toy_clip, torch.from_numpy(render_dataset(range(*build.FD_REAL_SEEDS))[0][:400]))
    z = torch.randn(400, G.style_dim, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        samples = G(z)
        torch.manual_seed(0)
        untrained = ToyGANConfig(**recorded["config"]).generator()(z)
    assert (samples.abs() <= 1.1).float().mean() > 0.99  # painted in the image range, as the reals are
    fd = frechet_distance(image_features(toy_clip, samples), real)
    fd_untrained = frechet_distance(image_features(toy_clip, untrained), real)
    assert fd < 0.25 * fd_untrained, (fd, fd_untrained)
    dist = class_distribution(image_features(toy_clip, samples), toy_clip.encode_text(class_prompts()))
    assert diversity(dist)["classes_over_2pct"] >= 5, dist


@pytest.mark.slow
def test_build_script_writes_loadable_files_and_never_overwrites_silently(tmp_path, capsys):
    """`make toyworld`'s script end to end at toy scale (64 paintings, 2 training steps each)."""
    import clip

    args = ["--out", str(tmp_path), "--n-train", "64", "--clip-steps", "2", "--gan-steps", "2"]
    assert build.main(args) == 0
    metrics = json.loads((tmp_path / build.METRICS_FILE).read_text())
    assert metrics["seeds"]["train_paintings"] == [0, 64] and metrics["toy_clip"]["config"]["steps"] == 2
    assert set(metrics["detectors"]) == set(build.ATTRIBUTES)
    clip.load(str(tmp_path / build.CLIP_FILE), device="cpu", jit=False)
    assert load_generator(tmp_path / build.GENERATOR_FILE).n_latent == 8
    with pytest.raises(SystemExit):
        build.main(args)  # files exist and --overwrite is missing
    assert "pass --overwrite" in capsys.readouterr().err


@pytest.mark.slow
def test_evaluate_only_reproduces_the_committed_metrics(tmp_path):
    import shutil

    for name in (build.CLIP_FILE, build.GENERATOR_FILE, build.METRICS_FILE):
        shutil.copy(build.WEIGHTS_DIR / name, tmp_path / name)
    assert build.main(["--out", str(tmp_path), "--evaluate-only"]) == 0
    committed = json.loads((build.WEIGHTS_DIR / build.METRICS_FILE).read_text())
    again = json.loads((tmp_path / build.METRICS_FILE).read_text())
    assert again["toy_clip"] == committed["toy_clip"]
    for psi in ("truncation_1.0", "truncation_0.7"):
        assert again["toy_stylegan2"][psi]["fd_toy_clip"] == pytest.approx(
            committed["toy_stylegan2"][psi]["fd_toy_clip"], rel=0.02)
    assert again["detectors"] == committed["detectors"]
