"""Embed the frames that `prepare_vggsound --frames K` extracted, once, with the frozen CLIP image tower.

    python -m experiments.embed_frames DATA_ROOT [--clip ViT-B/32] [--out DATA_ROOT/frame_cache] [--device cuda]

Writes the float16 frame cache `data.frame_cache` points at (experiments/audio_clip/vggsound_av.yaml); a rerun
embeds only clips the cache lacks. Use the CLIP of the training run: a cache of another CLIP is refused.
"""

from __future__ import annotations

import argparse
import sys

import torch

from datamodules.frame_cache import FrameCacheError
from datamodules.frame_files import FrameFileError
from lightning_modules.frame_embedder import build_frame_cache


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.embed_frames", description=__doc__.splitlines()[0])
    parser.add_argument("root", help="prepared data root holding frames/ (prepare_vggsound --frames K)")
    parser.add_argument("--clip", default="ViT-B/32", help="CLIP model name or file (the training run's)")
    parser.add_argument("--out", default=None, help="cache folder (default ROOT/frame_cache)")
    parser.add_argument("--batch-size", type=int, default=64, help="clips per image-tower batch")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    try:
        report = build_frame_cache(args.root, args.clip, args.out, args.batch_size, args.device)
    except (FrameCacheError, FrameFileError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"{report.path}: {report.clips} clips ({report.embedded} embedded now, {report.reused} reused), "
          f"{report.bytes / 2**20:.1f} MiB, {report.seconds:.1f} s")
    if report.failed:
        print(f"{len(report.failed)} unreadable frame strips left out (they train without frames), listed in "
              f"{report.path / 'failures.txt'}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
