"""The sound mapper against Eq. 2's optimisation in the toy world: edit quality by detectors, preservation, and time
per edit (one CPU thread), in the same run on the same sources and sounds.

    python benchmarks/bench_mapper.py [--audio-encoder ENC] [--mapper experiments/toyworld/weights/toy_mapper.pt ...]

Sources: the demo's 16 paintings (seeds 0-15, psi 0.7; the mapper trains on other z draws). Sounds: fresh clips of
the seven paper sounds (the demo's seeds 10000+k, 2 s, through the shared window reader), embedded by ENC — the
encoder the mapper was trained with (`toy_mapper.json` names it; default the toy world's committed encoder).
Optimisation: `optimise` with the demo's settings (100 steps, lr 0.1, lambda_sim 0.003) at its best batch (28
pairs, as the demo runs it). Mapper: `SoundMapper.edit` + synthesis, all 112 pairs in one batch. Quality: the toy
world's hand-written detectors and the toy CLIP's class probability (`experiments.toyworld.judge.judge`), pixel L2
between source and edit (RMS over pixels in [-1, 1]). Times: median of repeats, wall from embeddings to final images,
scoring excluded. Several --mapper files (e.g. FiLM vs concatenation) are judged side by side. `--real`: the sounds
are the real development recordings of the toy world's encoder (experiments/toyworld/realsounds.csv, split
`validation`: 22 files of five classes, fetched by `python -m experiments.toyworld.realsounds fetch`), each embedded
as the mean of its windows, every source x every recording.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from datamodules.latent_sources import parse_sources, source_wplus
from datamodules.soundzoo import synthesize
from experiments.toyworld.judge import judge, load_edits
from experiments.toyworld.paintings import ATTRIBUTES
from lightning_modules.audio_export import load_audio_encoder
from lightning_modules.clip_wrapper import CLIPWrapper
from lightning_modules.manipulation import optimise
from lightning_modules.networks.checkpoints import load_generator
from lightning_modules.networks.mapper import load_mapper
from lightning_modules.sound_embedding import embed_sound

WEIGHTS = Path(__file__).parents[1] / "experiments" / "toyworld" / "weights"
DETECTED = ("fire crackling", "rain", "thunderstorm")  # the attributes whose detectors the bar uses


@torch.no_grad()
def sound_embeddings(encoder_path: str, seed: int = 10_000, seconds: float = 2.0) -> tuple[torch.Tensor, list[str]]:
    """(7, E) embeddings of fresh clips of the seven sounds (the demo's edit clips), and their labels."""
    encoder = load_audio_encoder(encoder_path).eval()
    with tempfile.TemporaryDirectory() as tmp:
        embs = []
        for k, label in enumerate(ATTRIBUTES):
            path = Path(tmp) / f"{k}.wav"
            sf.write(path, synthesize(label, seed + k, seconds=seconds), 16000)
            embs.append(embed_sound(encoder, path)[0])
    return torch.stack(embs), list(ATTRIBUTES)


@torch.no_grad()
def real_sound_embeddings(encoder_path: str) -> tuple[torch.Tensor, list[str]]:
    """(N, E) embeddings of the real development recordings (mean of windows) and their labels."""
    from experiments.toyworld import realsounds

    encoder = load_audio_encoder(encoder_path).eval()
    entries = [e for e in realsounds.read_manifest() if e.split == "validation"]
    missing = realsounds.missing(entries)
    if missing:
        raise SystemExit(f"bench_mapper --real: {len(missing)} development recordings are not in "
                         f"{realsounds.cache_dir()}; run `python -m experiments.toyworld.realsounds fetch`")
    return (torch.stack([embed_sound(encoder, realsounds.local_path(e))[0] for e in entries]),
            [e.label for e in entries])


def median_time(fn, repeats: int) -> tuple[float, float]:
    """Median wall and process-CPU seconds of `repeats` calls."""
    walls, cpus = [], []
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - t)
        cpus.append(time.process_time() - c)
    return statistics.median(walls), statistics.median(cpus)


def quality(w_edit: torch.Tensor, w_src: torch.Tensor, sounds: list[str], G, clip_model) -> dict:
    edits = [{"w_plus": a, "w_source": b, "sound": s} for a, b, s in zip(w_edit, w_src, sounds)]
    with torch.no_grad():
        l2 = (G.synthesis(w_edit) - G.synthesis(w_src)).pow(2).flatten(1).mean(1).sqrt()
    return {"judge": judge(edits, G, clip_model), "pixel_l2": l2.mean().item(),
            "w_dist": (w_edit - w_src).flatten(1).norm(dim=1).mean().item()}


