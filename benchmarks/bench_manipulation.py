"""Eq. 2 edits: pair-steps/s with 8 pairs in one batch vs the same 8 pairs one at a time (same run, same models).

    python benchmarks/bench_manipulation.py                 # CPU: tiny 64 px generator + tiny CLIP (make bench-manip)
    python benchmarks/bench_manipulation.py --gpu-full      # also, on a GPU: 300 steps x 8 pairs at 1024 px

Both sides run `ManipulationModule.optimise` (generator synthesis, CLIP image encoder, Eq. 2, backward, Adam) on
identical sources and targets; batch 1 is the official code's only mode (its loss reads row [0]). Repeats are
interleaved and the median is reported, as wall time and process CPU time (CPU time is the stable number on a
shared machine). The GPU run uses randomly initialised networks of the real architectures (config-f StyleGAN2,
CLIP ViT-B/32): the cost of a step does not depend on the weights.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from clip.model import CLIP

from lightning_modules.latent_sources import parse_sources, source_wplus
from lightning_modules.manipulation import ManipulationModule
from lightning_modules.networks.checkpoints import save_generator
from lightning_modules.networks.stylegan2 import Generator

TINY_CLIP = dict(embed_dim=64, image_resolution=32, vision_layers=2, vision_width=64, vision_patch_size=8,
                 context_length=77, vocab_size=49408, transformer_width=64, transformer_heads=1, transformer_layers=2)
VIT_B32 = dict(embed_dim=512, image_resolution=224, vision_layers=12, vision_width=768, vision_patch_size=32,
               context_length=77, vocab_size=49408, transformer_width=512, transformer_heads=8, transformer_layers=12)
TINY_GENERATOR = dict(size=64, style_dim=64, n_mlp=2, channels={4: 64, 8: 64, 16: 32, 32: 32, 64: 16})
MALLOC_KEYS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_")


def build_module(tmp: Path, generator_kwargs: dict, clip_kwargs: dict, steps: int, device: str) -> ManipulationModule:
    torch.manual_seed(0)
    save_generator(Generator(**generator_kwargs), tmp / "generator.pt")
    torch.save(CLIP(**clip_kwargs).state_dict(), tmp / "clip.pt")
    module = ManipulationModule(generator=str(tmp / "generator.pt"), clip=str(tmp / "clip.pt"), steps=steps,
                                progress=False)
    module.configure_model()
    module.to(device)
    module.clip_model.to(device)
    return module


def pairs(module: ManipulationModule, n: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    w_s = source_wplus(parse_sources(list(range(n))), module.generator, 0.7, module.mean_latent()).to(device)
    g = torch.Generator().manual_seed(1)
    targets = F.normalize(torch.randn(n, module.clip_model.embed_dim, generator=g), dim=-1).to(device)
    return w_s, targets


def timed(fn, device: str) -> tuple[float, float]:
    if device == "cuda":
        torch.cuda.synchronize()
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - wall, time.process_time() - cpu


def compare(module: ManipulationModule, n_pairs: int, steps: int, repeats: int, device: str) -> dict:
    """Median wall/CPU seconds of one batch of n_pairs vs n_pairs sequential single-pair runs."""
    w_s, targets = pairs(module, n_pairs, device)
    batched = lambda: module.optimise(w_s, targets, 0.008)
    sequential = lambda: [module.optimise(w_s[i : i + 1], targets[i : i + 1], 0.008) for i in range(n_pairs)]
    batched(), sequential()  # warm-up: kernel builds, allocator, caches
    runs = {"batch": [], "sequential": []}
    for _ in range(repeats):
        runs["batch"].append(timed(batched, device))
        runs["sequential"].append(timed(sequential, device))
    out = {}
    for name, samples in runs.items():
        wall = statistics.median(s[0] for s in samples)
        cpu = statistics.median(s[1] for s in samples)
        out[name] = dict(wall=wall, cpu=cpu, pair_steps_per_s=n_pairs * steps / wall,
                         pair_steps_per_cpu_s=n_pairs * steps / cpu)
    out["speedup_wall"] = out["sequential"]["wall"] / out["batch"]["wall"]
    out["speedup_cpu"] = out["sequential"]["cpu"] / out["batch"]["cpu"]
    return out


def report(title: str, r: dict, n_pairs: int) -> None:
    print(f"\n{title}")
    print("| mode | pair-steps/s (wall) | pair-steps/CPU-s | wall s | CPU s |")
    print("|---|---|---|---|---|")
    for name, label in (("sequential", f"{n_pairs} x batch 1"), ("batch", f"batch {n_pairs}")):
        x = r[name]
        print(f"| {label} | {x['pair_steps_per_s']:.1f} | {x['pair_steps_per_cpu_s']:.1f} | {x['wall']:.2f} | "
              f"{x['cpu']:.2f} |")
    print(f"speedup of batching: {r['speedup_wall']:.2f}x wall, {r['speedup_cpu']:.2f}x CPU time")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pairs", type=int, default=8)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads on the CPU")
    p.add_argument("--gpu-full", action="store_true", help="on CUDA: 300 steps x 8 pairs at 1024 px, ViT-B/32")
    p.add_argument("--skip-cpu", action="store_true", help="only the GPU measurements")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    allocator = " ".join(f"{k}={os.environ[k]}" for k in MALLOC_KEYS if k in os.environ) or "glibc defaults"
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; "
          f"torch {torch.__version__}, {args.threads} intra-op thread(s); allocator: {allocator}; "
          f"stylegan2_ops impl: {os.environ.get('STYLEGAN2_OPS_IMPL', 'auto')}")
    with tempfile.TemporaryDirectory() as tmp:
        if not args.skip_cpu:
            module = build_module(Path(tmp), TINY_GENERATOR, TINY_CLIP, args.steps, "cpu")
            r = compare(module, args.pairs, args.steps, args.repeats, "cpu")
            report(f"CPU, tiny generator 64 px (n_latent {module.generator.n_latent}) + tiny CLIP (32 px input), "
                   f"{args.steps} steps, median of {args.repeats}", r, args.pairs)
        if torch.cuda.is_available():
            print(f"\nGPU: {torch.cuda.get_device_name()}")
            module = build_module(Path(tmp), dict(size=64, style_dim=512, n_mlp=8), VIT_B32, args.steps, "cuda")
            r = compare(module, args.pairs, args.steps, 3, "cuda")
            report(f"GPU, config-f 64 px + CLIP ViT-B/32, {args.steps} steps, median of 3", r, args.pairs)
            if args.gpu_full:
                module = build_module(Path(tmp), dict(size=1024, style_dim=512, n_mlp=8), VIT_B32, 300, "cuda")
                w_s, targets = pairs(module, 8, "cuda")
                module.hparams.steps = 3  # warm-up (cuDNN autotuning, allocator), then the timed 300 steps
                module.optimise(w_s, targets, 0.008)
                module.hparams.steps = 300
                torch.cuda.reset_peak_memory_stats()
                wall, _ = timed(lambda: module.optimise(w_s, targets, 0.008), "cuda")
                peak = torch.cuda.max_memory_allocated() / 2**30
                print(f"\nGPU full job: 300 steps x 8 pairs, config-f 1024 px (n_latent 18) + ViT-B/32: {wall:.1f} s "
                      f"({8 * 300 / wall:.1f} pair-steps/s, {wall / 8:.1f} s per edited painting), peak memory "
                      f"{peak:.1f} GiB")


if __name__ == "__main__":
    main()
