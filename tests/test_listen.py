"""`python -m experiments.toyworld.listen`: per-clip predictions, per-class top-1, macro mean last, confusion PNG."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image
from torch import nn

from experiments.toyworld import listen as listen_mod
from experiments.toyworld.paintings import ATTRIBUTES

TOY_CLIP = Path(__file__).resolve().parents[1] / "experiments/toyworld/weights/toy_clip.pt"
FREQS = {"fire crackling": 300.0, "rain": 900.0, "wind": 2500.0}


class PitchEncoder(nn.Module):
    """Stand-in encoder whose answer is known: a window's dominant pitch picks the label (FREQS), embedded as that
    label's prompt embedding; silence embeds as the first label."""

    sample_rate, clip_samples = 16000, 8000

    def __init__(self, text: torch.Tensor) -> None:
        super().__init__()
        self.text = nn.Parameter(text, requires_grad=False)
        self.embed_dim = text.shape[1]

    def forward(self, wave: torch.Tensor, augment: bool = False) -> torch.Tensor:
        peak = torch.fft.rfft(wave).abs().argmax(-1).float() * self.sample_rate / wave.shape[-1]
        k = torch.stack([(peak - f).abs() for f in FREQS.values()], -1).argmin(-1)
        return self.text[[ATTRIBUTES.index(label) for label in FREQS]][k]


def _tone(path: Path, freq: float, seconds: float, rate: int = 16000, channels: int = 1) -> None:
    t = np.arange(int(seconds * rate)) / rate
    x = 0.3 * np.sin(2 * np.pi * freq * t)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.stack([x] * channels, 1).astype(np.float32), rate)


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "clips"
    _tone(root / "fire_crackling" / "a.wav", 300, 1.3)
    _tone(root / "fire_crackling" / "b.flac", 300, 0.3, rate=44100, channels=2)  # short: zero-padded
    _tone(root / "rain" / "a.wav", 900, 2.0, rate=48000)
    _tone(root / "rain" / "b.wav", 2500, 1.0)  # heard as wind
    _tone(root / "rain" / "c.wav", 900, 1.0)
    _tone(root / "rain" / "d.ogg", 2500, 0.9, rate=22050)  # heard as wind
    _tone(root / "drill" / "x.wav", 900, 1.0)  # not a label: out of class
    (root / "rain" / "notes.txt").write_text("not audio")
    return root


def test_listen_prints_per_class_top1_macro_last_and_writes_png(folder, tmp_path, monkeypatch, capsys):
    from lightning_modules.clip_wrapper import CLIPWrapper

    text = CLIPWrapper(str(TOY_CLIP)).encode_text([f"a painting with {label}" for label in ATTRIBUTES])
    monkeypatch.setattr(listen_mod, "load_audio_encoder", lambda path: PitchEncoder(text))
    enc = tmp_path / "enc.pt"
    enc.write_bytes(b"stub")
    assert listen_mod.main([str(enc), str(folder), "--clip", str(TOY_CLIP), "--out", str(tmp_path / "out")]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1] == "macro top-1 over 2 classes: 0.750"
    assert "top-1 fire crackling: 1.000 (2 clips)" in lines and "top-1 rain: 0.500 (4 clips)" in lines
    assert any(line.startswith("out-of-class drill: 1 clips, top cosine 1.000 (rain)") for line in lines)
    assert any("notes.txt" in line and line.startswith("unreadable, not scored") for line in lines)
    short = next(line for line in lines if line.startswith(str(folder / "fire_crackling" / "b.flac")))
    assert "-> fire crackling" in short and "zero-padded" in short
    run = next((tmp_path / "out").iterdir())
    results = json.loads((run / "results.json").read_text())
    assert results["per_class_top1"] == {"fire crackling": 1.0, "rain": 0.5}
    rows, counts = results["confusion"]["rows"], np.array(results["confusion"]["counts"])
    assert rows == ["fire crackling", "rain"]
    assert counts[1, ATTRIBUTES.index("wind")] == 2 and counts[1, ATTRIBUTES.index("rain")] == 2
    png = Image.open(run / "confusion.png")
    assert png.size[0] > 7 * 40 and png.size[1] > 2 * 40


def test_missing_inputs_are_named(tmp_path, capsys):
    assert listen_mod.main([str(tmp_path / "none.pt"), str(tmp_path)]) == 1
    assert "none.pt" in capsys.readouterr().err
