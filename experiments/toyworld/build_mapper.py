"""Build the toy world's sound mapper (behind `make toy-mapper`):

    python -m experiments.toyworld.build_mapper --out experiments/toyworld/weights --overwrite \
        [--audio-encoder ENC|demo ...] [--recordings DIR|toyworld]

1. writes `make demo`'s embedded sound set (experiments/toyworld/demo.yaml: clips, seconds, seed);
2. takes the audio encoders whose embeddings the mapper learns, pooled: each `--audio-encoder` is a file, or `demo`
   to train the demo's encoder exactly as `make demo` does (same config, overrides and seeds). `make toy-mapper`
   names both the committed toy-world encoder (the page and animate use it) and `demo` (make demo's edits and story
   video use the encoder the demo trains), so one mapper serves both;
3. takes the real recordings whose windows are targets too: `--recordings toyworld` = the training split of
   experiments/toyworld/realsounds.csv (fetched by `python -m experiments.toyworld.realsounds fetch`; the
   validation package stays held out for bench_mapper --real), or any DIR/<class>/<files>;
4. trains the mapper with `experiments.train_mapper fit --config experiments/mapper/toyworld.yaml`;
5. writes `toy_mapper.pt` (the mapper file, provenance in its meta) and `toy_mapper.json` (command, seeds, which
   encoder — file, sha256, how it was made, its validation top-1 —, validation metrics, timings).

Re-run it whenever the toy world's audio encoder changes: the mapper is trained on that encoder's embeddings.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

from datamodules.soundzoo import write_sound_set
from experiments import demo, train_mapper
from experiments.manipulate import own_argv
from experiments.toyworld import realsounds
from experiments.toyworld.build import CLIP_FILE, WEIGHTS_DIR
from lightning_modules.edit_outputs import new_run_dir
from lightning_modules.networks.mapper import load_mapper, save_mapper

MAPPER_FILE, MAPPER_METRICS = "toy_mapper.pt", "toy_mapper.json"
MAPPER_CONFIG = Path(__file__).parents[1] / "mapper" / "toyworld.yaml"


def sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=WEIGHTS_DIR, help="where toy_mapper.pt/.json go")
    p.add_argument("--overwrite", action="store_true", help="replace an existing toy_mapper.pt/.json in --out")
    p.add_argument("--audio-encoder", action="append", default=None,
                   help="exported encoder file, or 'demo': train the demo's encoder as make demo does; repeat to pool "
                        "several encoders' embeddings (default: demo)")
    p.add_argument("--recordings", help="real recordings as extra targets: DIR/<class>/<files>, or 'toyworld' (the "
                   "training split of the toy world's recordings manifest)")
    p.add_argument("--config", default=str(MAPPER_CONFIG), help="mapper training config")
    p.add_argument("--demo-config", default=str(demo.DEFAULT_CONFIG.parent / "toyworld" / "demo.yaml"),
                   help="sound set and audio training of make demo")
    p.add_argument("--work", default="outputs/toy_mapper", help="parent of the build's run directory")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("mapper_args", nargs="*", help="extra train_mapper arguments, e.g. --trainer.max_steps=100")
    args = p.parse_args(argv)
    command = "python -m experiments.toyworld.build_mapper " + " ".join(argv if argv is not None else sys.argv[1:])
    targets = [args.out / MAPPER_FILE, args.out / MAPPER_METRICS]
    existing = [str(t) for t in targets if t.exists()]
    if existing and not args.overwrite:
        p.error(f"would overwrite {', '.join(existing)}; pass --overwrite to replace them")
    torch.set_num_threads(args.threads)
    timings, t0 = {}, time.perf_counter()
    work = new_run_dir(args.work, "build")
    (work / "models").mkdir()
    cfg = demo.load_config(args.demo_config)
    clip_path = cfg["models"]["clip"]
    ss = cfg["sound_set"]
    soundzoo = write_sound_set(work / "soundzoo", ss["clips_per_class"], seed=ss["seed"], seconds=ss["seconds"])
    print(f"build_mapper: work directory {work}", flush=True)

    t = time.perf_counter()
    encoders, encoder_info = [], []
    for name in args.audio_encoder or ["demo"]:
        if name != "demo":
            encoder, info = Path(name), {"made_by": "given (--audio-encoder)"}
        else:
            encoder, ckpt, top1 = demo.train_audio_encoder(cfg, clip_path, soundzoo, work / "audio_clip",
                                                           work / "models")
            info = {"made_by": f"make demo's audio stage ({args.demo_config}: {cfg['audio']['config']} + "
                               f"its overrides), trained in this build", "val_top1": top1, "checkpoint": ckpt}
        encoders.append(str(encoder))
        encoder_info.append({**info, "file": str(encoder), "sha256": sha256(encoder)})
    timings["audio_encoder_s"] = round(time.perf_counter() - t, 1)

    recordings, recording_info = [], None
    if args.recordings == "toyworld":
        entries = [e for e in realsounds.read_manifest() if e.split == "train"]
        try:
            recordings = [f"--model.recordings={realsounds.layout(entries)['train']}"]
        except realsounds.RealSoundsError as err:
            p.error(str(err))
        recording_info = {"manifest": "experiments/toyworld/realsounds.csv", "split": "train", "files": len(entries)}
    elif args.recordings:
        recordings = [f"--model.recordings={args.recordings}"]
        recording_info = {"folder": args.recordings}

    t = time.perf_counter()
    with own_argv():
        fit = train_mapper.main(["fit", "--config", args.config, f"--model.audio_encoder={json.dumps(encoders)}",
                                 f"--model.sound_set={soundzoo}", f"--trainer.default_root_dir={work / 'mapper'}",
                                 *recordings, *args.mapper_args])
    timings["mapper_training_s"] = round(time.perf_counter() - t, 1)
    timings["total_s"] = round(time.perf_counter() - t0, 1)
    module = fit.model
    trained = load_mapper(module.exported_path)
    meta = {**trained.meta, "audio_encoder": encoder_info, "build_command": command}
    args.out.mkdir(parents=True, exist_ok=True)
    save_mapper(trained, args.out / MAPPER_FILE, meta=meta, overwrite=True)
    metrics = {
        "command": command,
        "machine": {"threads": args.threads, "platform": platform.platform(), "torch": torch.__version__,
                    "malloc_env": {k: v for k, v in os.environ.items() if k.startswith("MALLOC_")}},
        "seeds": {"sound_set": ss["seed"], "training_pairs": "seed_everything 0; pair seeds >= 10^6",
                  "validation_sources": list(module.hparams.val_sources)},
        "clip": clip_path if Path(clip_path).name != CLIP_FILE else f"experiments/toyworld/weights/{CLIP_FILE}",
        "audio_encoder": encoder_info,
        "recordings": recording_info,
        "mapper_config": trained.config,
        "training": {k: v for k, v in trained.meta.items() if k not in ("audio_encoder", "build_command")},
        "timings": timings,
    }
    (args.out / MAPPER_METRICS).write_text(json.dumps(metrics, indent=2, default=str) + "\n")
    print(f"wrote {args.out / MAPPER_FILE} and {args.out / MAPPER_METRICS} in {timings['total_s']} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
