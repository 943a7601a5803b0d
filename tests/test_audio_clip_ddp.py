"""Global negatives under DDP: two gloo processes on CPU give the loss and gradients of one process on the
concatenated batch (also with the audio<->image term, whose masked clips differ in number between the ranks).
The encoder uses GroupNorm and no SpecAugment: BatchNorm statistics and augmentation masks differ per rank by
design, the gathered loss must not."""

import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from lightning_modules.audio_clip import AudioCLIPModule
from lightning_modules.networks.audio_encoder import AudioEncoder

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
