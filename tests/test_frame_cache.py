"""The frame-embedding cache: built once and reused (image-tower calls counted), equal to CLIP on the frames,
refused when another CLIP made it (at build and at the start of training), read by the DataModule (random frame in
training, fixed in validation, masks for clips without frames), and training never runs the image tower."""

from __future__ import annotations

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from conftest import build_tiny_clip

from datamodules.frame_cache import FrameCache, FrameCacheError
from datamodules.frame_files import FRAMES_DIR, check_manifest, read_strip, write_strip
from datamodules.soundzoo import write_sound_set
from datamodules.vggsound import VGGSoundDataModule
from experiments import embed_frames
from lightning_modules.audio_clip import AudioCLIPModule
from lightning_modules.clip_wrapper import CLIPWrapper
from lightning_modules.frame_embedder import build_frame_cache
from lightning_modules.networks.audio_encoder import AudioEncoder

K = 3
pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture
def tower_calls(monkeypatch):
    """Counts images through CLIP's image tower (every CLIPWrapper.encode_image call)."""
    calls = []
    original = CLIPWrapper.encode_image

    def counting(self, images):
        calls.append(len(images))
        return original(self, images)

    monkeypatch.setattr(CLIPWrapper, "encode_image", counting)
    return calls


def _strips(root, keys, seed=0):
    frames_dir = root / FRAMES_DIR
    check_manifest(frames_dir, K, 32)
    rng = np.random.default_rng(seed)
    for key in keys:
        write_strip(frames_dir / f"{key}.jpg", rng.integers(0, 256, (K, 32, 32, 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def sound_root(tmp_path_factory):
    return write_sound_set(tmp_path_factory.mktemp("zoo"), clips_per_class=4, seconds=0.5)


def _keys(root):
    return sorted(p.stem for p in root.glob("*.flac"))


def test_built_once_then_reused_and_extended(tmp_path, tiny_clip_path, tower_calls):
    keys = [f"clip{i:02d}_000000" for i in range(5)]
    _strips(tmp_path, keys)
    report = build_frame_cache(tmp_path, tiny_clip_path, batch_size=2, progress=False)
    assert (report.clips, report.embedded, report.reused) == (5, 5, 0)
    assert sum(tower_calls) == 5 * K and report.bytes == 5 * K * 64 * 2
    cache = FrameCache(tmp_path / "frame_cache")
    # Each row is CLIP's embedding of that clip's frames (float16 storage).
    clip = CLIPWrapper(tiny_clip_path)
    frames = torch.from_numpy(read_strip(tmp_path / FRAMES_DIR / f"{keys[3]}.jpg", K).copy()).permute(0, 3, 1, 2)
    with torch.no_grad():
        direct = clip.encode_image(frames.float() / 127.5 - 1.0)
    assert torch.allclose(torch.from_numpy(np.asarray(cache.array[3], np.float32)), direct, atol=2e-3)
    stored = np.array(cache.array)
    tower_calls.clear()
    again = build_frame_cache(tmp_path, tiny_clip_path, progress=False)
    assert (again.embedded, again.reused) == (0, 5) and tower_calls == []
    _strips(tmp_path, ["clip99_000000"], seed=1)
    more = build_frame_cache(tmp_path, tiny_clip_path, progress=False)
    assert (more.clips, more.embedded, more.reused) == (6, 1, 5) and tower_calls == [K]
    extended = FrameCache(tmp_path / "frame_cache")
    assert np.array_equal(np.array(extended.array[extended.rows(keys)]), stored)


def test_an_unreadable_strip_is_left_out_and_listed(tmp_path, tiny_clip_path, capsys):
    _strips(tmp_path, ["a_000000", "c_000000"])
    (tmp_path / FRAMES_DIR / "b_000000.jpg").write_bytes(b"\xff\xd8 not a whole jpeg")
    assert embed_frames.main([str(tmp_path), "--clip", tiny_clip_path]) == 1
    assert "1 unreadable frame strips left out" in capsys.readouterr().err
    cache = FrameCache(tmp_path / "frame_cache")
    assert cache.info.keys == ["a_000000", "c_000000"] and cache.array.shape == (2, K, 64)
    assert "b_000000.jpg" in (tmp_path / "frame_cache" / "failures.txt").read_text()
    assert not list((tmp_path / "frame_cache").glob(".*partial"))
    fresh = build_frame_cache(tmp_path, tiny_clip_path, out=tmp_path / "c2", progress=False)
    assert np.array_equal(np.array(FrameCache(tmp_path / "c2").array), np.array(cache.array))
    assert [p for p, _ in fresh.failed] == [str(tmp_path / FRAMES_DIR / "b_000000.jpg")]


def test_another_clip_is_refused(tmp_path, tiny_clip_path, capsys):
    _strips(tmp_path, ["a_000000", "b_000000"])
    build_frame_cache(tmp_path, tiny_clip_path, progress=False)
    other = tmp_path / "other_clip.pt"
    torch.save(build_tiny_clip(seed=1).state_dict(), other)
    with pytest.raises(FrameCacheError, match="made by CLIP .*tiny_clip_state_dict.* but this run uses .*other_clip"):
        build_frame_cache(tmp_path, str(other), progress=False)
    assert embed_frames.main([str(tmp_path), "--clip", str(other)]) == 2
    assert "embedding spaces differ" in capsys.readouterr().err
    assert embed_frames.main([str(tmp_path), "--clip", str(other), "--out", str(tmp_path / "c2")]) == 0


def _datamodule(root, cache, **kw):
    return VGGSoundDataModule(str(root), clip_seconds=0.5, batch_size=4, num_workers=0, val_fraction=0.25,
                              frame_cache=str(cache), report_dir=str(root), **kw)


def test_datamodule_items_carry_frame_embeddings_and_masks(sound_root, tmp_path, tiny_clip_path):
    keys = _keys(sound_root)
    _strips(tmp_path, keys[1:])  # the first clip has no frames
    build_frame_cache(tmp_path, tiny_clip_path, progress=False)
    cache = FrameCache(tmp_path / "frame_cache")
    dm = _datamodule(sound_root, tmp_path / "frame_cache")
    dm.setup("fit")
    ds = dm.train_set
    for i in range(len(ds)):
        row = cache.rows([str(ds.keys[i])])[0]
        item = ds[(0, i)]
        if row < 0:
            assert not item["image_mask"] and torch.equal(item["image"], torch.zeros(64))
            continue
        assert item["image_mask"]
        choices = [torch.from_numpy(cache.embedding(row, k)) for k in range(K)]
        drawn = {next(j for j, c in enumerate(choices) if torch.equal(ds[(e, i)]["image"], c)) for e in range(12)}
        assert len(drawn) > 1  # a random frame per epoch in training ...
        assert ds[(3, i)]["image"].equal(ds[(3, i)]["image"])  # ... reproducible for a resumed run
    assert sum(int((d.frame_rows < 0).sum()) for d in (dm.train_set, dm.val_set, dm.test_set)) == 1
    val = dm.val_set
    i = int(np.flatnonzero(val.frame_rows >= 0)[0])
    middle = torch.from_numpy(cache.embedding(int(val.frame_rows[i]), K // 2))
    assert all(torch.equal(val[(e, i)]["image"], middle) for e in range(3))  # fixed in validation
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (4, 64) and batch["image_mask"].dtype == torch.bool


def _module(clip_path, weight=1.0):
    encoder = AudioEncoder(embed_dim=64, backbone="resnet18", width=4, norm="group", n_mels=32, n_fft=256,
                           hop_length=160, clip_seconds=0.5, spec_augment=False)
    return AudioCLIPModule(encoder, clip_model=clip_path, loss="infonce", audio_image_weight=weight, lr=1e-3,
                           warmup_steps=1, scheduler="constant")


def test_training_uses_the_cache_and_never_the_image_tower(sound_root, tmp_path, tiny_clip_path, tower_calls):
    _strips(tmp_path, _keys(sound_root))
    build_frame_cache(tmp_path, tiny_clip_path, progress=False)
    tower_calls.clear()
    dm = _datamodule(sound_root, tmp_path / "frame_cache")
    module = _module(tiny_clip_path)
    trainer = pl.Trainer(accelerator="cpu", max_steps=3, limit_val_batches=1, num_sanity_val_steps=0, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, default_root_dir=tmp_path)
    before = module.criterion.log_image_scale.detach().clone()
    trainer.fit(module, datamodule=dm)
    assert not torch.equal(module.criterion.log_image_scale.detach(), before)  # the term took part
    metrics = trainer.validate(module, datamodule=dm, verbose=False)[0]
    assert tower_calls == []
    assert 0.0 <= metrics["val/a2i_r1"] <= 1.0


def test_training_refuses_a_cache_of_another_clip_and_a_missing_one(sound_root, tmp_path, tiny_clip_path):
    other = tmp_path / "other_clip.pt"
    torch.save(build_tiny_clip(seed=1).state_dict(), other)
    _strips(tmp_path, _keys(sound_root))
    build_frame_cache(tmp_path, str(other), progress=False)
    trainer = pl.Trainer(accelerator="cpu", max_steps=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, default_root_dir=tmp_path)
    with pytest.raises(FrameCacheError, match="embedding spaces differ"):
        trainer.fit(_module(tiny_clip_path), datamodule=_datamodule(sound_root, tmp_path / "frame_cache"))
    no_cache = VGGSoundDataModule(str(sound_root), clip_seconds=0.5, batch_size=4, num_workers=0,
                                  report_dir=str(tmp_path))
    with pytest.raises(ValueError, match="audio_image_weight > 0 needs frame embeddings"):
        trainer.fit(_module(tiny_clip_path), datamodule=no_cache)
