"""The method end to end, judged by meaning: in the learned toy world a fire sound makes a painting look like fire.

Runs `make demo`'s toy-world pipeline (experiments.demo with experiments/toyworld/demo.yaml: the committed toy CLIP
and toy StyleGAN2, an audio encoder trained on the procedural sound set by the demo config, sixteen sources x the
seven paper sounds), then judges every edit with the hand-written detectors (which the edit never optimised
against) and with the toy CLIP's class probabilities.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import av
import pytest
import torch

from datamodules.audio_io import crop_or_pad
from datamodules.soundzoo import synthesize
from experiments import demo
from experiments.toyworld.build import CLIP_FILE, GENERATOR_FILE, WEIGHTS_DIR
from experiments.toyworld.detectors import THRESHOLDS, detector_scores
from experiments.toyworld.judge import judge, load_edits
from experiments.toyworld.paintings import ATTRIBUTES
from lightning_modules.audio_export import load_audio_encoder
from lightning_modules.clip_wrapper import CLIPWrapper
from lightning_modules.edit_outputs import slug
from lightning_modules.networks.checkpoints import load_generator
from lightning_modules.networks.mapper import load_mapper

REPO = Path(__file__).resolve().parents[1]
TOYWORLD_DEMO = REPO / "experiments" / "toyworld" / "demo.yaml"
COMMITTED_ENCODER = WEIGHTS_DIR / "toy_audio_encoder.pt"  # a fixed file: make demo's encoder differs by CPU kind
MAPPER_SHARE_OF_OPTIMISE = 0.9  # the bar: the mapper's detector-rose share >= 90 % of the optimisation's
STORY_MARGIN = 0.1  # a segment's own detector beats the other segments' by 10 % of its decision threshold


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


@pytest.fixture(scope="module")
def mapper_judgement(demo_run) -> dict:
    G = load_generator(WEIGHTS_DIR / GENERATOR_FILE)
    mapper_dir = Path(json.loads((demo_run / "demo_summary.json").read_text())["mapper_edit_dir"])
    return judge(load_edits(mapper_dir), G, CLIPWrapper(str(WEIGHTS_DIR / CLIP_FILE)))


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
    """Intensity on, end to end from the sound file: the demo's fire clip peaking at 0.99 and 30 dB quieter, through the
    committed encoder (make demo's differs by CPU kind; on one it heard the quiet copy as more fire), the
    loudness-scaled lambda_sim, Eq. 2 on the toy StyleGAN2 and the fire detector."""
    import soundfile as sf

    from datamodules.latent_sources import parse_sources
    from experiments.toyworld.detectors import detector_scores
    from lightning_modules.manipulation import ManipulationModule

    wave, rate = sf.read(demo_run / "sounds" / f"{slug('fire crackling')}.wav", dtype="float32")
    peak = float(abs(wave).max())
    sounds = []
    for name, gain_db in (("loud", 0.0), ("quiet", -30.0)):  # peak at 0.99 (no clipping in 16-bit WAV), and 30 dB less
        path = demo_run / f"fire_{name}.wav"
        sf.write(path, wave * (0.99 / peak) * 10 ** (gain_db / 20), rate)
        sounds.append((f"fire crackling {name}", str(path)))
    module = ManipulationModule(generator=str(WEIGHTS_DIR / GENERATOR_FILE),
                                audio_encoder=str(COMMITTED_ENCODER),
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
    # ... and gains more fire than the quiet copy, held 4x harder near the source (measured +0.553 against +0.344
    # on 6 sources with the committed encoder).
    assert rise[0].mean() > max(rise[1].mean(), 0), rise
# ---------------------------------------------------------------------------------------------- the mapper (issue 16)
@pytest.mark.slow
@pytest.mark.parametrize("sound", ["fire crackling", "rain", "thunderstorm"])
def test_mapper_raises_its_sounds_detector_like_the_optimisation(judgement, mapper_judgement, sound):
    """One forward pass of the committed toy mapper, same pairs as the optimisation, judged by the detectors: the
    issue's bar, the mapper's detector-rose share >= 90 % of the optimisation's, for fire, rain and thunderstorm
    (measured with make demo's encoder: 100, 100, 94 % against 100, 100, 88 %, benchmarks/RESULTS.md)."""
    r, ref = mapper_judgement[sound], judgement[sound]
    assert r["n_sources"] >= 16
    assert r["detector_rose_share"] >= MAPPER_SHARE_OF_OPTIMISE * ref["detector_rose_share"], (r, ref)
    assert r["detector_rise"] > r["detector_rise_other_sounds"], r


@pytest.mark.slow
def test_mapper_strength_scales_the_edit():
    """For fire, rain and thunderstorm (four fresh clips each, embedded by the committed encoder, a fixed file, so
    that the result does not hang on the CPU make demo's encoder trained on): the detector's mean over clips x 32
    sources rises with strength (0 < 0.5 < 1), and strength -1 lowers the mean over sources that already carry the
    attribute, on more than two thirds of the (clip, carrier) pairs. Measured: 64, 61 and 46 of 64 pairs lowered;
    thunderstorm is the weakest (its detector saturates: means 0.56, 0.71, 0.75 at strength 0, 0.5, 1)."""
    G = load_generator(WEIGHTS_DIR / GENERATOR_FILE)
    mapper = load_mapper(WEIGHTS_DIR / "toy_mapper.pt")
    encoder = load_audio_encoder(COMMITTED_ENCODER)
    z = torch.randn(400, G.style_dim, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        w_all = G.mapping(z, truncation=0.7)[:, None].expand(-1, G.n_latent, -1).contiguous()
        base = detector_scores(G.synthesis(w_all))
    for label in ("fire crackling", "rain", "thunderstorm"):
        k = ATTRIBUTES.index(label)
        waves = torch.stack([crop_or_pad(torch.from_numpy(synthesize(label, 60_000 + i, seconds=2.0)).float(),
                                         encoder.clip_samples, mode="center") for i in range(4)])
        carriers = w_all[base[:, k] > THRESHOLDS[label]][:16]
        assert len(carriers) >= 4, label
        with torch.no_grad():
            embeddings = torch.nn.functional.normalize(encoder(waves, augment=False).float(), dim=-1)
            means, before, after = torch.zeros(3), detector_scores(G.synthesis(carriers))[:, k], []
            for e in embeddings:
                means += torch.tensor([detector_scores(G.synthesis(mapper.edit(w_all[:32], e.expand(32, -1), s)))[:, k]
                                       .mean().item() for s in (0, 0.5, 1)]) / len(embeddings)
                lowered = mapper.edit(carriers, e.expand(len(carriers), -1), -1.0)
                after.append(detector_scores(G.synthesis(lowered))[:, k])
        after = torch.stack(after)
        assert means[0] < means[1] < means[2], (label, means)
        assert after.mean() < before.mean(), (label, before, after)
        assert (after < before).float().mean() > 2 / 3, (label, before, after)


@pytest.mark.slow
def test_story_video_follows_the_track(demo_run):
    """The demo's story video (rain, thunderstorm, fire; 4 s each): in each segment's interior, that segment's
    detector on the decoded frames is higher than in the other two segments' interiors, by a margin of 10 % of the
    detector's threshold; the MP4 has ceil(duration * fps) frames and audio as long as the track (within a frame)."""
    summary = json.loads((demo_run / "demo_summary.json").read_text())
    meta = json.loads(Path(summary["story_metrics"]).read_text())
    fps, window = meta["settings"]["fps"], meta["settings"]["window_s"]
    with av.open(summary["story_video"]) as c:
        audio = c.streams.audio[0]
        audio_s = float(audio.duration * audio.time_base)
        frames = torch.stack([torch.from_numpy(f.to_ndarray(format="rgb24")) for f in c.decode(video=0)])
    assert len(frames) == math.ceil(meta["duration_s"] * fps - 1e-9) == meta["frames"]
    assert abs(audio_s - meta["duration_s"]) <= 1 / fps
    size = load_generator(WEIGHTS_DIR / GENERATOR_FILE).size
    images = torch.nn.functional.interpolate(frames.permute(0, 3, 1, 2).float(), size=(size, size), mode="area")
    scores = detector_scores(images / 127.5 - 1)
    # interiors: transitions of +- (half a window + the smoothing constant) around each boundary are excluded
    guard = window / 2 + meta["settings"]["smooth"]
    t = torch.arange(len(frames)) / fps
    segments = [("rain", 0.0, 4.0), ("thunderstorm", 4.0, 8.0), ("fire crackling", 8.0, 12.0)]
    inside = {label: (t >= a + (guard if a > 0 else 0)) & (t <= b - (guard if b < 12 else 0))
              for label, a, b in segments}
    for label, _, _ in segments:
        k = ATTRIBUTES.index(label)
        mine = scores[inside[label], k].mean().item()
        others = max(scores[m, k].mean().item() for other, m in inside.items() if other != label)
        print(f"story: {label} detector {mine:.3f} in its segment, at most {others:.3f} elsewhere")
        assert mine > others + STORY_MARGIN * THRESHOLDS[label], (label, mine, others)
