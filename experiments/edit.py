"""One sound-guided edit from the command line:

    python -m experiments.edit --sound fire.wav --seed 7 --generator wikiart.pkl --audio-encoder audio.pt --out edits/
    python -m experiments.edit --sound rain.wav --latent w_plus.pt ...   # a W/W+ code, e.g. from experiments.project
    python -m experiments.edit --sound wind.wav --image my_painting.jpg ...   # projected first, cached by image hash

Several --sound flags edit the same source with each sound. The same `ManipulationModule` as the config-driven
job (`experiments.manipulate`) runs underneath, with the paper's defaults; outputs go to a new run directory under
--out (edited PNG, W+ code, grid, metrics.json), and the edited files and CLIP cosines are printed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pytorch_lightning as pl
import torch

from datamodules.edit_pairs import EditPairsDataModule
from experiments.project import DEFAULT_CONFIG as PROJECTION_CONFIG
from experiments.project import load_config, missing_image_sources, project_image_sources
from lightning_modules.manipulation import ManipulationModule


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m experiments.edit", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--sound", action="append", required=True, help="audio file (repeat for several sounds)")
    p.add_argument("--label", action="append", help="caption per --sound (default: the file name)")
    source = p.add_argument_group("source (exactly one)").add_mutually_exclusive_group(required=True)
    source.add_argument("--seed", type=int, help="random sample: z from this seed, truncated, broadcast to W+")
    source.add_argument("--latent", help="W or W+ code file (.pt/.npy), e.g. written by experiments.project")
    source.add_argument("--mean", action="store_true", help="the generator's mean latent")
    source.add_argument("--image", help="your own painting (any image file): projected into W+ first, cached by "
                        "image hash in $AIARTIST_CACHE_DIR/projections (default ~/.cache/aiartist)")
    p.add_argument("--projection-config", default=str(PROJECTION_CONFIG), help="projector settings for --image")
    p.add_argument("--generator", required=True, help="StyleGAN2 checkpoint (.pt rosinality, .pkl NVlabs/TF)")
    p.add_argument("--audio-encoder", required=True, help="exported audio encoder or AudioCLIP checkpoint")
    p.add_argument("--clip", default="ViT-B/32", help="CLIP name or file (the one the encoder was trained against)")
    p.add_argument("--out", required=True, help="a new run directory is created inside")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--lambda-sim", type=float, default=0.008, help="0.002 for landscapes")
    p.add_argument("--truncation", type=float, default=0.7)
    p.add_argument("--text", help="CLIP text prompt mixed into the target (see --audio-weight)")
    p.add_argument("--audio-weight", type=float, default=1.0, help="target = a*audio + (1-a)*text, normalised")
    p.add_argument("--intensity", action="store_true", help="louder sound -> stronger edit")
    p.add_argument("--gif-every", type=int, default=0, help="GIF frame every k steps (0: no GIF)")
    p.add_argument("--device", default="auto", help="cpu, cuda, or auto")
    return p


def source_spec(args: argparse.Namespace) -> str:
    """The edit's source as an `EditPairsDataModule` spec; one branch per source option."""
    if args.seed is not None:
        return f"seed:{args.seed}"
    if args.latent is not None:
        return args.latent
    if args.image is not None:
        return args.image  # replaced by its projected W+ file once the inputs are known to exist
    return "mean"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    labels = args.label or [Path(s).stem for s in args.sound]
    if len(labels) != len(args.sound):
        raise SystemExit(f"--label given {len(labels)} times for {len(args.sound)} --sound files")
    module = ManipulationModule(
        generator=args.generator, audio_encoder=args.audio_encoder, clip=args.clip, steps=args.steps, lr=args.lr,
        lambda_sim=args.lambda_sim, truncation=args.truncation, text_prompt=args.text,
        audio_weight=args.audio_weight, intensity=args.intensity, gif_every=args.gif_every, output_dir=args.out,
        run_name="edit",
    )
    data = EditPairsDataModule(sources=[source_spec(args)], sounds=dict(zip(labels, args.sound)),
                               batch_size=len(args.sound))
    missing = module.missing_inputs() + data.missing_inputs() + missing_image_sources(data.source_specs)
    if missing:
        print("missing inputs:\n" + "\n".join(f"  {what}: {path}" for what, path in missing), file=sys.stderr)
        return 1
    data.source_specs = project_image_sources(data.source_specs, args.generator, config=load_config(
        args.projection_config), device={"auto": None, "gpu": "cuda"}.get(args.device, args.device))
    accelerator = ("gpu" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    trainer = pl.Trainer(accelerator=accelerator, devices=1, inference_mode=False, logger=False,
                         enable_checkpointing=False, enable_model_summary=False, enable_progress_bar=False)
    trainer.predict(module, datamodule=data, return_predictions=False)
    for pair in module.pair_metrics:
        print(f"{module.run_dir / pair['file']}: {pair['sound']}, CLIP cosine to the sound "
              f"{pair['clip_cos_before']:.4f} -> {pair['clip_cos_after']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
