"""VGGSoundDataModule: CSV parsing, file lookup, missing/bad clips, splits, batches, determinism, resume."""

from __future__ import annotations

import itertools
import logging
from collections import Counter

import numpy as np
import pytest
import pytorch_lightning as pl
import soundfile as sf
import torch
from lightning_fabric.utilities.data import _replace_dunder_methods, _set_sampler_epoch, _update_dataloader
from lightning_fabric.utilities.distributed import DistributedSamplerWrapper
from torch.utils.data import DataLoader

from datamodules.audio_io import crop_or_pad, load_audio
from datamodules.sampling import EpochSampler, ResumableDataLoader, item_generator
from datamodules.soundzoo import synthesize, write_sound_set
from datamodules.vggsound import VGGSoundDataModule, index_audio_files
from datamodules.vggsound_csv import VGGSoundCSVError, read_vggsound_csv

SR = 16000


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    """10 classes x 10 clips of 1 s (8 train, 2 test per class)."""
    return write_sound_set(tmp_path_factory.mktemp("zoo"), clips_per_class=10, seconds=1.0, test_fraction=0.2)


def _dm(root, **kw) -> VGGSoundDataModule:
    kw = {"clip_seconds": 1.0, "crop_seconds": 0.5, "batch_size": 8, "num_workers": 0, "val_fraction": 0.25, **kw}
    dm = VGGSoundDataModule(str(root), **kw)
    dm.setup("fit")
    return dm


# ---------------------------------------------------------------------------- CSV


def test_csv_quoted_labels_and_line_numbers(tmp_path):
    path = tmp_path / "vggsound.csv"
    path.write_text(
        '---g-f_I2yQ,1,"bird chirping, tweeting",train\n'
        "\n"
        'abcdefghijk,30,people whistling,test\n'
        '"zz_Zz-12345",000130,"male speech, man speaking",train\n'
    )
    rows = read_vggsound_csv(path)
    assert [(r.youtube_id, r.start, r.label, r.split, r.line) for r in rows] == [
        ("---g-f_I2yQ", 1, "bird chirping, tweeting", "train", 1),
        ("abcdefghijk", 30, "people whistling", "test", 3),
        ("zz_Zz-12345", 130, "male speech, man speaking", "train", 4),
    ]
    assert rows[0].key == "---g-f_I2yQ_000001" and rows[2].key == "zz_Zz-12345_000130"


@pytest.mark.parametrize(
    "bad_line, message",
    [
        ("abc,10,bird chirping, tweeting,train", "expected 4 columns"),  # unquoted comma
        ("abc,ten,dog,train", "start_seconds"),
        ("abc,10,dog,validation", "split"),
        (",10,dog,train", "youtube_id"),
        ('abc,10,"",train', "label"),
    ],
)
def test_malformed_row_names_file_and_line(tmp_path, bad_line, message):
    path = tmp_path / "bad.csv"
    path.write_text('ok1,0,"a, b",train\nok2,0,dog,test\n' + bad_line + "\nok3,0,dog,train\n")
    with pytest.raises(VGGSoundCSVError, match=message) as info:
        read_vggsound_csv(path)
    assert f"{path}:3:" in str(info.value)


# ---------------------------------------------------------------------------- files


