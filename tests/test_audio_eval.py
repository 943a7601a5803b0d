"""Evaluation pieces: ESC-50 / UrbanSound8K layouts with official folds, the linear probe, the report."""

import json

import numpy as np
import pytest
import soundfile as sf
import torch
import torch.nn.functional as F

from datamodules.fold_sets import read_esc50, read_urbansound8k
from experiments import eval as eval_cli
from lightning_modules.audio_export import export_audio_encoder
from lightning_modules.linear_probe import fit_logistic_regression, leave_one_fold_out, probe_logits
from lightning_modules.networks.audio_encoder import AudioEncoder
from lightning_modules.zero_shot import class_prompts, label_to_words
from lightning_modules.zero_shot_metrics import classification_scores, zero_shot_scores

ESC_HEADER = "filename,fold,target,category,esc10,src_file,take"
US_HEADER = "slice_file_name,fsID,start,end,salience,fold,classID,class"


# Tiny networks: one intra-op thread (the shared fixture in conftest.py says why).
pytestmark = pytest.mark.usefixtures("single_thread")


def _wav(path, seconds=0.5, freq=440.0, rate=16000):
    t = np.arange(int(seconds * rate)) / rate
    sf.write(path, (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), rate)


def _esc50(root, rows, write=True):
    (root / "meta").mkdir(parents=True)
    (root / "audio").mkdir()
    lines = [ESC_HEADER]
    for name, fold, target, category in rows:
        lines.append(f"{name},{fold},{target},{category},False,src,A")
        if write:
            _wav(root / "audio" / name, freq=300 + 200 * target)
    (root / "meta" / "esc50.csv").write_text("\n".join(lines) + "\n")
    return root


def test_esc50_layout_classes_folds_and_missing_files(tmp_path):
    rows = [("1-a-A-1.wav", 1, 1, "crackling_fire"), ("1-b-A-0.wav", 1, 0, "dog"),
            ("2-c-A-1.wav", 2, 1, "crackling_fire"), ("2-d-A-0.wav", 2, 0, "dog")]
    root = _esc50(tmp_path / "esc", rows)
    (root / "audio" / "2-d-A-0.wav").unlink()
    fs = read_esc50(root)
    assert fs.class_names == ["dog", "crackling_fire"]  # index = the dataset's target id
    assert [(c.fold, c.label) for c in fs.clips] == [(1, 1), (1, 0), (2, 1)]
    assert len(fs.missing) == 1 and fs.missing[0].endswith("2-d-A-0.wav")
    assert class_prompts(fs.class_names, "This is a sound of {label}.")[1] == "This is a sound of crackling fire."
    assert label_to_words("air_conditioner") == "air conditioner"


def test_urbansound8k_layout_reads_fold_directories(tmp_path):
    root = tmp_path / "us8k"
    (root / "metadata").mkdir(parents=True)
    lines = [US_HEADER]
    for i, (fold, cid, name) in enumerate([(1, 0, "air_conditioner"), (3, 1, "car_horn"), (3, 0, "air_conditioner")]):
        (root / "audio" / f"fold{fold}").mkdir(parents=True, exist_ok=True)
        _wav(root / "audio" / f"fold{fold}" / f"{i}-{cid}-0-0.wav")
        lines.append(f"{i}-{cid}-0-0.wav,{i},0.0,1.0,1,{fold},{cid},{name}")
    (root / "metadata" / "UrbanSound8K.csv").write_text("\n".join(lines) + "\n")
    fs = read_urbansound8k(root)
    assert fs.class_names == ["air_conditioner", "car_horn"]
    assert sorted({c.fold for c in fs.clips}) == [1, 3] and not fs.missing


def test_malformed_metadata_names_file_and_line(tmp_path):
    root = _esc50(tmp_path / "a", [("x.wav", "one", 0, "dog")], write=False)
    with pytest.raises(ValueError, match=r"esc50.csv:2"):
        read_esc50(root)
    root = _esc50(tmp_path / "b", [("x.wav", 1, 0, "dog"), ("y.wav", 1, 0, "cat")])
    with pytest.raises(ValueError, match=r"esc50.csv:3: class id 0"):
        read_esc50(root)
    root = _esc50(tmp_path / "c", [("x.wav", 1, 0, "dog")], write=False)
    with pytest.raises(FileNotFoundError, match="none of the 1 clips"):
        read_esc50(root)


