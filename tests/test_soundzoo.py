"""The embedded procedural sound set: labels, determinism, variety, learnability, VGGSound layout, CLI."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

from datamodules import soundzoo
from datamodules.frontend import LogMelFrontEnd
from datamodules.soundzoo import SOUND_CLASSES, synthesize, write_sound_set
from datamodules.vggsound import VGGSoundDataModule

PAPER_SOUNDS = ["fire crackling", "rain", "wind", "explosion", "thunderstorm", "folk music", "latin music"]


def test_labels_are_the_agreed_ones():
    assert SOUND_CLASSES[:7] == PAPER_SOUNDS
    assert SOUND_CLASSES[7:] == ["dog barking", "church bells", "birds chirping"]
    with pytest.raises(ValueError, match="unknown sound class"):
        synthesize("jazz", 0)


@pytest.mark.parametrize("label", SOUND_CLASSES)
def test_clips_are_deterministic_varied_and_valid(label):
    a, b, c = synthesize(label, 3), synthesize(label, 3), synthesize(label, 4)
    assert a.dtype == np.float32 and a.shape == (int(16000 * soundzoo.DEFAULT_SECONDS),)
    assert np.array_equal(a, b)
    assert not np.allclose(a, c)
    for x in (a, c):
        assert np.isfinite(x).all()
        assert 10 ** (-18.5 / 20) <= np.abs(x).max() <= 10 ** (-2.9 / 20)  # peak level in [-18, -3] dBFS
    assert synthesize(label, 3, sample_rate=22050, seconds=1.5).shape == (33075,)


def test_loudness_varies_across_seeds():
    peaks = [np.abs(synthesize("rain", s)).max() for s in range(12)]
    assert 20 * np.log10(max(peaks) / min(peaks)) > 6


def _features(clips: list[np.ndarray], fe: LogMelFrontEnd) -> np.ndarray:
    """A simple spectral statistic: per-band mean and temporal standard deviation of the log-mel, (N, 2 * n_mels)."""
    spec = fe(torch.from_numpy(np.stack(clips)))[:, 0]
    return torch.cat([spec.mean(2), spec.std(2)], dim=1).numpy()


def test_classes_are_distinguishable_by_a_simple_spectral_statistic():
    """Nearest class mean on (band mean, band std) of a 32-band log-mel, trained and tested on different seeds."""
    fe = LogMelFrontEnd(n_mels=32)
    n_train, n_test = 6, 4
    clips = [synthesize(c, s, seconds=2.0) for c in SOUND_CLASSES for s in [*range(n_train), *range(100, 100 + n_test)]]
    feats = _features(clips, fe).reshape(len(SOUND_CLASSES), n_train + n_test, -1)
    centroids = feats[:, :n_train].mean(1)  # (classes, features)
    test = feats[:, n_train:]  # (classes, n_test, features)
    guess = ((test[:, :, None, :] - centroids[None, None]) ** 2).sum(-1).argmin(-1)  # (classes, n_test)
    truth = np.arange(len(SOUND_CLASSES))[:, None]
    confusion = [(SOUND_CLASSES[k], SOUND_CLASSES[guess[k, j]]) for k, j in zip(*np.nonzero(guess != truth))]
    assert (guess == truth).mean() >= 0.9, confusion


def test_written_set_has_vggsound_layout_and_loads_through_the_datamodule(tmp_path):
    root = write_sound_set(tmp_path / "zoo", clips_per_class=5, seconds=1.0, test_fraction=0.2)
    rows = list(csv.reader(open(root / "vggsound.csv", newline="")))
    assert len(rows) == 50 and all(len(r) == 4 for r in rows)
    assert {r[2] for r in rows} == set(SOUND_CLASSES)
    assert sum(r[3] == "test" for r in rows) == 10
    assert all(len(r[0]) == 11 for r in rows) and sum(r[0].startswith("-") for r in rows) >= 10
    for youtube_id, start, _, _ in rows:
        assert (root / f"{youtube_id}_{int(start):06d}.flac").is_file()
    dm = VGGSoundDataModule(str(root), clip_seconds=1.0, batch_size=4, num_workers=0, val_fraction=0.25)
    dm.setup("fit")
    assert not dm.missing and sorted(dm.class_names) == sorted(SOUND_CLASSES)
    assert len(dm.train_set) + len(dm.val_set) == 40 and len(dm.test_set) == 10
    batch = next(iter(dm.train_dataloader()))
    assert batch["waveform"].shape == (4, 16000) and not batch["bad"].any()
    # the file holds the synthesized clip (16-bit FLAC quantisation aside)
    clip = dm.test_set.clips[0]
    label = dm.class_names[clip.label]
    index = next(i for i, r in enumerate(rows) if f"{r[0]}_{int(r[1]):06d}" == clip.key) % 5
    expected = synthesize(label, index, 16000, 1.0)
    np.testing.assert_allclose(dm.test_set[0]["waveform"].numpy(), expected, atol=1 / 2**14)


def test_existing_sets_are_reused_or_protected(tmp_path):
    root = write_sound_set(tmp_path / "zoo", clips_per_class=2, seconds=0.5)
    stamp = (root / "vggsound.csv").stat().st_mtime_ns
    assert write_sound_set(root, clips_per_class=2, seconds=0.5) == root  # same arguments: reused
    assert (root / "vggsound.csv").stat().st_mtime_ns == stamp
    with pytest.raises(FileExistsError, match="overwrite"):
        write_sound_set(root, clips_per_class=3, seconds=0.5)
    write_sound_set(root, clips_per_class=3, seconds=0.5, overwrite=True)
    assert len((root / "vggsound.csv").read_text().splitlines()) == 30


def test_cli_writes_a_set(tmp_path, capsys):
    soundzoo.main([str(tmp_path / "cli"), "--clips-per-class", "2", "--seconds", "0.5", "--seed", "5"])
    assert "wrote 20 clips" in capsys.readouterr().out
    assert len(list((tmp_path / "cli").glob("*.flac"))) == 20
