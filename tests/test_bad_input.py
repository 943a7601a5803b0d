"""Bad input gets a clear, named answer (one line, documented exit status, nothing written), findings 1-9.

Every command runs in-process through its entry point and `experiments.cli_errors.run_cli`, exactly as
`python -m ...` runs it, on tiny models (16 px generator, tiny CLIP, a random 64-d audio encoder).
"""

import json
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image

from datamodules.image_io import ImageLoadError, center_crop_resize, load_image, pil_to_tensor
from datamodules.soundzoo import synthesize
from experiments import edit, train
from experiments.cli_errors import UsageError, error_line, run_cli
from lightning_modules.audio_export import export_audio_encoder
from lightning_modules.edit_outputs import slug, unique_names
from lightning_modules.networks.audio_encoder import AudioEncoder

SR = 16000
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def models(tmp_path_factory, tiny_generator_path, tiny_clip_path):
    root = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    enc = export_audio_encoder(
        AudioEncoder(embed_dim=64, backbone="resnet18", width=8, clip_seconds=1.0, n_fft=256, n_mels=32),
        root / "audio_encoder.pt")
    return {"generator": tiny_generator_path, "audio_encoder": str(enc), "clip": tiny_clip_path}


def wav(path: Path, seconds: float, gain: float = 1.0, seed: int = 0) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, gain * synthesize("rain", seed, seconds=seconds), SR)
    return str(path)


def run_edit(models, out: Path, *args: str) -> int:
    return edit.main(["--generator", models["generator"], "--audio-encoder", models["audio_encoder"],
                      "--clip", models["clip"], "--out", str(out), "--steps", "1", "--device", "cpu", *args])


def one_line(capsys) -> str:
    """The error line on stderr, asserting there is exactly one (warnings, shown as 'prog: warning: ...', aside)."""
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip() and ": warning: " not in line]
    assert len(err) == 1, err
    return err[0]


def written(out: Path) -> list[Path]:
    return sorted(p for p in out.rglob("*") if p.is_file()) if out.exists() else []


def evil_pickle(path: Path) -> str:
    class Payload:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    torch.save({"w_plus": Payload()}, path)  # a torch.save archive whose unpickling would call os.system
    return str(path)


# ------------------------------------------------------------------------------------------------- 1. unique names
def test_1_every_sound_gets_its_own_edit_even_with_the_same_stem_or_slug(models, tmp_path, capsys):
    a = wav(tmp_path / "a" / "fire.wav", 1.2, seed=1)
    b = wav(tmp_path / "b" / "fire.wav", 1.2, seed=2)
    assert run_edit(models, tmp_path / "out", "--seed", "3", "--sound", a, "--sound", b,
                    "--sound", a, "--label", "Fire!", "--label", "fire", "--label", "FIRE") == 0
    (run,) = (tmp_path / "out").iterdir()
    metrics = json.loads((run / "metrics.json").read_text())
    assert [p["sound"] for p in metrics["pairs"]] == ["Fire!", "fire (2)", "FIRE (3)"]
    assert [p["sound_file"] for p in metrics["pairs"]] == [a, b, a]
    assert len(list((run / "edits").glob("*.png"))) == 3
    assert unique_names(["a b", "a_b", "a-b"]) == ["a b", "a_b (2)", "a-b (3)"]
    assert len({slug(n) for n in unique_names(["x", "X", "x!", "x (2)"])}) == 4


# ------------------------------------------------------------------------------------------------- 2. silence
def test_2_silent_or_short_clip_is_refused_naming_level_and_floor_unless_allowed(models, tmp_path, capsys):
    silent = tmp_path / "silence.wav"
    sf.write(silent, np.zeros(10 * SR, np.float32), SR)
    out = tmp_path / "out"
    assert run_edit(models, out, "--seed", "1", "--sound", str(silent)) == 1
    line = one_line(capsys)
    assert line == (f"python -m experiments.edit: {silent}: RMS level -120.0 dBFS is below the silence floor of "
                    f"-60 dBFS; refusing to edit with it (pass --allow-silence to edit anyway)")
    short = wav(tmp_path / "click.wav", 0.05)
    assert run_edit(models, out, "--seed", "1", "--sound", short) == 1
    assert f"{short}: lasts 0.05 s, shorter than the minimum of 0.25 s" in one_line(capsys)
    assert written(out) == []  # refusals leave nothing behind

    # The override edits and flags; a batch job (allow_silence, its default) counts the flagged pairs.
    loud = wav(tmp_path / "rain.wav", 1.2)
    assert run_edit(models, out, "--seed", "1", "--sound", str(silent), "--sound", loud, "--allow-silence") == 0
    assert "QUIET: RMS level -120.0 dBFS" in capsys.readouterr().out
    (run,) = out.iterdir()
    metrics, job = (json.loads((run / f).read_text()) for f in ("metrics.json", "job.json"))
    assert [p["quiet"] is not None for p in metrics["pairs"]] == [True, False]
    assert metrics["summary"]["quiet_pairs"] == 1 and job["quiet_sounds"] == 1
    assert any("silence" in w and "flagged" in w for w in job["warnings"])


