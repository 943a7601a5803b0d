"""Global negatives under DDP: two gloo processes on CPU give the loss and gradients of one process on the
concatenated batch (also with the audio<->image term, whose masked clips differ in number between the ranks).
The encoder uses GroupNorm and no SpecAugment: BatchNorm statistics and augmentation masks differ per rank by
design, the gathered loss must not."""

import json
import os
import socket
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from datamodules.soundzoo import write_sound_set
from datamodules.vggsound import VGGSoundDataModule
from lightning_modules.audio_clip import AudioCLIPModule
from lightning_modules.networks.audio_encoder import AudioEncoder
from lightning_modules.torch_threads import TorchThreads

WORLD = 2
# (name, loss, audio_audio_weight, audio_image_weight)
CASES = [("paper_bce", "paper_bce", 0.0, 0.0), ("infonce", "infonce", 0.5, 0.0), ("classes", "classes", 0.0, 0.0),
         ("paper_bce+image", "paper_bce", 0.0, 1.0)]
CLASSES = ["rain", "wind", "fire crackling", "explosion"]


def _module(kind: str, audio_audio_weight: float, audio_image_weight: float, clip_path: str) -> AudioCLIPModule:
    torch.manual_seed(0)
    encoder = AudioEncoder(embed_dim=64, backbone="resnet18", width=8, norm="group", n_mels=32, n_fft=256,
                           hop_length=80, clip_seconds=0.25, spec_augment=False)
    module = AudioCLIPModule(encoder, clip_model=clip_path, class_names=CLASSES, loss=kind,
                             audio_audio_weight=audio_audio_weight, audio_image_weight=audio_image_weight)
    module.prepare_class_text()
    return module.train()


def _global_batch() -> dict:
    g = torch.Generator().manual_seed(1)
    # Repeated labels across ranks: multi-positive targets must be built from the global class ids.
    labels = torch.tensor([0, 1, 2, 0, 1, 1, 3, 0])
    image = torch.nn.functional.normalize(torch.randn(8, 64, generator=g), dim=-1)
    mask = torch.tensor([True, False, True, True, False, False, True, True])  # rank 0: 3 with frames, rank 1: 2
    return {"waveform": 0.1 * torch.randn(8, 4000, generator=g), "label": labels, "image": image, "image_mask": mask}


def _loss_and_grads(module: AudioCLIPModule, batch: dict) -> tuple[float, dict[str, torch.Tensor]]:
    module.zero_grad()
    loss = module.training_loss(batch, batch_idx=0)["loss"]
    loss.backward()
    return loss.item(), {n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None}


