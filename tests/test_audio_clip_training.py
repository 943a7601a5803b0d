"""Training the audio encoder into (tiny) CLIP space end to end through the CLI, on the embedded sound set.

One demo-config run is shared by the tests that inspect it (learning, W&B, export, prompt permutation,
evaluation); the shuffled-label control is a second run of the same config. With a random tiny CLIP
these prove the training machinery, not zero-shot transfer.
"""

import csv
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf
import torch
import yaml

from datamodules.sampling import EpochSampler
from datamodules.soundzoo import write_sound_set
from datamodules.vggsound import VGGSoundDataModule
from experiments import eval as eval_cli
from experiments import export_audio, train
from lightning_modules.audio_clip import AudioCLIPModule
from lightning_modules.audio_export import load_audio_encoder
from lightning_modules.clip_wrapper import CLIPWrapper
from lightning_modules.zero_shot import class_prompt_embeddings

REPO = Path(__file__).resolve().parents[1]
DEMO = str(REPO / "experiments" / "audio_clip" / "demo.yaml")


# Tiny networks: one intra-op thread (the shared fixture in conftest.py says why).
pytestmark = pytest.mark.usefixtures("single_thread")


def _fit(run_dir: Path, clip: str, root: Path, *extra: str) -> Path:
    args = ["fit", "--config", DEMO, f"--model.clip_model={clip}", f"--data.root={root}",
            f"--trainer.default_root_dir={run_dir}", "--trainer.enable_progress_bar=false", *extra]
    train.main(args)
    return run_dir


def _best_score(run_dir: Path) -> float:
    ckpt = torch.load(run_dir / "checkpoints" / "best.ckpt", weights_only=True)
    scores = [s["best_model_score"] for s in ckpt["callbacks"].values() if s.get("monitor") == "val/top1"]
    return float(scores[0])


@torch.no_grad()
def _test_split_accuracy(checkpoint: Path, root: Path, clip: str) -> float:
    """Zero-shot top-1 on the sound set's test rows (true labels), with the checkpoint's encoder."""
    encoder = load_audio_encoder(checkpoint)
    dm = VGGSoundDataModule(str(root), clip_seconds=encoder.clip_samples / encoder.sample_rate, num_workers=0)
    dm.setup("test")
    class_text = class_prompt_embeddings(CLIPWrapper(clip), dm.class_names)
    correct = total = 0
    for batch in dm.test_dataloader():
        pred = (encoder(batch["waveform"]) @ class_text.T).argmax(dim=1)
        correct += int((pred == batch["label"]).sum())
        total += len(pred)
    return correct / total


@pytest.fixture(scope="module")
def zoo(tmp_path_factory) -> Path:
    return write_sound_set(tmp_path_factory.mktemp("zoo"), clips_per_class=24, seconds=2.0)  # as `make demo`


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory, tiny_clip_path, zoo) -> Path:
    return _fit(tmp_path_factory.mktemp("runs") / "demo", tiny_clip_path, zoo)


@pytest.fixture(scope="module")
def shuffled_zoo(tmp_path_factory, zoo) -> Path:
    """The same clips with the labels of the train rows permuted across clips; test rows keep true labels."""
    root = tmp_path_factory.mktemp("shuffled")
    (root / "audio").symlink_to(zoo, target_is_directory=True)
    rows = list(csv.reader(open(zoo / "vggsound.csv")))
    train_idx = [i for i, r in enumerate(rows) if r[3] == "train"]
    labels = [rows[i][2] for i in train_idx]
    random.Random(0).shuffle(labels)
    for i, label in zip(train_idx, labels):
        rows[i][2] = label
    with open(root / "vggsound.csv", "w", newline="") as f:
        csv.writer(f).writerows(rows)
    return root


@pytest.mark.slow
def test_demo_config_learns_the_sound_set(demo_run, zoo, tiny_clip_path, shuffled_zoo, tmp_path):
    """>= 90 % validation top-1 against the class prompts; the shuffled-label control stays near chance."""
    assert _best_score(demo_run) >= 0.90
    learned = _test_split_accuracy(demo_run / "checkpoints" / "best.ckpt", zoo, tiny_clip_path)
    assert learned >= 0.8
    control = _fit(tmp_path / "shuffled", tiny_clip_path, shuffled_zoo)
    chance = _test_split_accuracy(control / "checkpoints" / "best.ckpt", zoo, tiny_clip_path)
    assert chance <= 0.25, f"shuffled labels reached {chance:.2f} on the true test labels (chance 0.10)"


