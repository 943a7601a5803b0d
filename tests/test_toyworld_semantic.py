"""The method end to end, judged by meaning: in the learned toy world a fire sound makes a painting look like fire.

Runs `make demo`'s toy-world pipeline (experiments.demo with experiments/toyworld/demo.yaml: the committed toy CLIP
and toy StyleGAN2, an audio encoder trained on the procedural sound set by the demo config, sixteen sources x the
seven paper sounds), then judges every edit with the hand-written detectors (which the edit never optimised
against) and with the toy CLIP's class probabilities.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from experiments import demo
from experiments.toyworld.build import CLIP_FILE, GENERATOR_FILE, WEIGHTS_DIR
from experiments.toyworld.judge import judge, load_edits
from experiments.toyworld.paintings import ATTRIBUTES
from lightning_modules.clip_wrapper import CLIPWrapper
from lightning_modules.networks.checkpoints import load_generator

REPO = Path(__file__).resolve().parents[1]
TOYWORLD_DEMO = REPO / "experiments" / "toyworld" / "demo.yaml"


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("toyworld_demo")

    cwd = os.getcwd()
    os.chdir(REPO)  # the demo config's paths are relative to the repository root
    try:
        assert demo.main(["--config", str(TOYWORLD_DEMO), "--out", str(out)]) == 0
    finally:
        os.chdir(cwd)
    (run,) = out.iterdir()
    return run


@pytest.fixture(scope="module")
def judgement(demo_run) -> dict:
    edit_dir = Path(json.loads((demo_run / "demo_summary.json").read_text())["edit_dir"])
    G = load_generator(WEIGHTS_DIR / GENERATOR_FILE)
    return judge(load_edits(edit_dir), G, CLIPWrapper(str(WEIGHTS_DIR / CLIP_FILE)))


@pytest.mark.slow
@pytest.mark.parametrize("sound", ["fire crackling", "rain", "thunderstorm"])
def test_sound_raises_its_own_attribute_detector(judgement, sound):
    r = judgement[sound]
    assert r["n_sources"] >= 16
    assert r["detector_rose_share"] >= 0.8, r
    # Not by a hair: on most sources the rise is at least 1 % of the detector's decision threshold.
    assert r["detector_rose_visibly_share"] >= 0.75, r
    assert r["detector_rise"] > r["detector_rise_other_sounds"], r


@pytest.mark.slow
def test_every_sound_raises_the_toy_clip_probability_of_its_class(judgement):
    assert set(judgement) == set(ATTRIBUTES)
    low = {s: r["clip_prob_rose_share"] for s, r in judgement.items() if r["clip_prob_rose_share"] < 0.7}
    assert not low, low


@pytest.mark.slow
def test_demo_reports_per_sound_edit_metrics_and_the_frechet_distance(demo_run, judgement):
    summary = json.loads((demo_run / "demo_summary.json").read_text())
    rows = {r["sound"]: r for r in summary["toyworld"]["table"]}
    assert set(rows) == set(ATTRIBUTES)
    for sound, row in rows.items():  # the demo's table carries the judge's detector agreement unchanged
        assert row["detector_rose_share"] == judgement[sound]["detector_rose_share"]
        assert row["clip_gain"] > 0 and "clip_image_similarity" in row  # offline: preservation named as such
    fd = summary["toyworld"]["frechet"]
    assert fd["n_edited"] == 16 * 7 and fd["n_sources"] == 16 and fd["fd_edited"] > 0 and fd["fd_sources"] > 0


@pytest.mark.slow
def test_intensity_louder_copy_edits_more_than_a_quieter_copy(demo_run, single_thread):
    """Intensity on, end to end from the sound file: the same fire clip peaking at 0.99 and 30 dB quieter, through the
    trained encoder, the loudness-scaled lambda_sim, Eq. 2 on the toy StyleGAN2 and the fire detector."""
    import soundfile as sf

    from datamodules.latent_sources import parse_sources
    from experiments.toyworld.detectors import detector_scores
    from lightning_modules.edit_outputs import slug
    from lightning_modules.manipulation import ManipulationModule

    wave, rate = sf.read(demo_run / "sounds" / f"{slug('fire crackling')}.wav", dtype="float32")
    peak = float(abs(wave).max())
    sounds = []
    for name, gain_db in (("loud", 0.0), ("quiet", -30.0)):  # peak at 0.99 (no clipping in 16-bit WAV), and 30 dB less
        path = demo_run / f"fire_{name}.wav"
        sf.write(path, wave * (0.99 / peak) * 10 ** (gain_db / 20), rate)
        sounds.append((f"fire crackling {name}", str(path)))
    module = ManipulationModule(generator=str(WEIGHTS_DIR / GENERATOR_FILE),
                                audio_encoder=str(demo_run / "models" / "audio_encoder.pt"),
                                clip=str(WEIGHTS_DIR / CLIP_FILE), steps=100, lambda_sim=0.003, intensity=True,
                                progress=False)
    module.prepare_job(parse_sources(list(range(6))), sounds)
    assert module.loudness[0] - module.loudness[1] == pytest.approx(30.0, abs=0.5)
    assert module.lambdas[0] < module.lambdas[1]  # louder: weaker pull towards the source
    fire = ATTRIBUTES.index("fire crackling")
    dist, rise = [], []
    for k in range(2):
        out = module.optimise(module.w_sources, module.targets[k].expand(6, -1), module.lambdas[k])
        dist.append(out.w_dist)
        rise.append(detector_scores(out.images)[:, fire] - detector_scores(out.source_images)[:, fire])
    assert (dist[0] > dist[1]).all(), dist  # every source moves further with the louder copy
    # ... and gains more fire (the quiet copy, held 4x harder near the source and embedded from a quieter
    # spectrogram, may add none: measured +0.020 against -0.003 on 6 sources).
    assert rise[0].mean() > max(rise[1].mean(), 0), rise
