"""MapperModule (lightning_modules/mapper.py) on a tiny random world: the loss is Eq. 2's `eq2_loss` at w + dw, the
training sounds are embedded once per run, and a short training runs through the CLI (fit, resume, W&B grid)."""

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import torch.nn.functional as F

from datamodules.soundzoo import write_sound_set
from experiments import train_mapper
from lightning_modules.audio_export import export_audio_encoder, load_audio_encoder
from lightning_modules.eq2_step import eq2_loss
from lightning_modules.mapper import MapperModule
from lightning_modules.networks.audio_encoder import AudioEncoder
from lightning_modules.networks.mapper import load_mapper
from lightning_modules.sound_embedding import embed_sound

CLASSES = ["fire crackling", "rain", "wind"]


@pytest.fixture(scope="module")
def tiny_world(tmp_path_factory, tiny_generator_path, tiny_clip_path):
    root = tmp_path_factory.mktemp("mapper_world")
    torch.manual_seed(0)
    encoder = AudioEncoder(embed_dim=64, backbone="resnet18", width=8, n_mels=32, n_fft=256, clip_seconds=0.5)
    enc_path = export_audio_encoder(encoder.eval(), root / "encoder.pt")
    sounds = write_sound_set(root / "soundzoo", clips_per_class=3, seconds=0.5)
    return {"generator": tiny_generator_path, "clip": tiny_clip_path, "audio_encoder": str(enc_path),
            "sound_set": str(sounds)}


def _module(world, **kw) -> MapperModule:
    return MapperModule(**world, classes=CLASSES, n_layers=2, batch_size=4, pairs_per_epoch=16,
                        val_sources=[0, 1], **kw)


def test_loss_is_eq2_at_the_mapped_code(tiny_world, single_thread):
    module = _module(tiny_world, lambda_delta=0.02, output_scale=1.0)
    module.setup("fit")
    with torch.no_grad():  # a trained-looking mapper: the output layer starts at zero (the identity edit)
        for p in module.mapper.parameters():
            p.add_(torch.randn_like(p) * 0.3 * (p.abs().mean() + 1))
    w, e = module.sample_pairs(torch.tensor([1_000_000, 1_000_001, 1_000_002, 1_000_003]))
    out = module.pair_loss(w, e)
    # by hand: the edited code, its image, CLIP's embedding, Eq. 2
    w_edit = w + module.mapper.delta(w, e)
    image_emb = module.clip_model.encode_image(module.generator.synthesis(w_edit))
    cos = (image_emb * F.normalize(e, dim=-1)).sum(-1)
    expected = (1 - cos) + 0.02 * (w_edit - w).pow(2).sum((1, 2))
    torch.testing.assert_close(out["loss"], expected)
    lam = torch.full((4,), 0.02)
    torch.testing.assert_close(out["loss"], eq2_loss(image_emb, e, w_edit, w, lam)[0])
    assert (out["dist2"] > 0).all()  # the mapper really moved the codes
    # the same seeds draw the same pairs
    w2, e2 = module.sample_pairs(torch.tensor([1_000_000, 1_000_001, 1_000_002, 1_000_003]))
    assert torch.equal(w, w2) and torch.equal(e, e2)


def test_training_sounds_are_embedded_once(tiny_world, single_thread, monkeypatch):
    calls = []
    original = AudioEncoder.forward
    monkeypatch.setattr(AudioEncoder, "forward", lambda self, *a, **k: calls.append(1) or original(self, *a, **k))
    module = _module(tiny_world, text_ratio=0.0)
    module.setup("fit")
    n_calls = len(calls)
    assert n_calls == module.encoder_calls == 2  # 3 validation clips, then 6 training clips, one batch each
    assert module.audio_emb.shape == (6, 64) and module.val_emb.shape == (3, 64)
    for step in range(3):
        w, e = module.sample_pairs(torch.arange(4) + 1_000_000 + 4 * step)
        module.training_step(torch.arange(4) + 1_000_000 + 4 * step, step)
        # text_ratio 0: every target is one of the cached audio embeddings
        assert all(any(torch.equal(t, a) for a in module.audio_emb) for t in e)
    module.setup("validate")
    assert len(calls) == n_calls  # no encoder call per step or per stage


