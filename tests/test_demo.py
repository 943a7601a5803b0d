"""`make demo`'s pipeline through its own entry point (experiments.demo.main) with a lighter config in a temp dir:
sound set -> audio encoder training -> seven paper sounds edited on tiny-generator sources -> grid, W&B offline."""

import json
from pathlib import Path

import clip
import pytest
import torch
import yaml
from PIL import Image

from experiments import demo
from lightning_modules.edit_outputs import caption_height
from lightning_modules.networks.checkpoints import load_generator


def test_tiny_models_are_deterministic_from_seeds(tmp_path):
    cfg = demo.load_config(demo.DEFAULT_CONFIG)["models"]
    a = demo.tiny_generator_file(tmp_path / "a.pt", 3, cfg["tiny_generator"])
    b = demo.tiny_generator_file(tmp_path / "b.pt", 3, cfg["tiny_generator"])
    ga, gb = load_generator(a), load_generator(b)
    assert ga.size == cfg["tiny_generator"]["size"]
    for (ka, va), (kb, vb) in zip(ga.state_dict().items(), gb.state_dict().items()):
        assert ka == kb and torch.equal(va, vb), ka
    ca = torch.load(demo.tiny_clip_file(tmp_path / "ca.pt", 4, cfg["tiny_clip"]), weights_only=True)
    cb = torch.load(demo.tiny_clip_file(tmp_path / "cb.pt", 4, cfg["tiny_clip"]), weights_only=True)
    assert all(torch.equal(ca[k], cb[k]) for k in ca)
    model, _ = clip.load(str(tmp_path / "ca.pt"), device="cpu", jit=False)
    assert model.visual.input_resolution == cfg["tiny_clip"]["image_resolution"]


def test_audio_checkpoint_choice_is_checked_before_training(tmp_path):
    """`audio.checkpoint` is "best" (default) or "last"; anything else fails before any training starts."""
    cfg = demo.load_config(demo.DEFAULT_CONFIG)
    cfg["audio"]["checkpoint"] = "final"
    with pytest.raises(ValueError, match="audio.checkpoint"):
        demo.train_audio_encoder(cfg, "unused", tmp_path / "zoo", tmp_path / "audio", tmp_path / "models")
    assert not (tmp_path / "audio").exists()


@pytest.mark.slow
def test_demo_pipeline_end_to_end(tmp_path, capsys):
    cfg = yaml.safe_load(demo.DEFAULT_CONFIG.read_text())
    cfg["sound_set"]["clips_per_class"] = 8
    cfg["audio"]["overrides"] = ["--trainer.max_epochs=2", "--trainer.enable_progress_bar=false"]
    cfg["manipulation"]["overrides"] = ["--model.steps=8", "--model.gif_every=4"]
    config = tmp_path / "demo.yaml"
    config.write_text(yaml.safe_dump(cfg))

    assert demo.main(["--config", str(config), "--out", str(tmp_path / "out")]) == 0
    printed = capsys.readouterr().out
    (run,) = (tmp_path / "out").iterdir()
    summary = json.loads((run / "demo_summary.json").read_text())
    grid = Path(summary["grid"])
    assert f"grid:            {grid}" in printed and "mean:" in printed
    cell = 128  # experiments/manipulation/demo.yaml
    assert Image.open(grid).size == (8 * cell, caption_height(cell) + 2 * cell)  # source + 7 sounds; 2 sources
    pairs = summary["pairs"]
    assert len(pairs) == 14 and {p["sound"] for p in pairs} == set(cfg["manipulation"]["sounds"])
    mean_before = sum(p["clip_cos_before"] for p in pairs) / 14
    mean_after = sum(p["clip_cos_after"] for p in pairs) / 14
    assert mean_after > mean_before
    for name in ("clip.pt", "generator.pt", "audio_encoder.pt"):
        assert (run / "models" / name).is_file()
    # two offline W&B runs: the audio training's and the edits' own
    assert len(list(run.glob("audio_clip/wandb/offline-run-*"))) == 1
    edit_runs = list(run.glob("wandb/offline-run-*"))
    assert len(edit_runs) == 1 and list(edit_runs[0].glob("files/media/images/**/*.png"))