def test_zero_shot_scores_by_hand():
    """torchmetrics' top-k and text -> audio retrieval on a 3-clip, 3-class example worked out by hand."""
    logits = torch.tensor([[0.1, 0.9, 0.6], [0.8, 0.1, 0.5], [0.2, 0.3, 0.1]])
    labels = torch.tensor([1, 2, 2])
    s = zero_shot_scores(logits, labels)
    assert s["top1"] == pytest.approx(1 / 3)  # only clip 0's best class is its own
    assert s["top5"] == 1.0 and s["n"] == 3  # k capped at the number of classes
    # Query "class 0" has no clip (skipped). Query 1 ranks clip 0 first: AP 1, R@1 1. Query 2 ranks clip 0
    # (not relevant), clip 1, clip 2: AP (1/2 + 2/3) / 2, R@1 0, R@5 1.
    assert s["t2a_map"] == pytest.approx((1 + (1 / 2 + 2 / 3) / 2) / 2)
    assert s["t2a_r1"] == pytest.approx(0.5)
    assert s["t2a_r5"] == s["t2a_r10"] == 1.0
    assert classification_scores(logits, labels) == {"top1": s["top1"], "top5": 1.0, "n": 3}
    # Negative cosines rank like any others (torchmetrics alone drops relevant items scored <= 0).
    assert zero_shot_scores(logits - 0.7, labels) == pytest.approx(s)


def test_linear_probe_reaches_the_optimum_of_its_objective():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(60, 5, generator=g), torch.randint(0, 3, (60,), generator=g)
    l2 = 0.1
    weight, bias, mean, std = fit_logistic_regression(x, y, 3, l2=l2)
    w, b = weight.clone().requires_grad_(True), bias.clone().requires_grad_(True)
    z = (x.double() - mean) / std
    loss = F.cross_entropy(z @ w.T + b, y) + 0.5 * l2 * w.pow(2).sum()
    loss.backward()
    assert w.grad.abs().max() < 1e-6 and b.grad.abs().max() < 1e-6  # a stationary point of a convex objective
    torch.testing.assert_close(probe_logits(x, weight, bias, mean, std), z @ weight.T + bias)


def test_leave_one_fold_out_separates_clusters_and_holds_out_each_fold():
    g = torch.Generator().manual_seed(1)
    centres = 4 * torch.randn(4, 8, generator=g)
    y = torch.arange(4).repeat(15)
    x = centres[y] + torch.randn(60, 8, generator=g)
    folds = torch.arange(60) % 3 + 1
    res = leave_one_fold_out(x, y, folds, 4)
    assert sorted(res) == [1, 2, 3] and all(r["n"] == 20 for r in res.values())
    assert all(r["top1"] >= 0.95 for r in res.values())
    shuffled = leave_one_fold_out(x, y[torch.randperm(60, generator=g)], folds, 4)
    assert np.mean([r["top1"] for r in shuffled.values()]) < 0.6  # nothing to learn: no leak between folds


def test_evaluate_writes_table_json_and_refuses_to_overwrite(tmp_path, tiny_clip_path, capsys):
    rows = [(f"{f}-{i}-A-{t}.wav", f, t, ["dog", "crackling_fire", "rain"][t]) for f in (1, 2, 3) for t in range(3)
            for i in range(2)]
    root = _esc50(tmp_path / "esc", rows)
    encoder = AudioEncoder(embed_dim=64, backbone="resnet18", width=8, n_mels=32, n_fft=256, clip_seconds=0.5)
    ckpt = export_audio_encoder(encoder, tmp_path / "enc.pt")
    out = tmp_path / "res.json"
    res = eval_cli.main([str(ckpt), "--esc50_root", str(root), "--clip_model", tiny_clip_path, "--out", str(out),
                         "--num_workers", "0", "--templates", '["{label}"]'])
    assert json.loads(out.read_text())["datasets"]["ESC-50"] == json.loads(json.dumps(res["datasets"]["ESC-50"]))
    esc = res["datasets"]["ESC-50"]
    zs = esc["zero_shot"]["{label}"]
    assert set(zs["folds"]) == {"1", "2", "3"} and all(f["n"] == 6 for f in zs["folds"].values())
    assert zs["mean"]["top1"] == pytest.approx(np.mean([f["top1"] for f in zs["folds"].values()]))
    assert set(esc["linear_probe"]["folds"]) == {"1", "2", "3"}
    for key in ("t2a_map", "t2a_r1", "t2a_r5", "t2a_r10"):  # retrieval per fold and as the mean over folds
        assert all(0.0 <= f[key] <= 1.0 for f in zs["folds"].values())
        assert zs["mean"][key] == pytest.approx(np.mean([f[key] for f in zs["folds"].values()]))
    # Each fold has 2 clips per class: R@10 over 6 clips finds them all, R@1 at most half of them.
    assert zs["mean"]["t2a_r10"] == 1.0 and zs["mean"]["t2a_r1"] <= 0.5
    assert "t2a_map" not in esc["linear_probe"]["mean"]  # retrieval is a zero-shot (prompt query) score
    table = capsys.readouterr().out
    assert "linear probe (leave-one-fold-out)" in table and "reference zero-shot: official code" in table
    assert "t2aMAP" in table and "R@10" in table
    with pytest.raises(FileExistsError, match="res.json"):
        eval_cli.main([str(ckpt), "--esc50_root", str(root), "--clip_model", tiny_clip_path, "--out", str(out)])
    with pytest.raises(ValueError, match="nothing to evaluate"):
        eval_cli.main([str(ckpt), "--clip_model", tiny_clip_path, "--out", str(tmp_path / "x.json")])
