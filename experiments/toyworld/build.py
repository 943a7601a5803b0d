"""Build the toy world from seeds: paintings -> toy CLIP -> toy StyleGAN2 -> metrics (behind `make toyworld`).

    python -m experiments.toyworld.build --out experiments/toyworld/weights --overwrite

Writes `toy_clip.pt` (fp16 state dict, loads with `clip.load(path, jit=False)`), `toy_stylegan2.pt` (rosinality
format, loads with `load_generator`), `metrics.json` (configs, seeds, zero-shot accuracy, sample quality,
detector accuracy, timings) and `samples.png` (real paintings above generator samples).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from experiments.toyworld import detectors
from experiments.toyworld.metrics import class_distribution, diversity, frechet_distance, image_features
from experiments.toyworld.paintings import ATTRIBUTES, render_dataset, sample_scene
from experiments.toyworld.train_clip import (
    ToyCLIPConfig,
    class_prompts,
    held_out_set,
    save_toy_clip,
    train_toy_clip,
    zero_shot_accuracy,
)
from experiments.toyworld.train_generator import ToyGANConfig, train_toy_generator
from lightning_modules.clip_wrapper import CLIPWrapper
from lightning_modules.networks.checkpoints import load_generator, save_generator

WEIGHTS_DIR = Path(__file__).parent / "weights"
CLIP_FILE, GENERATOR_FILE, METRICS_FILE = "toy_clip.pt", "toy_stylegan2.pt", "metrics.json"
TRAIN_SEEDS = (0, 16_000)  # training paintings: seeds [0, 16000)
FD_REAL_SEEDS = (700_000, 702_000)  # real paintings the samples are compared with
FD_REAL_SEEDS_2 = (702_000, 704_000)  # a second real set: the real-vs-real noise floor of the distance
DETECTOR_SEEDS = (800_000, 802_000)  # detector validation (calibration used detectors.CALIBRATION_SEEDS)


def _render_chunk(seeds: list[int]) -> np.ndarray:
    return render_dataset(seeds)[0]


def render(seeds: range, workers: int) -> tuple[np.ndarray, list[str]]:
    """Training paintings (uint8) and captions; painted in `workers` processes (same pixels as one process)."""
    chunks = [list(seeds[i:i + 500]) for i in range(0, len(seeds), 500)]
    with Pool(workers) as pool:
        images = np.concatenate(pool.map(_render_chunk, chunks))
    captions = [sample_scene(s).caption for s in seeds]
    return images, captions


def grid_png(rows: list[torch.Tensor], path: Path, scale: int = 3) -> None:
    """Rows of images in [-1, 1] (N, 3, H, W) -> one PNG, nearest-neighbour upscaled."""
    row_imgs = [torch.cat(list(r), dim=2) for r in rows]
    img = ((torch.cat(row_imgs, dim=1).clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
    Image.fromarray(img).resize((img.shape[1] * scale, img.shape[0] * scale), Image.NEAREST).save(path)


@torch.no_grad()
def generator_metrics(G, clip_model: CLIPWrapper, n: int = 2000, seed: int = 123) -> dict:
    """Frechet distance in toy-CLIP space and attribute diversity of n samples, at truncation 1 and 0.7."""
    real = image_features(clip_model, torch.from_numpy(render_dataset(range(*FD_REAL_SEEDS))[0]))
    real2 = image_features(clip_model, torch.from_numpy(render_dataset(range(*FD_REAL_SEEDS_2))[0]))
    text = clip_model.encode_text(class_prompts()).cpu()
    z = torch.randn(n, G.style_dim, generator=torch.Generator().manual_seed(seed))
    out = {"n_samples": n, "fd_real_vs_real": round(frechet_distance(real, real2), 4),
           "real_class_distribution": [round(float(p), 3) for p in class_distribution(real, text)]}
    for psi in (1.0, 0.7):
        imgs = torch.cat([G(zb.to(clip_model.device), truncation=psi).cpu() for zb in z.split(250)])
        feats = image_features(clip_model, imgs)
        dist = class_distribution(feats, text)
        out[f"truncation_{psi}"] = {"fd_toy_clip": round(frechet_distance(feats, real), 4),
                                    "class_distribution": [round(float(p), 3) for p in dist], **diversity(dist)}
    out["class_order"] = [*ATTRIBUTES, "none"]
    return out


def evaluate(out: Path, device: torch.device) -> dict:
    """Metrics of the files in `out` as users load them (fp16 toy CLIP through clip.load), plus samples.png."""
    toy_clip = CLIPWrapper(str(out / CLIP_FILE))
    held_images, held_labels = held_out_set()
    clip_metrics = zero_shot_accuracy(toy_clip, held_images, held_labels)
    print(f"toy CLIP: {clip_metrics}", flush=True)
    toy_clip.to(device)
    G = load_generator(out / GENERATOR_FILE).to(device)
    gen_metrics = generator_metrics(G, toy_clip)
    print(f"toy StyleGAN2: {json.dumps(gen_metrics)}", flush=True)
    det_metrics = detectors.validate(range(*DETECTOR_SEEDS))
    print(f"detectors: {json.dumps(det_metrics)}", flush=True)
    real = torch.from_numpy(render_dataset(range(FD_REAL_SEEDS[0], FD_REAL_SEEDS[0] + 12))[0]).float() / 127.5 - 1
    with torch.no_grad():
        fake = [G(torch.randn(12, G.style_dim, generator=torch.Generator().manual_seed(s)).to(device),
                  truncation=0.7).cpu() for s in (1, 2)]
    grid_png([real, *fake], out / "samples.png")
    return {"toy_clip": clip_metrics, "toy_stylegan2": gen_metrics, "detectors": det_metrics}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=WEIGHTS_DIR, help="output folder (default: the committed weights)")
    p.add_argument("--overwrite", action="store_true", help="replace existing toy-world files in --out")
    p.add_argument("--evaluate-only", action="store_true",
                   help="train nothing: recompute the metrics of the files in --out and update its metrics.json")
    p.add_argument("--device", default="cpu", help="torch device for training (the committed files: cpu)")
    p.add_argument("--threads", type=int, default=2, help="torch threads and painting processes")
    p.add_argument("--n-train", type=int, default=TRAIN_SEEDS[1] - TRAIN_SEEDS[0], help="training paintings")
    p.add_argument("--clip-steps", type=int, default=ToyCLIPConfig.steps)
    p.add_argument("--gan-steps", type=int, default=ToyGANConfig.steps)
    args = p.parse_args(argv)
    command = "python -m experiments.toyworld.build " + " ".join(argv if argv is not None else sys.argv[1:])
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.evaluate_only:
        metrics = json.loads((args.out / METRICS_FILE).read_text())
        for key, value in evaluate(args.out, device).items():
            metrics[key] = {**metrics.get(key, {}), **value}
        metrics["evaluated_by"] = command
        (args.out / METRICS_FILE).write_text(json.dumps(metrics, indent=2) + "\n")
        print(f"updated {args.out / METRICS_FILE}", flush=True)
        return 0
    targets = [args.out / f for f in (CLIP_FILE, GENERATOR_FILE, METRICS_FILE)]
    existing = [str(t) for t in targets if t.exists()]
    if existing and not args.overwrite:
        p.error(f"would overwrite {', '.join(existing)}; pass --overwrite to replace them")
    args.out.mkdir(parents=True, exist_ok=True)
    timings, t0 = {}, time.perf_counter()

    seeds = range(TRAIN_SEEDS[0], TRAIN_SEEDS[0] + args.n_train)
    images, captions = render(seeds, args.threads)
    images = torch.from_numpy(images)
    timings["paint_s"] = round(time.perf_counter() - t0, 1)
    print(f"painted {len(images)} training paintings in {timings['paint_s']} s", flush=True)

    t = time.perf_counter()
    clip_cfg = ToyCLIPConfig(steps=args.clip_steps)
    save_toy_clip(train_toy_clip(images, captions, clip_cfg, device=device), args.out / CLIP_FILE)
    timings["clip_s"] = round(time.perf_counter() - t, 1)

    t = time.perf_counter()
    gan_cfg = ToyGANConfig(steps=args.gan_steps)
    save_generator(train_toy_generator(images, gan_cfg, device=device), args.out / GENERATOR_FILE, overwrite=True)
    timings["generator_s"] = round(time.perf_counter() - t, 1)

    t = time.perf_counter()
    results = evaluate(args.out, device)
    timings["evaluate_s"] = round(time.perf_counter() - t, 1)
    timings["total_s"] = round(time.perf_counter() - t0, 1)
    metrics = {
        "command": command,
        "machine": {"device": str(device), "threads": args.threads, "platform": platform.platform(),
                    "torch": torch.__version__, "malloc_env": {k: v for k, v in os.environ.items()
                                                              if k.startswith("MALLOC_")}},
        "seeds": {"train_paintings": [seeds.start, seeds.stop], "held_out_zero_shot": "train_clip.held_out_set",
                  "fd_real": list(FD_REAL_SEEDS), "fd_real_2": list(FD_REAL_SEEDS_2),
                  "detector_validation": list(DETECTOR_SEEDS), "clip_training": clip_cfg.seed,
                  "generator_training": gan_cfg.seed},
        "toy_clip": {"config": clip_cfg.to_dict(), **results["toy_clip"]},
        "toy_stylegan2": {"config": gan_cfg.to_dict(), **results["toy_stylegan2"]},
        "detectors": results["detectors"],
        "timings": timings,
    }
    (args.out / METRICS_FILE).write_text(json.dumps(metrics, indent=2) + "\n")
    print(f"wrote {', '.join(str(t) for t in targets)} in {timings['total_s']} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
