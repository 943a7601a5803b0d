"""prepare_vggsound: conversion through ffmpeg, '-'-leading ids, skipping done files, failures, missing ffmpeg.

No ffmpeg is installed on the test machines, so a stand-in executable plays its part: it accepts only the
options we use, rejects any other argument that starts with '-' (as ffmpeg would try to parse it), insists on
absolute `file:` URLs, and converts with soundfile.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import soundfile as sf
import torch

from datamodules.audio_io import load_audio
from datamodules.prepare_vggsound import FAILURES, main, prepare
from datamodules.vggsound import VGGSoundDataModule

FAKE_FFMPEG = textwrap.dedent(
    """\
    #!{python}
    import sys
    import numpy as np
    import soundfile as sf

    FLAGS = {{"-nostdin", "-hide_banner", "-y", "-vn"}}
    VALUED = {{"-loglevel", "-i", "-ac", "-ar", "-sample_fmt", "-f"}}
    args, opts, rest = sys.argv[1:], {{}}, []
    i = 0
    while i < len(args):
        a = args[i]
        if a in FLAGS:
            i += 1
        elif a in VALUED:
            opts[a] = args[i + 1]
            i += 2
        elif a.startswith("-"):
            sys.exit(f"Unrecognized option '{{a}}'")
        else:
            rest.append(a)
            i += 1
    assert len(rest) == 1, rest
    src, dst = opts["-i"], rest[0]
    for url in (src, dst):
        if not url.startswith("file:/"):
            sys.exit(f"not an absolute file: URL: {{url}}")
    try:
        data, rate = sf.read(src[5:], always_2d=True)
    except Exception as err:
        sys.exit(f"{{src}}: Invalid data found when processing input")
    mono = data.mean(axis=1)
    out_rate = int(opts["-ar"])
    t = np.arange(int(len(mono) * out_rate / rate)) / out_rate
    sf.write(dst[5:], np.interp(t, np.arange(len(mono)) / rate, mono), out_rate, format="FLAC", subtype="PCM_16")
    """
)


@pytest.fixture
def fake_ffmpeg(tmp_path):
    path = tmp_path / "bin" / "ffmpeg"
    path.parent.mkdir()
    path.write_text(FAKE_FFMPEG.format(python=sys.executable))
    path.chmod(0o755)
    return str(path)


@pytest.fixture
def downloads(tmp_path):
    src = tmp_path / "downloads"
    (src / "part2").mkdir(parents=True)
    t = np.arange(44100) / 44100
    stereo = np.stack([np.sin(2 * np.pi * 440 * t), np.sin(2 * np.pi * 440 * t)], 1) * 0.5
    sf.write(src / "---g-f_I2yQ_000030.wav", stereo, 44100)
    sf.write(src / "part2" / "abcdefghijk_000010.wav", stereo[:, :1] * 0.8, 48000)
    (src / "-broken1234_000000.mp4").write_bytes(b"\x00\x00\x00 ftypisom but truncated")
    (src / "notes.txt").write_text("not media")
    return src


def test_converts_to_mono_16k_flac_even_for_dash_ids(fake_ffmpeg, downloads, tmp_path):
    dst = tmp_path / "audio"
    report = prepare(downloads, dst, ffmpeg=fake_ffmpeg, workers=2, progress=False)
    assert report.converted == 2 and report.skipped == 0
    assert [p for p, _ in report.failed] == [str(downloads / "-broken1234_000000.mp4")]
    assert "Invalid data" in report.failed[0][1]
    expected = ["---g-f_I2yQ_000030.flac", "abcdefghijk_000010.flac", FAILURES]
    assert sorted(p.name for p in dst.iterdir()) == sorted(expected)
    info = sf.info(dst / "---g-f_I2yQ_000030.flac")
    assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
    wave = load_audio(dst / "---g-f_I2yQ_000030.flac", 16000)
    assert wave.shape == (16000,) and 0.45 < wave.abs().max() < 0.55
    assert "-broken1234_000000.mp4" in (dst / FAILURES).read_text()


def test_rerun_skips_done_files_and_ignores_partial_ones(fake_ffmpeg, downloads, tmp_path):
    dst = tmp_path / "audio"
    prepare(downloads, dst, ffmpeg=fake_ffmpeg, progress=False)
    done = dst / "---g-f_I2yQ_000030.flac"
    stamp = done.stat().st_mtime_ns
    (dst / "abcdefghijk_000010.flac").write_bytes(b"")  # an empty output (e.g. disk full) counts as not done
    report = prepare(downloads, dst, ffmpeg=fake_ffmpeg, progress=False)
    assert (report.converted, report.skipped, len(report.failed)) == (1, 1, 1)
    assert done.stat().st_mtime_ns == stamp
    assert not list(dst.glob(".*partial*"))


def test_csv_restricts_and_makes_a_loadable_root(fake_ffmpeg, downloads, tmp_path):
    csv_path = tmp_path / "vggsound.csv"
    csv_path.write_text('---g-f_I2yQ,30,"sine, pure",train\n---g-f_I2yQ,30,"sine, pure",train\nzzz,0,x,test\n')
    dst = tmp_path / "root"
    report = prepare(downloads, dst, ffmpeg=fake_ffmpeg, csv_path=csv_path, progress=False)
    assert report.converted == 1 and not report.failed and not (dst / FAILURES).exists()
    assert (dst / "vggsound.csv").read_text() == csv_path.read_text()
    dm = VGGSoundDataModule(str(dst), clip_seconds=1.0, batch_size=1, num_workers=0, val_fraction=0.0,
                            report_dir=str(tmp_path))
    dm.setup("fit")
    assert torch.is_tensor(dm.train_set[0]["waveform"]) and [r.youtube_id for r in dm.missing] == ["zzz"]
    csv_path.write_text("other,0,x,train\n")
    with pytest.raises(FileExistsError, match="not overwriting"):
        prepare(downloads, dst, ffmpeg=fake_ffmpeg, csv_path=csv_path, progress=False)


def test_cli_exit_status_and_missing_ffmpeg(fake_ffmpeg, downloads, tmp_path, capsys):
    assert main([str(downloads), str(tmp_path / "o"), "--ffmpeg", fake_ffmpeg]) == 1  # one failure
    assert "converted 2, already done 0, failed 1" in capsys.readouterr().out
    assert main([str(downloads), str(tmp_path / "o"), "--ffmpeg", str(tmp_path / "nope" / "ffmpeg")]) == 2
    err = capsys.readouterr().err
    assert "ffmpeg not found" in err and "--ffmpeg" in err


def test_module_runs_as_a_script_with_dash_leading_paths(fake_ffmpeg, downloads, tmp_path):
    """The real entry point, with a destination folder whose name starts with '-'."""
    out = subprocess.run(
        [sys.executable, "-m", "datamodules.prepare_vggsound", "--ffmpeg", fake_ffmpeg, "--", str(downloads),
         "-dst"], cwd=tmp_path, capture_output=True, text=True,
    )
    assert out.returncode == 1, out.stderr
    assert (tmp_path / "-dst" / "---g-f_I2yQ_000030.flac").is_file()