# ------------------------------------------------------------------------------------------------- 3. span used
def test_3_edit_prints_and_records_which_part_of_the_clip_was_used(models, tmp_path, capsys, caplog):
    long = wav(tmp_path / "long.wav", 3.0)
    with caplog.at_level("INFO"):
        assert run_edit(models, tmp_path / "out", "--seed", "1", "--sound", long, "--window", "center") == 0
    printed = capsys.readouterr().out
    assert f"({long}: 1.0–2.0 s of 3.0 s (center window))" in printed  # 1 s window in the middle of 3 s
    assert f"sound 'long' ({long}): 1.0–2.0 s of 3.0 s (center window)" in caplog.text  # what every job logs
    (run,) = (tmp_path / "out").iterdir()
    sound = json.loads((run / "job.json").read_text())["sounds"][0]
    assert (sound["start_s"], sound["end_s"], sound["duration_s"], sound["padded"]) == (1.0, 2.0, 3.0, False)
    assert json.loads((run / "metrics.json").read_text())["pairs"][0]["sound_used"] == sound["used"]


# ------------------------------------------------------------------------------------------------- 4. big images
def png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims width x height (no pixel data: Pillow reads the size from the header alone)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
                     + chunk(b"IEND", b""))
    return path


def test_4_huge_images_are_refused_by_name_and_animated_ones_say_which_frame(models, tmp_path, capsys):
    bomb = png_header_only(tmp_path / "bomb.png", 14000, 14000)  # past Pillow's own decompression-bomb limit
    with pytest.raises(ImageLoadError, match=r"bomb\.png: 196 megapixels, more than the limit of 50 megapixels"):
        load_image(bomb, 16)
    big = png_header_only(tmp_path / "big.png", 8000, 7000)  # 56 MP: under Pillow's limit, over ours
    assert run_edit(models, tmp_path / "out", "--image", str(big), "--sound", wav(tmp_path / "r.wav", 1.2)) == 1
    assert one_line(capsys) == (f"python -m experiments.edit: --image {big}: 8000x7000 = 56 megapixels, more than "
                                f"the limit of 50 megapixels (max_pixels); downscale it first")
    assert written(tmp_path / "out") == []
    small = tmp_path / "small.png"
    Image.new("RGB", (40, 40)).save(small)
    with pytest.raises(ImageLoadError, match="small.png: 40x40 = 0.0016 megapixels, more than the limit of 0.001"):
        load_image(small, 16, max_pixels=1000)  # the limit is a setting
    frames = [Image.new("RGB", (40, 40), c) for c in ("red", "blue")]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    with pytest.warns(UserWarning, match="anim.gif: animated image with 2 frames; using the first frame"):
        first = load_image(tmp_path / "anim.gif", 16)
    assert first[0].mean() > 0.9 and first[2].mean() < -0.9  # red, not blue
    # A large JPEG is decoded at a reduced DCT scale (here 1/8: 40x32 still covers 16 px) and matches the full decode.
    yy, xx = np.mgrid[0:256, 0:320]
    photo = np.stack([xx * 255 / 319, yy * 255 / 255, np.full_like(xx, 128.0)], -1).astype(np.uint8)
    Image.fromarray(photo).save(tmp_path / "photo.jpg", quality=95)
    with Image.open(tmp_path / "photo.jpg") as full:
        reference = pil_to_tensor(center_crop_resize(full.convert("RGB"), 16))
    assert (load_image(tmp_path / "photo.jpg", 16) - reference).abs().max() < 0.05


# ------------------------------------------------------------------------------------------------- 5. pickles
def test_5_refused_pickles_name_the_file_and_the_cli_flag_never_weights_only_false(models, tmp_path, capsys):
    rain = wav(tmp_path / "rain.wav", 1.2)
    evil = evil_pickle(tmp_path / "evil.pt")
    out = tmp_path / "out"
    assert run_edit(models, out, "--latent", evil, "--sound", rain) == 1
    line = one_line(capsys)
    assert line.startswith(f"python -m experiments.edit: {evil}: refused to load this W+ code file: it asks for ")
    assert "system" in line and "nothing was executed" in line and "weights_only" not in line
    assert edit.main(["--seed", "1", "--sound", rain, "--generator", evil, "--audio-encoder", models["audio_encoder"],
                      "--clip", models["clip"], "--out", str(out), "--device", "cpu"]) == 1
    line = one_line(capsys)
    assert str(evil) in line and line.endswith("If you trust this file, pass --trust-pickle.")
    assert "weights_only=False" not in line
    assert edit.main(["--seed", "1", "--sound", rain, "--generator", models["generator"], "--audio-encoder",
                      models["audio_encoder"], "--clip", evil, "--out", str(out), "--device", "cpu"]) == 1
    line = one_line(capsys)
    assert f"{evil}: refused to load this CLIP model file" in line and "weights_only" not in line
    assert written(out) == []
    assert "--trust-pickle" in edit.build_parser().format_help()
    # The config-driven job spells the same escape hatch as its CLI does, and a command without one drops it.
    err = ValueError("g.pkl: refused. If you trust this file, pass trust_pickle=True.")
    assert error_line(err, {"trust_pickle=True": "--model.trust_pickle=true"}).endswith(
        "pass --model.trust_pickle=true.")
    assert error_line(err) == "g.pkl: refused."