@pytest.mark.slow
def test_permuting_the_prompt_list_permutes_the_predictions(demo_run, zoo, tiny_clip_path):
    names = sorted({r[2] for r in csv.reader(open(zoo / "vggsound.csv"))})
    perm = list(range(len(names)))
    random.Random(1).shuffle(perm)
    ckpt = demo_run / "checkpoints" / "best.ckpt"
    plain = AudioCLIPModule.load_from_checkpoint(ckpt, clip_model=tiny_clip_path, class_names=names).eval()
    permuted = AudioCLIPModule.load_from_checkpoint(ckpt, clip_model=tiny_clip_path,
                                                    class_names=[names[i] for i in perm]).eval()
    dm = VGGSoundDataModule(str(zoo), clip_seconds=2.0, num_workers=0)
    dm.setup("test")
    wave = torch.cat([b["waveform"] for b in dm.test_dataloader()])
    with torch.no_grad():
        pred = (plain(wave) @ plain.prepare_class_text().T).argmax(dim=1)
        pred_permuted = (permuted(wave) @ permuted.prepare_class_text().T).argmax(dim=1)
    assert len(pred.unique()) >= 8  # the check below is not satisfied by a constant prediction
    assert torch.equal(torch.tensor(perm)[pred_permuted], pred)  # same class name predicted for every clip


def _wandb_records(path: Path):
    """Records of an offline W&B run file: LevelDB log framing (32 KiB blocks, 7-byte headers) of protobufs."""
    import wandb.proto.wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:7] == b":W&B\xe1\xbe\x00", "not a W&B run file"
    pos, block, partial = 7, 32768, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        length, kind = int.from_bytes(data[pos + 4:pos + 6], "little"), data[pos + 6]
        partial += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a full record, or the last fragment of one
            record = pb.Record()
            record.ParseFromString(partial)
            partial = b""
            yield record


def _key(item) -> str:
    return item.key or "/".join(item.nested_key)  # W&B splits keys with "/" into nested_key


