"""Edit jobs end to end on tiny models: Trainer.predict outputs, W&B offline, no overwriting, two-process DDP,
the one-line edit command, `make figures` (missing inputs, grid size) and the shipped configs."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import soundfile as sf
import torch
import yaml
from PIL import Image

from datamodules.edit_pairs import EditPairsDataModule
from datamodules.soundzoo import synthesize
from experiments import edit, figures, manipulate
from lightning_modules.audio_export import export_audio_encoder
from lightning_modules.edit_outputs import caption_height
from lightning_modules.manipulation import ManipulationModule
from lightning_modules.networks.audio_encoder import AudioEncoder
from lightning_modules.networks.checkpoints import save_generator
from lightning_modules.networks.stylegan2 import Generator

REPO = Path(__file__).resolve().parents[1]
PAPER_SOUNDS = ["fire crackling", "rain", "wind", "explosion", "folk music", "latin music", "thunderstorm"]


@pytest.fixture(scope="module")
def assets(tmp_path_factory, tiny_clip_path):
    """Tiny generator (32 px), random tiny audio encoder (64-d like the tiny CLIP), seven 1.2 s clips."""
    root = tmp_path_factory.mktemp("assets")
    torch.manual_seed(0)
    gen = root / "generator.pt"
    save_generator(Generator(32, style_dim=32, n_mlp=2, channels={4: 32, 8: 32, 16: 16, 32: 16}), gen)
    enc = export_audio_encoder(
        AudioEncoder(embed_dim=64, backbone="resnet18", width=8, clip_seconds=1.0, n_fft=256, n_mels=32),
        root / "audio_encoder.pt")
    sounds = {}
    for k, label in enumerate(PAPER_SOUNDS):
        path = root / f"{label.replace(' ', '_')}.wav"
        sf.write(path, synthesize(label, 500 + k, seconds=1.2), 16000)
        sounds[label] = str(path)
    return {"generator": str(gen), "audio_encoder": str(enc), "clip": tiny_clip_path, "sounds": sounds}


def make_job(assets, tmp_path, n_sounds=3, sources=(0, 1), **kw):
    model = ManipulationModule(generator=assets["generator"], audio_encoder=assets["audio_encoder"],
                               clip=assets["clip"], output_dir=str(tmp_path / "out"), progress=False,
                               **{"steps": 4, "grid_cell": 32, **kw})
    data = EditPairsDataModule(sources=list(sources), sounds=dict(list(assets["sounds"].items())[:n_sounds]),
                               batch_size=4)
    return model, data


def test_predict_job_writes_edits_grid_metrics_and_wandb(assets, tmp_path):
    from pytorch_lightning.loggers import WandbLogger

    model, data = make_job(assets, tmp_path, gif_every=2)
    logger = WandbLogger(project="aiartist-test", save_dir=str(tmp_path), offline=True)
    trainer = pl.Trainer(accelerator="cpu", devices=1, inference_mode=False, logger=logger,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    preds = trainer.predict(model, datamodule=data)
    run = model.run_dir
    assert run.parent == tmp_path / "out"
    records = [r for batch in preds for r in batch]
    assert sorted(r["index"] for r in records) == list(range(6))  # 2 sources x 3 sounds, batches of 4 + 2
    edits = sorted((run / "edits").glob("*.png"))
    assert len(edits) == 6 and Image.open(edits[0]).size == (32, 32)
    assert len(list((run / "gifs").glob("*.gif"))) == 6
    with Image.open(next((run / "gifs").glob("*.gif"))) as gif:
        assert gif.n_frames == 3  # steps 0, 2 and the final image
    latent = torch.load(next((run / "latents").glob("*.pt")), weights_only=True)
    assert latent["w_plus"].shape == (8, 32) and latent["w_source"].shape == (8, 32)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["summary"]["pairs"] == 6
    pair = metrics["pairs"][0]
    for key in ("clip_cos_before", "clip_cos_after", "w_dist", "pixel_l2", "loss_before", "loss_after",
                "lambda_sim", "loudness_db", "source", "sound", "file"):
        assert key in pair, key
    assert (run / pair["file"]).is_file()
    # Edit metrics: the gain, preservation named by what it is (no LPIPS weights offline), a per-sound table.
    assert pair["clip_gain"] == pytest.approx(pair["clip_cos_after"] - pair["clip_cos_before"])
    assert metrics["summary"]["preservation"]["metric"] == "clip_image_similarity"
    assert "LPIPS unavailable" in metrics["summary"]["preservation"]["note"]
    assert all(-1.0 <= p["clip_image_similarity"] <= 1.0 + 1e-6 for p in metrics["pairs"])
    per_sound = {r["sound"]: r for r in metrics["per_sound"]}
    assert list(per_sound) == list(assets["sounds"])[:3] and all(r["pairs"] == 2 for r in per_sound.values())
    fire = [p["clip_gain"] for p in metrics["pairs"] if p["sound"] == "fire crackling"]
    assert per_sound["fire crackling"]["clip_gain"] == pytest.approx(sum(fire) / 2)
    assert "clip_image_similarity" in (run / "per_sound.txt").read_text().splitlines()[0]
    assert list(Path(tmp_path).glob("wandb/offline-run-*/files/media/table/manipulation/per_sound*.json"))
    # the part of each 1.2 s clip the 1 s encoder heard: one window (a 0.2 s tail is under half a window)
    assert pair["sound_used"] == "0.0–1.0 s of 1.2 s (mean of 1 window)"
    job = json.loads((run / "job.json").read_text())
    assert job["generator"] == {"size": 32, "n_latent": 8} and len(job["sounds"]) == 3
    assert job["sounds"][0]["starts_s"] == [0.0] and job["sounds"][0]["duration_s"] == 1.2
    cap = caption_height(32)
    assert Image.open(run / "grid.png").size == (4 * 32, cap + 2 * 32)  # source column + 3 sounds; 2 rows
    assert sorted(p.name for p in (run / "sources").glob("*.png")) == ["seed0.png", "seed1.png"]
    # the grid went to the offline W&B run as an image
    media = list(Path(tmp_path).glob("wandb/offline-run-*/files/media/images/**/*.png"))
    logger.experiment.finish()  # close the run: later jobs in this process must get their own
    assert len(media) == 1, "no grid image logged to W&B"
    logged = np.asarray(Image.open(media[0]).convert("RGB")).astype(int)
    assert np.abs(logged - np.asarray(Image.open(run / "grid.png")).astype(int)).max() <= 1  # same pixels, [0, 1]

    # a second job never touches the first one's directory
    before = {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()}
    model2, data2 = make_job(assets, tmp_path, n_sounds=1, sources=(0,))
    pl.Trainer(accelerator="cpu", devices=1, inference_mode=False, logger=False, enable_progress_bar=False,
               enable_model_summary=False).predict(model2, datamodule=data2)
    assert model2.run_dir != run
    assert {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()} == before


def test_independent_eval_clip_scores_before_and_after(assets, tmp_path):
    from conftest import build_tiny_clip

    from lightning_modules.clip_wrapper import CLIPWrapper

    eval_path = tmp_path / "eval_clip.pt"
    torch.save(build_tiny_clip(seed=1, embed_dim=32).state_dict(), eval_path)  # other weights, other width
    model, data = make_job(assets, tmp_path, n_sounds=2, sources=(4,), eval_clip=str(eval_path),
                           eval_prompt="a painting of {label}")
    pl.Trainer(accelerator="cpu", devices=1, inference_mode=False, logger=False, enable_progress_bar=False,
               enable_model_summary=False).predict(model, datamodule=data)
    judge = CLIPWrapper(str(eval_path))
    for pair in json.loads((model.run_dir / "metrics.json").read_text())["pairs"]:
        text = judge.encode_text([f"a painting of {pair['sound']}"])
        edited = torch.from_numpy(np.asarray(Image.open(model.run_dir / pair["file"]))).permute(2, 0, 1)
        score = (judge.encode_image(edited[None].float() / 127.5 - 1) * text).sum().item()
        assert score == pytest.approx(pair["eval_cos_after"], abs=0.02)  # the PNG is the 8-bit edited image
        assert "eval_cos_before" in pair


def test_inference_mode_trainer_is_refused(assets, tmp_path):
    model, data = make_job(assets, tmp_path, n_sounds=1, sources=(0,))
    trainer = pl.Trainer(accelerator="cpu", devices=1, inference_mode=True, logger=False, enable_progress_bar=False)
    with pytest.raises(RuntimeError, match="inference_mode"):
        trainer.predict(model, datamodule=data)


def test_mismatched_clip_and_encoder_dims_fail_clearly(assets, tmp_path):
    enc = export_audio_encoder(AudioEncoder(embed_dim=48, backbone="resnet18", width=8, clip_seconds=1.0,
                                            n_fft=256, n_mels=32), tmp_path / "enc48.pt")
    model, data = make_job({**assets, "audio_encoder": str(enc)}, tmp_path, n_sounds=1, sources=(0,))
    trainer = pl.Trainer(accelerator="cpu", devices=1, inference_mode=False, logger=False, enable_progress_bar=False)
    with pytest.raises(ValueError, match="48 dims"):
        trainer.predict(model, datamodule=data)


@pytest.mark.slow
def test_ddp_two_processes_split_pairs_and_gather_one_grid(assets, tmp_path):
    # 5 pairs over 2 ranks (3 + 2): one run directory (decided on rank 0), every pair once, one full grid.
    model, data = make_job(assets, tmp_path, n_sounds=5, sources=(3,), steps=2)
    data.batch_size = 2
    trainer = pl.Trainer(accelerator="cpu", devices=2, strategy="ddp_spawn", inference_mode=False, logger=False,
                         enable_progress_bar=False, enable_model_summary=False)
    trainer.predict(model, datamodule=data, return_predictions=False)
    runs = list((tmp_path / "out").iterdir())
    assert len(runs) == 1, runs
    run = runs[0]
    metrics = json.loads((run / "metrics.json").read_text())
    assert sorted(p["index"] for p in metrics["pairs"]) == list(range(5))
    assert len(list((run / "edits").glob("*.png"))) == 5
    grid = np.asarray(Image.open(run / "grid.png"))
    cap = caption_height(32)
    assert grid.shape == (cap + 32, 6 * 32, 3)
    for c in range(6):  # no empty (white) cell: results from both ranks reached rank 0
        assert not (grid[cap:, c * 32 : (c + 1) * 32] == 255).all(), c


def test_single_edit_command(assets, tmp_path, capsys):
    rc = edit.main(["--sound", assets["sounds"]["rain"], "--seed", "7", "--generator", assets["generator"],
                    "--audio-encoder", assets["audio_encoder"], "--clip", assets["clip"], "--out",
                    str(tmp_path / "edits"), "--steps", "3", "--device", "cpu"])
    assert rc == 0
    out = capsys.readouterr().out
    png = Path(out.strip().splitlines()[-1].split(":")[0])
    assert png.is_file() and png.parent.name == "edits" and "CLIP cosine" in out
    assert ": 0.0–1.0 s of 1.2 s (mean of 1 window))" in out
    rc = edit.main(["--sound", assets["sounds"]["rain"], "--seed", "7", "--generator", str(tmp_path / "G.pt"),
                    "--audio-encoder", assets["audio_encoder"], "--clip", assets["clip"], "--out", str(tmp_path)])
    assert rc == 1 and str(tmp_path / "G.pt") in capsys.readouterr().err


def figure_config(tmp_path, assets, **model_overrides) -> Path:
    cfg = yaml.safe_load((REPO / "experiments/figures/paper_fig3.yaml").read_text())
    cfg["trainer"] = {"accelerator": "cpu", "devices": 1, "logger": False, "inference_mode": False,
                      "enable_progress_bar": False, "enable_model_summary": False}
    cfg["model"].update({"generator": assets["generator"], "audio_encoder": assets["audio_encoder"],
                         "clip": assets["clip"], "steps": 2, "grid_cell": 32, "output_dir": str(tmp_path / "runs"),
                         "progress": False, **model_overrides})
    labels = list(cfg["data"]["sounds"])  # the paper's column order, from the shipped figure config
    cfg["data"]["sounds"] = {label: path for label, path in zip(labels, assets["sounds"].values())}
    cfg["data"]["sources"] = [0, 1]
    path = tmp_path / "fig.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_figure_with_missing_clip_fails_naming_it(assets, tmp_path, capsys):
    missing = tmp_path / "nowhere" / "ViT-tiny.pt"
    cfg = figure_config(tmp_path, assets, clip=str(missing))
    rc = figures.main(["--config", str(cfg), "--out", str(tmp_path / "fig.png")])
    err = capsys.readouterr().err
    assert rc == 1 and str(missing) in err
    assert not (tmp_path / "fig.png").exists()


def test_figure_grid_has_the_paper_layout(assets, tmp_path, capsys):
    cfg = figure_config(tmp_path, assets)
    rc = figures.main(["--config", str(cfg), "--out", str(tmp_path / "figures" / "paper_fig3.png")])
    assert rc == 0
    out = tmp_path / "figures" / "paper_fig3.png"
    cell, cap = 32, caption_height(32)
    assert Image.open(out).size == (8 * cell, cap + 2 * cell)  # source + 7 sounds; 2 sources
    assert str(out) in capsys.readouterr().out


@pytest.mark.parametrize("config", ["manipulation/wikiart.yaml", "manipulation/demo.yaml", "figures/paper_fig3.yaml"])
def test_shipped_configs_parse(config):
    cli = manipulate.main(["--config", str(REPO / "experiments" / config)], run=False)
    assert cli.trainer.predict_loop.inference_mode is False
    hp = cli.model.hparams
    assert hp.steps in (300, 100) and hp.lr == 0.1 and hp.truncation == 0.7
    assert math.isclose(hp.lambda_sim, 0.008)
    assert len(cli.datamodule.sound_files) == 7
