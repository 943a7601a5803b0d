"""`make demo`: sound set -> audio encoder training -> sound-guided edits, offline on a CPU in a few minutes.

    python -m experiments.demo [--config experiments/demo.yaml] [--out DIR]

Every stage calls the same entry points a real run uses (`experiments.train fit`, `experiments.manipulate
predict`) with the configs named in experiments/demo.yaml; this script only wires their inputs and outputs together
in a new run directory and prints where everything is, the before/after CLIP cosines and the time per stage.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import wandb
import yaml
from clip.model import CLIP
from PIL import Image

from datamodules.soundzoo import synthesize, write_sound_set
from experiments import animate, manipulate, train
from experiments.cli_errors import add_debug_flag, run_cli
from lightning_modules.audio_export import export_audio_encoder, load_audio_encoder
from lightning_modules.edit_outputs import make_grid, new_run_dir, slug, unused_path
from lightning_modules.networks.checkpoints import save_generator
from lightning_modules.networks.stylegan2 import Generator

DEFAULT_CONFIG = Path(__file__).with_name("demo.yaml")
TINY = "tiny-random"


def load_config(path: str | Path) -> dict:
    cfg = yaml.safe_load(Path(path).read_text())
    for section, keys in {"models": ("clip", "generator", "seed"), "sound_set": ("clips_per_class", "seconds", "seed"),
                          "audio": ("config",), "manipulation": ("config", "sources", "sounds", "sound_seed")}.items():
        absent = [k for k in keys if k not in (cfg.get(section) or {})]
        if absent:
            raise ValueError(f"{path}: section {section!r} lacks {absent}")
    return cfg


def tiny_clip_file(path: Path, seed: int, arch: dict) -> Path:
    """A random clip.model.CLIP at small widths, saved as a state dict that clip.load(path, jit=False) reads."""
    torch.manual_seed(seed)
    torch.save(CLIP(**arch).state_dict(), path)
    return path


def tiny_generator_file(path: Path, seed: int, arch: dict) -> Path:
    """A random StyleGAN2 generator in the rosinality format that load_generator reads."""
    torch.manual_seed(seed)
    arch = {**arch, "channels": {int(k): int(v) for k, v in arch.get("channels", {}).items()} or None}
    save_generator(Generator(**arch), path)
    return path


def prepare_models(cfg: dict, models_dir: Path) -> tuple[str, str]:
    """(CLIP, generator) paths: the configured files, or tiny random ones written to models_dir."""
    m = cfg["models"]
    clip = m["clip"] if m["clip"] != TINY else str(tiny_clip_file(models_dir / "clip.pt", m["seed"], m["tiny_clip"]))
    gen = m["generator"]
    if gen == TINY:
        gen = str(tiny_generator_file(models_dir / "generator.pt", m["seed"] + 1, m["tiny_generator"]))
    return clip, gen


def write_edit_sounds(labels: list[str], seed: int, seconds: float, out_dir: Path) -> dict[str, str]:
    """One fresh clip per label (seeds outside the training set), label -> wav path."""
    out_dir.mkdir(parents=True, exist_ok=False)
    sounds = {}
    for k, label in enumerate(labels):
        path = out_dir / f"{slug(label)}.wav"
        sf.write(path, synthesize(label, seed + k, seconds=seconds), 16000)
        sounds[label] = str(path)
    return sounds


def judge_toyworld(edit_dir: Path, clip_path: str, generator_path: str, cfg: dict) -> dict:
    """`experiments.toyworld.judge.judge_run` on the edits, logged into the edit job's (still open) W&B run."""
    from experiments.toyworld.judge import judge_run
    from lightning_modules.clip_wrapper import CLIPWrapper
    from lightning_modules.networks.checkpoints import load_generator

    out = judge_run(edit_dir, load_generator(generator_path), CLIPWrapper(clip_path), int(cfg.get("fd_real", 500)))
    if wandb.run is not None:
        rows = out["table"]
        columns = list(dict.fromkeys(k for r in rows for k in r))
        wandb.run.log({"toyworld/per_sound": wandb.Table(columns=columns, data=[[r.get(c) for c in columns]
                                                                                 for r in rows]),
                       **{f"toyworld/{k}": v for k, v in out["frechet"].items()}})
    return out