@pytest.mark.slow
def test_wandb_offline_run_dir_holds_metrics_and_config(demo_run):
    runs = list((demo_run / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    files = list(runs[0].glob("run-*.wandb"))
    assert len(files) == 1
    # The run id is derived from the run dir, so a resumed run writes into the same W&B run.
    assert files[0].name == f"run-{train.stable_run_id(demo_run)}.wandb"
    history, config = [], {}
    for record in _wandb_records(files[0]):
        kind = record.WhichOneof("record_type")
        if kind == "history":
            history.append({_key(item): json.loads(item.value_json) for item in record.history.item})
        elif kind == "config":
            config.update({_key(item): json.loads(item.value_json) for item in record.config.update})
    logged = set().union(*history)
    assert {"train/loss_step", "train/loss_epoch", "train/logit_scale", "train/logit_bias", "train/bad_clips",
            "val/top1", "val/top5", "val/t2a_map", "val/t2a_r1", "val/t2a_r10", "lr-AdamW/decay"} <= logged
    top1 = [h["val/top1"] for h in history if "val/top1" in h]
    assert len(top1) == 15 and max(top1) == pytest.approx(_best_score(demo_run))
    # The full CLI config (not only the module's hparams) reached W&B, and the run dir.
    assert config["model"]["loss"] == "paper_bce" and config["model"]["encoder"]["init_args"]["width"] == 16
    assert config["trainer"]["max_epochs"] == 15
    saved = yaml.safe_load((demo_run / "config.yaml").read_text())
    assert saved["trainer"]["default_root_dir"] == str(demo_run)


@pytest.mark.slow
def test_export_command_and_checkpoint_load_the_same_encoder(demo_run, tmp_path):
    ckpt = demo_run / "checkpoints" / "best.ckpt"
    export_audio.main([str(ckpt), str(tmp_path / "audio.pt")])
    exported, from_ckpt = load_audio_encoder(tmp_path / "audio.pt"), load_audio_encoder(ckpt)
    module = AudioCLIPModule.load_from_checkpoint(ckpt).eval()  # hparams alone rebuild the module
    assert exported.config == from_ckpt.config == module.encoder.config
    assert exported.clip_samples == 32000 and exported.config["n_mels"] == 64  # front end travels with it
    wave = 0.1 * torch.randn(2, exported.clip_samples)
    with torch.no_grad():
        torch.testing.assert_close(exported(wave), module(wave))
        torch.testing.assert_close(from_ckpt(wave), module(wave))
    # CLIP never enters our files: the checkpoint holds the encoder and the loss's scale/bias, nothing else.
    ckpt_state = torch.load(ckpt, weights_only=True)["state_dict"]
    assert {k.split(".")[0] for k in ckpt_state} == {"encoder", "criterion"}
    assert set(torch.load(tmp_path / "audio.pt", weights_only=True)["state_dict"]) == set(exported.state_dict())


@pytest.mark.slow
def test_fresh_fit_refuses_a_run_dir_with_checkpoints(demo_run, tiny_clip_path, zoo):
    with pytest.raises(SystemExit, match="--ckpt_path last"):
        _fit(demo_run, tiny_clip_path, zoo)


def _fold_layouts(zoo: Path, out: Path) -> tuple[Path, Path]:
    """The sound set's clips in ESC-50's and UrbanSound8K's released layouts (underscored class names)."""
    rows = list(csv.reader(open(zoo / "vggsound.csv")))
    names = sorted({r[2] for r in rows})
    esc, us8k = out / "ESC-50-master", out / "UrbanSound8K"
    (esc / "meta").mkdir(parents=True)
    (esc / "audio").mkdir()
    (us8k / "metadata").mkdir(parents=True)
    esc_rows = [["filename", "fold", "target", "category", "esc10", "src_file", "take"]]
    us_rows = [["slice_file_name", "fsID", "start", "end", "salience", "fold", "classID", "class"]]
    count: dict[str, int] = {}
    for youtube_id, start, label, split in rows:
        if split != "test":
            continue
        k = count[label] = count.get(label, 0) + 1
        fold = 1 + (k - 1) % 2
        wave, rate = sf.read(zoo / f"{youtube_id}_{int(start):06d}.flac")
        target, name = names.index(label), label.replace(" ", "_")
        esc_name = f"{fold}-{youtube_id}-A-{target}.wav"
        sf.write(esc / "audio" / esc_name, wave[: rate * 5 // 2], rate)  # ESC-50 clips are 5 s; these 1.25 s
        esc_rows.append([esc_name, fold, target, name, "False", youtube_id, "A"])
        us_name = f"{youtube_id}-{target}-0-0.wav"
        (us8k / "audio" / f"fold{fold}").mkdir(parents=True, exist_ok=True)
        sf.write(us8k / "audio" / f"fold{fold}" / us_name, wave, rate)
        us_rows.append([us_name, 1, 0.0, 2.0, 1, fold, target, name])
    for path, table in ((esc / "meta" / "esc50.csv", esc_rows), (us8k / "metadata" / "UrbanSound8K.csv", us_rows)):
        with open(path, "w", newline="") as f:
            csv.writer(f).writerows(table)
    return esc, us8k


@pytest.mark.slow
def test_eval_of_the_trained_encoder_on_fold_layouts(demo_run, zoo, tiny_clip_path, tmp_path):
    esc, us8k = _fold_layouts(zoo, tmp_path)
    out = tmp_path / "eval.json"
    results = eval_cli.main([str(demo_run / "checkpoints" / "best.ckpt"), "--esc50_root", str(esc),
                             "--urbansound8k_root", str(us8k), "--vggsound_root", str(zoo), "--out", str(out),
                             "--num_workers", "0", "--wandb_project", "aiartist-test"])
    assert json.loads(out.read_text()) == json.loads(json.dumps(results))
    assert results["clip_model"] == tiny_clip_path  # taken from the checkpoint
    template = "This is a sound of {label}."
    for name in ("ESC-50", "UrbanSound8K"):
        zs = results["datasets"][name]["zero_shot"][template]
        assert set(zs["folds"]) == {"1", "2"}
        assert zs["mean"]["top1"] == pytest.approx((zs["folds"]["1"]["top1"] + zs["folds"]["2"]["top1"]) / 2)
        # Same sounds, same prompts once underscores are words: the trained encoder transfers.
        assert zs["mean"]["top1"] >= 0.7, (name, zs)
        assert results["datasets"][name]["linear_probe"]["mean"]["top1"] >= 0.7
    assert results["datasets"]["VGGSound"]["zero_shot"][template]["mean"]["top1"] >= 0.8
    assert list((tmp_path / "wandb").glob("offline-run-*"))
    with pytest.raises(FileExistsError, match="eval.json"):
        eval_cli.main([str(demo_run / "checkpoints" / "best.ckpt"), "--esc50_root", str(esc), "--out", str(out)])


# ----------------------------------------------------------------- fault tolerance

KILLER = '''
import os, signal
from pytorch_lightning import Callback

class KillAtStep(Callback):
    """SIGKILL the process (no clean-up, like a pre-empted node) once `step` optimiser steps are done."""
    def __init__(self, step: int):
        self.step = step
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)
'''

SMALL = ["--model.encoder.init_args.width=8", "--model.encoder.init_args.n_mels=32",
         "--model.encoder.init_args.n_fft=256", "--data.crop_seconds=0.5", "--trainer.max_epochs=2",
         "--trainer.limit_train_batches=6", "--trainer.limit_val_batches=1",
         "--trainer.logger=false", "--trainer.callbacks=[]", "--trainer.enable_checkpointing=true",
         "--trainer.callbacks+=lightning_modules.torch_threads.TorchThreads",
         "--trainer.callbacks+=pytorch_lightning.callbacks.ModelCheckpoint",
         "--trainer.callbacks.save_top_k=0", "--trainer.callbacks.save_last=true",
         "--trainer.callbacks.every_n_train_steps=1"]


@pytest.fixture(scope="module")
def zoo_with_bad_clips(tmp_path_factory, zoo) -> Path:
    """The sound set with two training clips corrupted: one the killed run draws in epoch 2 (batch 0), one only
    the resumed run draws (batch 3), so bad-clip replacement is exercised on both sides of the restart."""
    root = tmp_path_factory.mktemp("badzoo")
    for row in csv.reader(open(zoo / "vggsound.csv")):
        name = f"{row[0]}_{int(row[1]):06d}.flac"
        (root / name).symlink_to(zoo / name)
    (root / "vggsound.csv").write_text((zoo / "vggsound.csv").read_text())
    # The demo config's split and order (seed 0, val_fraction 0.25, batch 16): the same DataModule code decides.
    dm = VGGSoundDataModule(str(root), clip_seconds=2.0, crop_seconds=0.5, batch_size=16, num_workers=0,
                            val_fraction=0.25, seed=0)
    dm.setup("fit")
    sampler = EpochSampler(len(dm.train_set), seed=0)
    sampler.set_epoch(1)
    order = [index for _, index in sampler]
    for position in (0 * 16 + 3, 3 * 16 + 5):
        path = Path(dm.train_set.clips[order[position]].path)
        path.unlink()
        path.write_bytes(b"not audio at all")
    return root


@pytest.mark.slow
def test_killed_mid_epoch_and_resumed_equals_uninterrupted(tmp_path, tiny_clip_path, zoo_with_bad_clips):
    """Shuffling, random crops, SpecAugment and bad-clip replacement on; SIGKILL in epoch 2 at batch 3 of 6."""
    whole = _fit(tmp_path / "whole", tiny_clip_path, zoo_with_bad_clips, *SMALL)

    (tmp_path / "killer.py").write_text(KILLER)
    killed = tmp_path / "killed"
    args = ["fit", "--config", DEMO, f"--model.clip_model={tiny_clip_path}", f"--data.root={zoo_with_bad_clips}",
            f"--trainer.default_root_dir={killed}", "--trainer.enable_progress_bar=false", *SMALL,
            "--trainer.callbacks+=killer.KillAtStep", "--trainer.callbacks.step=9"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO)])}
    proc = subprocess.run([sys.executable, "-c", "from experiments.train import main; main()", *args],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == -9, proc.stderr[-3000:]  # died by SIGKILL, not by an error
    last = torch.load(killed / "checkpoints" / "last.ckpt", weights_only=True)
    progress = last["loops"]["fit_loop"]["epoch_loop.batch_progress"]["current"]["completed"]
    assert last["epoch"] == 1 and 0 < progress < 6, (last["epoch"], progress)  # mid-epoch
    assert last["loops"]["fit_loop"]["state_dict"]["combined_loader"] == [{"epoch": 1, "batches": progress + 1}]

    _fit(killed, tiny_clip_path, zoo_with_bad_clips, *SMALL, "--ckpt_path=last")
    a = torch.load(whole / "checkpoints" / "last.ckpt", weights_only=True)
    b = torch.load(killed / "checkpoints" / "last.ckpt", weights_only=True)
    assert a["global_step"] == b["global_step"] == 12
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key
