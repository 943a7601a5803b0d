"""The window reader: each policy picks what it says, `random` reproduces crop_or_pad's seeded crops, long files
read in bounded memory, stream_blocks reassembles the clip, and the report says which part was used."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import datamodules.audio_windows as aw_mod
from datamodules.audio_io import AudioDecodeError, crop_or_pad, load_audio
from datamodules.audio_windows import grid_starts, read_windows, stream_blocks

ROOT = Path(__file__).resolve().parents[1]


def _noise(rate: int, seconds: float, channels: int = 1, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal((int(rate * seconds), channels)) * 0.1).astype(np.float32)


@pytest.mark.parametrize("rate, channels", [(16000, 1), (44100, 2), (48000, 1), (22050, 2)])
def test_random_and_center_equal_crop_or_pad_bit_for_bit(tmp_path, rate, channels):
    path = tmp_path / "clip.wav"
    sf.write(path, _noise(rate, 5.3, channels), rate, subtype="PCM_16")
    whole = load_audio(path, 16000)
    for seed in (0, 1, 7, 100_003 * 3 + 2):
        expected = crop_or_pad(whole, 32000, "random", torch.Generator().manual_seed(seed))
        got = read_windows(path, 16000, 32000, "random", seed=seed)
        assert torch.equal(got.windows[0], expected)
        start = got.starts_s[0]
        assert torch.equal(whole[round(start * 16000) : round(start * 16000) + 32000], expected)
    assert torch.equal(read_windows(path, 16000, 32000, "center").windows[0], crop_or_pad(whole, 32000, "center"))


def test_short_clip_is_padded_like_crop_or_pad(tmp_path):
    path = tmp_path / "short.wav"
    sf.write(path, _noise(16000, 0.7), 16000, subtype="FLOAT")
    whole = load_audio(path, 16000)
    for seed in (0, 3):
        got = read_windows(path, 16000, 32000, "random", seed=seed)
        assert got.padded and torch.equal(got.windows[0], crop_or_pad(whole, 32000, "random",
                                                                      torch.Generator().manual_seed(seed)))
        assert torch.equal(got.content(), whole)
    for policy in ("center", "mean", "loudest"):
        got = read_windows(path, 16000, 32000, policy)
        assert got.windows.shape == (1, 32000) and torch.equal(got.windows[0], crop_or_pad(whole, 32000, "center"))
        assert "zero-padded" in got.describe() and got.ends_s == [pytest.approx(0.7)]


def test_loudest_picks_the_loud_window_and_mean_covers_the_grid(tmp_path):
    rate, w = 16000, 16000
    x = np.zeros((rate * 7, 1), np.float32) + 0.001
    x[3 * rate : 4 * rate] = 0.5  # the fourth 1-s window is loud
    path = tmp_path / "burst.wav"
    sf.write(path, x, rate, subtype="FLOAT")
    loud = read_windows(path, rate, w, "loudest")
    assert loud.starts_s == [3.0] and loud.ends_s == [4.0] and torch.allclose(loud.windows, torch.tensor(0.5))
    assert loud.describe() == "3.0–4.0 s of 7.0 s (loudest of 7 windows)"
    mean = read_windows(path, rate, w, "mean")
    assert mean.starts_s == [float(s) for s in range(7)] and mean.windows.shape == (7, w)
    assert torch.equal(mean.windows.flatten(), load_audio(path, rate))
    assert mean.describe() == "0.0–7.0 s of 7.0 s (mean of 7 windows)"
    capped = read_windows(path, rate, w, "mean", max_windows=3)
    assert capped.starts_s == [0.0, 3.0, 6.0] and "mean of 3 of 7 windows" in capped.describe()


def test_grid_tail_rule():
    assert grid_starts(100, 100) == [0] and grid_starts(40, 100) == [0]
    assert grid_starts(249, 100) == [0, 100]  # tail 49 < half a window: left out
    assert grid_starts(250, 100) == [0, 100, 150]  # tail 50: one more window, aligned to the end


def test_long_file_spans_match_the_whole_file_read(tmp_path, monkeypatch):
    """Above the whole-file size the reader resamples span by span; it must agree with load_audio."""
    path = tmp_path / "long.wav"
    sf.write(path, _noise(44100, 6.0, 2), 44100, subtype="PCM_16")
    whole = load_audio(path, 16000)
    monkeypatch.setattr(aw_mod, "WHOLE_FILE_SAMPLES", 1000)
    blocks = list(stream_blocks(path, 16000, 7000))
    assert [b.numel() for b in blocks[:-1]] == [7000] * (len(blocks) - 1)
    assert torch.allclose(torch.cat(blocks), whole, atol=1e-6, rtol=0)
    mean = read_windows(path, 16000, 32000, "mean")
    for start, window in zip(mean.starts_s, mean.windows):
        s = round(start * 16000)
        assert torch.allclose(window, whole[s : s + 32000], atol=1e-6, rtol=0)
    for seed in (0, 5):
        rand = read_windows(path, 16000, 32000, "random", seed=seed)
        expected = crop_or_pad(whole, 32000, "random", torch.Generator().manual_seed(seed))
        assert torch.allclose(rand.windows[0], expected, atol=1e-6, rtol=0)


def test_stream_blocks_reassemble_the_clip(tmp_path):
    path = tmp_path / "s.flac"
    sf.write(path, _noise(48000, 2.5, 2), 48000, subtype="PCM_16")
    blocks = list(stream_blocks(path, 16000, 8000))
    assert all(b.dtype == torch.float32 and b.dim() == 1 for b in blocks)
    assert torch.equal(torch.cat(blocks), load_audio(path, 16000))


def test_bad_input_names_the_file(tmp_path):
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF not really")
    with pytest.raises(AudioDecodeError, match="broken.wav"):
        read_windows(bad, 16000, 32000)
    good = tmp_path / "ok.wav"
    sf.write(good, _noise(16000, 1.0), 16000)
    with pytest.raises(ValueError, match="policy must be one of"):
        read_windows(good, 16000, 32000, "loudness")


_RSS_SCRIPT = """
import json, resource, sys
from datamodules.audio_windows import read_windows
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
spans = [read_windows(sys.argv[1], 16000, 32000, p).describe() for p in ("mean", "loudest", "center")]
print(json.dumps({"peak_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "spans": spans}))
"""


def _peak_rss(path: Path) -> dict:
    out = subprocess.run([sys.executable, "-c", _RSS_SCRIPT, str(path)], cwd=ROOT, capture_output=True, text=True,
                         check=True, env={"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_twenty_minute_file_reads_in_bounded_memory(tmp_path):
    """Peak RSS reading a 20-min 48 kHz stereo file stays within 100 MiB of reading a 2 s one; decoding it whole
    as float32 would need 440 MiB for the samples alone."""
    rate, seconds = 48000, 1200
    long, short = tmp_path / "long.wav", tmp_path / "short.wav"
    rng = np.random.default_rng(0)
    with sf.SoundFile(long, "w", rate, 2, subtype="PCM_16") as f:
        for _ in range(seconds // 10):
            f.write((rng.standard_normal((rate * 10, 2)) * 0.05).astype(np.float32))
    sf.write(short, _noise(rate, 2.0, 2), rate, subtype="PCM_16")
    long_run, short_run = _peak_rss(long), _peak_rss(short)
    assert long_run["spans"][0] == "0.0–1200.0 s of 1200.0 s (mean of 256 of 600 windows)"
    growth_mib = (long_run["peak_kib"] - short_run["peak_kib"]) / 1024
    whole_mib = rate * seconds * 2 * 4 / 2**20
    assert whole_mib > 400 and growth_mib < 100, (growth_mib, long_run, short_run)


def test_audio_track_padded_span_is_zero_outside_the_clip(tmp_path):
    """AudioTrack (animate's reader): spans reaching before the start / past the end hold the clip where it is."""
    from datamodules.audio_windows import AudioTrack

    path = tmp_path / "t.wav"
    sf.write(path, _noise(22050, 1.0, 2), 22050, subtype="PCM_16")
    whole = load_audio(path, 16000)
    with AudioTrack(path, 16000) as track:
        assert track.channels == 2 and track.duration_s == pytest.approx(1.0) and track.length == len(whole)
        span, r0, r1 = track.padded_span(-300, 1000)
        assert (r0, r1) == (300, 1000) and torch.equal(span[:300], torch.zeros(300))
        assert torch.equal(span[300:], whole[:700])
        span, r0, r1 = track.padded_span(len(whole) - 200, 500)
        assert (r0, r1) == (0, 200) and torch.equal(span[:200], whole[-200:]) and not span[200:].any()
        assert track.padded_span(len(whole) + 10, 50)[1:] == (0, 0)


def test_causal_windows_end_evenly_through_each_chunk():
    """Live input: k windows per chunk, each the last `window` samples up to j/k of the chunk; chunk after chunk
    they equal slices of the whole signal (zeros before the start), and the history carries over."""
    window, k = 50, 3
    signal = torch.randn(400)
    padded = torch.cat([torch.zeros(window), signal])
    history, seen = None, 0
    for n in (30, 7, 1, 64, 0, 100):  # uneven chunk lengths, an empty one too
        wins, history = aw_mod.causal_windows(history, signal[seen:seen + n], window, k)
        assert wins.shape == (k, window)
        for j in range(1, k + 1):
            end = window + seen + (n * j) // k  # in `padded`: the sample j/k of the way through the chunk
            torch.testing.assert_close(wins[j - 1], padded[end - window:end])
        seen += n
        torch.testing.assert_close(history, padded[window + seen - window:window + seen])
    with pytest.raises(ValueError, match="k >= 1"):
        aw_mod.causal_windows(None, signal, window, 0)
