"""`python -m experiments.animate` on the tiny random world: the MP4 (frames, muxed audio), per-frame metrics,
silence, short / odd / multichannel tracks, chunk-independence of the streaming, and never overwriting."""

import json
import math

import av
import numpy as np
import pytest
import soundfile as sf
import torch

from datamodules.audio_windows import AudioTrack
from experiments import animate
from lightning_modules.animation import (
    AnimationSettings,
    Animator,
    frame_count,
    loudness_strength,
    smooth_sequence,
    smooth_zero_phase,
)
from lightning_modules.animation_outputs import VideoWriter
from lightning_modules.audio_export import export_audio_encoder, load_audio_encoder
from lightning_modules.clip_wrapper import CLIPWrapper
from lightning_modules.networks.audio_encoder import AudioEncoder
from lightning_modules.networks.checkpoints import load_generator
from lightning_modules.networks.mapper import SoundMapper, load_mapper, save_mapper

FPS = 10.0


@pytest.fixture(scope="module")
def models(tmp_path_factory, tiny_generator_path, tiny_clip_path):
    root = tmp_path_factory.mktemp("animate_models")
    torch.manual_seed(0)
    enc = AudioEncoder(embed_dim=64, backbone="resnet18", width=8, n_mels=32, n_fft=256, clip_seconds=0.5).eval()
    mapper = SoundMapper(6, 32, 64, n_layers=2, output_scale=1.0)
    with torch.no_grad():
        for p in mapper.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    return {"generator": tiny_generator_path, "clip": tiny_clip_path,
            "audio_encoder": str(export_audio_encoder(enc, root / "enc.pt")),
            "mapper": str(save_mapper(mapper, root / "mapper.pt")), "truncation": 0.7}


def _track(path, seconds, rate, channels=1, silent=None, seed=0):
    rng = np.random.default_rng(seed)
    n = round(seconds * rate)
    x = (0.1 * rng.standard_normal((n, channels))).astype(np.float32)
    if silent is not None:
        x[round(silent[0] * rate):round(silent[1] * rate)] = 0.0
    sf.write(path, x, rate)
    return str(path)


def _settings(**kw):
    return AnimationSettings(**{"fps": FPS, "size": 32, "smooth": 0.2, "chunk_seconds": 0.5, **kw})


def _decode(path):
    with av.open(str(path)) as c:
        a = c.streams.audio[0]
        audio_s = float(a.duration * a.time_base)
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    return frames, audio_s


def test_loudness_strength_is_monotone_and_zero_at_the_floor():
    levels = np.linspace(-120, 0, 241)
    s = [loudness_strength(lv, -60.0, -40.0) for lv in levels]
    assert all(b >= a for a, b in zip(s, s[1:]))
    assert loudness_strength(-60.0, -60.0, -40.0) == 0.0 and loudness_strength(-40.0, -60.0, -40.0) == 1.0
    assert frame_count(1.3, 10) == 13 and frame_count(1.2, 25) == 30 and frame_count(0.01, 25) == 1


def test_video_audio_and_metrics(models, tmp_path, single_thread):
    # 1.35 s, 22.05 kHz stereo, silent from 0.4 s to 1.1 s
    track = _track(tmp_path / "t.wav", 1.35, 22050, channels=2, silent=(0.4, 1.1))
    r = animate.animate(track, "seed:3", tmp_path / "out", models, _settings(), progress=False)
    frames, audio_s = _decode(r["video"])
    assert len(frames) == math.ceil(1.35 * FPS) == 14 and frames[0].shape == (32, 32, 3)
    assert abs(audio_s - 1.35) <= 1 / FPS  # the audio stream lasts as long as the track, within one frame
    meta = json.loads(r["metrics"].read_text())
    per = meta["per_frame"]
    assert [p["frame"] for p in per] == list(range(14)) and meta["frame_rounding"] == "ceil(duration * fps)"
    # Windows are 0.5 s centred on t: frames with t in [0.65, 0.85] see only silence -> the source, exactly
    silent = [p for p in per if 0.65 <= p["time_s"] <= 0.85]
    assert silent and all(p["silent"] and p["strength"] == 0.0 and p["w_dist"] == 0.0 for p in silent)
    loud = [p for p in per if p["time_s"] <= 0.1]
    assert all(not p["silent"] and p["strength"] > 0 and p["w_dist"] > 0 for p in loud)
    assert any("below the silence floor" in n for n in meta["notes"]) and "centred" in meta["notes"][0]
    assert per[0]["padded"] and not per[5]["padded"]  # the first window reaches before t = 0
    assert r["contact_sheet"].is_file()
    # nothing is overwritten: a second run gets its own directory; the writer refuses an existing file
    r2 = animate.animate(track, "seed:3", tmp_path / "out", models, _settings(causal=True), progress=False)
    assert r2["run_dir"] != r["run_dir"] and "causal" in json.loads(r2["metrics"].read_text())["notes"][0]
    with pytest.raises(FileExistsError):
        VideoWriter(r["video"], track, FPS, 32)


