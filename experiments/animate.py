"""A sound track becomes a video of a painting following it:

    python -m experiments.animate --sound TRACK --source seed:3|W+ file|image --out DIR [--fps 25] [--size 256]
        [--causal] [--smooth S] [--strength A] [--mode mapper|optimise] [--config experiments/animate/toyworld.yaml]

Writes, into a new run directory under DIR (nothing existing is overwritten): `animation.mp4` (H.264, the original
audio muxed in, both starting at t = 0), `contact_sheet.png` (frames with their times above a timeline of level,
strength and cosine) and `frames.json` (settings, latency, per-frame metrics). Models and settings come from the
config (default: the committed toy world); the flags override settings. See lightning_modules/animation.py for the
timing, latency, smoothing and loudness -> strength rules.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import yaml

from datamodules.audio_windows import AudioTrack
from datamodules.image_io import is_image_spec
from datamodules.latent_sources import parse_sources, source_wplus
from experiments.cli_errors import add_debug_flag, run_cli
from lightning_modules.animation import AnimationSettings, Animator, frame_count
from lightning_modules.animation_outputs import VideoWriter, contact_sheet
from lightning_modules.audio_export import load_audio_encoder
from lightning_modules.clip_wrapper import CLIPWrapper
from lightning_modules.edit_outputs import new_run_dir
from lightning_modules.networks.checkpoints import load_generator
from lightning_modules.networks.mapper import load_mapper

DEFAULT_CONFIG = Path(__file__).parent / "animate" / "toyworld.yaml"
SHEET_FRAMES = 16


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m experiments.animate", description=__doc__.split("\n\n")[0])
    p.add_argument("--sound", required=True, help="the track (any rate, any channel count, any length)")
    p.add_argument("--source", required=True, help="seed:N, a W/W+ file, or an image file (projected first)")
    p.add_argument("--out", required=True, help="a new run directory is created inside")
    p.add_argument("--config", default=str(DEFAULT_CONFIG), help="models + settings YAML")
    p.add_argument("--fps", type=float)
    p.add_argument("--size", type=int)
    p.add_argument("--causal", action="store_true", default=None, help="windows end at each frame (live-like)")
    p.add_argument("--smooth", type=float, help="smoothing time constant in s (0: off)")
    p.add_argument("--strength", type=float)
    p.add_argument("--mode", choices=["mapper", "optimise"])
    for name in ("generator", "clip", "audio-encoder", "mapper"):
        p.add_argument(f"--{name}", help=f"override the config's {name.replace('-', '_')}")
    add_debug_flag(p)
    return p


def load_config(path: str | Path) -> tuple[dict, dict]:
    """(models, settings) of an animate config; unknown keys are an error naming the file."""
    cfg = yaml.safe_load(Path(path).read_text()) or {}
    models, settings = dict(cfg.get("models") or {}), dict(cfg.get("settings") or {})
    unknown = sorted(set(cfg) - {"models", "settings"}) + sorted(
        set(settings) - set(AnimationSettings.__dataclass_fields__))
    if unknown:
        raise ValueError(f"{path}: unknown keys {unknown}")
    return models, settings


def animate(sound: str, source: str, out: str | Path, models: dict, settings: AnimationSettings,
            progress: bool | Callable[[int, int], None] = True) -> dict:
    """Render the animation; returns the paths written and the timing. Raises with one line on bad input.
    `progress`: True prints frame counts, or a callable(done, total) called per chunk (an exception it raises stops
    the render; the partial MP4 is closed)."""
    t0 = time.perf_counter()
    for key in ("generator", "clip", "audio_encoder") + (("mapper",) if settings.mode == "mapper" else ()):
        if not models.get(key) or not Path(models[key]).is_file():
            raise FileNotFoundError(f"{key} file {models.get(key)!r} does not exist (set it in the config "
                                    f"or with --{key.replace('_', '-')})")
    if not Path(sound).is_file():
        raise FileNotFoundError(f"--sound {sound}: no such file")
    G = load_generator(models["generator"]).eval().requires_grad_(False)
    clip_model = CLIPWrapper(models["clip"])
    encoder = load_audio_encoder(models["audio_encoder"]).eval().requires_grad_(False)
    mapper = load_mapper(models["mapper"]) if settings.mode == "mapper" else None
    spec = source
    if is_image_spec(source):  # projection (and its imports) only for image sources
        from experiments.project import project_image_sources

        spec = project_image_sources([source], models["generator"])[0]
    w_source = source_wplus(parse_sources([spec]), G, models.get("truncation", 0.7))[0]
    animator = Animator(G, clip_model, encoder, w_source, settings, mapper)
    if callable(progress):  # a caller's callable(done, total) hears the rendering stage (and may stop it)
        show = lambda stage, done, n: progress(done, n) if stage == "rendering" else None  # noqa: E731
    else:
        show = (lambda stage, done, n: print(f"\ranimate: {stage} frame {done}/{n} ", end="", file=sys.stderr,
                                             flush=True)) if progress else None
    with AudioTrack(sound, encoder.sample_rate) as reader:  # the shared window reader; errors name the file
        duration, file_rate, channels = reader.duration_s, reader.file_rate, reader.channels
        run = new_run_dir(out, "animate")
        trajectory = animator.trajectory(reader, show)
    total = frame_count(duration, settings.fps)
    sheet_at = {round(i * (total - 1) / max(1, SHEET_FRAMES - 1)) for i in range(min(SHEET_FRAMES, total))}
    thumbs = []
    writer = VideoWriter(run / "animation.mp4", sound, settings.fps, settings.size, settings.crf, settings.preset)
    try:
        for idx, frames in animator.render(trajectory, show):
            writer.write(frames)
            thumbs += [(k / settings.fps, frames[j]) for j, k in enumerate(idx) if k in sheet_at]
    finally:
        writer.close()
    if progress is True:
        print(file=sys.stderr)
    records = [r.as_dict() for r in animator.state.records]
    padded = sum(r["padded"] for r in records)
    silent = sum(r["silent"] for r in records)
    notes = [animator.latency_note()]
    if duration < animator.window_s:
        notes.append(f"the track ({duration:.2f} s) is shorter than one encoder window "
                     f"({animator.window_s:g} s): every window is zero-padded")
    if silent:
        notes.append(f"{silent} of {total} frames are below the silence floor ({settings.silence_floor_dbfs:g} "
                     f"dBFS): strength 0, they show the source")
    sheet = contact_sheet(thumbs, records, duration, run / "contact_sheet.png",
                          f"{Path(sound).name} x {source}: {settings.mode}, strength {settings.strength:g}, "
                          f"{settings.fps:g} fps")
    seconds = time.perf_counter() - t0
    summary = {"sound": sound, "source": source, "duration_s": duration, "file_rate": file_rate,
               "file_channels": channels, "frames": total, "frame_rounding": "ceil(duration * fps)",
               "padded_frames": padded, "silent_frames": silent, "notes": notes, "models": models,
               "settings": animator.settings_dict(), "seconds": round(seconds, 3),
               "frames_per_second_rendered": round(total / seconds, 2), "per_frame": records}
    metrics = run / "frames.json"
    metrics.write_text(json.dumps(summary, indent=1) + "\n")
    return {"run_dir": run, "video": run / "animation.mp4", "contact_sheet": sheet, "metrics": metrics,
            "frames": total, "seconds": seconds, "notes": notes}


PROG = "python -m experiments.animate"


def main(argv: list[str] | None = None) -> int:
    """The command: exit status 0, 1 (bad input, failure; one line on stderr) or 2 (usage), see cli_errors."""
    return run_cli(run, PROG, argv)


def run(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    models, settings = load_config(args.config)
    for key in ("generator", "clip", "audio_encoder", "mapper"):
        if getattr(args, key) is not None:
            models[key] = getattr(args, key)
    for key in ("fps", "size", "causal", "smooth", "strength", "mode"):
        if getattr(args, key) is not None:
            settings[key] = getattr(args, key)
    result = animate(args.sound, args.source, args.out, models, AnimationSettings(**settings))
    for note in result["notes"]:
        print(f"note: {note}")
    print(f"video:          {result['video']} ({result['frames']} frames, {result['frames'] / result['seconds']:.1f} "
          f"frames/s rendered)")
    print(f"contact sheet:  {result['contact_sheet']}")
    print(f"frame metrics:  {result['metrics']}")
    return 0


if __name__ == "__main__":
    torch.set_num_threads(1)
    sys.exit(main())
