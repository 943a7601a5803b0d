"""Judge a manipulation run in the toy world: did a fire sound make the painting look like fire?

    python -m experiments.toyworld.judge RUN_DIR [--generator G.pt] [--clip toy_clip.pt]

Reads the edited W+ codes a run saved (RUN_DIR/latents/*.pt, with their source codes), re-synthesises source and
edit with the generator, and reports per sound
  - the hand-written detector score of the sound's attribute before/after (independent of the toy CLIP), the share
    of sources where it rose at all and where it rose by a visible margin (1 % of the detector's decision
    threshold), and the mean rise the *other* sounds' edits gave that detector;
  - the toy CLIP's probability of the sound's class (softmax over the seven class prompts) before/after and the
    share of sources where it rose.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from experiments.toyworld.build import CLIP_FILE, GENERATOR_FILE, WEIGHTS_DIR
from experiments.toyworld.detectors import THRESHOLDS, detector_scores
from experiments.toyworld.paintings import ATTRIBUTES, PROMPT_TEMPLATE
from lightning_modules.clip_wrapper import CLIPWrapper
from lightning_modules.networks.checkpoints import load_generator
from lightning_modules.networks.stylegan2 import Generator
from lightning_modules.zero_shot import class_prompts

VISIBLE_RISE = 0.01  # a rise counts as visible above this fraction of the detector's decision threshold


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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", type=Path, help="a manipulation run directory (with latents/)")
    p.add_argument("--generator", default=str(WEIGHTS_DIR / GENERATOR_FILE))
    p.add_argument("--clip", default=str(WEIGHTS_DIR / CLIP_FILE))
    args = p.parse_args(argv)
    result = judge(load_edits(args.run_dir), load_generator(args.generator), CLIPWrapper(args.clip))
    print(f"{'sound':15s} {'detector before -> after':>26s} {'rose':>6s} {'>1%thr':>6s} {'others':>8s} "
          f"{'P(class) before -> after':>26s} {'rose':>6s}")
    for label, r in result.items():
        detector = (f"{r['detector_before']:>12.3f} -> {r['detector_after']:<10.3f} {r['detector_rose_share']:>6.0%} "
                    f"{r['detector_rose_visibly_share']:>6.0%}")
        prob = f"{r['clip_prob_before']:>12.3f} -> {r['clip_prob_after']:<10.3f} {r['clip_prob_rose_share']:>6.0%}"
        print(f"{label:15s} {detector} {r['detector_rise_other_sounds']:>+8.3f} {prob}")
    (args.run_dir / "toyworld_judgement.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.run_dir / 'toyworld_judgement.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
