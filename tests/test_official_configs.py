"""The official models in our pipeline: `make weights` registry entries, the landscape config, and the
manipulation side embedding sounds with the official encoder (whole clips, official preprocessing)."""

from __future__ import annotations

import io
import json
import math
import urllib.error
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from datamodules.fold_sets import read_esc50
from datamodules.official_frontend import load_official_audio
from experiments import eval as eval_cli
from experiments import manipulate, weights
from lightning_modules.audio_export import load_audio_encoder
from lightning_modules.manipulation import ManipulationModule
from lightning_modules.networks.official_audio_encoder import OfficialAudioEncoder

REPO = Path(__file__).resolve().parents[1]
README_URLS = {  # as printed in the official repository's README
    "landscape-256": "https://kr.object.ncloudstorage.com/cvpr2022/landscape.pt",
    "official-resnet18-57": "https://kr.object.ncloudstorage.com/cvpr2022/resnet18_57.pth",
}


def _entry(reg: dict, name: str) -> dict:
    return next(e for e in reg["generators"] + reg["audio_encoders"] if e["name"] == name)


def test_registry_has_both_released_files():
    reg = weights.load_registry()
    for name, url in README_URLS.items():
        e = _entry(reg, name)
        assert e["url"] == url and e["url_verified"] is False and e["file"].startswith("weights/")
        assert not e.get("default")  # only fetched when asked for
    clips, files = weights.select(reg, ["official-resnet18-57", "landscape-256"])
    assert clips == [] and [e["name"] for e in files] == ["official-resnet18-57", "landscape-256"]


def test_make_weights_fetches_the_audio_encoder_and_it_loads(tmp_path, capsys):
    torch.manual_seed(0)
    state = {"module." + k: v for k, v in OfficialAudioEncoder().state_dict().items()}
    buf = io.BytesIO()
    torch.save(state, buf)
    payload = buf.getvalue()

    class Response(io.BytesIO):
        status, headers = 200, {"Content-Length": str(len(payload)), "Content-Type": "application/octet-stream"}

    def urlopen(req, timeout=None):
        assert req.full_url == README_URLS["official-resnet18-57"]
        return Response(payload)

    reg = json.loads(weights.REGISTRY.read_text())
    for e in reg["generators"] + reg["audio_encoders"]:
        e["file"] = str(tmp_path / e["file"])
    registry = tmp_path / "weights.json"
    registry.write_text(json.dumps(reg))
    assert weights.main(["--registry", str(registry), "official-resnet18-57"], urlopen=urlopen) == 0
    path = Path(_entry(reg, "official-resnet18-57")["file"])
    encoder = load_audio_encoder(path)
    assert isinstance(encoder, OfficialAudioEncoder)
    torch.testing.assert_close(encoder.conv.weight, state["module.conv.weight"], rtol=0, atol=0)

    def offline(*a, **k):
        raise urllib.error.URLError("Name or service not known")

    path.unlink()
    assert weights.main(["--registry", str(registry), "official-resnet18-57"], urlopen=offline) == 1
    assert str(path) in capsys.readouterr().err


def test_official_landscape_config_parses_with_the_official_settings():
    cli = manipulate.main(["--config", str(REPO / "experiments/manipulation/official_landscape.yaml")], run=False)
    hp = cli.model.hparams
    assert (hp.steps, hp.lr, hp.truncation, hp.sound_crop) == (300, 0.1, 0.7, "random")
    assert math.isclose(hp.lambda_sim, 0.002) and hp.clip == "ViT-B/32"
    reg = weights.load_registry()  # the config points at the files `make weights` writes
    assert hp.generator == _entry(reg, "landscape-256")["file"]
    assert hp.audio_encoder == _entry(reg, "official-resnet18-57")["file"]


def _inputs_only(monkeypatch) -> None:
    """Official encoders return their flattened network input instead of running the ResNet (what reaches
    the network is what these tests check)."""
    monkeypatch.setattr(OfficialAudioEncoder, "embed_spectrogram", lambda self, spec: spec.flatten(1))