def time_animate(encoder: str, mapper: str, seconds: float, repeats: int = 3) -> dict:
    """Frames/s of `python -m experiments.animate` (mapper mode, 256 px, 25 fps, one thread) on a story track."""
    from experiments import animate

    with tempfile.TemporaryDirectory() as tmp:
        labels = ["rain", "thunderstorm", "fire crackling"]
        n = max(1, round(seconds / 4))
        track = Path(tmp) / "track.wav"
        sf.write(track, np.concatenate([synthesize(labels[k % 3], 40_000 + k, seconds=4.0) for k in range(n)]), 16000)
        models, settings = animate.load_config(animate.DEFAULT_CONFIG)
        models.update(audio_encoder=encoder, mapper=mapper)
        inproc, command = [], []
        for r in range(repeats):
            t = time.perf_counter()
            res = animate.animate(str(track), "seed:3", Path(tmp) / f"in{r}", models,
                                  animate.AnimationSettings(**settings), progress=False)
            inproc.append(time.perf_counter() - t)
            t = time.perf_counter()
            subprocess.run([sys.executable, "-m", "experiments.animate", "--sound", str(track), "--source", "seed:3",
                            "--out", str(Path(tmp) / f"cmd{r}"), "--audio-encoder", encoder, "--mapper", mapper],
                           check=True, capture_output=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
            command.append(time.perf_counter() - t)
    frames = res["frames"]
    return {"track_s": 4.0 * n, "frames": frames, "repeats": repeats, "in_process_s": statistics.median(inproc),
            "command_s": statistics.median(command), "fps_in_process": frames / statistics.median(inproc),
            "fps_command": frames / statistics.median(command)}


def quality_of_run(edit_dir: str, G, clip_model) -> dict:
    """`quality` of the saved edits (latents/*.pt) of a manipulation run."""
    edits = load_edits(Path(edit_dir))
    w_edit = torch.stack([x["w_plus"] for x in edits]).float()
    w_src = torch.stack([x["w_source"] for x in edits]).float()
    return quality(w_edit, w_src, [x["sound"] for x in edits], G, clip_model)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--audio-encoder", default=str(WEIGHTS / "toy_audio_encoder.pt"),
                   help="the encoder the mapper was trained with (default: the toy world's)")
    p.add_argument("--mapper", action="append", help="mapper file(s) (default: the committed toy mapper)")
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--lambda-sim", type=float, default=0.003)
    p.add_argument("--opt-batch", type=int, default=28)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--animate-seconds", type=float, default=60.0, help="track length of the animate timing (0: skip)")
    p.add_argument("--demo-run", help="judge the edits of this make-demo run (optimisation + mapper column) instead "
                   "of recomputing them (same pairs, same encoder)")
    p.add_argument("--no-quality", action="store_true", help="time only (--repeats 0: judge only)")
    p.add_argument("--real", action="store_true", help="the real development recordings instead of fresh clips")
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args()
    torch.set_num_threads(1)
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; torch "
          f"{torch.__version__}, 1 intra-op thread")
    G = load_generator(WEIGHTS / "toy_stylegan2.pt").eval().requires_grad_(False)
    clip_model = CLIPWrapper(str(WEIGHTS / "toy_clip.pt"))
    emb, labels = (real_sound_embeddings if args.real else sound_embeddings)(args.audio_encoder)
    classes = list(dict.fromkeys(labels))
    sources = source_wplus(parse_sources(list(range(16))), G, 0.7)
    w_src = sources.repeat_interleave(len(emb), 0)  # (16 x sounds, L, D): source-major, like the demo's pairs
    e = emb.repeat(len(sources), 1)
    sounds = labels * len(sources)
    print(f"{len(w_src)} pairs: 16 sources x {len(emb)} {'real recordings' if args.real else 'fresh clips'} "
          f"({', '.join(f'{c} {labels.count(c)}' for c in classes)})")
    results = {"n_pairs": len(w_src), "load_average": os.getloadavg()[0]}

    if args.demo_run:  # quality from a finished `make demo` run: its optimisation and mapper edits of these pairs
        summary = json.loads((Path(args.demo_run) / "demo_summary.json").read_text())
        edits = {"optimise": summary["edit_dir"], "mapper": summary["mapper_edit_dir"]}
    batch = lambda: optimise(G, clip_model, w_src[:args.opt_batch], e[:args.opt_batch], args.lambda_sim,
                             steps=args.steps, lr=0.1)
    wall, cpu = median_time(batch, args.repeats) if args.repeats else (math.nan, math.nan)
    results["optimise"] = {"seconds_per_edit": wall / args.opt_batch, "cpu_seconds_per_edit": cpu / args.opt_batch}
    if args.no_quality:
        pass
    elif args.demo_run:
        results["optimise"].update(quality_of_run(edits["optimise"], G, clip_model))
    else:
        w_opt = torch.cat([optimise(G, clip_model, w_src[i:i + args.opt_batch], e[i:i + args.opt_batch],
                                    args.lambda_sim, steps=args.steps, lr=0.1).w
                           for i in range(0, len(w_src), args.opt_batch)])
        results["optimise"].update(quality(w_opt, w_src, sounds, G, clip_model))

    paths = args.mapper or [str(WEIGHTS / "toy_mapper.pt")]
    repeated = len({Path(p).name for p in paths}) < len(paths)  # same file names: tell them apart by folder
    for path in paths:
        mapper = load_mapper(path)

        def run(mapper=mapper):
            with torch.no_grad():
                return G.synthesis(mapper.edit(w_src, e))

        run()  # warm-up
        wall, cpu = median_time(run, max(args.repeats, 5)) if args.repeats else (math.nan, math.nan)
        shown = f"{Path(path).parent.name}/{Path(path).name}" if repeated else Path(path).name
        name = f"mapper {mapper.config['conditioning']} ({shown})"
        results[name] = {"seconds_per_edit": wall / len(w_src), "cpu_seconds_per_edit": cpu / len(w_src)}
        results[name]["speedup_vs_optimise"] = results["optimise"]["seconds_per_edit"] / results[name][
            "seconds_per_edit"]
        results[name]["cpu_speedup_vs_optimise"] = results["optimise"]["cpu_seconds_per_edit"] / results[name][
            "cpu_seconds_per_edit"]
        if args.no_quality:
            continue
        if args.demo_run and path == paths[0]:
            results[name].update(quality_of_run(edits["mapper"], G, clip_model))
        else:
            with torch.no_grad():
                w_map = mapper.edit(w_src, e)
            results[name].update(quality(w_map, w_src, sounds, G, clip_model))

    print("\n| method | s per edit | " + " | ".join(f"{a.split()[0]} det. rose" for a in DETECTED)
          + f" | P(class) rose (mean of {len(classes)}) | pixel L2 | ‖Δw‖ |")
    print("|---|---|" + "---|" * (len(DETECTED) + 3))
    for name, r in results.items():
        if not isinstance(r, dict) or "judge" not in r:
            continue
        j = r["judge"]
        rose = " | ".join(f"{j[a]['detector_rose_share']:.0%}" for a in DETECTED)
        prob = statistics.mean(j[a]["clip_prob_rose_share"] for a in classes)
        print(f"| {name} | {r['seconds_per_edit'] * 1e3:.2f} ms ({r['cpu_seconds_per_edit'] * 1e3:.2f} ms CPU) | "
              f"{rose} | {prob:.0%} | {r['pixel_l2']:.4f} | {r['w_dist']:.2f} |")
    for name, r in results.items():
        if isinstance(r, dict) and name != "optimise":
            print(f"{name}: {r['speedup_vs_optimise']:.0f}x less wall time ({r['cpu_speedup_vs_optimise']:.0f}x less "
                  f"CPU time) per edit than optimise")
    judged = {n: r["judge"] for n, r in results.items() if isinstance(r, dict) and "judge" in r}
    if judged:
        short = {n: n.split(" (")[0] for n in judged}
        if len(set(short.values())) < len(short):  # two mappers of one conditioning: keep their file names
            short = {n: n for n in judged}
        print("\nper sound (detector rose / P(class) rose): " + "; ".join(
            f"{a}: " + ", ".join(f"{short[n]} {j[a]['detector_rose_share']:.0%}/"
                                 f"{j[a]['clip_prob_rose_share']:.0%}" for n, j in judged.items())
            for a in classes))
    if args.animate_seconds > 0:
        results["animate"] = time_animate(args.audio_encoder, paths[0],
                                          args.animate_seconds)
        a = results["animate"]
        print(f"\nanimate, mapper mode, {a['track_s']:.0f} s track, 256 px, 25 fps, one thread: {a['frames']} frames; "
              f"in-process (files in -> MP4 + JSON closed) {a['in_process_s']:.2f} s = {a['fps_in_process']:.1f} "
              f"frames/s; whole command incl. interpreter start and imports {a['command_s']:.2f} s = "
              f"{a['fps_command']:.1f} frames/s (median of {a['repeats']})")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
