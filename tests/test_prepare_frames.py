"""prepare_vggsound through the real decoder (PyAV): audio of video files, K evenly spaced frames, atomic strips,
failures listed, resuming, and a frames folder of another K refused. The videos are written here with PyAV."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from datamodules import frame_files
from datamodules.av_decode import MediaDecodeError, decode_frames, frame_times
from datamodules.frame_files import FrameFileError, read_strip
from datamodules.prepare_vggsound import FRAME_FAILURES, main, prepare
from experiments.toyworld.av_set import write_video

FPS, SECONDS, SR = 10, 2.0, 22050


def _video(path, width=64, height=48):
    """Frame n is uniformly grey at level 12 n, except a white centre column (the centre square keeps it)."""
    n = int(FPS * SECONDS)
    frames = np.zeros((n, height, width, 3), np.uint8)
    for i in range(n):
        frames[i] = 12 * i
    frames[:, :, width // 2 - 2: width // 2 + 2] = 255
    t = np.arange(int(SR * SECONDS)) / SR
    write_video(path, frames, FPS, (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), SR)


@pytest.fixture
def videos(tmp_path):
    src = tmp_path / "videos"
    src.mkdir()
    _video(src / "-dashid0001_000010.mp4")
    _video(src / "clipb000000_000000.mp4", width=48, height=64)
    sf.write(src / "audioonly00_000000.wav", np.full(8000, 0.3, np.float32), 16000)  # a clip without video
    (src / "broken00000_000000.mp4").write_bytes(b"\x00\x00\x00 ftypisom truncated")
    return src


def test_frame_times_are_centres_of_equal_parts():
    assert np.allclose(frame_times(2.0, 5), [0.2, 0.6, 1.0, 1.4, 1.8])
    assert np.allclose(frame_times(10.0, 1, start=3.0), [8.0])


def test_decode_frames_picks_evenly_spaced_frames_as_centre_squares(videos):
    frames = decode_frames(videos / "-dashid0001_000010.mp4", 5, 32)
    assert frames.shape == (5, 32, 32, 3) and frames.dtype == np.uint8
    # Frames 2, 6, 10, 14, 18 (at 0.2, 0.6, ... 1.8 s) have grey level 12 n; H.264 moves it by a few levels.
    corner = frames[:, 2:8, 2:8].reshape(5, -1).mean(axis=1)
    assert np.allclose(corner, [24, 72, 120, 168, 216], atol=6), corner
    assert (frames[:, :, 15:17] > 200).all()  # the white centre column survived the centre crop
    with pytest.raises(MediaDecodeError, match="no video stream"):
        decode_frames(videos / "audioonly00_000000.wav", 2, 32)


def test_prepare_with_frames_real_decoder(videos, tmp_path):
    dst = tmp_path / "out"
    report = prepare(videos, dst, workers=2, progress=False, frames=4, frame_size=32)
    assert (report.converted, report.frames_extracted) == (3, 2)
    assert [p for p, _ in report.failed] == [str(videos / "broken00000_000000.mp4")]
    failed = dict(report.frames_failed)
    assert set(failed) == {str(videos / "audioonly00_000000.wav"), str(videos / "broken00000_000000.mp4")}
    assert "no video file" in failed[str(videos / "audioonly00_000000.wav")]
    listed = (dst / FRAME_FAILURES).read_text()
    assert "audioonly00_000000.wav" in listed and "broken00000_000000.mp4" in listed
    # Audio: the video's AAC track as mono 16 kHz 16-bit FLAC at the level it was written.
    info = sf.info(dst / "-dashid0001_000010.flac")
    assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
    wave, _ = sf.read(dst / "-dashid0001_000010.flac")
    assert abs(len(wave) / 16000 - SECONDS) < 0.15 and 0.45 < np.abs(wave).max() < 0.55
    strips = sorted(p.name for p in (dst / "frames").iterdir())
    assert strips == ["-dashid0001_000010.jpg", "clipb000000_000000.jpg", "frames.json"]
    assert read_strip(dst / "frames" / "clipb000000_000000.jpg", 4).shape == (4, 32, 32, 3)
    assert Image.open(dst / "frames" / "clipb000000_000000.jpg").size == (32, 128)


def test_rerun_resumes_and_another_k_is_refused(videos, tmp_path):
    dst = tmp_path / "out"
    prepare(videos, dst, progress=False, frames=4, frame_size=32)
    done = dst / "frames" / "-dashid0001_000010.jpg"
    stamp = done.stat().st_mtime_ns
    (dst / "frames" / "clipb000000_000000.jpg").unlink()
    report = prepare(videos, dst, progress=False, frames=4, frame_size=32)
    assert (report.frames_extracted, report.frames_skipped) == (1, 1)
    assert done.stat().st_mtime_ns == stamp
    with pytest.raises(FrameFileError, match="hold 4 frames of 32 px, this run asks for 8 of 32 px"):
        prepare(videos, dst, progress=False, frames=8, frame_size=32)
    assert main([str(videos), str(dst), "--frames", "8", "--frame-size", "32"]) == 2


def test_a_strip_that_fails_mid_write_leaves_nothing(videos, tmp_path, monkeypatch):
    def failing_save(self, fp, *args, **kwargs):
        with open(fp, "wb") as f:
            f.write(b"\xff\xd8 half a jpeg")
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", failing_save)
    dst = tmp_path / "out"
    report = prepare(videos, dst, progress=False, frames=2, frame_size=32)
    assert report.frames_extracted == 0 and any("disk full" in r for _, r in report.frames_failed)
    assert sorted(p.name for p in (dst / "frames").iterdir()) == [frame_files.MANIFEST]


def test_cli_reports_frames(videos, tmp_path, capsys):
    assert main([str(videos), str(tmp_path / "o"), "--frames", "2", "--frame-size", "32"]) == 1
    out = capsys.readouterr()
    assert "frames: extracted 2, already done 0, failed 2" in out.out and FRAME_FAILURES in out.err
