"""The `official` front end against the official code's own pipeline (librosa + OpenCV) as the oracle.

The oracle is that code's transform written with librosa and cv2 (test-only dependencies): load at
44.1 kHz, mel power spectrogram, power_to_db(ref=max)/80 + 1, centre crop/pad to 864 frames in a float64
zero array, cv2.resize(spec, (128, 512)) and the raw reshape to (1, 128, 512).
"""

from __future__ import annotations

import cv2
import librosa
import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio.functional as AF

from datamodules.official_frontend import OfficialFrontEnd, load_official_audio, slaney_mel_filterbank

FRAMES, N_MELS, HEIGHT = 864, 128, 512
TIGHT = 1e-5  # values lie in [0, 1]; float64 torch vs float32 librosa differ at ~1e-7


def _signal(seconds: float, rate: int, channels: int, seed: int) -> np.ndarray:
    """A clip with structure in time and frequency: a chirp, tone bursts, noise, and a silent stretch."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    out = []
    for c in range(channels):
        chirp = 0.3 * np.sin(2 * np.pi * (200 + 900 * c) * t + 2 * np.pi * 1500 * t**2 / seconds)
        bursts = 0.4 * np.sin(2 * np.pi * rng.uniform(300, 6000) * t) * (np.sin(2 * np.pi * 1.3 * t) > 0.6)
        noise = 0.03 * rng.standard_normal(t.size)
        x = chirp + bursts + noise
        x[int(0.1 * t.size):int(0.18 * t.size)] = 0.0  # digital silence hits the top_db floor
        out.append(x)
    return np.stack(out, axis=1).astype(np.float32) * 0.9


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("official_clips")
    specs = {  # name: (seconds, rate, channels, subtype, extension)
        "stereo_44k_16bit": (7.3, 44100, 2, "PCM_16", "wav"),
        "mono_44k_float_short": (2.6, 44100, 1, "FLOAT", "wav"),
        "mono_44k_flac_long": (12.4, 44100, 1, "PCM_16", "flac"),
        "stereo_48k_24bit": (6.1, 48000, 2, "PCM_24", "wav"),
    }
    paths = {}
    for i, (name, (seconds, rate, channels, subtype, ext)) in enumerate(specs.items()):
        paths[name] = root / f"{name}.{ext}"
        sf.write(paths[name], _signal(seconds, rate, channels, seed=i), rate, subtype=subtype)
    return paths


def _oracle_from_wave(y: np.ndarray, pad_mode: str) -> np.ndarray:
    """The official transform (eval: centre crop / centre zero-pad) on a 44.1 kHz waveform."""
    spec = librosa.feature.melspectrogram(y=y, sr=44100, n_mels=N_MELS, pad_mode=pad_mode)
    spec = librosa.power_to_db(spec, ref=np.max) / 80.0 + 1
    w = spec.shape[1]
    if w >= FRAMES:
        j = (w - FRAMES) // 2
        spec = spec[:, j:j + FRAMES]
    else:
        zero = np.zeros((N_MELS, FRAMES))
        j = (FRAMES - w) // 2
        zero[:, j:j + w] = spec
        spec = zero
    return cv2.resize(spec, (N_MELS, HEIGHT)).reshape(1, N_MELS, HEIGHT)


def _ours(wave: torch.Tensor, pad_mode: str) -> np.ndarray:
    front = OfficialFrontEnd(pad_mode=pad_mode).eval()
    return front(wave[None])[0].numpy()


@pytest.mark.parametrize("pad_mode", ["reflect", "constant"])
@pytest.mark.parametrize("name", ["stereo_44k_16bit", "mono_44k_float_short", "mono_44k_flac_long"])
def test_matches_librosa_opencv_at_44k(clips, name, pad_mode):
    y, sr = librosa.load(clips[name], sr=44100)
    expected = _oracle_from_wave(y, pad_mode)
    wave = load_official_audio(clips[name])
    np.testing.assert_array_equal(wave.numpy(), y)  # same decode and downmix, no resampling at 44.1 kHz
    got = _ours(wave, pad_mode)
    assert got.shape == (1, N_MELS, HEIGHT) and got.dtype == np.float32
    err = np.abs(got - expected).max()
    print(f"{name} {pad_mode}: max abs error vs librosa+cv2 = {err:.2e}")
    assert err < TIGHT


def test_48k_24bit_resampled_like_librosa_kaiser_best(clips):
    """Resampling 48 -> 44.1 kHz. The official environment (librosa 0.8.1) used resampy's kaiser_best;
    ours is torchaudio's Kaiser sinc with the same parameters, whose window spans the sinc slightly
    differently: they agree below ~19 kHz and differ in the transition band (the top 4 mel bands)."""
    path = clips["stereo_48k_24bit"]
    ours_wave = load_official_audio(path)
    y_kb, _ = librosa.load(path, sr=44100, res_type="kaiser_best")
    assert ours_wave.shape[0] == y_kb.shape[0]
    # Same transform on the same samples: tight.
    err_same = np.abs(_ours(ours_wave, "reflect") - _oracle_from_wave(ours_wave.numpy(), "reflect")).max()
    assert err_same < TIGHT
    # The full oracle pipeline, resampler included.
    err_full = np.abs(_ours(ours_wave, "reflect") - _oracle_from_wave(y_kb, "reflect"))
    front = OfficialFrontEnd()
    band_err = np.abs(front.log_mel(ours_wave).numpy() - front.log_mel(torch.from_numpy(y_kb)).numpy())
    passband = band_err[:124].max()  # mel bands below 19.4 kHz
    print(f"48 kHz: same waveform {err_same:.2e}; vs kaiser_best: final max {err_full.max():.2e} "
          f"mean {err_full.mean():.2e}; bands < 19.4 kHz max {passband:.2e}, "
          f"top 4 bands max {band_err[124:].max():.2e}")
    assert passband < 1e-3
    assert err_full.mean() < 5e-3
    # The Kaiser choice matters: torchaudio's default (Hann, width 6) resampler lands further away.
    data, rate = sf.read(path, dtype="float32")
    hann = AF.resample(torch.from_numpy(data.mean(axis=1)), rate, 44100)
    hann_err = np.abs(front.log_mel(hann).numpy() - front.log_mel(torch.from_numpy(y_kb)).numpy())[:124].max()
    assert passband < 0.1 * hann_err


def test_slaney_filterbank_equals_librosa():
    for sr, n_fft, n_mels, fmin, fmax in [(44100, 2048, 128, 0.0, None), (16000, 512, 40, 50.0, 7000.0)]:
        ours = slaney_mel_filterbank(sr, n_fft, n_mels, fmin, fmax).numpy()
        ref = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax, dtype=np.float64)
        np.testing.assert_allclose(ours, ref, rtol=1e-10, atol=1e-14)


def test_lengths_give_the_same_result_as_unpadded_clips():
    a = torch.from_numpy(_signal(3.0, 44100, 1, 5)[:, 0])
    b = torch.from_numpy(_signal(11.0, 44100, 1, 6)[:, 0])
    front = OfficialFrontEnd().eval()
    batch = torch.zeros(2, b.numel())
    batch[0, : a.numel()] = a
    batch[1] = b
    together = front(batch, lengths=torch.tensor([a.numel(), b.numel()]))
    torch.testing.assert_close(together[0], front(a[None])[0], rtol=0, atol=0)
    torch.testing.assert_close(together[1], front(b[None])[0], rtol=0, atol=0)
    # without lengths the zero tail is part of clip 0 and changes its input
    assert not torch.equal(front(batch)[0], together[0])


def test_crop_policies_follow_the_official_code():
    front = OfficialFrontEnd()
    g = torch.Generator().manual_seed(0)
    slack = 40
    long_offsets = {front.frame_offset(FRAMES + slack, "train", g) for _ in range(2000)}
    short_offsets = {front.frame_offset(FRAMES - slack, "train", g) for _ in range(2000)}
    assert long_offsets == set(range(slack + 1))      # random.randint(0, w - 864), inclusive
    assert short_offsets == set(range(slack))         # random.randint(0, 864 - w - 1): never flush right
    assert {front.frame_offset(FRAMES + slack, "manipulation", g) for _ in range(500)} == set(range(slack + 1))
    assert front.frame_offset(FRAMES - slack, "manipulation", g) == 0
    assert front.frame_offset(FRAMES + 41, "center", g) == 20 and front.frame_offset(FRAMES - 41, "center", g) == 20
    # train mode is used while .training, the configured policy otherwise; the generator makes it reproducible
    wave = torch.from_numpy(_signal(12.0, 44100, 1, 7)[:, 0])[None]
    out1 = front.train()(wave, generator=torch.Generator().manual_seed(1))
    out2 = front.train()(wave, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(out1, out2, rtol=0, atol=0)
    assert not torch.equal(out1, front.eval()(wave))


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="crop"):
        OfficialFrontEnd(crop="random")
    with pytest.raises(ValueError, match="pad_mode"):
        OfficialFrontEnd(pad_mode="edge")
    with pytest.raises(ValueError, match="too short"):
        OfficialFrontEnd()(torch.randn(1, 800))
    with pytest.raises(ValueError, match=r"\(B, T\)"):
        OfficialFrontEnd()(torch.randn(800))
    with pytest.raises(ValueError, match="policy"):
        OfficialFrontEnd()(torch.randn(1, 4000), policy="random")
