"""Adaptive layer masking against the plain Eq. 2 term, in the learned toy world, judged by the detectors.

    python -m experiments.toyworld.masking RUN_DIR [--config experiments/toyworld/demo.yaml]

RUN_DIR is a `make demo` run (toy-world config): its trained audio encoder, edit sounds and plain edits are reused.
The same edit job runs again with `model.adaptive_layer_masking=true` into RUN_DIR (on the first `--sources` of
the config's sources; the plain run is judged on the same ones), both runs are judged
(`experiments.toyworld.judge.judge_run`) and a per-sound table puts them side by side: detector agreement,
CLIP gain, preservation and W+ distance, plus both edited sets' Fréchet distance. Written to
RUN_DIR/masking_comparison.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import wandb

from experiments import manipulate
from experiments.demo import load_config
from experiments.toyworld.build import CLIP_FILE, GENERATOR_FILE, WEIGHTS_DIR
from experiments.toyworld.judge import judge_run, load_edits
from lightning_modules.clip_wrapper import CLIPWrapper
from lightning_modules.networks.checkpoints import load_generator

DEFAULT_CONFIG = Path(__file__).with_name("demo.yaml")
COLUMNS = ("detector_rose_share", "clip_gain", "w_dist")


def masked_edits(run: Path, cfg: dict, sources: list) -> Path:
    """Run the demo's edit job again with adaptive layer masking on; returns its run directory."""
    summary = json.loads((run / "demo_summary.json").read_text())
    job = json.loads((Path(summary["edit_dir"]) / "job.json").read_text())
    sounds = {s["label"]: s["file"] for s in job["sounds"]}
    mc = cfg["manipulation"]
    cli = manipulate.main([
        "predict", "--config", mc["config"], f"--model.generator={job['hparams']['generator']}",
        f"--model.audio_encoder={summary['audio_encoder']}", f"--model.clip={job['hparams']['clip']}",
        f"--model.output_dir={run}", "--model.run_name=masking", "--model.adaptive_layer_masking=true",
        f"--data.sources={json.dumps(sources)}", f"--data.sounds={json.dumps(sounds)}",
        "--trainer.logger=false", *mc.get("overrides", []),
    ])
    wandb.finish()
    return cli.model.run_dir


def compare(plain: dict, masked: dict) -> tuple[list[dict], str]:
    """Side-by-side per-sound rows (plain / masked) of the judged runs."""
    preservation = next((k for k in plain["table"][0] if k.startswith(("lpips", "clip_image"))), None)
    cols = [*COLUMNS[:2], *([preservation] if preservation else []), *COLUMNS[2:]]
    masked_rows = {r["sound"]: r for r in masked["table"]}
    rows = [{"sound": r["sound"], **{f"{c}/{tag}": src.get(c) for c in cols
                                     for tag, src in (("plain", r), ("masked", masked_rows[r["sound"]]))}}
            for r in plain["table"]]
    head = f"{'sound':<15}" + "".join(f" {c[:22]:>22}" for c in cols)
    lines = [head, f"{'':<15}" + " ".join(f"{'plain -> masked':>22}" for _ in cols)]
    for r in rows:
        lines.append(f"{r['sound']:<15}" + "".join(
            f" {r[c + '/plain']:>10.4f} -> {r[c + '/masked']:<8.4f}" if r[c + "/plain"] is not None else f" {'-':>22}"
            for c in cols))
    fp, fm = plain["frechet"], masked["frechet"]
    lines.append(f"Fréchet distance of the edited set: {fp['fd_edited']:.4f} -> {fm['fd_edited']:.4f} "
                 f"(sources {fp['fd_sources']:.4f})")
    return rows, "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", type=Path, help="a `make demo` run directory of the toy-world config")
    p.add_argument("--config", default=str(DEFAULT_CONFIG))
    p.add_argument("--sources", type=int, default=None, help="only the first N of the config's sources")
    args = p.parse_args(argv)
    cfg = load_config(args.config)
    G, clip_model = load_generator(WEIGHTS_DIR / GENERATOR_FILE), CLIPWrapper(str(WEIGHTS_DIR / CLIP_FILE))
    n_real = int((cfg.get("judge") or {}).get("fd_real", 500))
    sources = cfg["manipulation"]["sources"][: args.sources]
    edit_dir = Path(json.loads((args.run_dir / "demo_summary.json").read_text())["edit_dir"])
    masked_dir = masked_edits(args.run_dir, cfg, sources)
    names = sorted({e["source"] for e in load_edits(masked_dir)})
    plain = judge_run(edit_dir, G, clip_model, n_real, sources=names, write=False)
    masked = judge_run(masked_dir, G, clip_model, n_real)
    rows, table = compare(plain, masked)
    print(table)
    out = args.run_dir / "masking_comparison.json"
    out.write_text(json.dumps({"rows": rows, "frechet": {"plain": plain["frechet"], "masked": masked["frechet"]}},
                              indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