def train_audio_encoder(cfg: dict, clip_path: str, soundzoo: Path, audio_dir: Path,
                        models_dir: Path) -> tuple[Path, str, float | None]:
    """The demo's stage 2 (audio config + overrides of `cfg`): (exported encoder, checkpoint, val top-1).

    `audio.checkpoint` picks what is exported: "best" (default; the config's monitored checkpoint, best.ckpt by
    validation top-1) or "last" (the end of training: with augmented training items the clean validation top-1
    saturates at 1.0 in the first epochs, and the first checkpoint to reach it is an early, barely trained one)."""
    choice = cfg["audio"].get("checkpoint", "best")
    if choice not in ("best", "last"):
        raise ValueError(f"audio.checkpoint must be 'best' or 'last', got {choice!r}")
    wandb.finish()  # a W&B run left open in this process would otherwise absorb the demo's training run
    with manipulate.own_argv():
        fit = train.main(["fit", "--config", cfg["audio"]["config"], f"--model.clip_model={clip_path}",
                          f"--data.root={soundzoo}", f"--trainer.default_root_dir={audio_dir}",
                          *cfg["audio"].get("overrides", [])])
    last, monitor = str(audio_dir / "checkpoints" / "last.ckpt"), fit.trainer.checkpoint_callback
    if choice == "best" and monitor.best_model_path:
        ckpt, top1 = monitor.best_model_path, monitor.best_model_score
    else:
        ckpt, top1 = last, fit.trainer.callback_metrics.get("val/top1") if choice == "last" else None
    encoder_path = export_audio_encoder(load_audio_encoder(ckpt), models_dir / "audio_encoder.pt")
    wandb.finish()  # close the training run, so the edits get a W&B run of their own
    return encoder_path, ckpt, None if top1 is None else float(top1)


def comparison_grid(optimised, mapped, path: Path) -> Path:
    """Rows: sources; columns: the source, then per sound its optimisation and its mapper edit (demo's PNGs)."""
    def png(module, rec) -> torch.Tensor:
        return torch.from_numpy(np.array(Image.open(module.run_dir / rec["file"]).convert("RGB"))).permute(2, 0, 1)

    by_pair = {(r["source"], r["sound"]): r for r in mapped.pair_metrics}
    labels = list(dict.fromkeys(r["sound"] for r in optimised.pair_metrics))
    sources = list(dict.fromkeys(r["source"] for r in optimised.pair_metrics))
    opt = {(r["source"], r["sound"]): r for r in optimised.pair_metrics}
    rows = []
    for src in sources:
        first = opt[(src, labels[0])]
        source_png = optimised.run_dir / "sources" / f"{slug(src)}.png"
        row = [torch.from_numpy(np.array(Image.open(source_png).convert("RGB"))).permute(2, 0, 1)
               if source_png.is_file() else png(optimised, first)]
        for label in labels:
            row += [png(optimised, opt[(src, label)]), png(mapped, by_pair[(src, label)])]
        rows.append(row)
    titles = ["source"] + [f"{label} {kind}" for label in labels for kind in ("optimise", "mapper")]
    cell = optimised.hparams.grid_cell
    grid = make_grid(rows, titles, sources, cell)
    path = unused_path(path)
    Image.fromarray(grid).save(path)
    return path


def write_story_track(segments: list, seed: int, path: Path, sample_rate: int = 16000) -> Path:
    """A procedural "story": one fresh clip per (label, seconds) segment, back to back."""
    waves = [synthesize(label, seed + k, sample_rate=sample_rate, seconds=float(sec))
             for k, (label, sec) in enumerate(segments)]
    sf.write(path, np.concatenate(waves), sample_rate)
    return path


