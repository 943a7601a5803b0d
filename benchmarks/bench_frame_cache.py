"""The frame cache at VGGSound scale: what one clip costs (decode, frames, image tower, bytes), extrapolated.

    python benchmarks/bench_frame_cache.py [--clips 16] [--frames 4] [--device cpu|cuda] [--threads 1]

Measured on a small run, then multiplied out to VGGSound's ~200 k clips:
- decode: `prepare_vggsound`'s PyAV paths on a synthetic 10 s clip shaped like a VGGSound download (640x360 H.264
  at 25 fps, 44.1 kHz stereo AAC): the audio track to 16 kHz mono, and K evenly spaced 224 px frames;
- embed: `build_frame_cache` end to end (JPEG strips read, CLIP ViT-B/32's image tower, float16 memmap written) on
  `--clips` clips, with a CLIP of ViT-B/32's architecture and random weights (speed does not depend on them);
- size: the cache file's bytes per clip (clips x K x 512 x 2 bytes + nothing else).
Decode and the tower are reported per clip (median of the repeats); the extrapolation is per process (decode)
or per device (tower) and says so.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from clip.model import CLIP

from datamodules.av_decode import decode_audio, decode_frames
from datamodules.frame_files import FRAMES_DIR, check_manifest, write_strip
from experiments.toyworld.av_set import write_video
from lightning_modules.frame_embedder import build_frame_cache

VGGSOUND_CLIPS = 200_000
VIT_B32 = dict(embed_dim=512, image_resolution=224, vision_layers=12, vision_width=768, vision_patch_size=32,
               context_length=77, vocab_size=49408, transformer_width=512, transformer_heads=8, transformer_layers=12)


def vggsound_like_clip(path: Path, seconds: float = 10.0) -> None:
    """A moving 640x360 25 fps picture with a stereo 44.1 kHz tone: the shape of a VGGSound download."""
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (360, 640 + 250, 3), dtype=np.uint8)
    frames = np.stack([base[:, i:i + 640] for i in range(int(25 * seconds))])
    t = np.arange(int(44100 * seconds)) / 44100
    write_video(path, frames, 25, (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 44100)


def median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=16)
    parser.add_argument("--frames", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    k = args.frames
    print(f"{platform.processor() or platform.machine()}, torch threads {args.threads}, device {args.device}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        video = tmp / "clip.mp4"
        vggsound_like_clip(video)
        audio_s = median_time(lambda: decode_audio(video, 16000), args.repeats)
        frames_s = median_time(lambda: decode_frames(video, k, 224), args.repeats)
        frames = decode_frames(video, k, 224)
        root = tmp / "root"
        check_manifest(root / FRAMES_DIR, k, 224)
        for i in range(args.clips):
            write_strip(root / FRAMES_DIR / f"clip{i:05d}.jpg", np.roll(frames, i, axis=2))
        strip_bytes = (root / FRAMES_DIR / "clip00000.jpg").stat().st_size
        clip_file = tmp / "vit_b32_random.pt"
        torch.manual_seed(0)
        torch.save(CLIP(**VIT_B32).state_dict(), clip_file)
        embed = []
        for r in range(args.repeats):
            report = build_frame_cache(root, str(clip_file), out=tmp / f"cache{r}", batch_size=args.batch_size,
                                       device=args.device, progress=False)
            embed.append(report.seconds)
        embed_s = statistics.median(embed) / args.clips
        cache_bytes = report.bytes / args.clips
    n = VGGSOUND_CLIPS
    print(f"decode audio (10 s, 44.1 kHz stereo AAC -> 16 kHz mono): {audio_s * 1e3:.0f} ms/clip")
    print(f"decode {k} frames (640x360 H.264, 25 fps) -> 224 px:   {frames_s * 1e3:.0f} ms/clip")
    print(f"frame strip on disk (JPEG q95, {k} x 224 px):         {strip_bytes / 1e3:.0f} kB/clip")
    print(f"build_frame_cache (ViT-B/32 tower, {args.device}, batch {args.batch_size} clips): "
          f"{embed_s * 1e3:.1f} ms/clip (incl. CLIP load and hashing, {args.clips} clips)")
    print(f"cache: {cache_bytes:.0f} B/clip = {k} x 512 x 2")
    print(f"VGGSound ({n:,} clips x {k} frames): frames on disk {n * strip_bytes / 1e9:.1f} GB, "
          f"cache {n * cache_bytes / 2**30:.2f} GiB; frame extraction {n * frames_s / 3600:.1f} h per decoding "
          f"process; embedding {n * embed_s / 3600:.2f} h on this {args.device}")


if __name__ == "__main__":
    main()