def test_streaming_does_not_depend_on_the_chunk(models, tmp_path, single_thread):
    track = _track(tmp_path / "t.wav", 1.0, 16000, seed=1)
    small = animate.animate(track, "seed:1", tmp_path / "a", models, _settings(chunk_seconds=0.3), progress=False)
    large = animate.animate(track, "seed:1", tmp_path / "b", models, _settings(chunk_seconds=10), progress=False)
    a = json.loads(small["metrics"].read_text())["per_frame"]
    b = json.loads(large["metrics"].read_text())["per_frame"]
    for x, y in zip(a, b, strict=True):
        for key in ("level_dbfs", "strength", "cos_to_window", "w_dist"):
            assert x[key] == pytest.approx(y[key], abs=2e-3), (key, x, y)


def test_short_odd_rate_multichannel_track(models, tmp_path, single_thread):
    # 0.3 s (shorter than the 0.5 s window), 11 kHz (not an AAC rate: muxed at 48 kHz), 3 channels
    track = _track(tmp_path / "short.wav", 0.3, 11000, channels=3)
    r = animate.animate(track, "seed:2", tmp_path / "out", models, _settings(), progress=False)
    frames, audio_s = _decode(r["video"])
    assert len(frames) == 3 and abs(audio_s - 0.3) <= 1 / FPS
    meta = json.loads(r["metrics"].read_text())
    assert all(p["padded"] for p in meta["per_frame"]) and any("shorter than one encoder window" in n
                                                                for n in meta["notes"])
    assert meta["file_channels"] == 3 and meta["file_rate"] == 11000


def test_command_line_reports_bad_input_in_one_line(models, tmp_path, capsys):
    code = animate.main(["--sound", str(tmp_path / "missing.wav"), "--source", "seed:1", "--out", str(tmp_path),
                         "--generator", models["generator"], "--clip", models["clip"],
                         "--audio-encoder", models["audio_encoder"], "--mapper", models["mapper"]])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and "missing.wav" in err[0]
    (tmp_path / "noise.wav").write_bytes(b"not audio at all")
    code = animate.main(["--sound", str(tmp_path / "noise.wav"), "--source", "seed:1", "--out", str(tmp_path),
                         "--generator", models["generator"], "--clip", models["clip"],
                         "--audio-encoder", models["audio_encoder"], "--mapper", models["mapper"]])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and "noise.wav" in err[0]


def test_smoothing_blocks_equal_the_recursion_and_zero_phase_is_symmetric():
    x = torch.randn(150, 3, dtype=torch.float64)
    alpha = 0.2
    y, ref = x[0].clone(), []
    for k in range(len(x)):  # y_k = y_{k-1} + alpha (x_k - y_{k-1})
        y = y + alpha * (x[k] - y)
        ref.append(y)
    assert torch.allclose(smooth_sequence(x, None, alpha), torch.stack(ref), atol=1e-12)
    step = (torch.arange(200) >= 100).double()
    z = smooth_zero_phase(step, alpha)
    pairs = z[99 - torch.arange(40)] + z[100 + torch.arange(40)]  # symmetric about the step: pairs sum to 1
    assert torch.allclose(pairs, torch.ones(40, dtype=z.dtype), atol=1e-4)
    lagged = smooth_sequence(step, None, alpha)
    assert lagged[100] < 0.5 and lagged[99] == 0  # the forward filter alone lags


def test_a_change_in_the_sound_is_centred_offline_and_lagged_when_causal(models, tmp_path, single_thread):
    """Noise, then a tone, at t = 1.5 s: the smoothed embedding trajectory crosses half-way within half a window of
    1.5 s offline (the old forward smoothing lagged by ~tau ln 2 = 0.35 s more), and after 1.5 s + W/2 causally."""
    rate = 16000
    t = np.arange(round(1.5 * rate)) / rate
    x = np.concatenate([0.1 * np.random.default_rng(0).standard_normal(len(t)), 0.1 * np.sin(2 * np.pi * 440 * t)])
    sf.write(tmp_path / "step.wav", x.astype(np.float32), rate)
    G = load_generator(models["generator"]).eval()
    enc = load_audio_encoder(models["audio_encoder"]).eval()
    crossing = {}
    for causal in (False, True):
        s = _settings(smooth=0.5, causal=causal)
        a = Animator(G, CLIPWrapper(models["clip"]), enc, torch.zeros(G.n_latent, G.style_dim), s,
                     load_mapper(models["mapper"]))
        with AudioTrack(str(tmp_path / "step.wav"), enc.sample_rate) as track:
            traj = a.trajectory(track)
        e_a, e_b = traj.raw[5], traj.raw[-5]  # windows fully inside noise / tone
        p = (traj.emb @ (e_b - e_a)).numpy()
        mid = (p[5] + p[-5]) / 2
        k = int(np.argmax(p > mid))
        crossing[causal] = (k - 1 + (mid - p[k - 1]) / (p[k] - p[k - 1])) / FPS
    assert abs(crossing[False] - 1.5) <= 0.25, crossing  # W / 2 = 0.25 s
    assert crossing[True] > 1.5 + 0.25, crossing