def render_story(sc: dict, run: Path, models: dict) -> dict:
    """The story video: experiments.animate on the story track with the demo's encoder and the configured mapper."""
    track = write_story_track(sc["segments"], sc["seed"], run / "story.wav")
    base_models, settings = animate.load_config(sc["config"])
    result = animate.animate(str(track), sc["source"], run / "story", {**base_models, **models},
                             animate.AnimationSettings(**{**settings, **(sc.get("settings") or {})}), progress=False)
    return {**result, "track": track}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=str(DEFAULT_CONFIG))
    parser.add_argument("--out", help="parent of the new run directory (default: the config's `out`)")
    add_debug_flag(parser)
    args = parser.parse_args(argv)
    cfg = load_config(args.config)
    times: dict[str, float] = {}
    start = time.perf_counter()

    run = new_run_dir(args.out or cfg["out"], "demo")
    (run / "models").mkdir()
    print(f"demo: run directory {run}")

    t = time.perf_counter()
    ss = cfg["sound_set"]
    soundzoo = write_sound_set(run / "soundzoo", ss["clips_per_class"], seed=ss["seed"], seconds=ss["seconds"])
    clip_path, generator_path = prepare_models(cfg, run / "models")
    times["sound set + models"] = time.perf_counter() - t

    t = time.perf_counter()
    audio_dir = run / "audio_clip"
    encoder_path, best, top1 = train_audio_encoder(cfg, clip_path, soundzoo, audio_dir, run / "models")
    times["audio encoder training"] = time.perf_counter() - t

    t = time.perf_counter()
    mc = cfg["manipulation"]
    sounds = write_edit_sounds(mc["sounds"], mc["sound_seed"], ss["seconds"], run / "sounds")
    edit = manipulate.main([
        "predict", "--config", mc["config"], f"--model.generator={generator_path}",
        f"--model.audio_encoder={encoder_path}", f"--model.clip={clip_path}", f"--model.output_dir={run}",
        f"--data.sources={json.dumps(mc['sources'])}", f"--data.sounds={json.dumps(sounds)}",
        f"--trainer.logger.init_args.save_dir={run}", *mc.get("overrides", []),
    ])
    times["edits"] = time.perf_counter() - t
    toyworld = None
    if cfg.get("judge"):  # the learned toy world: detectors and the Fréchet distance judge the edits
        t = time.perf_counter()
        toyworld = judge_toyworld(edit.model.run_dir, clip_path, generator_path, cfg["judge"])
        times["toy-world judgement"] = time.perf_counter() - t
    wandb.finish()

    extra: dict[str, str] = {}
    if cfg.get("mapper"):  # the same pairs in one forward pass of a trained mapper, beside the optimisation
        t = time.perf_counter()
        mapped = manipulate.main([
            "predict", "--config", mc["config"], f"--model.generator={generator_path}",
            f"--model.audio_encoder={encoder_path}", f"--model.clip={clip_path}", f"--model.output_dir={run}",
            f"--data.sources={json.dumps(mc['sources'])}", f"--data.sounds={json.dumps(sounds)}",
            f"--trainer.logger.init_args.save_dir={run}", *mc.get("overrides", []),
            "--model.run_name=mapper", "--model.mode=mapper", f"--model.mapper={cfg['mapper']['file']}",
            "--model.gif_every=0", *cfg["mapper"].get("overrides", []),
        ])
        wandb.finish()
        times["mapper edits"] = time.perf_counter() - t
        extra["mapper_edit_dir"] = str(mapped.model.run_dir)
        extra["comparison_grid"] = str(comparison_grid(edit.model, mapped.model, run / "grid_optimise_vs_mapper.png"))
    if cfg.get("story"):
        t = time.perf_counter()
        story = render_story(cfg["story"], run, {"generator": generator_path, "clip": clip_path,
                                                 "audio_encoder": str(encoder_path), "mapper": cfg["mapper"]["file"]})
        times["story video"] = time.perf_counter() - t
        extra.update(story_video=str(story["video"]), story_contact_sheet=str(story["contact_sheet"]),
                     story_metrics=str(story["metrics"]), story_track=str(story["track"]))
    times["total"] = time.perf_counter() - start

    module = edit.model
    print("\n=== demo outputs ===")
    print(f"grid:            {module.grid_path}")
    print(f"edits, metrics:  {module.run_dir} (edits/, gifs/, latents/, metrics.json)")
    print(f"audio encoder:   {encoder_path} (from {best}; val zero-shot top-1 "
          f"{float(top1) if top1 is not None else float('nan'):.3f})")
    if "comparison_grid" in extra:
        print(f"mapper column:   {extra['comparison_grid']} (optimise | mapper per sound; edits in "
              f"{extra['mapper_edit_dir']})")
    if "story_video" in extra:
        print(f"story video:     {extra['story_video']} (contact sheet {extra['story_contact_sheet']})")
    print(f"W&B (offline):   {run / 'wandb'} and {audio_dir / 'wandb'}  (`wandb sync <dir>/offline-run-*`)")
    print("\nCLIP cosine between the edited painting and the sound's embedding, before -> after:")
    for p in module.pair_metrics:
        print(f"  {p['source']:>8} x {p['sound']:<15} {p['clip_cos_before']:+.4f} -> {p['clip_cos_after']:+.4f}")
    s = module.summary
    print(f"  mean: {s['clip_cos_before_mean']:+.4f} -> {s['clip_cos_after_mean']:+.4f}")
    if toyworld is not None:
        fd = toyworld["frechet"]
        print(f"\nper sound (toy world; detector_rose_share = share of pairs whose sound's detector rose):\n"
              f"{toyworld['table_text']}")
        print(f"Fréchet distance to {fd['n_real']} real paintings: edited set {fd['fd_edited']:.4f}, "
              f"sources {fd['fd_sources']:.4f}")
    print("\ntimes: " + ", ".join(f"{k} {v:.1f} s" for k, v in times.items()))
    (run / "demo_summary.json").write_text(json.dumps(
        {"grid": str(module.grid_path), "edit_dir": str(module.run_dir), "audio_encoder": str(encoder_path),
         "audio_checkpoint": str(best), "val_top1": None if top1 is None else float(top1),
         "summary": s, "per_sound": module.per_sound, "pairs": module.pair_metrics, "seconds": times,
         "toyworld": None if toyworld is None else {k: toyworld[k] for k in ("table", "frechet")}, **extra},
        indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main, "python -m experiments.demo"))