def test_several_encoders_pool_their_embeddings(tiny_world, tmp_path, single_thread):
    """A mapper for several encoders (e.g. the page's and the demo's) trains on each one's embeddings of the same
    clips; the first encoder's make the validation columns."""
    torch.manual_seed(1)
    other = AudioEncoder(embed_dim=64, backbone="resnet18", width=8, n_mels=32, n_fft=256, clip_seconds=0.5)
    other_path = str(export_audio_encoder(other.eval(), tmp_path / "other.pt"))
    one = _module(tiny_world, text_ratio=0.0)
    one.setup("fit")
    both = _module({**tiny_world, "audio_encoder": [tiny_world["audio_encoder"], other_path]}, text_ratio=0.0)
    both.setup("fit")
    assert both.encoder_calls == 4 and both.audio_emb.shape == (12, 64)
    torch.testing.assert_close(both.audio_emb[:6], one.audio_emb)  # the first encoder's, unchanged
    assert not torch.allclose(both.audio_emb[6:], one.audio_emb, atol=1e-3)  # the second one's differ
    assert torch.equal(both.audio_labels[:6], both.audio_labels[6:])
    torch.testing.assert_close(both.val_emb, one.val_emb)
    drawn = torch.cat([both.sample_pairs(torch.arange(4) + 1_000_000 + 4 * k)[1] for k in range(8)])
    from_second = [any(torch.equal(t, a) for a in both.audio_emb[6:]) for t in drawn]
    assert 0 < sum(from_second) < len(drawn)  # targets come from both encoders


def test_recordings_add_every_window_and_each_mean(tiny_world, tmp_path, single_thread):
    """Real recordings by class folder: each window's embedding and the recording's mean (what `embed_sound` gives the
    edit command) become targets, once per run; an undecodable file is skipped and counted, not fatal."""
    rng = np.random.default_rng(0)
    lengths = {"fire_crackling/long.wav": 1.3, "rain/short.wav": 0.2, "dog/bark.flac": 0.7}  # 3, 1, 1 windows of 0.5 s
    for name, seconds in lengths.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        sf.write(tmp_path / name, rng.normal(0, 0.1, (int(44100 * seconds), 2)), 44100)  # stereo, another rate
    (tmp_path / "rain" / "broken.wav").write_text("not audio")
    module = _module({**tiny_world, "sound_set": None, "recordings": str(tmp_path)}, text_ratio=0.0)
    module.setup("fit")
    assert module.encoder_calls == 3  # one per readable recording
    assert module.audio_emb.shape == (3 + 1 + 1 + 1 + 1 + 1, 64)
    encoder = load_audio_encoder(tiny_world["audio_encoder"]).eval()
    rows = iter(module.audio_emb)
    for name in sorted(lengths):  # list order: class folders sorted, files sorted
        mean, windows = embed_sound(encoder, tmp_path / name)
        for window in windows.windows:
            torch.testing.assert_close(next(rows), F.normalize(encoder(window[None]), dim=-1)[0], atol=1e-5, rtol=0)
        torch.testing.assert_close(next(rows), mean, atol=1e-5, rtol=0)
    # labels: a class folder's label, -1 for a folder that is not one of the classes
    assert module.audio_labels.tolist() == [-1, -1, 0, 0, 0, 0, 1, 1]
    drawn = module.sample_pairs(torch.arange(8) + 1_000_000)[1]
    assert all(any(torch.equal(t, a) for a in module.audio_emb) for t in drawn)


def test_recordings_with_nothing_readable_name_the_folder(tiny_world, tmp_path, single_thread):
    (tmp_path / "rain").mkdir()
    (tmp_path / "rain" / "a.wav").write_text("not audio")
    module = _module({**tiny_world, "sound_set": None, "recordings": str(tmp_path)}, text_ratio=0.0)
    with pytest.raises(ValueError, match=f"recordings {tmp_path}: none of its 1 files"):
        module.setup("fit")


def test_a_bad_lr_schedule_is_named(tiny_world):
    with pytest.raises(ValueError, match="lr_schedule must be 'constant' or 'cosine', got 'linear'"):
        _module(tiny_world, lr_schedule="linear")


