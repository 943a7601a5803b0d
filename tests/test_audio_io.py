"""Audio decoding (mono, resampling, format sniffing, clear errors) and crop/pad."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch

from datamodules.audio_io import AudioDecodeError, crop_or_pad, load_audio
from datamodules.audio_windows import read_windows


def _sine(freq: float, rate: int, seconds: float, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _peak_hz(wave: torch.Tensor, rate: int) -> float:
    spec = torch.fft.rfft(wave.double()).abs()
    return float(spec.argmax()) * rate / wave.numel()


def test_mono_flac_roundtrip(tmp_path):
    x = _sine(440, 16000, 0.5)
    sf.write(tmp_path / "a.flac", x, 16000, subtype="PCM_16")
    wave = load_audio(tmp_path / "a.flac", 16000)
    assert wave.dtype == torch.float32 and wave.shape == (8000,)
    assert torch.allclose(wave, torch.from_numpy(x), atol=1 / 2**14)


def test_stereo_is_averaged(tmp_path):
    left, right = _sine(300, 16000, 0.25), _sine(1000, 16000, 0.25, amp=0.25)
    sf.write(tmp_path / "st.wav", np.stack([left, right], axis=1), 16000, subtype="FLOAT")
    wave = load_audio(tmp_path / "st.wav", 16000)
    assert wave.shape == (4000,)
    assert torch.allclose(wave, torch.from_numpy((left + right) / 2), atol=1e-6)


def test_44k_file_is_resampled_keeping_pitch(tmp_path):
    sf.write(tmp_path / "hi.wav", _sine(1000, 44100, 1.0), 44100)
    wave = load_audio(tmp_path / "hi.wav", 16000)
    assert wave.shape == (16000,)
    assert abs(_peak_hz(wave, 16000) - 1000) <= 2
    assert 0.45 < wave.abs().max() < 0.55  # amplitude survives the resampler


def test_format_is_sniffed_not_taken_from_extension(tmp_path):
    x = _sine(500, 16000, 0.2)
    sf.write(tmp_path / "real.flac", x, 16000, subtype="PCM_16")
    (tmp_path / "lies.wav").write_bytes((tmp_path / "real.flac").read_bytes())
    assert torch.allclose(load_audio(tmp_path / "lies.wav", 16000), load_audio(tmp_path / "real.flac", 16000))


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("corrupt.flac", b"fLaC" + bytes(range(256)) * 4, "truncated or corrupt audio \\(FLAC header"),
        ("empty.wav", b"", "empty file \\(0 bytes\\)"),
        ("text.ogg", b"this is not audio\n", "not an audio file"),
    ],
)
def test_undecodable_files_raise_naming_the_file(tmp_path, name, content, message):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(AudioDecodeError, match=message) as info:
        load_audio(tmp_path / name, 16000)
    assert name in str(info.value)


def test_header_only_and_nonfinite_files_raise(tmp_path):
    sf.write(tmp_path / "zero.wav", np.zeros(0, np.float32), 16000)
    with pytest.raises(AudioDecodeError, match="no samples"):
        load_audio(tmp_path / "zero.wav", 16000)
    x = _sine(200, 16000, 0.1)
    x[10] = np.nan
    sf.write(tmp_path / "nan.wav", x, 16000, subtype="FLOAT")
    with pytest.raises(AudioDecodeError, match="NaN"):
        load_audio(tmp_path / "nan.wav", 16000)


def test_missing_file_raises_decode_error(tmp_path):
    with pytest.raises(AudioDecodeError, match="nope.flac"):
        load_audio(tmp_path / "nope.flac", 16000)


def test_crop_center_and_random():
    wave = torch.arange(10.0)
    assert crop_or_pad(wave, 4, "center").tolist() == [3.0, 4.0, 5.0, 6.0]
    seen = set()
    for seed in range(40):
        out = crop_or_pad(wave, 4, "random", torch.Generator().manual_seed(seed))
        assert out.tolist() == list(range(int(out[0]), int(out[0]) + 4))  # a contiguous window
        seen.add(int(out[0]))
    assert seen == set(range(7))  # every start 0..6 is reachable


def test_pad_center_and_random_offset():
    wave = torch.ones(3)
    assert crop_or_pad(wave, 7, "center").tolist() == [0, 0, 1, 1, 1, 0, 0]
    offsets = {int(crop_or_pad(wave, 7, "random", torch.Generator().manual_seed(s)).argmax()) for s in range(40)}
    assert offsets == set(range(5))


def test_crop_is_deterministic_for_a_generator_and_keeps_batch_dims():
    wave = torch.randn(2, 100)
    a = crop_or_pad(wave, 30, "random", torch.Generator().manual_seed(7))
    b = crop_or_pad(wave, 30, "random", torch.Generator().manual_seed(7))
    assert a.shape == (2, 30) and torch.equal(a, b)
    assert torch.equal(crop_or_pad(wave, 100, "random"), wave)


def test_crop_rejects_bad_arguments():
    with pytest.raises(ValueError, match="length"):
        crop_or_pad(torch.ones(5), 0)
    with pytest.raises(ValueError, match="mode"):
        crop_or_pad(torch.ones(5), 3, "left")


@pytest.mark.parametrize("seconds", [0.3, 2.7])
@pytest.mark.parametrize("policy", ["center", "random"])
def test_edit_sound_window_is_crop_or_pad_and_its_span_locates_it(tmp_path, seconds, policy):
    """The window an edit embeds is crop_or_pad's (same seeded draw), and the reported span points at its samples."""
    sr, window = 16000, 16000
    x = np.random.default_rng(1).standard_normal(int(seconds * sr)).astype(np.float32) * 0.1
    sf.write(tmp_path / "clip.wav", x, sr, subtype="FLOAT")
    sound = read_windows(tmp_path / "clip.wav", sr, window, policy, seed=5)
    expected = crop_or_pad(torch.from_numpy(x), window, policy, torch.Generator().manual_seed(5))
    assert torch.equal(sound.windows[0], expected)
    start, end = round(sound.starts_s[0] * sr), round(sound.ends_s[0] * sr)
    assert torch.equal(sound.content(), torch.from_numpy(x[start:end]))
    assert sound.padded == (len(x) < window) and sound.duration_s == pytest.approx(seconds)
    assert sound.describe().startswith(f"{sound.starts_s[0]:.1f}–{sound.ends_s[0]:.1f} s of {seconds:.1f} s")
