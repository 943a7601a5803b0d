"""Projector round trip and cost on tiny generators (CPU).

    make bench-projection       (or: python benchmarks/bench_projection.py [--steps 1000] [--repeats 3])

Round trip: images synthesised from known W+ codes (every layer its own mapped z, a genuine W+ point) are
projected back with the default settings as they run offline (LPIPS backbone weights unavailable ->
dropped, so the pixel term at the generator resolution drives). Reported per generator: MSE (raw generator
output, [-1, 1] scale) at the start (mean latent) and after projection, PSNR of the clipped images, and
||w_proj - w_true|| per layer (W+ inversion is not unique, so this stays large while the image matches).
Cost: process CPU time and wall time per image and step, one thread, batch 1 vs batch 4 in the same run
(median of repeats), plus the same with the tiny CLIP's feature distance added.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import warnings

import torch
from _common import interleaved_medians, machine_header, timed

from lightning_modules.networks.stylegan2 import Generator
from lightning_modules.projection import ProjectionConfig, Projector

GENERATORS = {
    "16 px": dict(size=16, style_dim=32, n_mlp=2, channels={4: 32, 8: 32, 16: 16}),
    "64 px": dict(size=64, style_dim=64, n_mlp=2, channels={4: 64, 8: 64, 16: 32, 32: 32, 64: 16}),
}


def tiny_generator(kwargs: dict, seed: int = 0) -> Generator:
    torch.manual_seed(seed)
    return Generator(**kwargs).eval()


@torch.no_grad()
def known_targets(G: Generator, n: int, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    z = torch.randn(n * G.n_latent, G.style_dim, generator=torch.Generator().manual_seed(seed))
    w_plus = G.mapping(z).reshape(n, G.n_latent, G.style_dim)
    return w_plus, G.synthesis(w_plus)


def round_trip(G: Generator, steps: int, n: int = 4) -> dict:
    w_true, targets = known_targets(G, n)
    projector = Projector(G, ProjectionConfig(steps=steps, lpips_download=False, w_avg_samples=2000))
    start = G.synthesis(projector.w_avg.reshape(1, 1, -1).expand(n, G.n_latent, -1)).detach()
    result = None

    def run():
        nonlocal result
        result = projector.project(targets, progress=False)

    wall, cpu = timed(run)
    mse = lambda a: (a - targets).square().mean(dim=(1, 2, 3))
    return {
        "weights": projector.loss.weights,
        "mse_start": mse(start).mean().item(),
        "mse_end": mse(result.images).mean().item(),
        "mse_end_max": mse(result.images).max().item(),
        "psnr": statistics.mean(m["psnr"] for m in result.metrics),
        "w_dist": (result.w_plus - w_true).norm(dim=-1).mean().item(),
        "w_dist_start": (projector.w_avg.reshape(1, 1, -1) - w_true).norm(dim=-1).mean().item(),
        "cpu_s_per_image": cpu / n,
        "wall_s_per_image": wall / n,
    }


def cost(G: Generator, steps: int, repeats: int, clip_path: str | None) -> dict:
    """ms per image-step (CPU, wall), batch 1 x 4 images vs batch 4, median of repeats taken in turns."""
    _, targets = known_targets(G, 4)
    cfg = ProjectionConfig(steps=steps, lpips_weight=0.0, lpips_download=False, w_avg_samples=2000,
                           clip_weight=1.0 if clip_path else 0.0, clip_model=clip_path or "ViT-B/32")
    projector = Projector(G, cfg)
    projector.project(targets[:1], progress=False)  # warm-up
    cases = {label: (lambda batches=batches: [projector.project(b, progress=False) for b in batches])
             for label, batches in (("batch 1", [targets[i : i + 1] for i in range(4)]), ("batch 4", [targets]))}
    med = interleaved_medians(cases, repeats, warmup=0)
    return {label: (cpu / (4 * steps) * 1e3, wall / (4 * steps) * 1e3) for label, (wall, cpu) in med.items()}


def write_tiny_clip(path: str) -> str:
    from clip.model import CLIP

    torch.manual_seed(0)
    clip = CLIP(embed_dim=64, image_resolution=32, vision_layers=2, vision_width=64, vision_patch_size=8,
                context_length=77, vocab_size=49408, transformer_width=64, transformer_heads=1, transformer_layers=2)
    torch.save(clip.state_dict(), path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=1000, help="round-trip steps (default: the config default)")
    parser.add_argument("--cost-steps", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    os.environ["TORCH_HOME"] = tempfile.mkdtemp(prefix="bench_proj_torch_home_")  # LPIPS unavailable, as offline
    print(f"{machine_header()}; ops impl: {os.environ.get('STYLEGAN2_OPS_IMPL', 'auto')}")
    clip_path = write_tiny_clip(os.path.join(tempfile.mkdtemp(prefix="bench_proj_clip_"), "tiny_clip.pt"))

    print(f"\nround trip, {args.steps} steps, 4 images, default settings offline (LPIPS dropped)")
    print("| generator | weights | MSE start | MSE end (mean / max) | PSNR dB | ‖Δw‖ start → end "
          "| CPU s/image | wall s/image |")
    print("|---|---|---|---|---|---|---|---|")
    for name, kwargs in GENERATORS.items():
        r = round_trip(tiny_generator(kwargs), args.steps)
        print(f"| {name} | {r['weights']} | {r['mse_start']:.3f} | {r['mse_end']:.4f} / {r['mse_end_max']:.4f} | "
              f"{r['psnr']:.1f} | {r['w_dist_start']:.2f} → {r['w_dist']:.2f} | {r['cpu_s_per_image']:.2f} | "
              f"{r['wall_s_per_image']:.2f} |")

    print(f"\ncost per image-step, ms (CPU / wall), {args.cost_steps} steps, median of {args.repeats}")
    print("| generator | loss | batch 1 (x4) | batch 4 | batch-4 speed-up (CPU) |")
    print("|---|---|---|---|---|")
    for name, kwargs in GENERATORS.items():
        for loss, clip in (("pixel", None), ("pixel + tiny CLIP", clip_path)):
            c = cost(tiny_generator(kwargs), args.cost_steps, args.repeats, clip)
            (c1, w1), (c4, w4) = c["batch 1"], c["batch 4"]
            print(f"| {name} | {loss} | {c1:.2f} / {w1:.2f} | {c4:.2f} / {w4:.2f} | {c1 / c4:.2f}x |")


if __name__ == "__main__":
    main()