def test_mixed_targets_are_unit_blends_of_two_targets(tiny_world, single_thread):
    """mix_ratio 1: every target is a unit-norm blend of two drawn targets (text prompts or cached clips), lying in
    their plane; mix_ratio 0 draws exactly the unblended targets."""
    plain = _module(tiny_world, text_ratio=0.5)
    plain.setup("fit")
    mixed = _module(tiny_world, text_ratio=0.5, mix_ratio=1.0)
    mixed.setup("fit")
    pool = torch.cat([mixed.text_emb, mixed.audio_emb])
    seeds = torch.arange(16) + 1_000_000
    e_plain = plain.sample_pairs(seeds)[1]
    assert all(any(torch.equal(t, a) for a in pool) for t in e_plain)  # no blending at mix_ratio 0
    e = mixed.sample_pairs(seeds)[1]
    torch.testing.assert_close(e.norm(dim=-1), torch.ones(16))
    blended = sum(not any(torch.allclose(t, a) for a in pool) for t in e)
    assert blended >= 10, blended  # all but blends of a target with itself (3 prompts, 6 clips in the pool)
    # each blend is a positive combination of two pool members: least squares on some pair fits it exactly
    for t in e:
        best = min(torch.linalg.lstsq(torch.stack([pool[i], pool[j]]).T, t[:, None]).residuals.sum().item()
                   for i in range(len(pool)) for j in range(len(pool)) if i < j)
        assert best < 1e-8
    assert torch.equal(mixed.sample_pairs(seeds)[1], e)  # deterministic


def test_cli_fit_resume_and_grid(tiny_world, tmp_path, single_thread):
    run_dir = tmp_path / "run"
    args = ["fit", "--config", "experiments/mapper/toyworld.yaml",
            *(f"--model.{k}={v}" for k, v in tiny_world.items()),
            f"--model.classes={CLASSES}", "--model.n_layers=2", "--model.batch_size=2", "--model.pairs_per_epoch=8",
            "--model.val_sources=[0]", "--model.prompt_template=This is a sound of {label}.",
            "--model.lr_schedule=cosine", "--model.lr=0.04",
            f"--trainer.default_root_dir={run_dir}", "--trainer.max_steps=4", "--trainer.val_check_interval=2",
            "--trainer.callbacks+=pytorch_lightning.callbacks.ModelCheckpoint",
            "--trainer.callbacks.save_last=true", "--trainer.callbacks.every_n_train_steps=2",
            "--trainer.enable_progress_bar=false"]
    train_mapper.main(args)
    mapper = load_mapper(run_dir / "mapper.pt")
    assert mapper.meta["global_step"] == 4 and mapper.meta["audio_encoder"] == tiny_world["audio_encoder"]
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)
    assert all(k.startswith("mapper.") for k in ckpt["state_dict"])  # frozen G / CLIP stay out of checkpoints
    group = ckpt["optimizer_states"][0]["param_groups"][0]
    assert group["initial_lr"] == 0.04 and group["lr"] == pytest.approx(0.0, abs=1e-12)  # cosine: 0 at max_steps
    grids = list(run_dir.glob("wandb/offline-run-*/files/media/images/mapper/*.png"))
    assert len(grids) == 2  # steps 2 and 4

    # a fresh run refuses the directory; --ckpt_path last resumes from step 4 to 6 and exports beside the first
    with pytest.raises(SystemExit, match="already holds checkpoints"):
        train_mapper.main(args)
    train_mapper.main([*[a for a in args if not a.startswith("--trainer.max_steps")], "--trainer.max_steps=6",
                       "--ckpt_path", "last"])
    resumed = load_mapper(run_dir / "mapper-2.pt")
    assert resumed.meta["global_step"] == 6
    assert Path(run_dir / "mapper.pt").is_file()  # the first export is kept
    assert sf.info(next(Path(tiny_world["sound_set"]).glob("*.flac"))).samplerate == 16000


@pytest.mark.parametrize("config", ["experiments/mapper/toyworld.yaml", "experiments/mapper/wikiart.yaml"])
def test_mapper_configs_name_only_real_fields(config, capsys):
    with pytest.raises(SystemExit) as exit_info:
        train_mapper.MapperCLI(args=["--config", config, "--print_config"], run=False)
    assert exit_info.value.code in (0, None)
    printed = capsys.readouterr().out
    assert "lambda_delta:" in printed and "conditioning: film" in printed
