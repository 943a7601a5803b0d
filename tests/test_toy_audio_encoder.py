"""The committed toy-world audio encoder: loads, small, deterministic, hears fresh procedural clips, and on the real
recordings in the build's cache scores what its metrics file records."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from datamodules.soundzoo import synthesize
from experiments.toyworld import train_audio
from experiments.toyworld.paintings import ATTRIBUTES
from experiments.toyworld.realsounds import cache_dir, missing, read_manifest
from lightning_modules.audio_export import load_audio_encoder

WEIGHTS = Path(__file__).resolve().parents[1] / "experiments/toyworld/weights"
ENCODER, METRICS = WEIGHTS / train_audio.ENCODER_FILE, WEIGHTS / train_audio.METRICS_FILE
CLIP = WEIGHTS / "toy_clip.pt"


@pytest.fixture(scope="module")
def encoder():
    return load_audio_encoder(ENCODER)


@pytest.fixture(scope="module")
def text():
    return train_audio.prompt_embeddings(str(CLIP))


def test_committed_encoder_is_small_and_deterministic(encoder):
    assert ENCODER.stat().st_size <= 10 * 2**20
    assert encoder.embed_dim == 64 and encoder.sample_rate == 16000 and encoder.clip_samples == 32000
    wave = torch.from_numpy(synthesize("rain", 123, seconds=2.0).astype(np.float32))[None]
    with torch.no_grad():
        a, b = encoder(wave, augment=False), encoder(wave, augment=False)
    assert torch.equal(a, b) and abs(float(a.norm()) - 1.0) < 1e-5


def test_fresh_procedural_clips_rank_their_prompt_first(encoder, text):
    """Seeds outside the training bank (which uses 2_000_000+), five per class: >= 0.95 top-1 per the issue."""
    waves, truth = [], []
    for k, label in enumerate(ATTRIBUTES):
        for i in range(5):
            waves.append(torch.from_numpy(synthesize(label, 970_000 + 100 * k + i, seconds=2.0).astype(np.float32)))
            truth.append(k)
    with torch.no_grad():
        pred = (encoder(torch.stack(waves), augment=False) @ text.T).argmax(1)
    assert (pred == torch.tensor(truth)).float().mean() >= 0.95


@pytest.mark.slow
def test_held_out_recordings_score_what_the_metrics_file_records(encoder, text):
    """Needs the real recordings ($AIARTIST_REALSOUNDS_DIR, default ~/.cache/aiartist/realsounds; fetched by
    `python -m experiments.toyworld.realsounds fetch`). The numbers come from the build, reproduced here."""
    cache = cache_dir()
    held_out = [e for e in read_manifest() if e.split == "validation"]  # only the held-out package is scored
    if missing(held_out, cache):
        pytest.skip(f"the real recordings are not in {cache} (set AIARTIST_REALSOUNDS_DIR or run "
                    f"`python -m experiments.toyworld.realsounds fetch`); a fresh machine need not download them")
    from experiments.toyworld.realsounds import layout

    layout(held_out, cache)
    recorded = json.loads(METRICS.read_text())["metrics"]["validation_package"]
    from experiments.toyworld.listen import listen

    report = listen(encoder, text, list(ATTRIBUTES), cache / "validation")
    assert report.per_class() == pytest.approx(recorded["per_class_top1"])
    assert report.macro() == pytest.approx(recorded["macro_top1"])


def test_toy_world_manipulation_config_names_the_committed_models():
    from experiments import manipulate

    repo = WEIGHTS.parents[2]
    cli = manipulate.main(["--config", str(repo / "experiments/manipulation/toyworld.yaml")], run=False)
    hp = cli.model.hparams
    assert (repo / hp.audio_encoder).resolve() == ENCODER.resolve() and hp.sound_crop == "mean"
    assert (repo / hp.clip).resolve() == CLIP.resolve() and (repo / hp.generator).is_file()