def test_manipulation_embeds_whole_clips_with_the_official_preprocessing(tmp_path, monkeypatch):
    _inputs_only(monkeypatch)
    torch.manual_seed(1)
    enc_path = tmp_path / "resnet18_57.pth"
    torch.save(OfficialAudioEncoder(embed_dim=64).state_dict(), enc_path)
    rng = np.random.default_rng(0)
    clips = []
    for name, seconds, rate in (("long48k", 11.0, 48000), ("short", 2.0, 44100)):
        t = np.arange(int(seconds * rate)) / rate
        x = 0.3 * np.sin(2 * np.pi * rng.uniform(200, 3000) * t) + 0.02 * rng.standard_normal(t.size)
        clips.append(str(tmp_path / f"{name}.wav"))
        sf.write(clips[-1], np.stack([x, 0.5 * x], 1).astype(np.float32), rate, subtype="PCM_24")
    encoder = load_audio_encoder(enc_path)
    waves = [load_official_audio(p) for p in clips]
    for crop, policy in (("center", "center"), ("random", "manipulation")):
        module = ManipulationModule(generator="unused.pt", audio_encoder=str(enc_path), sound_crop=crop, seed=3,
                                    progress=False)
        emb, levels = module.embed_sounds(clips)
        expected = encoder.embed_clips(waves, crop=policy, generator=torch.Generator().manual_seed(3))
        torch.testing.assert_close(emb, torch.nn.functional.normalize(expected, dim=-1), rtol=0, atol=0)
        assert emb.shape == (2, 128 * 512) and len(levels) == 2


def _esc50_layout(root: Path) -> None:
    """A tiny ESC-50 in its released layout: 2 folds x 2 classes; one clip at 22.05 kHz (resampled)."""
    (root / "audio").mkdir(parents=True)
    rng = np.random.default_rng(1)
    rows = ["filename,fold,target,category,esc10,src_file,take"]
    for fold in (1, 2):
        for target, category in ((0, "dog"), (1, "crackling_fire")):
            name = f"{fold}-{target}-A-0.wav"
            rate = 22050 if (fold, target) == (2, 1) else 44100
            t = np.arange(int(1.5 * rate)) / rate
            x = 0.3 * np.sin(2 * np.pi * (300 + 2000 * target) * t) + 0.05 * rng.standard_normal(t.size)
            sf.write(root / "audio" / name, x.astype(np.float32), rate)
            rows.append(f"{name},{fold},{target},{category},False,x,A")
    (root / "meta").mkdir()
    (root / "meta" / "esc50.csv").write_text("\n".join(rows) + "\n")


def test_make_eval_accepts_the_official_weights(tmp_path, tiny_clip_path, monkeypatch):
    torch.manual_seed(2)
    ckpt = tmp_path / "resnet18_57.pth"
    torch.save({"module." + k: v for k, v in OfficialAudioEncoder(embed_dim=64).state_dict().items()}, ckpt)
    root = tmp_path / "ESC-50-master"
    _esc50_layout(root)
    out = tmp_path / "eval.json"
    results = eval_cli.main([str(ckpt), "--esc50_root", str(root), "--clip_model", tiny_clip_path,
                             "--device", "cpu", "--num_workers", "0", "--batch_size", "3", "--out", str(out)])
    assert results["encoder"]["arch"] == "official_resnet18" and out.is_file()
    esc = results["datasets"]["ESC-50"]
    assert esc["num_clips"] == 4 and set(esc["zero_shot"]["This is a sound of {label}."]["folds"]) == {"1", "2"}
    assert "linear_probe" in esc
    # the clips reached the encoder whole, resampled like the official code: same as embed_clips
    _inputs_only(monkeypatch)
    encoder = load_audio_encoder(ckpt)
    fold_set = read_esc50(root)
    emb, _, _, skipped = eval_cli.embed_folds(encoder, fold_set, 3, 0, torch.device("cpu"))
    expected = encoder.embed_clips([load_official_audio(c.path) for c in fold_set.clips])
    assert skipped == 0
    torch.testing.assert_close(emb, expected, rtol=0, atol=0)
