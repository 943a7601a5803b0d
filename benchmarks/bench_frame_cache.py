"""The frame cache at VGGSound scale: what one clip costs (decode, frames, image tower, bytes), extrapolated.

    python benchmarks/bench_frame_cache.py [--clips 16] [--frames 4] [--device cpu|cuda] [--threads 1]

Measured on a small run, then multiplied out to VGGSound's ~200 k clips:
- decode: `prepare_vggsound`'s PyAV paths on a synthetic 10 s clip shaped like a VGGSound download (640x360 H.264
  at 25 fps, 44.1 kHz stereo AAC): the audio track to 16 kHz mono, and K evenly spaced 224 px frames;
- embed: `build_frame_cache` end to end (JPEG strips read, CLIP ViT-B/32's image tower, float16 memmap written) on
  `--clips` clips, with a CLIP of ViT-B/32's architecture and random weights (speed does not depend on them);
- size: the cache file's bytes per clip (clips x K x 512 x 2 bytes + nothing else).
Decode and the tower are reported per clip (median of the repeats) as wall time and as CPU time of this process
(all its threads): on a shared, loaded machine the wall time measures the queue, the CPU time the work; the
extrapolation uses CPU time (core-hours) on a CPU and wall time on a GPU.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch
from _common import interleaved_medians, machine_header
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


def median_time(fn, repeats: int) -> tuple[float, float]:
    """Median wall and CPU seconds of `fn()` over `repeats` calls (no warm-up call, as before the shared helper)."""
    return interleaved_medians({"fn": fn}, repeats, warmup=0)["fn"]


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
    print(f"{machine_header()}; device {args.device}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        video = tmp / "clip.mp4"
        vggsound_like_clip(video)
        audio_w, audio_c = median_time(lambda: decode_audio(video, 16000), args.repeats)
        frames_w, frames_c = median_time(lambda: decode_frames(video, k, 224), args.repeats)
        frames = decode_frames(video, k, 224)
        root = tmp / "root"
        check_manifest(root / FRAMES_DIR, k, 224)
        for i in range(args.clips):
            write_strip(root / FRAMES_DIR / f"clip{i:05d}.jpg", np.roll(frames, i, axis=2))
        strip_bytes = (root / FRAMES_DIR / "clip00000.jpg").stat().st_size
        clip_file = tmp / "vit_b32_random.pt"
        torch.manual_seed(0)
        torch.save(CLIP(**VIT_B32).state_dict(), clip_file)
        runs = []

        def build() -> None:
            runs.append(build_frame_cache(root, str(clip_file), out=tmp / f"cache{len(runs)}",
                                          batch_size=args.batch_size, device=args.device, progress=False))

        embed_w, embed_c = (t / args.clips for t in median_time(build, args.repeats))
        cache_bytes = runs[-1].bytes / args.clips
    n = VGGSOUND_CLIPS
    print(f"decode audio (10 s, 44.1 kHz stereo AAC -> 16 kHz mono): {audio_w * 1e3:.0f} ms wall, "
          f"{audio_c * 1e3:.0f} ms CPU per clip")
    print(f"decode {k} frames (640x360 H.264, 25 fps) -> 224 px:   {frames_w * 1e3:.0f} ms wall, "
          f"{frames_c * 1e3:.0f} ms CPU per clip")
    print(f"frame strip on disk (JPEG q95, {k} x 224 px):         {strip_bytes / 1e3:.0f} kB/clip")
    print(f"build_frame_cache (ViT-B/32 tower, {args.device}, batch {args.batch_size} clips): {embed_w * 1e3:.1f} ms "
          f"wall, {embed_c * 1e3:.1f} ms CPU per clip (incl. CLIP load and hashing, {args.clips} clips)")
    print(f"cache: {cache_bytes:.0f} B/clip = {k} x 512 x 2")
    embed_h = n * (embed_w if args.device != "cpu" else embed_c) / 3600
    print(f"VGGSound ({n:,} clips x {k} frames): frames on disk {n * strip_bytes / 1e9:.1f} GB, cache "
          f"{n * cache_bytes / 2**30:.2f} GiB; audio {n * audio_c / 3600:.1f} and frame extraction "
          f"{n * frames_c / 3600:.1f} CPU core-hours; embedding {embed_h:.1f} "
          f"{'core-hours on CPU' if args.device == 'cpu' else 'h on this ' + args.device}")


if __name__ == "__main__":
    main()
