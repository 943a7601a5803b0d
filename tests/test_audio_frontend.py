"""Log-mel front end (shape, dtype, HTK filterbank, level calibration) and SpecAugment."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from datamodules.frontend import LogMelFrontEnd, SpecAugment


def htk_filterbank(sample_rate: int, n_fft: int, n_mels: int, f_min: float, f_max: float) -> np.ndarray:
    """Reference: HTK mel scale m = 2595 log10(1 + f/700), triangles with peak 1 between mel-spaced edges,
    evaluated at the FFT bin frequencies k * sample_rate / n_fft; shape (n_fft//2 + 1, n_mels)."""

    def mel(f):
        return 2595.0 * np.log10(1.0 + np.asarray(f) / 700.0)

    def hz(m):
        return 700.0 * (10.0 ** (np.asarray(m) / 2595.0) - 1.0)

    edges = hz(np.linspace(mel(f_min), mel(f_max), n_mels + 2))
    bins = np.arange(n_fft // 2 + 1) * sample_rate / n_fft
    fb = np.zeros((len(bins), n_mels))
    for j in range(n_mels):
        lo, mid, hi = edges[j], edges[j + 1], edges[j + 2]
        rising = (bins - lo) / (mid - lo)
        falling = (hi - bins) / (hi - mid)
        fb[:, j] = np.maximum(0.0, np.minimum(rising, falling))
    return fb


@pytest.mark.parametrize(
    "kwargs",
    [dict(), dict(sample_rate=22050, n_fft=512, n_mels=40, f_min=20.0, f_max=8000.0), dict(n_mels=64, f_min=50.0)],
)
def test_filterbank_matches_htk_formula(kwargs):
    fe = LogMelFrontEnd(**kwargs)
    ref = htk_filterbank(fe.sample_rate, fe.n_fft, fe.n_mels, fe.f_min, fe.f_max)
    assert fe.filterbank.shape == ref.shape
    np.testing.assert_allclose(fe.filterbank.numpy(), ref, atol=5e-5)  # torchaudio computes in float32


def test_output_shape_and_dtype():
    fe = LogMelFrontEnd()
    out = fe(torch.randn(3, 16000) * 0.1)
    assert out.shape == (3, 1, 128, fe.num_frames(16000)) == (3, 1, 128, 101)
    assert out.dtype == torch.float32
    assert out.min() >= -1.0


def test_level_calibration_full_scale_sine_is_0_db():
    fe = LogMelFrontEnd()
    t = torch.arange(16000) / 16000
    loud = torch.sin(2 * math.pi * 1000 * t)[None]
    quiet = loud * 10 ** (-40 / 20)  # -40 dB
    a, b = fe(loud)[0, 0, :, 10:-10], fe(quiet)[0, 0, :, 10:-10]
    band = int(a.mean(1).argmax())
    # full-scale sine -> 0 dB -> 1.0 after mapping [-top_db, 0] to [-1, 1]; within the filter's peak loss
    assert 0.9 < a[band].mean() <= 1.01
    # the normalisation is fixed, not per clip: -40 dB shows up as 40 / (top_db / 2) lower
    assert torch.allclose(a[band] - b[band], torch.full_like(a[band], 40 / 50), atol=1e-3)
    # silence sits at the floor
    assert torch.all(fe(torch.zeros(1, 4000)) == -1.0)


def test_frontend_stays_float32_under_autocast_and_rejects_bad_shapes():
    fe = LogMelFrontEnd(n_mels=32)
    x = torch.randn(2, 8000)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = fe(x)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, fe(x))
    with pytest.raises(ValueError, match="batch, samples"):
        fe(torch.randn(8000))
    with pytest.raises(ValueError, match="f_min"):
        LogMelFrontEnd(f_max=9000)


def test_specaugment_only_in_training_mode():
    spec = torch.randn(4, 1, 64, 200)
    aug = SpecAugment()
    assert torch.equal(aug.eval()(spec), spec)
    out = aug.train()(spec, generator=torch.Generator().manual_seed(0))
    assert out.shape == spec.shape and not torch.equal(out, spec)


def test_specaugment_masks_are_bands_within_limits_and_reproducible():
    b, f, t = 64, 40, 100
    spec = torch.rand(b, 1, f, t) + 1.0  # strictly positive so masked cells (filled with the mean) differ
    aug = SpecAugment(freq_masks=2, max_freq_fraction=0.15, time_masks=2, max_time_fraction=0.3).train()
    out = aug(spec, generator=torch.Generator().manual_seed(1))
    again = aug(spec, generator=torch.Generator().manual_seed(1))
    assert torch.equal(out, again)
    masked = out != spec
    freq_rows = masked[:, 0].all(dim=2)  # (b, f): whole mel rows masked
    time_cols = masked[:, 0].all(dim=1)  # (b, t): whole frames masked
    # every masked cell lies in a fully masked row or column
    assert torch.equal(masked[:, 0], freq_rows[:, :, None] | time_cols[:, None, :])
    # two masks of at most 15 % / 30 % each
    assert freq_rows.sum(1).max() <= 2 * int(0.15 * f)
    assert time_cols.sum(1).max() <= 2 * int(0.3 * t)
    assert freq_rows.any() and time_cols.any()
    # masked value is the example's mean
    fill = spec.mean(dim=(1, 2, 3))
    i, r = torch.nonzero(freq_rows)[0].tolist()
    assert torch.allclose(out[i, 0, r], fill[i].expand(t))



def test_specaugment_shards_of_a_global_batch_equal_the_one_process_draw():
    """Rank r of `world` gets rows r, r + world, ... of the masks one process draws for the whole global batch."""
    spec = torch.rand(6, 1, 40, 100) + 1.0
    aug = SpecAugment().train()
    whole = aug(spec, generator=torch.Generator().manual_seed(5))
    for rank in range(3):
        part = aug(spec[rank::3], generator=torch.Generator().manual_seed(5), shard=(rank, 3))
        torch.testing.assert_close(part, whole[rank::3])
    with pytest.raises(ValueError, match="shard"):
        aug(spec, generator=torch.Generator().manual_seed(5), shard=(3, 3))