def _worker(rank: int, port: int, clip_path: str, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    torch.set_num_threads(1)
    try:
        full = _global_batch()
        shard = slice(rank * 4, (rank + 1) * 4)
        local = {key: full[key][shard] for key in ("waveform", "label", "image", "image_mask")}
        results = {}
        for name, kind, aa_weight, ai_weight in CASES:
            loss, grads = _loss_and_grads(_module(kind, aa_weight, ai_weight, clip_path), local)
            for g in grads.values():  # what DDP does with the gradients: average over ranks
                dist.all_reduce(g)
                g /= WORLD
            results[name] = {"loss": loss, "grads": grads}
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_gathered_loss_and_gradients_equal_single_process(tiny_clip_path, tmp_path):
    mp.spawn(_worker, args=(_free_port(), tiny_clip_path, str(tmp_path)), nprocs=WORLD, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]
    for kind, loss_kind, aa_weight, ai_weight in CASES:
        loss, grads = _loss_and_grads(_module(loss_kind, aa_weight, ai_weight, tiny_clip_path), _global_batch())
        # Each rank's loss covers its own rows against all columns; DDP's mean over ranks is the full loss.
        mean_loss = sum(r[kind]["loss"] for r in ranks) / WORLD
        assert abs(mean_loss - loss) < 1e-5 * max(1.0, abs(loss)), kind
        assert ranks[0][kind]["loss"] != ranks[1][kind]["loss"]  # the ranks really saw different rows
        assert set(grads) == set(ranks[0][kind]["grads"])
        assert "criterion.log_logit_scale" in grads
        assert ("criterion.log_image_scale" in grads) == (ai_weight > 0)
        for name, g in grads.items():
            scale = g.abs().max().item()  # float32 sums in another order: tolerance relative to the tensor
            for r in ranks:
                torch.testing.assert_close(r[kind]["grads"][name], g, rtol=1e-3, atol=1e-4 * scale,
                                           msg=lambda m, kind=kind, name=name: f"{kind} {name}: {m}")


# ------------------------------------------------------------------------------------ a real Lightning DDP fit

class RecordIndices(pl.Callback):
    """Writes, per rank, the dataset indices of every training batch and the world size the run saw."""

    def __init__(self, out_dir: str) -> None:
        self.out_dir, self.seen = out_dir, []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.seen.append(batch["index"].tolist())

    def on_train_end(self, trainer, pl_module) -> None:
        path = os.path.join(self.out_dir, f"indices_world{trainer.world_size}_rank{trainer.global_rank}.json")
        with open(path, "w") as f:
            json.dump({"world_size": trainer.world_size, "batches": self.seen}, f)


FIT_STEPS, GLOBAL_BATCH = 3, 8


def _fit(clip_path: str, root: Path, out_dir: Path, devices: int) -> tuple[pl.Trainer, AudioCLIPModule]:
    """Fit the audio module with SpecAugment, the audio<->audio term and global negatives for FIT_STEPS steps.

    SGD, not Adam: Adam's first steps move every weight by about lr * sign(gradient), so weights whose gradient
    is float noise would differ by up to 2 lr between any two summation orders; SGD's updates are linear in it."""
    torch.manual_seed(0)
    encoder = AudioEncoder(embed_dim=64, backbone="resnet18", width=8, norm="group", n_mels=32, n_fft=256,
                           hop_length=80, clip_seconds=0.25)
    module = AudioCLIPModule(encoder, clip_model=clip_path, loss="paper_bce", temperature_init=0.05,
                             audio_audio_weight=0.5, optimizer="sgd", lr=0.1, scheduler="constant")
    data = VGGSoundDataModule(str(root), clip_seconds=1.0, crop_seconds=0.25, batch_size=GLOBAL_BATCH // devices,
                              num_workers=0, val_fraction=0.0)
    trainer = pl.Trainer(
        accelerator="cpu", devices=devices, strategy="ddp_spawn" if devices > 1 else "auto", max_steps=FIT_STEPS,
        limit_val_batches=0, num_sanity_val_steps=0, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False,
        callbacks=[TorchThreads(1), RecordIndices(str(out_dir))])
    trainer.fit(module, datamodule=data)
    return trainer, module


@pytest.mark.slow
def test_lightning_ddp_spawn_fit_equals_one_process_on_the_same_global_batches(tiny_clip_path, tmp_path):
    """Trainer(devices=2, strategy="ddp_spawn") on gloo: each rank trains on half of every global batch, and the
    final encoder equals a one-process run on the same global batches (GroupNorm; masks seeded per clip)."""
    root = write_sound_set(tmp_path / "zoo", clips_per_class=4, seconds=1.0)
    ddp_trainer, ddp = _fit(tiny_clip_path, root, tmp_path, devices=2)
    one_trainer, one = _fit(tiny_clip_path, root, tmp_path, devices=1)
    assert ddp_trainer.world_size == 2 and one_trainer.world_size == 1
    ranks = [json.loads((tmp_path / f"indices_world2_rank{r}.json").read_text()) for r in range(2)]
    single = json.loads((tmp_path / "indices_world1_rank0.json").read_text())
    assert [r["world_size"] for r in ranks] == [2, 2]
    assert len(single["batches"]) == FIT_STEPS
    for step, whole in enumerate(single["batches"]):
        halves = [r["batches"][step] for r in ranks]
        assert [len(h) for h in halves] == [GLOBAL_BATCH // 2] * 2
        assert not set(halves[0]) & set(halves[1])
        assert sorted(halves[0] + halves[1]) == sorted(whole)  # each rank saw half of this global batch
    torch.manual_seed(0)
    initial = AudioEncoder(embed_dim=64, backbone="resnet18", width=8, norm="group", n_mels=32, n_fft=256,
                           hop_length=80, clip_seconds=0.25).state_dict()
    moved = max((one.encoder.state_dict()[k] - v).abs().max().item() for k, v in initial.items())
    diff = max((ddp.encoder.state_dict()[k] - v).abs().max().item() for k, v in one.encoder.state_dict().items())
    print(f"DDP vs one process: max |weight difference| {diff:.3g} (largest weight change in training {moved:.3g})")
    assert moved > 1e-3  # the runs trained
    assert diff < 1e-4 * moved, diff