def test_file_index_scans_subfolders_and_prefers_flac(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    for rel in ["-x_000010.wav", "-x_000010.flac", "a/y_000000.ogg", "a/b/z_000020.WAV", "a/b/v_000000.mp4", "n.txt"]:
        (tmp_path / rel).write_bytes(b"")
    elsewhere = tmp_path.parent / f"{tmp_path.name}_elsewhere"
    elsewhere.mkdir()
    (elsewhere / "w_000030.flac").write_bytes(b"")
    (tmp_path / "linked").symlink_to(elsewhere)  # a symlinked folder is searched
    (tmp_path / "a" / "b" / "loop").symlink_to(tmp_path)  # a symlink cycle ends
    found = index_audio_files(tmp_path)
    assert found == {
        "-x_000010": str(tmp_path / "-x_000010.flac"),
        "y_000000": str(tmp_path / "a" / "y_000000.ogg"),
        "z_000020": str(tmp_path / "a" / "b" / "z_000020.WAV"),
        "w_000030": str(tmp_path / "linked" / "w_000030.flac"),
    }


def test_missing_files_counted_and_listed_once(tmp_path, caplog):
    root = tmp_path / "data"
    root.mkdir()
    rows = []
    for i in range(8):
        label = ["dog", "cat"][i % 2]
        rows.append(f"id{i},{i},{label},{'test' if i >= 6 else 'train'}")
        if i not in (1, 4, 7):  # three rows without a file
            sf.write(root / f"id{i}_{i:06d}.flac", synthesize("rain", i, SR, 0.5), SR)
    (root / "vggsound.csv").write_text("\n".join(rows) + "\n")
    report = tmp_path / "logs"
    with caplog.at_level(logging.WARNING, logger="datamodules.vggsound"):
        dm = _dm(root, report_dir=str(report), val_fraction=0.0, batch_size=2)
        dm.setup("test")  # a second setup must not report again
    assert [r.youtube_id for r in dm.missing] == ["id1", "id4", "id7"]
    warnings = [r.getMessage() for r in caplog.records if "no audio file" in r.getMessage()]
    assert len(warnings) == 1 and "3 of 8 rows (37.5 %" in warnings[0] and "test 1, train 2" in warnings[0]
    lines = (report / "missing_clips.txt").read_text().splitlines()
    assert lines[0] == "csv_line,youtube_id,start_seconds,label,split"
    assert lines[1:] == ["2,id1,1,cat,train", "5,id4,4,dog,train", "8,id7,7,cat,test"]
    assert len(dm.train_set) == 4 and len(dm.test_set) == 1


def test_repeated_rows_count_once(tmp_path, caplog):
    root = tmp_path / "dup"
    root.mkdir()
    for i in range(3):
        sf.write(root / f"id{i}_000000.flac", synthesize("rain", i, SR, 0.5), SR)
    (root / "vggsound.csv").write_text("id0,0,rain,train\nid1,0,rain,train\nid0,0,wind,train\nid2,0,wind,train\n")
    with caplog.at_level(logging.WARNING, logger="datamodules.vggsound"):
        dm = _dm(root, val_fraction=0.0, batch_size=1, report_dir=str(tmp_path))
    assert dm.duplicates == 1 and len(dm.train_set) == 3
    assert {c.key: dm.class_names[c.label] for c in dm.train_set.clips}["id0_000000"] == "rain"
    assert any("1 repeated rows" in r.getMessage() for r in caplog.records)


# ---------------------------------------------------------------------------- bad inputs


@pytest.fixture
def messy(tmp_path):
    """A folder with every kind of bad or awkward input next to good clips."""
    root = tmp_path / "messy"
    root.mkdir()
    names = {}

    def add(name, label, writer):
        key = f"{name}_000000"
        names[name] = label
        if writer is not None:
            writer(root, key)

    def good(ext, rate=SR, seconds=1.0, channels=1):
        def write(root, key):
            x = synthesize("wind", len(names), rate, seconds)
            if channels == 2:
                x = np.stack([x, 0.5 * x], axis=1)
            sf.write(root / f"{key}.{ext}", x, rate)
        return write

    add("good1", "wind", good("flac"))
    add("good2", "wind", good("wav"))
    add("stereo", "wind", good("flac", channels=2))
    add("rate44k", "wind", good("wav", rate=44100))
    add("short", "wind", good("flac", seconds=0.1))
    add("-dashid", "wind", good("ogg"))
    add("corrupt", "bad", lambda r, k: (r / f"{k}.flac").write_bytes(b"fLaC" + bytes(range(200)) * 3))
    add("zerolen", "bad", lambda r, k: (r / f"{k}.wav").write_bytes(b""))
    add("silent", "bad", lambda r, k: sf.write(r / f"{k}.flac", np.zeros(SR, np.float32), SR))
    add("wrongext", "bad", lambda r, k: sf.write(r / f"{k}.mp4", synthesize("rain", 0, SR, 1.0), SR, format="WAV"))
    add("missing", "bad", None)
    (root / "vggsound.csv").write_text("".join(f"{n},0,{lab},train\n" for n, lab in names.items()))
    return root


def test_bad_inputs_are_replaced_flagged_and_counted(messy, tmp_path):
    dm = _dm(messy, val_fraction=0.0, batch_size=3, report_dir=str(tmp_path), crop_seconds=0.5)
    assert sorted(r.youtube_id for r in dm.missing) == ["missing", "wrongext"]
    data = dm.train_set
    keys = [c.key.rsplit("_", 1)[0] for c in data.clips]
    for i, name in enumerate(keys):
        item = data[(0, i)]
        assert item["waveform"].shape == (SR // 2,) and item["waveform"].dtype == torch.float32
        assert item["waveform"].abs().max() > 0  # a silent clip is never passed on
        assert item["bad"] == (name in ("corrupt", "zerolen", "silent")), name
        assert item["label_name"] == dm.class_names[item["label"]]
        if item["bad"]:
            assert item["label_name"] == "wind"  # replaced by a good clip, with the replacement's label
    short = data[(0, keys.index("short"))]["waveform"]
    clip = load_audio(data.clips[keys.index("short")].path, SR)
    start = int(torch.nonzero(short)[0]) - int(torch.nonzero(clip)[0])  # where the 0.1 s clip sits in the pad
    assert clip.numel() == int(0.1 * SR) and torch.equal(short[start : start + clip.numel()], clip)
    assert short[:start].abs().sum() == 0 and short[start + clip.numel() :].abs().sum() == 0
    # a whole epoch through the loader: every bad clip shows up exactly once in the per-item flags
    data.train = True
    flags = sum(int(batch["bad"].sum()) for batch in dm.train_dataloader())
    assert flags == 3


def test_too_many_consecutive_failures_raise_clearly(messy, tmp_path):
    for f in messy.glob("good*"):
        f.write_bytes(b"")
    for name in ["stereo", "rate44k", "short", "-dashid"]:
        next(messy.glob(f"{name}_*")).write_bytes(b"junk")
    dm = _dm(messy, val_fraction=0.0, report_dir=str(tmp_path))
    with pytest.raises(RuntimeError, match="dataset looks broken"):
        dm.train_set[0]


# ---------------------------------------------------------------------------- splits and batches


def test_batches_have_documented_structure(zoo):
    dm = _dm(zoo)
    assert dm.class_names == sorted(dm.class_names) and len(dm.class_names) == 10
    assert dm.prompts[0] == f"This is a sound of {dm.class_names[0]}."
    for loader, length in [(dm.train_dataloader(), SR // 2), (dm.val_dataloader(), SR), (dm.test_dataloader(), SR)]:
        batch = next(iter(loader))
        assert set(batch) == {"waveform", "label", "label_name", "bad", "index", "class_names"}
        assert batch["waveform"].shape == (8, length) and batch["waveform"].dtype == torch.float32
        assert batch["label"].shape == (8,) and batch["label"].dtype == torch.long
        assert batch["bad"].shape == (8,) and batch["bad"].dtype == torch.bool and not batch["bad"].any()
        assert batch["label_name"] == [dm.class_names[i] for i in batch["label"]]
        assert batch["class_names"] == dm.class_names
    assert len(dm.train_dataloader()) == len(dm.train_set) // 8  # drop_last for train


def test_val_carveout_is_stratified_and_stable(zoo, tmp_path):
    dm = _dm(zoo, val_fraction=0.25)
    per_class = Counter(c.label for c in dm.val_set.clips)
    assert per_class == Counter({i: 2 for i in range(10)})  # 25 % of each class's 8 train clips
    assert len(dm.test_set) == 20 and len(dm.train_set) == 60
    train_keys, val_keys = {c.key for c in dm.train_set.clips}, {c.key for c in dm.val_set.clips}
    assert not train_keys & val_keys
    assert {c.key for c in _dm(zoo, val_fraction=0.25).val_set.clips} == val_keys  # same on a rerun
    assert {c.key for c in _dm(zoo, val_fraction=0.25, seed=1).val_set.clips} != val_keys
    # a clip of one class disappearing leaves the other classes' carve-outs alone
    removed = next(c for c in dm.train_set.clips if c.label == 0)
    lines = [ln for ln in (zoo / "vggsound.csv").read_text().splitlines() if not ln.startswith(removed.key[:-7])]
    (tmp_path / "fewer.csv").write_text("\n".join(lines) + "\n")
    fewer = _dm(zoo, val_fraction=0.25, csv_path=str(tmp_path / "fewer.csv"), report_dir=str(tmp_path))
    assert {c.key for c in fewer.val_set.clips if c.label != 0} == {c.key for c in dm.val_set.clips if c.label != 0}


def test_class_subset_and_errors(zoo):
    dm = _dm(zoo, classes=["wind", "rain"], batch_size=4)
    assert dm.class_names == ["wind", "rain"]
    assert {c.label for c in dm.train_set.clips} == {0, 1}
    labels = {dm.class_names[c.label] for c in dm.train_set.clips}
    assert labels == {"wind", "rain"}
    with pytest.raises(ValueError, match="not present"):
        _dm(zoo, classes=["wind", "jazz"])
    with pytest.raises(ValueError, match="batch_size 64"):
        _dm(zoo, classes=["wind"], batch_size=64).train_dataloader()
    with pytest.raises(FileNotFoundError, match="nowhere.csv"):
        _dm(zoo, csv_path=str(zoo / "nowhere.csv"))


# ---------------------------------------------------------------------------- determinism and resume


def test_items_depend_only_on_seed_epoch_index(zoo):
    data = _dm(zoo).train_set
    a, b = data[(3, 5)], data[(3, 5)]
    assert torch.equal(a["waveform"], b["waveform"])
    torch.manual_seed(123)  # global RNG state is irrelevant
    assert torch.equal(data[(3, 5)]["waveform"], a["waveform"])
    assert not torch.equal(data[(4, 5)]["waveform"], a["waveform"])  # another epoch, another crop
    other_seed = _dm(zoo, seed=7).train_set
    assert not torch.equal(other_seed[(3, 5)]["waveform"], a["waveform"])


# ---------------------------------------------------------------------------- recording-chain augmentation


def test_recording_chain_is_off_by_default_and_items_are_the_plain_crops(zoo):
    dm, off = _dm(zoo), _dm(zoo, recording_chain_p=0.0)
    assert dm.hparams.recording_chain_p == 0.0
    data = dm.train_set
    for key in [(0, 0), (3, 5), (7, len(data) - 1)]:
        epoch, index = key
        gen = item_generator(0, epoch, index)
        plain = crop_or_pad(load_audio(data.paths[index], SR), SR // 2, "random", generator=gen)
        assert torch.equal(data[key]["waveform"], plain)  # no chain: the crop as before the option existed
        assert torch.equal(off.train_set[key]["waveform"], plain)


def test_recording_chain_is_seeded_by_seed_epoch_index_and_keeps_the_crop(zoo, monkeypatch):
    """The chain gets the clean crop and an rng that is a function of (seed, epoch, index) alone."""
    import datamodules.vggsound as vggsound

    seen = {}

    def spy(x, rng, sr, p):
        seen["x"], seen["draw"], seen["sr"], seen["p"] = x.copy(), rng.random(), sr, p
        return x * 0.5

    monkeypatch.setattr(vggsound, "record", spy)
    clean, chained = _dm(zoo).train_set, _dm(zoo, recording_chain_p=0.4).train_set
    draws = {}
    for key in [(3, 5), (3, 5), (4, 5), (3, 6)]:
        out = chained[key]["waveform"]
        assert np.array_equal(seen["x"], clean[key]["waveform"].numpy())  # same crop with and without the chain
        assert torch.equal(out, clean[key]["waveform"] * 0.5) and seen["sr"] == SR and seen["p"] == 0.4
        draws.setdefault(key, set()).add(seen["draw"])
    assert len(draws[(3, 5)]) == 1  # same key, same stream (global RNG state aside)
    assert len({d for v in draws.values() for d in v}) == 3  # another epoch or index: another stream
    seen.clear()
    _dm(zoo, recording_chain_p=0.4, seed=7).train_set[(3, 5)]
    assert seen["draw"] not in draws[(3, 5)]


def test_recording_chain_changes_training_items_only_keeping_length_and_range(zoo):
    clean, dm = _dm(zoo), _dm(zoo, recording_chain_p=1.0)
    changed = 0
    for epoch, index in itertools.product(range(3), range(0, len(dm.train_set), 7)):
        a, b = dm.train_set[(epoch, index)]["waveform"], dm.train_set[(epoch, index)]["waveform"]
        assert torch.equal(a, b)  # deterministic
        assert a.shape == (SR // 2,) and a.dtype == torch.float32
        assert torch.isfinite(a).all() and a.abs().max() <= 1.0
        changed += not torch.equal(a, clean.train_set[(epoch, index)]["waveform"])
    assert changed >= 0.9 * 3 * len(range(0, len(dm.train_set), 7))
    e0, e1 = dm.train_set[(0, 4)]["waveform"], dm.train_set[(1, 4)]["waveform"]
    assert not torch.equal(e0, e1)
    for split in ("val_set", "test_set"):  # validation and test: never through the chain
        for i in range(len(getattr(dm, split))):
            assert torch.equal(getattr(dm, split)[i]["waveform"], getattr(clean, split)[i]["waveform"])
    batch = next(iter(dm.train_dataloader()))
    assert batch["waveform"].shape == (8, SR // 2) and batch["waveform"].abs().max() <= 1.0


@pytest.mark.parametrize("kw", [dict(recording_chain_p=1.5), dict(recording_chain_p=-0.1)])
def test_recording_chain_rejects_bad_settings(zoo, kw):
    with pytest.raises(ValueError, match=next(iter(kw))):
        VGGSoundDataModule(str(zoo), **kw)


def test_epoch_sampler_permutation_depends_on_seed_and_epoch():
    s = EpochSampler(50, seed=3)
    first = list(s)
    assert sorted(i for _, i in first) == list(range(50)) and {e for e, _ in first} == {0}
    assert list(EpochSampler(50, seed=3)) == first
    s.set_epoch(1)
    assert [i for _, i in s] != [i for _, i in first] and {e for e, _ in s} == {1}
    assert [i for _, i in EpochSampler(50, seed=3, shuffle=False)] == list(range(50))


def test_epoch_sampler_shards_the_one_permutation_over_ranks():
    """Rank r takes positions r, r + world, ... of the single-process order (padded with its first items), so a
    step's global batch is the same clips on 1 or 3 ranks."""
    whole = [i for _, i in EpochSampler(10, seed=3)]
    ranks = [[i for _, i in EpochSampler(10, seed=3, num_replicas=3, rank=r)] for r in range(3)]
    assert [len(r) for r in ranks] == [4, 4, 4] and len(EpochSampler(10, seed=3, num_replicas=3, rank=0)) == 4
    padded = whole + whole[:2]
    assert ranks == [padded[r::3] for r in range(3)]
    for step in range(2):  # two per-rank batches of 2: the global batch is 6 consecutive items of `whole`
        assert sorted(i for r in ranks for i in r[2 * step: 2 * step + 2]) == sorted(padded[6 * step: 6 * step + 6])


def _labels(loader, epoch, limit=None):
    loader.sampler.set_epoch(epoch)
    return [(b["label"].tolist(), b["waveform"].sum().item()) for b in itertools.islice(loader, limit)]


def test_worker_processes_give_the_same_batches(zoo):
    single = _labels(_dm(zoo).train_dataloader(), epoch=2)
    multi = _labels(_dm(zoo, num_workers=2).train_dataloader(), epoch=2)
    assert single == multi


def test_loader_state_resumes_mid_epoch(zoo):
    full = _labels(_dm(zoo).train_dataloader(), epoch=1)
    loader = _dm(zoo).train_dataloader()
    head = _labels(loader, epoch=1, limit=3)
    state = loader.state_dict()
    assert state == {"epoch": 1, "batches": 3}
    fresh = _dm(zoo).train_dataloader()
    fresh.load_state_dict(state)
    tail = _labels(fresh, epoch=1)
    assert head + tail == full
    assert fresh.state_dict() == {"epoch": 1, "batches": len(full)}
    assert _labels(fresh, epoch=2) == _labels(_dm(zoo).train_dataloader(), epoch=2)  # skip applies once


class _Recorder(pl.LightningModule):
    """Trains a scalar on the batches and records what it saw."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.seen = []

    def training_step(self, batch, _):
        self.seen.append((self.current_epoch, batch["label"].tolist()))
        return ((batch["waveform"].mean(1) * self.w - batch["label"].float()) ** 2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _trainer(tmp_path, **kw):
    return pl.Trainer(
        default_root_dir=tmp_path, accelerator="cpu", logger=False, enable_progress_bar=False,
        enable_model_summary=False, limit_val_batches=0, **kw,
    )


@pytest.mark.parametrize("extra_steps, workers", [(2, 0), (0, 2)], ids=["mid-epoch", "epoch-end-workers"])
def test_lightning_resume_sees_the_same_batches(zoo, tmp_path, extra_steps, workers):
    """Killed after epoch 0 plus `extra_steps` batches and resumed from that checkpoint: same batches, same weights."""
    full = _Recorder()
    _trainer(tmp_path / "a", max_epochs=3, enable_checkpointing=False).fit(full, datamodule=_dm(zoo))
    stop = len(full.seen) // 3 + extra_steps
    ckpt = pl.callbacks.ModelCheckpoint(dirpath=tmp_path / "ck", every_n_train_steps=stop, save_top_k=-1)
    first = _Recorder()
    _trainer(tmp_path / "b", max_epochs=3, max_steps=stop, callbacks=[ckpt]).fit(
        first, datamodule=_dm(zoo, num_workers=workers)
    )
    path = next((tmp_path / "ck").glob(f"*step={stop}.ckpt"))
    second = _Recorder()
    _trainer(tmp_path / "c", max_epochs=3).fit(second, datamodule=_dm(zoo, num_workers=workers), ckpt_path=str(path))
    assert first.seen + second.seen == full.seen
    assert torch.equal(second.w, full.w)


def test_ddp_sampler_injection_keeps_resumable_loader_and_shards(zoo):
    """What Lightning does under DDP: re-create the train loader around its DistributedSamplerWrapper."""
    def items(loader):
        return [(int(lab), round(float(w.sum()), 4)) for b in loader for lab, w in zip(b["label"], b["waveform"])]

    single = _dm(zoo, batch_size=4).train_dataloader()
    single.sampler.set_epoch(3)
    everything = set(items(single))
    shards = []
    for rank in range(2):
        with _replace_dunder_methods(DataLoader, "dataset"):  # Lightning records the loader's arguments
            loader = _dm(zoo, batch_size=4).train_dataloader()
        sharded = _update_dataloader(loader, DistributedSamplerWrapper(loader.sampler, num_replicas=2, rank=rank))
        assert isinstance(sharded, ResumableDataLoader) and sharded.drop_last
        _set_sampler_epoch(sharded, 3)
        shards.append(set(items(sharded)))
        assert sharded.state_dict() == {"epoch": 3, "batches": len(sharded)}
    assert not shards[0] & shards[1]  # every clip on one rank only
    assert shards[0] | shards[1] <= everything  # the same items (same crops) as one process draws in epoch 3
    assert len(shards[0]) == len(shards[1]) == 28  # 30 clips per rank, drop_last at batch 4
