"""Edit modes (lightning_modules/edit_modes.py): optimise | mapper | refine and strength, through the function, the
manipulation module and the edit command, on the tiny random world."""

import json

import pytest
import torch
import torch.nn.functional as F

from experiments import edit
from lightning_modules.clip_wrapper import CLIPWrapper
from lightning_modules.edit_modes import run_edit
from lightning_modules.manipulation import ManipulationModule
from lightning_modules.networks.checkpoints import load_generator
from lightning_modules.networks.mapper import SoundMapper, save_mapper


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_generator_path, tiny_clip_path):
    G = load_generator(tiny_generator_path).eval().requires_grad_(False)
    clip_model = CLIPWrapper(tiny_clip_path)
    torch.manual_seed(0)
    mapper = SoundMapper(G.n_latent, G.style_dim, clip_model.embed_dim, n_layers=2, output_scale=1.0)
    with torch.no_grad():
        for p in mapper.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    path = save_mapper(mapper, tmp_path_factory.mktemp("mapper") / "mapper.pt")
    w = G.mapping(torch.randn(3, G.style_dim)).unsqueeze(1).expand(-1, G.n_latent, -1).contiguous()
    target = F.normalize(torch.randn(3, clip_model.embed_dim), dim=-1)
    return dict(G=G, clip=clip_model, mapper=mapper.eval(), mapper_path=str(path), w=w, target=target)


def test_mapper_mode_takes_no_backward_pass_and_no_optimiser_step(world, monkeypatch, single_thread):
    def forbidden(*args, **kwargs):
        raise AssertionError("mapper mode must not run backward passes or optimiser steps")

    monkeypatch.setattr(torch.Tensor, "backward", forbidden)
    monkeypatch.setattr(torch.autograd, "backward", forbidden)
    monkeypatch.setattr(torch.optim.Adam, "step", forbidden)
    r = run_edit(world["G"], world["clip"], world["w"], world["target"], 0.01, mode="mapper", mapper=world["mapper"],
                 strength=0.7)
    torch.testing.assert_close(r.w, world["mapper"].edit(world["w"], world["target"], 0.7))
    assert r.losses.shape == (0, 3) and not r.w.requires_grad
    zero = run_edit(world["G"], world["clip"], world["w"], world["target"], 0.01, mode="mapper",
                    mapper=world["mapper"], strength=0.0)
    assert torch.equal(zero.w, world["w"]) and torch.equal(zero.cos_after, zero.cos_before)


def test_refine_starts_at_the_mapper_and_strength_scales_every_mode(world, single_thread):
    G, clip_model, w, target, mapper = world["G"], world["clip"], world["w"], world["target"], world["mapper"]
    starts = []
    r = run_edit(G, clip_model, w, target, 0.01, mode="refine", mapper=mapper, refine_steps=3, lr=0.05,
                 callback=lambda step, images, loss: starts.append(images) if step == 0 else None)
    torch.testing.assert_close(starts[0], G.synthesis(mapper.edit(w, target)))  # step 0 renders the mapper's code
    assert r.losses.shape == (3, 3)
    full = run_edit(G, clip_model, w, target, 0.01, mode="optimise", steps=4, lr=0.05)
    half = run_edit(G, clip_model, w, target, 0.01, mode="optimise", steps=4, lr=0.05, strength=0.5)
    torch.testing.assert_close(half.w, w + 0.5 * (full.w - w))
    torch.testing.assert_close(half.images, G.synthesis(half.w))
    with pytest.raises(ValueError, match="needs a trained mapper"):
        run_edit(G, clip_model, w, target, 0.01, mode="refine")
    with pytest.raises(ValueError, match="mode must be one of optimise, mapper, refine"):
        run_edit(G, clip_model, w, target, 0.01, mode="fast")


def test_edit_command_in_mapper_mode(world, tmp_path, tiny_generator_path, tiny_clip_path, single_thread):
    import soundfile as sf

    from datamodules.soundzoo import synthesize
    from lightning_modules.audio_export import export_audio_encoder
    from lightning_modules.networks.audio_encoder import AudioEncoder

    torch.manual_seed(0)
    enc = AudioEncoder(embed_dim=64, backbone="resnet18", width=8, n_mels=32, n_fft=256, clip_seconds=0.5).eval()
    enc_path = export_audio_encoder(enc, tmp_path / "enc.pt")
    sf.write(tmp_path / "rain.wav", synthesize("rain", 1, seconds=0.5), 16000)
    common = ["--sound", str(tmp_path / "rain.wav"), "--seed", "3", "--generator", tiny_generator_path,
              "--audio-encoder", str(enc_path), "--clip", tiny_clip_path, "--out", str(tmp_path / "out")]
    assert edit.main([*common, "--mode", "mapper", "--mapper", world["mapper_path"], "--strength", "0"]) == 0
    (run,) = (tmp_path / "out").iterdir()
    pair = json.loads((run / "metrics.json").read_text())["pairs"][0]
    assert pair["w_dist"] == 0.0 and pair["clip_cos_after"] == pair["clip_cos_before"]  # strength 0: the source
    job = json.loads((run / "job.json").read_text())["hparams"]
    assert job["mode"] == "mapper" and job["strength"] == 0.0
    with pytest.raises(ValueError, match="needs a trained mapper"):
        ManipulationModule(generator=tiny_generator_path, mode="mapper")
