"""The shared loudness / silence definition (datamodules.loudness)."""

import math

import pytest
import torch

from datamodules.loudness import (
    MIN_DURATION_S,
    SILENCE_FLOOR_DBFS,
    QuietAudioError,
    check_audible,
    rms_dbfs,
)


def test_rms_dbfs_of_known_signals():
    sr = 16000
    t = torch.arange(sr) / sr
    sine = torch.sin(2 * math.pi * 440 * t)  # RMS 1/sqrt(2): -3.01 dBFS
    assert rms_dbfs(sine) == pytest.approx(-3.0103, abs=1e-3)
    assert rms_dbfs(0.001 * sine) == pytest.approx(-63.0103, abs=1e-3)  # x 1e-3 is -60 dB
    assert rms_dbfs(torch.zeros(sr)) == -120.0  # digital silence stays finite
    assert rms_dbfs(torch.ones(4)) == pytest.approx(0.0)


def test_check_audible_names_file_level_floor_and_duration():
    sr = 16000
    loud = 0.1 * torch.randn(sr, generator=torch.Generator().manual_seed(0))
    assert check_audible(loud, sr, "fire.wav") == pytest.approx(rms_dbfs(loud))
    with pytest.raises(QuietAudioError, match=r"^quiet\.wav: RMS level -120\.0 dBFS is below the silence floor of "
                       r"-60 dBFS$"):
        check_audible(torch.zeros(sr), sr, "quiet.wav")
    with pytest.raises(QuietAudioError, match=r"^click\.wav: lasts 0\.05 s, shorter than the minimum of 0\.25 s$"):
        check_audible(loud[: sr // 20], sr, "click.wav")  # loud but too short
    # The limits are arguments: a -70 dBFS clip passes a -80 dBFS floor.
    assert check_audible(loud * 10 ** (-50 / 20), sr, "soft.wav", floor_dbfs=-80.0) < SILENCE_FLOOR_DBFS
    assert check_audible(loud[: sr // 20], sr, "click.wav", min_seconds=0.01) > SILENCE_FLOOR_DBFS
    assert MIN_DURATION_S == 0.25 and SILENCE_FLOOR_DBFS == -60.0
