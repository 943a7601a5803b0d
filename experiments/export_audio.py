"""Export the trained audio encoder of an AudioCLIPModule checkpoint as a slim file.

    python -m experiments.export_audio outputs/audio_clip/vggsound/checkpoints/best.ckpt audio_encoder.pt

The file holds the encoder's architecture and front-end settings plus its weights (no optimiser state,
no CLIP), reads with `torch.load(weights_only=True)`, and loads with
`lightning_modules.audio_export.load_audio_encoder(path)`.
"""

from __future__ import annotations

import argparse
import sys

from experiments.cli_errors import add_debug_flag, run_cli
from lightning_modules.audio_export import export_audio_encoder, load_audio_encoder


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m experiments.export_audio", description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="AudioCLIPModule checkpoint (.ckpt) written by experiments.train")
    parser.add_argument("out", help="output file (refuses to overwrite)")
    add_debug_flag(parser)
    args = parser.parse_args(argv)
    encoder = load_audio_encoder(args.checkpoint)
    path = export_audio_encoder(encoder, args.out)
    params = sum(p.numel() for p in encoder.parameters())
    settings = ", ".join(f"{k}={v}" for k, v in encoder.config.items())
    print(f"wrote {path}: {params:,} parameters, {encoder.embed_dim}-d output, {encoder.sample_rate} Hz ({settings})")


if __name__ == "__main__":
    sys.exit(run_cli(main, "python -m experiments.export_audio"))
