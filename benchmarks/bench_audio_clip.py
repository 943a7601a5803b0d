"""Audio-CLIP training step: class-prompt embeddings cached once vs CLIP's text tower run every step.

    make bench-audio-clip      (or: python benchmarks/bench_audio_clip.py [--repeats 5] [--threads 1])

`AudioCLIPModule` embeds every class prompt once per run and indexes that table in the loss. The
official code instead ran the text encoder on the batch's labels at every step. Both cases here run the
same step (`training_loss`: encoder forward, gather, loss; backward; AdamW step) on the same batch; the
uncached case first re-encodes the batch's prompts (no grad, autocast off, as the official code's frozen
text tower) and writes them into the table, so the loss is bit-for-bit the same and only the text cost
differs. Two settings:
- paper: ResNet-50 encoder (128 mels, 10 ms hop, 10 s clips), CLIP ViT-B/32's text tower (12 layers, width
  512, 77 tokens; random weights: speed does not depend on them), batch 4 (CPU-sized; both costs scale with it);
- demo: experiments/audio_clip/demo.yaml's encoder (ResNet-18 at width 16, 64 mels, 1 s crops, batch 16) and the
  tiny CLIP of the tests and `make demo`.
The cases take turns within every repeat (a shared machine's load hits both alike); the median is reported.
Also timed once: filling the cache for VGGSound's 309 class prompts with the ViT-B/32 text tower.
Default one thread (torch intra-op): on a shared 2-core machine two threads spin-wait on each other.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from _common import interleaved_medians, machine_header
from clip.model import CLIP

from datamodules.soundzoo import SOUND_CLASSES
from lightning_modules.audio_clip import AudioCLIPModule
from lightning_modules.networks.audio_encoder import AudioEncoder
from lightning_modules.zero_shot import class_prompt_embeddings, class_prompts

# CLIP ViT-B/32's text tower; the vision tower is shrunk (never run here) to keep the file small.
VIT_B32_TEXT = dict(embed_dim=512, context_length=77, vocab_size=49408, transformer_width=512, transformer_heads=8,
                    transformer_layers=12, image_resolution=32, vision_layers=1, vision_width=64, vision_patch_size=8)
TINY = dict(embed_dim=64, context_length=77, vocab_size=49408, transformer_width=64, transformer_heads=1,
            transformer_layers=2, image_resolution=32, vision_layers=2, vision_width=64, vision_patch_size=8)
SETTINGS = {
    "paper": dict(clip=VIT_B32_TEXT, batch=4, seconds=10.0,
                  encoder=dict(embed_dim=512, backbone="resnet50", width=64, n_mels=128, n_fft=1024, hop_length=160)),
    "demo": dict(clip=TINY, batch=16, seconds=1.0,
                 encoder=dict(embed_dim=64, backbone="resnet18", width=16, n_mels=64, n_fft=512, hop_length=160)),
}
VGGSOUND_CLASSES = 309


def _clip_file(arch: dict, directory: Path) -> str:
    torch.manual_seed(0)
    path = directory / f"clip_{arch['transformer_width']}.pt"
    torch.save(CLIP(**arch).state_dict(), path)
    return str(path)


def _module(setting: dict, clip_path: str) -> tuple[AudioCLIPModule, torch.optim.Optimizer]:
    torch.manual_seed(0)
    encoder = AudioEncoder(clip_seconds=setting["seconds"], **setting["encoder"])
    module = AudioCLIPModule(encoder, clip_model=clip_path, class_names=SOUND_CLASSES, loss="paper_bce").train()
    module.prepare_class_text()
    return module, torch.optim.AdamW(module.parameters(), lr=1e-4)


def _step(module: AudioCLIPModule, opt: torch.optim.Optimizer, batch: dict, run_text_tower: bool) -> None:
    if run_text_tower:  # what the official code paid every step: the batch's prompts through the text encoder
        text = module.clip.encode_text(class_prompts(batch["label_name"], module.hparams.prompt_templates[0]))
        table = module.class_text.clone()
        table[batch["label"]] = text
        module.class_text = table
    loss = module.training_loss(batch, batch_idx=0)["loss"]
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=False)


def bench_setting(name: str, setting: dict, clip_path: str, repeats: int) -> dict[str, float]:
    module, opt = _module(setting, clip_path)
    g = torch.Generator().manual_seed(1)
    labels = torch.randint(len(SOUND_CLASSES), (setting["batch"],), generator=g)
    batch = {"waveform": 0.1 * torch.randn(setting["batch"], module.encoder.clip_samples, generator=g),
             "label": labels, "label_name": [SOUND_CLASSES[i] for i in labels]}
    cases = {case: (lambda text=case != "cached": _step(module, opt, batch, run_text_tower=text))
             for case in ("cached", "text tower every step")}
    # One warm-up round (allocations, oneDNN primitives), then the cases take turns; median wall seconds.
    return {case: wall for case, (wall, _) in interleaved_medians(cases, repeats, warmup=1).items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(machine_header())
    with tempfile.TemporaryDirectory() as tmp:
        paths = {"paper": _clip_file(VIT_B32_TEXT, Path(tmp)), "demo": _clip_file(TINY, Path(tmp))}
        print(f"{'setting':<8} {'cached ms/step':>15} {'text tower ms/step':>19} {'speedup':>8}")
        for name, setting in SETTINGS.items():
            med = bench_setting(name, setting, paths[name], args.repeats)
            cached, uncached = med["cached"], med["text tower every step"]
            print(f"{name:<8} {1e3 * cached:15.1f} {1e3 * uncached:19.1f} {uncached / cached:7.2f}x", flush=True)
        module, _ = _module(SETTINGS["paper"], paths["paper"])
        names = [f"class {i}" for i in range(VGGSOUND_CLASSES)]
        t0 = time.perf_counter()
        class_prompt_embeddings(module.clip, names)
        print(f"one-off cache fill, {VGGSOUND_CLASSES} prompts through the ViT-B/32 text tower: "
              f"{time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
