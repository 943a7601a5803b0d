"""The toy-world check of the audio<->image term: does training with video frames teach what the labels cannot?

    python -m experiments.toyworld.av_check OUT [--seeds 0 1 2]

Writes the toy audio-visual set (`av_set.py`: the painting's time of day follows the sound's loudness, its place
the pitch of a tone) as MP4 videos, runs it through the real pipeline — `prepare_vggsound --frames K` (PyAV), the
frame cache (`experiments.embed_frames`, toy CLIP) and `experiments.train` with `av_check.yaml` — once text only
(`audio_image_weight` 0) and once with the image term, per seed, and scores instance-level audio->image R@1 on the
test split's held-out pairs (each audio against the cached middle frames of all held-out clips). Text-only
training can at best find the class: about 1/12 (12 held-out paintings per class). Results go to OUT/av_check.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from datamodules.prepare_vggsound import prepare
from datamodules.vggsound import VGGSoundDataModule
from experiments import train
from experiments.toyworld.av_set import CLASSES, write_av_set
from lightning_modules.audio_clip import audio_to_image_recall
from lightning_modules.audio_export import load_audio_encoder
from lightning_modules.frame_embedder import build_frame_cache

CONFIG = Path(__file__).with_name("av_check.yaml")
TOY_CLIP = Path(__file__).with_name("weights") / "toy_clip.pt"


def prepare_av_set(out: Path, frames: int = 4, clips_per_class: int = 36) -> dict:
    """Videos -> FLAC + frame strips -> frame cache under `out`; returns the timings and the cache's size."""
    t0 = time.perf_counter()
    write_av_set(out / "videos", clips_per_class)
    t1 = time.perf_counter()
    report = prepare(out / "videos", out / "data", csv_path=out / "videos" / "vggsound.csv", workers=2,
                     progress=False, frames=frames, frame_size=32)
    if report.failed or report.frames_failed:
        raise RuntimeError(f"prepare failed on {report.failed + report.frames_failed}")
    t2 = time.perf_counter()
    cache = build_frame_cache(out / "data", str(TOY_CLIP), progress=False)
    return {"videos_s": t1 - t0, "prepare_s": t2 - t1, "cache_s": cache.seconds, "cache_bytes": cache.bytes,
            "clips": cache.clips, "frames": frames}


@torch.no_grad()
def held_out_recall(checkpoint: Path, data: Path) -> float:
    """Audio->image R@1 of the checkpoint's encoder over the test split (middle frames from the cache)."""
    encoder = load_audio_encoder(checkpoint).eval()
    dm = VGGSoundDataModule(str(data), clip_seconds=encoder.clip_samples / encoder.sample_rate, num_workers=0,
                            classes=list(CLASSES), frame_cache=str(data / "frame_cache"), val_fraction=0.0)
    dm.setup("test")
    audio, image = [], []
    for batch in dm.test_dataloader():
        if not bool(batch["image_mask"].all()):
            raise RuntimeError("a held-out clip has no frames in the cache")
        audio.append(encoder(batch["waveform"]))
        image.append(batch["image"])
    return audio_to_image_recall(torch.cat(audio), torch.cat(image))


def train_and_score(data: Path, run_dir: Path, seed: int, *overrides: str) -> float:
    """Train with av_check.yaml (plus `overrides`) and score the last checkpoint on the held-out pairs."""
    train.main(["fit", "--config", str(CONFIG), f"--data.root={data}", f"--data.frame_cache={data / 'frame_cache'}",
                f"--model.clip_model={TOY_CLIP}", f"--seed_everything={seed}", f"--model.seed={seed}",
                f"--data.seed={seed}", f"--trainer.default_root_dir={run_dir}", *overrides])
    return held_out_recall(run_dir / "checkpoints" / "last.ckpt", data)


def run_check(out: str | Path, seeds: tuple[int, ...] = (0, 1, 2), *overrides: str) -> dict:
    """The whole check; returns (and writes to OUT/av_check.json) per-seed R@1 with and without the image term."""
    out = Path(out)
    result: dict = {"prepare": prepare_av_set(out), "seeds": list(seeds), "text_only": [], "with_image": [],
                    "train_s": []}
    for seed in seeds:
        for name, extra in (("text_only", ["--model.audio_image_weight=0"]), ("with_image", [])):
            t0 = time.perf_counter()
            result[name].append(train_and_score(out / "data", out / f"{name}_{seed}", seed, *overrides, *extra))
            result["train_s"].append(time.perf_counter() - t0)
    (out / "av_check.json").write_text(json.dumps(result, indent=1))
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m experiments.toyworld.av_check",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("out", help="empty work folder")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args(argv)
    result = run_check(args.out, tuple(args.seeds))
    for name in ("text_only", "with_image"):
        print(f"{name:10s} R@1 " + " ".join(f"{r:.3f}" for r in result[name]))


if __name__ == "__main__":
    main()
