"""Judge a manipulation run in the toy world: did a fire sound make the painting look like fire?

    python -m experiments.toyworld.judge RUN_DIR [--generator G.pt] [--clip toy_clip.pt]

Reads the edited W+ codes a run saved (RUN_DIR/latents/*.pt, with their source codes), re-synthesises source and
edit with the generator, and reports per sound
  - the hand-written detector score of the sound's attribute before/after (independent of the toy CLIP), the share
    of sources where it rose at all and where it rose by a visible margin (1 % of the detector's decision
    threshold), and the mean rise the *other* sounds' edits gave that detector;
  - the toy CLIP's probability of the sound's class (softmax over the seven class prompts) before/after and the
    share of sources where it rose;
and for the whole run the toy world's Fréchet distance (`metrics.frechet_distance`, toy-CLIP image features) of the
edited set and of its sources to real procedural paintings: does editing leave the painting distribution? Next to
the run's own per-sound metrics (metrics.json: CLIP gain, preservation) it prints one per-sound table, written to
RUN_DIR/toyworld_judgement.json and RUN_DIR/toyworld_per_sound.txt.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from experiments.toyworld.build import CLIP_FILE, FD_REAL_SEEDS, GENERATOR_FILE, WEIGHTS_DIR
from experiments.toyworld.detectors import THRESHOLDS, detector_scores
from experiments.toyworld.metrics import frechet_distance, image_features
from experiments.toyworld.paintings import ATTRIBUTES, PROMPT_TEMPLATE, render_dataset
from lightning_modules.clip_wrapper import CLIPWrapper
from lightning_modules.edit_metrics import format_table, per_sound_summary
from lightning_modules.networks.checkpoints import load_generator
from lightning_modules.networks.stylegan2 import Generator
from lightning_modules.zero_shot import class_prompts

VISIBLE_RISE = 0.01  # a rise counts as visible above this fraction of the detector's decision threshold
FD_REAL = 500  # real paintings the Fréchet distance compares with (build.py's sample-quality check uses 2000)


def load_edits(run_dir: Path) -> list[dict]:
    """The saved pairs of a run: {"source", "sound", "w_plus", "w_source"} per latents/*.pt file."""
    files = sorted((Path(run_dir) / "latents").glob("*.pt"))
    if not files:
        raise FileNotFoundError(f"{run_dir}/latents: no saved W+ codes (run the edits with model.save_latents=true)")
    return [torch.load(f, weights_only=True) for f in files]


@torch.no_grad()
def judge(edits: list[dict], G: Generator, clip_model: CLIPWrapper) -> dict[str, dict]:
    """Per sound (of the seven attributes present in `edits`): detector and toy-CLIP statistics, see module doc."""
    before_img = G.synthesis(torch.stack([e["w_source"] for e in edits]).float())
    after_img = G.synthesis(torch.stack([e["w_plus"] for e in edits]).float())
    before, after = detector_scores(before_img), detector_scores(after_img)
    text = clip_model.encode_text(class_prompts(ATTRIBUTES, PROMPT_TEMPLATE))
    scale = clip_model.model.logit_scale.exp().float()
    p_before = (scale * clip_model.encode_image(before_img) @ text.T).softmax(-1)
    p_after = (scale * clip_model.encode_image(after_img) @ text.T).softmax(-1)
    sounds = [e["sound"] for e in edits]
    out = {}
    for label in dict.fromkeys(sounds):
        if label not in ATTRIBUTES:
            continue
        k = ATTRIBUTES.index(label)
        mine = torch.tensor([s == label for s in sounds])
        rise = after[:, k] - before[:, k]
        margin = VISIBLE_RISE * THRESHOLDS[label]
        out[label] = {
            "n_sources": int(mine.sum()),
            "detector_before": round(before[mine, k].mean().item(), 4),
            "detector_after": round(after[mine, k].mean().item(), 4),
            "detector_rose_share": round((rise[mine] > 0).float().mean().item(), 3),
            "detector_rose_visibly_share": round((rise[mine] > margin).float().mean().item(), 3),
            "detector_rise": round(rise[mine].mean().item(), 4),
            "detector_rise_other_sounds": round(rise[~mine].mean().item(), 4) if (~mine).any() else None,
            "clip_prob_before": round(p_before[mine, k].mean().item(), 4),
            "clip_prob_after": round(p_after[mine, k].mean().item(), 4),
            "clip_prob_rose_share": round((p_after[mine, k] > p_before[mine, k]).float().mean().item(), 3),
        }
    return out


@torch.no_grad()
def edited_set_frechet(edits: list[dict], G: Generator, clip_model: CLIPWrapper, n_real: int = FD_REAL) -> dict:
    """Fréchet distance of the edited images and of their (distinct) sources to `n_real` real paintings (seeds
    from build.FD_REAL_SEEDS), in the toy CLIP's image-feature space."""
    real = image_features(clip_model, torch.from_numpy(render_dataset(range(FD_REAL_SEEDS[0],
                                                                            FD_REAL_SEEDS[0] + n_real))[0]))
    edited = image_features(clip_model, G.synthesis(torch.stack([e["w_plus"] for e in edits]).float()))
    sources = list({e["source"]: e["w_source"] for e in edits}.values())
    source_feats = image_features(clip_model, G.synthesis(torch.stack(sources).float()))
    return {"fd_edited": round(frechet_distance(edited, real), 4), "n_edited": len(edits),
            "fd_sources": round(frechet_distance(source_feats, real), 4), "n_sources": len(sources), "n_real": n_real}


TABLE_COLUMNS = ("clip_gain", "detector_rose_share", "detector_rise", "clip_prob_rose_share")


def per_sound_table(judgement: dict[str, dict], run_metrics: dict | None = None) -> tuple[list[dict], str]:
    """Rows per sound joining the run's metrics.json per-sound means (CLIP gain, preservation) with the detector
    agreement (share of pairs whose sound's detector rose) and the toy-CLIP class-probability rise."""
    run_rows = {r["sound"]: r for r in (run_metrics or {}).get("per_sound", [])}
    preservation = (run_metrics or {}).get("summary", {}).get("preservation", {}).get("metric")
    columns = [*TABLE_COLUMNS[:1], *([preservation] if preservation else []), "w_dist", *TABLE_COLUMNS[1:]]
    rows = []
    for label, r in judgement.items():
        row = {"sound": label, "pairs": r["n_sources"], **{k: v for k, v in r.items() if k in columns}}
        row.update({k: v for k, v in run_rows.get(label, {}).items() if k in columns})
        rows.append(row)
    return rows, format_table(rows, columns)


def judge_run(run_dir: Path, G: Generator, clip_model: CLIPWrapper, n_real: int = FD_REAL,
              sources: list[str] | None = None, write: bool = True) -> dict:
    """Judge a run directory: per-sound detector/toy-CLIP statistics, the joint per-sound table and the Fréchet
    distances; writes toyworld_judgement.json and toyworld_per_sound.txt into it (with `write`) and returns them.
    `sources` restricts the judgement (and the run's per-sound means) to the pairs of these source names."""
    edits = load_edits(run_dir)
    metrics_file = Path(run_dir) / "metrics.json"
    run_metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else None
    if sources is not None:
        edits = [e for e in edits if e["source"] in sources]
        if run_metrics is not None:
            pairs = [p for p in run_metrics["pairs"] if p["source"] in sources]
            columns = {k for r in run_metrics["per_sound"] for k in r} - {"sound", "pairs"}
            run_metrics = {**run_metrics, "per_sound": per_sound_summary(pairs, sorted(columns))}
    per_sound = judge(edits, G, clip_model)
    rows, table = per_sound_table(per_sound, run_metrics)
    out = {"per_sound": per_sound, "table": rows, "frechet": edited_set_frechet(edits, G, clip_model, n_real)}
    if write:
        (Path(run_dir) / "toyworld_judgement.json").write_text(json.dumps(out, indent=2) + "\n")
        (Path(run_dir) / "toyworld_per_sound.txt").write_text(table + "\n")
    out["table_text"] = table
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", type=Path, help="a manipulation run directory (with latents/)")
    p.add_argument("--generator", default=str(WEIGHTS_DIR / GENERATOR_FILE))
    p.add_argument("--clip", default=str(WEIGHTS_DIR / CLIP_FILE))
    p.add_argument("--n-real", type=int, default=FD_REAL, help="real paintings for the Fréchet distance")
    args = p.parse_args(argv)
    full = judge_run(args.run_dir, load_generator(args.generator), CLIPWrapper(args.clip), args.n_real)
    result = full["per_sound"]
    print(f"{'sound':15s} {'detector before -> after':>26s} {'rose':>6s} {'>1%thr':>6s} {'others':>8s} "
          f"{'P(class) before -> after':>26s} {'rose':>6s}")
    for label, r in result.items():
        detector = (f"{r['detector_before']:>12.3f} -> {r['detector_after']:<10.3f} {r['detector_rose_share']:>6.0%} "
                    f"{r['detector_rose_visibly_share']:>6.0%}")
        prob = f"{r['clip_prob_before']:>12.3f} -> {r['clip_prob_after']:<10.3f} {r['clip_prob_rose_share']:>6.0%}"
        print(f"{label:15s} {detector} {r['detector_rise_other_sounds']:>+8.3f} {prob}")
    print(f"\n{full['table_text']}")
    fd = full["frechet"]
    print(f"\nFréchet distance to {fd['n_real']} real paintings (toy-CLIP features): edited set ({fd['n_edited']}) "
          f"{fd['fd_edited']:.4f}, its sources ({fd['n_sources']}) {fd['fd_sources']:.4f}")
    print(f"wrote {args.run_dir / 'toyworld_judgement.json'} and {args.run_dir / 'toyworld_per_sound.txt'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
