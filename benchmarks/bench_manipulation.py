"""Eq. 2 edits: pair-steps/s with 8 pairs in one batch vs the same 8 pairs one at a time (same run, same models).

    python benchmarks/bench_manipulation.py                 # CPU: tiny 64 px generator + tiny CLIP (make bench-manip)
    python benchmarks/bench_manipulation.py --gpu-full      # also, on a GPU: the paper's scale (below)

--gpu-full: a random-weight config-f generator at 1024 px and a random-weight CLIP of ViT-B/32's exact architecture,
8 pairs x 300 steps of Eq. 2 in each precision mode (fp32, bf16 autocast, fp32 replayed from a CUDA graph, bf16
from a CUDA graph), each checked against fp32 by the final cosine and loss per pair; then mapper edits/s and animate
frames/s at 1024 px (batch 1 and 16, random-weight ResNet-50 audio encoder and sound mapper). `paper_scale`,
`mapper_rate` and `animate_rate` take the sizes as arguments, so a CPU test runs the same code at toy size.

Both sides run `ManipulationModule.optimise` (generator synthesis, CLIP image encoder, Eq. 2, backward, Adam) on
identical sources and targets; batch 1 is the official code's only mode (its loss reads row [0]). Repeats are
interleaved and the median is reported, as wall time and process CPU time (CPU time is the stable number on a
shared machine). The GPU run uses randomly initialised networks of the real architectures (config-f StyleGAN2,
CLIP ViT-B/32): the cost of a step does not depend on the weights.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F
from _common import interleaved_medians, machine_header, timed
from clip.model import CLIP

from datamodules.latent_sources import parse_sources, source_wplus
from lightning_modules.edit_outputs import to_uint8
from lightning_modules.eq2_step import autocast_for
from lightning_modules.manipulation import ManipulationModule, optimise
from lightning_modules.networks.audio_encoder import AudioEncoder
from lightning_modules.networks.checkpoints import save_generator
from lightning_modules.networks.mapper import SoundMapper
from lightning_modules.networks.stylegan2 import Generator

TINY_CLIP = dict(embed_dim=64, image_resolution=32, vision_layers=2, vision_width=64, vision_patch_size=8,
                 context_length=77, vocab_size=49408, transformer_width=64, transformer_heads=1, transformer_layers=2)
VIT_B32 = dict(embed_dim=512, image_resolution=224, vision_layers=12, vision_width=768, vision_patch_size=32,
               context_length=77, vocab_size=49408, transformer_width=512, transformer_heads=8, transformer_layers=12)
TINY_GENERATOR = dict(size=64, style_dim=64, n_mlp=2, channels={4: 64, 8: 64, 16: 32, 32: 32, 64: 16})


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


def compare(module: ManipulationModule, n_pairs: int, steps: int, repeats: int, device: str) -> dict:
    """Median wall/CPU seconds of one batch of n_pairs vs n_pairs sequential single-pair runs."""
    w_s, targets = pairs(module, n_pairs, device)
    batched = lambda: module.optimise(w_s, targets, 0.008)
    sequential = lambda: [module.optimise(w_s[i : i + 1], targets[i : i + 1], 0.008) for i in range(n_pairs)]
    # One warm-up call each (kernel builds, allocator, caches); then the two take turns.
    med = interleaved_medians({"batch": batched, "sequential": sequential}, repeats, device)
    out = {}
    for name, (wall, cpu) in med.items():
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


MODES = {"fp32": ("fp32", False), "bf16": ("bf16", False), "fp32+graph": ("fp32", True), "bf16+graph": ("bf16", True)}
CHECK_TOL = 0.02  # |final cosine - fp32's| and |final loss - fp32's| per pair, after 300 steps of diverging paths


def run_mode(module: ManipulationModule, w_s: torch.Tensor, targets: torch.Tensor, steps: int, mode: str,
             device: str) -> dict:
    """One timed job in one precision mode, after 3 untimed steps (cuDNN autotuning, allocator, kernel builds).

    The timed run includes everything a user waits for, the CUDA graph's warm-up and capture too."""
    precision, graph = MODES[mode]

    def job(k: int):
        return optimise(module.generator, module.clip_model, w_s, targets, 0.008, steps=k, lr=0.1,
                        precision=precision, cuda_graph=graph)

    job(3)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    box = {}
    wall, _ = timed(lambda: box.setdefault("result", job(steps)), device)
    result, n = box["result"], w_s.shape[0]
    return dict(wall=wall, pair_steps_per_s=n * steps / wall,
                peak_gib=torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else float("nan"),
                cos_after=result.cos_after.tolist(), loss_after=result.loss_after.tolist())


def paper_scale(module: ManipulationModule, n_pairs: int, steps: int, modes: list[str], device: str) -> dict:
    """Each mode's wall seconds, pair-steps/s and peak memory for one job of n_pairs x steps, and its check vs fp32.

    A mode that fails is recorded with its error and the others still run (one lease, one try)."""
    w_s, targets = pairs(module, n_pairs, device)
    out: dict[str, dict] = {}
    for mode in ["fp32"] + [m for m in modes if m != "fp32"]:
        try:
            out[mode] = run_mode(module, w_s, targets, steps, mode, device)
        except Exception as err:  # noqa: BLE001 - reported in the table, the other modes go on
            out[mode] = {"error": f"{type(err).__name__}: {err}"}
        print(f"  {mode}: {out[mode].get('error') or round(out[mode]['wall'], 2)} s", flush=True)
    ref = out["fp32"]
    for r in out.values():
        if "error" in r or "error" in ref:
            continue
        r["max_dcos"] = max(abs(a - b) for a, b in zip(r["cos_after"], ref["cos_after"]))
        r["max_dloss"] = max(abs(a - b) for a, b in zip(r["loss_after"], ref["loss_after"]))
        r["check"] = r["max_dcos"] <= CHECK_TOL and r["max_dloss"] <= CHECK_TOL
    return out


