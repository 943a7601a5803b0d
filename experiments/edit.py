"""One sound-guided edit from the command line:

    python -m experiments.edit --sound fire.wav --seed 7 --generator wikiart.pkl --audio-encoder audio.pt --out edits/
    python -m experiments.edit --sound rain.wav --latent w_plus.pt ...   # a W/W+ code, e.g. from experiments.project
    python -m experiments.edit --sound wind.wav --image my_painting.jpg ...   # projected first, cached by image hash

Several --sound flags edit the same source with each sound; every --sound gets its own edit (a repeated name is
numbered: fire, fire (2)). A clip below the silence floor (-60 dBFS RMS over the part used) or shorter than 0.25 s
is refused unless --allow-silence. Errors are one line (exit 1 for bad input, 2 for usage; --debug: traceback).
The same `ManipulationModule` as the config-driven job (`experiments.manipulate`) runs underneath, with the paper's
defaults; outputs go to a new run directory under --out (edited PNG, W+ code, grid, metrics.json), and the edited
files, the part of each clip used and the CLIP cosines are printed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pytorch_lightning as pl
import torch

from datamodules.audio_io import AudioDecodeError, open_audio
from datamodules.audio_windows import POLICIES as SOUND_WINDOW_POLICIES
from datamodules.edit_pairs import EditPairsDataModule
from datamodules.image_io import ImageLoadError, open_image
from datamodules.input_limits import MAX_IMAGE_PIXELS, file_problem
from experiments.cli_errors import UsageError, add_debug_flag, run_cli
from experiments.project import DEFAULT_CONFIG as PROJECTION_CONFIG
from experiments.project import IMAGE_SUFFIXES, load_config, missing_image_sources, project_image_sources
from lightning_modules.edit_outputs import unique_names
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
    p.add_argument("--adaptive-layer-masking", action="store_true",
                   help="weight each W+ row's distance by an adapted mask (the CVPR 2022 code's option)")
    p.add_argument("--window", default="mean", choices=SOUND_WINDOW_POLICIES,
                   help="which part of each sound the encoder hears (mean of its windows, or one window)")
    p.add_argument("--gif-every", type=int, default=0, help="GIF frame every k steps (0: no GIF)")
    p.add_argument("--mode", default="optimise", choices=["optimise", "mapper", "refine"],
                   help="optimise: Eq. 2 from the source; mapper: one forward pass of --mapper; refine: the mapper's "
                   "output, then --refine-steps Eq. 2 steps")
    p.add_argument("--mapper", help="trained SoundMapper file (experiments.train_mapper) for --mode mapper/refine")
    p.add_argument("--strength", type=float, default=1.0, help="scales the edit (0: the source; < 0: away from it)")
    p.add_argument("--refine-steps", type=int, default=20, help="Eq. 2 steps after the mapper in --mode refine")
    p.add_argument("--device", default="auto", help="cpu, cuda, or auto")
    p.add_argument("--allow-silence", action="store_true",
                   help="edit with a clip below the silence floor or shorter than 0.25 s (flagged in metrics.json)")
    p.add_argument("--trust-pickle", action="store_true",
                   help="allow a generator pickle you trust to name code outside the StyleGAN allowlist")
    p.add_argument("--max-image-pixels", type=int, default=MAX_IMAGE_PIXELS, help="refuse larger --image files")
    add_debug_flag(p)
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


def check_inputs(args: argparse.Namespace) -> None:
    """Refuse, naming the argument and file, any input that cannot work, before a model is loaded."""
    for flag, path in [("--generator", args.generator), ("--audio-encoder", args.audio_encoder),
                       ("--latent", args.latent)]:
        problem = file_problem(path) if path is not None else None
        if problem is not None:
            raise FileNotFoundError(f"{flag} {path}: {problem}")
    if Path(args.clip).exists() and file_problem(args.clip):
        raise FileNotFoundError(f"--clip {args.clip}: {file_problem(args.clip)}")
    for path in args.sound:
        try:
            open_audio(path).close()  # the header only: "is a directory", "not an audio file", ...
        except AudioDecodeError as err:
            raise AudioDecodeError(f"--sound {err}") from err
    if args.image is not None:
        try:  # the header only: "no such file", "not an image file (.svg is a vector format ...)", too large
            open_image(args.image, args.max_image_pixels).close()
        except ImageLoadError as err:
            raise ImageLoadError(f"--image {err}") from err
        if not args.image.lower().endswith(IMAGE_SUFFIXES):
            raise UsageError(f"--image {args.image}: unsupported image file name; use one ending in "
                             f"{', '.join(IMAGE_SUFFIXES)}")


PROG = "python -m experiments.edit"
SPELLINGS = {"trust_pickle=True": "--trust-pickle", "allow_silence=True": "--allow-silence"}


def main(argv: list[str] | None = None) -> int:
    """The command: exit status 0, 1 (bad input, failure; one line on stderr) or 2 (usage), see cli_errors."""
    return run_cli(run, PROG, argv, spellings=SPELLINGS)


def run(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    labels = args.label or [Path(s).stem for s in args.sound]
    if len(labels) != len(args.sound):
        raise UsageError(f"--label given {len(labels)} times for {len(args.sound)} --sound files")
    labels = unique_names(labels)  # every --sound gets its own edit, even two files called fire.*
    check_inputs(args)
    module = ManipulationModule(
        generator=args.generator, audio_encoder=args.audio_encoder, clip=args.clip, steps=args.steps, lr=args.lr,
        lambda_sim=args.lambda_sim, truncation=args.truncation, text_prompt=args.text,
        audio_weight=args.audio_weight, intensity=args.intensity, gif_every=args.gif_every, output_dir=args.out,
        adaptive_layer_masking=args.adaptive_layer_masking,
        run_name="edit", sound_crop=args.window, allow_silence=args.allow_silence, trust_pickle=args.trust_pickle,
        mode=args.mode, mapper=args.mapper, strength=args.strength, refine_steps=args.refine_steps,
    )
    data = EditPairsDataModule(sources=[source_spec(args)], sounds=dict(zip(labels, args.sound)),
                               batch_size=len(args.sound))
    missing = module.missing_inputs() + data.missing_inputs() + missing_image_sources(data.source_specs)
    if missing:
        print("missing inputs:\n" + "\n".join(f"  {what}: {path}" for what, path in missing), file=sys.stderr)
        return 1
    data.source_specs = project_image_sources(data.source_specs, args.generator, config=load_config(
        args.projection_config), device={"auto": None, "gpu": "cuda"}.get(args.device, args.device),
        trust_pickle=args.trust_pickle, max_pixels=args.max_image_pixels)
    accelerator = ("gpu" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    trainer = pl.Trainer(accelerator=accelerator, devices=1, inference_mode=False, logger=False,
                         enable_checkpointing=False, enable_model_summary=False, enable_progress_bar=False)
    trainer.predict(module, datamodule=data, return_predictions=False)
    for pair in module.pair_metrics:
        flag = f", QUIET: {pair['quiet']}" if pair["quiet"] else ""
        print(f"{module.run_dir / pair['file']}: {pair['sound']} ({pair['sound_file']}: {pair['sound_used']}{flag}), "
              f"CLIP cosine to the sound {pair['clip_cos_before']:.4f} -> {pair['clip_cos_after']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
