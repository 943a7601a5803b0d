"""The recording-chain augmentation: deterministic by seed, length kept, within [-1, 1], SNR as requested."""

from __future__ import annotations

import numpy as np
import pytest

from datamodules import recording_chain as rc
from datamodules.soundzoo import synthesize

SR = 16000
STEPS = {
    "reverb": lambda x, r: rc.reverb(x, r, SR),
    "bed": lambda x, r: rc.mix_at_snr(x, rc.background_bed(r, len(x), SR), 5.0),
    "eq": lambda x, r: rc.eq_band_limit(x, r, SR),
    "gain_clip": lambda x, r: rc.gain_clip(x, r),
    "lossy": lambda x, r: rc.lossy(x, r, SR),
    "stereo": lambda x, r: rc.stereo_to_mono(x, r, SR),
    "onset": lambda x, r: rc.onset_and_length(x, r, SR),
    "agc": lambda x, r: rc.mic_agc(x, r, SR),
    "record": lambda x, r: rc.record(x, r, SR, p=1.0),
}


@pytest.fixture(scope="module")
def clip():
    return synthesize("fire crackling", 3, seconds=2.0).astype(np.float32)


@pytest.mark.parametrize("name", sorted(STEPS))
def test_each_step_is_seeded_keeps_length_and_range(clip, name):
    step = STEPS[name]
    a = step(clip, np.random.default_rng(5))
    b = step(clip, np.random.default_rng(5))
    c = step(clip, np.random.default_rng(6))
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert a.shape == clip.shape and a.dtype == np.float32
    assert np.abs(a).max() <= 1.0 and np.isfinite(a).all()


@pytest.mark.parametrize("snr_db", [-5.0, 0.0, 10.0, 30.0])
def test_bed_is_mixed_at_the_requested_snr(clip, snr_db):
    bed = rc.background_bed(np.random.default_rng(1), len(clip), SR)
    mixed = rc.mix_at_snr(clip, bed, snr_db)
    # the bed alone: subtract the clip scaled by the same factor the mix got (mix = k (clip + s bed))
    k = float(np.dot(mixed, clip) - np.dot(mixed, bed) * np.dot(clip, bed) / np.dot(bed, bed)) / float(
        np.dot(clip, clip) - np.dot(clip, bed) ** 2 / np.dot(bed, bed))
    noise = mixed - k * clip
    measured = 10 * np.log10(rc.power(k * clip) / rc.power(noise))
    assert abs(measured - snr_db) < 0.5


def test_reverb_spreads_an_impulse_in_time():
    x = np.zeros(SR, np.float32)
    x[100] = 0.5
    y = rc.reverb(x, np.random.default_rng(0), SR)
    energy_late = float(np.sum(y[100 + SR // 20 :] ** 2))  # > 50 ms after the impulse
    assert energy_late > 1e-3 * float(np.sum(y**2))


def test_band_limit_removes_highs_of_a_telephone_like_draw():
    rng = np.random.default_rng(0)
    noise = rng.standard_normal(SR).astype(np.float32) * 0.1
    y = rc.lossy(noise, np.random.default_rng(2), SR)
    spec = np.abs(np.fft.rfft(y)) ** 2
    f = np.fft.rfftfreq(SR, 1 / SR)
    assert spec[f > 7500].sum() < 1e-2 * spec[f < 3000].sum()