def mapper_rate(module: ManipulationModule, mapper: SoundMapper, batch: int, repeats: int, device: str,
                precision: str = "fp32") -> float:
    """Mapper edits/s: embedding and source in, edited image on the host out (mapper forward, synthesis, uint8)."""
    w_s, targets = pairs(module, batch, device)
    mapper = mapper.to(device).eval()

    def edit():
        with torch.no_grad(), autocast_for(torch.device(device), precision):
            images = module.generator.synthesis(mapper.edit(w_s, targets))
        return to_uint8(images.float()).cpu()

    return batch / interleaved_medians({"edit": edit}, repeats, device)["edit"][0]


def animate_rate(module: ManipulationModule, mapper: SoundMapper, encoder: AudioEncoder, batch: int, repeats: int,
                 device: str, precision: str = "fp32") -> float:
    """Animate frames/s: each frame's audio window embedded, its mapper edit synthesised, uint8 on the host."""
    w_s, _ = pairs(module, 1, device)
    encoder, mapper = encoder.to(device).eval(), mapper.to(device).eval()
    windows = torch.randn(batch, encoder.clip_samples, generator=torch.Generator().manual_seed(2)).mul(0.1).to(device)

    def frames():
        with torch.no_grad(), autocast_for(torch.device(device), precision):
            e = F.normalize(encoder(windows, augment=False).float(), dim=-1)
            images = module.generator.synthesis(mapper.edit(w_s.expand(batch, -1, -1), e))
        return to_uint8(images.float()).cpu()

    return batch / interleaved_medians({"frames": frames}, repeats, device)["frames"][0]


def report_paper_scale(title: str, r: dict, n_pairs: int, steps: int) -> None:
    print(f"\n{title}")
    print("| mode | wall s | pair-steps/s | s per edited painting | peak GiB | max abs. d(cos) vs fp32 | "
          "max abs. d(loss) vs fp32 | check |")
    print("|---|---|---|---|---|---|---|---|")
    for name, x in r.items():
        if "error" in x:
            print(f"| {name} | failed: {x['error'][:200]} |")
            continue
        print(f"| {name} | {x['wall']:.2f} | {x['pair_steps_per_s']:.1f} | {x['wall'] / n_pairs:.2f} | "
              f"{x['peak_gib']:.1f} | {x['max_dcos']:.4f} | {x['max_dloss']:.4f} | "
              f"{'pass' if x['check'] else 'FAIL'} |")
    if "cos_after" in r["fp32"]:
        print(f"final cosines, fp32: {[round(c, 4) for c in r['fp32']['cos_after']]}")


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
    print(f"{machine_header()}; stylegan2_ops impl: {os.environ.get('STYLEGAN2_OPS_IMPL', 'auto')}")
    with tempfile.TemporaryDirectory() as tmp:
        if not args.skip_cpu:
            module = build_module(Path(tmp), TINY_GENERATOR, TINY_CLIP, args.steps, "cpu")
            r = compare(module, args.pairs, args.steps, args.repeats, "cpu")
            report(f"CPU, tiny generator 64 px (n_latent {module.generator.n_latent}) + tiny CLIP (32 px input), "
                   f"{args.steps} steps, median of {args.repeats}", r, args.pairs)
        if torch.cuda.is_available() and not args.gpu_full:
            print(f"\nGPU: {torch.cuda.get_device_name()}")
            module = build_module(Path(tmp), dict(size=64, style_dim=512, n_mlp=8), VIT_B32, args.steps, "cuda")
            r = compare(module, args.pairs, args.steps, 3, "cuda")
            report(f"GPU, config-f 64 px + CLIP ViT-B/32, {args.steps} steps, median of 3", r, args.pairs)
        if torch.cuda.is_available() and args.gpu_full:
            gpu_full(Path(tmp))


def gpu_full(tmp: Path) -> None:
    """The paper's scale on one GPU: Eq. 2 jobs in every mode, then mapper edits/s and animate frames/s."""
    print(f"\nGPU: {torch.cuda.get_device_name()}; torch {torch.__version__}, CUDA {torch.version.cuda}, "
          f"cuDNN {torch.backends.cudnn.version()}", flush=True)
    module = build_module(tmp, dict(size=1024, style_dim=512, n_mlp=8), VIT_B32, 300, "cuda")
    r = paper_scale(module, 8, 300, list(MODES), "cuda")
    report_paper_scale("GPU full job: 8 pairs x 300 steps, config-f 1024 px (n_latent 18) + ViT-B/32 (random "
                       "weights)", r, 8, 300)
    torch.manual_seed(0)
    mapper = SoundMapper(module.generator.n_latent, 512, 512)
    encoder = AudioEncoder(embed_dim=512, backbone="resnet50")
    print("\n| what, 1024 px | precision | batch 1 /s | batch 16 /s |\n|---|---|---|---|", flush=True)
    for precision in ("fp32", "bf16"):
        m = [mapper_rate(module, mapper, b, 10, "cuda", precision) for b in (1, 16)]
        print(f"| mapper edits | {precision} | {m[0]:.1f} | {m[1]:.1f} |", flush=True)
        a = [animate_rate(module, mapper, encoder, b, 10, "cuda", precision) for b in (1, 16)]
        print(f"| animate frames (window embed + mapper + synthesis + uint8) | {precision} | {a[0]:.1f} | "
              f"{a[1]:.1f} |", flush=True)

if __name__ == "__main__":
    main()