# ------------------------------------------------------------------------------------------------- 6. one line
def test_6_one_line_and_exit_codes_traceback_only_on_request(models, tmp_path, capsys, monkeypatch):
    corrupt = tmp_path / "fire.flac"
    sf.write(corrupt, synthesize("fire crackling", 0, seconds=2.0), SR)
    corrupt.write_bytes(corrupt.read_bytes()[:3000])  # header intact, frames cut off: a decode error
    rain = wav(tmp_path / "rain.wav", 1.2)
    assert run_edit(models, tmp_path / "out", "--seed", "1", "--sound", str(corrupt)) == 1
    assert one_line(capsys).startswith(f"python -m experiments.edit: {corrupt}: truncated or corrupt audio")
    assert run_edit(models, tmp_path / "out", "--seed", "1", "--sound", rain, "--label", "a", "--label", "b") == 2
    assert one_line(capsys) == "python -m experiments.edit: --label given 2 times for 1 --sound files"
    assert run_edit(models, tmp_path / "out", "--seed", "1") == 2  # argparse: --sound missing
    assert "the following arguments are required: --sound" in capsys.readouterr().err
    assert run_edit(models, tmp_path / "out", "--seed", "1", "--sound", str(corrupt), "--debug") == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and err.strip().endswith("truncated or corrupt audio "
                                                                               "(Error : flac decoder lost sync.)")
    monkeypatch.setenv("AIARTIST_DEBUG", "1")  # the switch of the LightningCLI entry points
    assert run_cli(lambda argv: (_ for _ in ()).throw(UsageError("x: bad")), "p", []) == 2
    assert "Traceback" in capsys.readouterr().err
    assert written(tmp_path / "out") == []


# ------------------------------------------------------------------------------------------------- 7. reasons
def test_7_three_misleading_reasons_are_now_the_right_ones(models, tmp_path, capsys):
    text_mp3 = tmp_path / "song.mp3"
    text_mp3.write_text("this is not audio\n")
    assert run_edit(models, tmp_path / "out", "--seed", "1", "--sound", str(text_mp3)) == 1
    assert one_line(capsys).startswith(f"python -m experiments.edit: --sound {text_mp3}: not an audio file")
    good = tmp_path / "w.pt"
    torch.save({"w_plus": torch.randn(1, 10, 32)}, good)
    truncated = tmp_path / "w_cut.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    assert run_edit(models, tmp_path / "out", "--latent", str(truncated), "--sound", wav(tmp_path / "r.wav", 1.2)) == 1
    assert one_line(capsys).startswith(f"python -m experiments.edit: {truncated}: truncated or corrupt W+ code file")
    folder = tmp_path / "clips"
    folder.mkdir()
    assert run_edit(models, tmp_path / "out", "--seed", "1", "--sound", str(folder)) == 1
    assert one_line(capsys) == f"python -m experiments.edit: --sound {folder}: is a directory"
    assert written(tmp_path / "out") == []


# ------------------------------------------------------------------------------------------------- 8. svg
def test_8_an_svg_image_is_answered_about_images(models, tmp_path, capsys):
    svg = tmp_path / "x.svg"
    svg.write_text('<svg xmlns="http://www.w3.org/2000/svg" width="64" height="64"><rect width="64" height="64"/>'
                   "</svg>\n")
    assert run_edit(models, tmp_path / "out", "--image", str(svg), "--sound", wav(tmp_path / "r.wav", 1.2)) == 1
    line = one_line(capsys)
    assert line == (f"python -m experiments.edit: --image {svg}: not an image file (Pillow cannot read it) "
                    f"(.svg is a vector format: export it as PNG or JPEG first)")
    assert "seed" not in line and written(tmp_path / "out") == []


# ------------------------------------------------------------------------------------------------- 9. validation
def test_9_train_refuses_bad_settings_before_writing_and_zero_steps_warns(models, tmp_path, capsys):
    run_dir = tmp_path / "run"
    rc = run_cli(train.main, "python -m experiments.train",
                 ["fit", "--config", str(REPO / "experiments/audio_clip/demo.yaml"), "--model.lr=-0.001",
                  f"--trainer.default_root_dir={run_dir}", "--trainer.logger=false"], strip_debug=True)
    assert rc == 1
    assert one_line(capsys) == "python -m experiments.train: model.lr must be > 0, got -0.001"
    assert not run_dir.exists()

    assert run_edit(models, tmp_path / "out", "--seed", "1", "--sound", wav(tmp_path / "r.wav", 1.2),
                    "--steps", "0") == 0
    assert "warning: steps=0: no optimisation step runs, every edit is its source unchanged" in capsys.readouterr().err
    (run,) = (tmp_path / "out").iterdir()
    assert any("steps=0" in w for w in json.loads((run / "job.json").read_text())["warnings"])
    assert any("steps=0" in w for w in json.loads((run / "metrics.json").read_text())["summary"]["warnings"])
