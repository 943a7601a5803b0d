"""The toy world's committed audio encoder: paper Eq. 1 against the toy CLIP's prompts, on procedural sounds and
real recordings through the seeded recording chain, then scored on what it never trained on.

    python -m experiments.toyworld.train_audio --out experiments/toyworld/weights          # = make toy-audio
    python -m experiments.toyworld.train_audio --out experiments/toyworld/weights --evaluate-only

Training data is a bank precomputed from seeds (per-step synthesis would starve two cores): 2 s windows of the
seven demo classes' procedural clips and of the manifest's *training* recordings (five classes), each passed
through `datamodules.recording_chain.record` with its own seed. The loss is the softmax over cosines to the
seven fixed prompt embeddings "a painting with {label}" (InfoNCE against the class prompts): the encoder still
embeds into CLIP space, with no classifier head. Evaluation: fresh-seed procedural clips (seven classes), the
manifest's validation package (held out by package), kuai-lab's audiosample clips if present (reported only),
and the within-class spread of embeddings. Everything lands in `toy_audio_metrics.json`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from datamodules.audio_io import load_audio
from datamodules.audio_windows import read_windows
from datamodules.recording_chain import record
from datamodules.soundzoo import synthesize
from experiments.cli_errors import run_cli
from experiments.toyworld.listen import listen
from experiments.toyworld.paintings import ATTRIBUTES, PROMPT_TEMPLATE
from experiments.toyworld.realsounds import cache_dir, local_path, missing, read_manifest
from lightning_modules.audio_export import export_audio_encoder, load_audio_encoder
from lightning_modules.clip_wrapper import CLIPWrapper
from lightning_modules.networks.audio_encoder import AudioEncoder
from lightning_modules.sound_embedding import embed_windows

SR, WINDOW_S = 16000, 2.0
TOY_CLIP = "experiments/toyworld/weights/toy_clip.pt"
ENCODER_FILE, METRICS_FILE = "toy_audio_encoder.pt", "toy_audio_metrics.json"
KUAI_LAB = {"fire crackling": "fire.wav", "rain": "raining.wav", "wind": "wind.wav", "explosion": "explosion.wav",
            "thunderstorm": "thunderstorm.wav"}
KUAI_OUT_OF_CLASS = ("drill.wav", "giggling.wav", "sobbing.wav")
CONFIG = dict(
    encoder=dict(embed_dim=64, backbone="resnet18", width=16, norm="batch", sample_rate=SR, clip_seconds=WINDOW_S,
                 n_fft=512, hop_length=160, n_mels=64, top_db=100.0),
    procedural_per_class=300, real_per_clip=40, augment_p=0.6, real=True, augment=True,
    steps=1200, batch_size=48, lr=0.003, weight_decay=0.05, temperature=0.07, seed=0,
    eval_procedural_per_class=20, eval_procedural_seed=950000,
)


def kuai_lab_dir() -> Path:
    """$AIARTIST_KUAI_LAB_DIR, else ~/.cache/aiartist/kuai-lab (the official repository's audiosample/*.wav)."""
    return Path(os.environ.get("AIARTIST_KUAI_LAB_DIR", Path.home() / ".cache" / "aiartist" / "kuai-lab"))


def _crop(x: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    if len(x) >= n:
        start = int(rng.integers(0, len(x) - n + 1))
        return x[start : start + n]
    out = np.zeros(n, np.float32)
    start = int(rng.integers(0, n - len(x) + 1))
    out[start : start + len(x)] = x
    return out


def build_bank(cfg: dict, cache: Path | None, log=print) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, window) float32 waveforms and (N,) label indices into ATTRIBUTES, all from seeds."""
    n, waves, labels = int(SR * WINDOW_S), [], []
    seed = cfg["seed"] * 1_000_003
    for k, label in enumerate(ATTRIBUTES):
        log(f"bank: procedural {label}")
        for i in range(cfg["procedural_per_class"]):
            rng = np.random.default_rng(seed + k * 100_000 + i)
            x = synthesize(label, 2_000_000 + k * 100_000 + i, seconds=float(rng.uniform(2.0, 4.0)))
            x = _crop(x.astype(np.float32), n, rng)
            waves.append(record(x, rng, SR, cfg["augment_p"]) if cfg["augment"] else x)
            labels.append(k)
    if cfg["real"]:
        entries = [e for e in read_manifest() if e.split == "train"]
        for j, e in enumerate(entries):
            full = load_audio(local_path(e, cache), SR).numpy()
            if j % 10 == 0:
                log(f"bank: recordings {j}/{len(entries)}")
            for i in range(cfg["real_per_clip"]):
                rng = np.random.default_rng(seed + 50_000_000 + j * 1000 + i)
                x = _crop(full, n, rng)
                waves.append(record(x, rng, SR, cfg["augment_p"]) if cfg["augment"] and i else x)
                labels.append(ATTRIBUTES.index(e.label))
    log(f"bank: {len(waves)} windows ({np.bincount(labels, minlength=len(ATTRIBUTES)).tolist()} per class)")
    return torch.from_numpy(np.stack(waves)), torch.tensor(labels)


def prompt_embeddings(clip_path: str) -> torch.Tensor:
    return CLIPWrapper(clip_path).encode_text([PROMPT_TEMPLATE.format(label=label) for label in ATTRIBUTES])


def train(cfg: dict, text: torch.Tensor, cache: Path | None, log=print, device: str = "cpu") -> AudioEncoder:
    torch.manual_seed(cfg["seed"])
    waves, labels = build_bank(cfg, cache, log)
    encoder = AudioEncoder(**cfg["encoder"]).to(device)
    text = text.to(device)
    opt = torch.optim.AdamW(encoder.parameters(), lr=cfg["lr"], weight_decay=cfg["weight_decay"])
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg["lr"], total_steps=cfg["steps"], pct_start=0.05)
    gen = torch.Generator().manual_seed(cfg["seed"])
    # class-balanced sampling: the bank holds many more explosions than rain among the recordings
    weights = (1.0 / torch.bincount(labels).float())[labels]
    encoder.train()
    t0 = time.perf_counter()
    for step in range(cfg["steps"]):
        idx = torch.multinomial(weights, cfg["batch_size"], replacement=True, generator=gen)
        emb = encoder(waves[idx].to(device), augment=True, generator=gen)
        loss = F.cross_entropy(emb @ text.T / cfg["temperature"], labels[idx].to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % 50 == 0 or step == cfg["steps"] - 1:
            log(f"step {step}/{cfg['steps']}: loss {loss.item():.3f} ({time.perf_counter() - t0:.0f} s)", flush=True)
    return encoder.cpu().eval()


@torch.no_grad()
def evaluate(encoder: torch.nn.Module, text: torch.Tensor, cfg: dict, cache: Path | None) -> dict:
    """Procedural fresh seeds, the held-out package, kuai-lab (report only), within-class spread."""
    out: dict = {}
    labels = list(ATTRIBUTES)
    # procedural: fresh seeds, 2 s, the seven classes
    waves, truth = [], []
    for k, label in enumerate(labels):
        for i in range(cfg["eval_procedural_per_class"]):
            waves.append(torch.from_numpy(synthesize(label, cfg["eval_procedural_seed"] + 1000 * k + i,
                                                     seconds=WINDOW_S).astype(np.float32)))
            truth.append(k)
    emb = torch.cat([encoder(w, augment=False) for w in torch.stack(waves).split(64)])
    pred = (emb @ text.T).argmax(1)
    truth_t = torch.tensor(truth)
    per = {label: float((pred[truth_t == k] == k).float().mean()) for k, label in enumerate(labels)}
    out["procedural"] = {"per_class_top1": per, "macro_top1": float(np.mean(list(per.values()))),
                         "clips_per_class": cfg["eval_procedural_per_class"], "seed": cfg["eval_procedural_seed"]}
    centroids = F.normalize(torch.stack([emb[truth_t == k].mean(0) for k in range(len(labels))]), dim=-1)
    spread = {label: float((emb[truth_t == k] @ centroids[k]).mean()) for k, label in enumerate(labels)}
    out["procedural"]["within_class_cosine_to_centroid"] = spread
    out["procedural"]["cosine_to_own_prompt"] = {
        label: float((emb[truth_t == k] @ text[k]).mean()) for k, label in enumerate(labels)}
    # the held-out package
    entries = read_manifest()
    if cache is not None and not missing(entries, cache):
        root = cache / "validation"
        report = listen(encoder, text, labels, root)
        out["validation_package"] = {
            "package": sorted({e.package for e in entries if e.split == "validation"}),
            "per_class_top1": report.per_class(), "macro_top1": report.macro(),
            "clips": {Path(c.path).name: {"class": c.folder, "predicted": c.predicted} for c in report.clips}}
        vemb = {c: [] for c in labels}
        for e in entries:
            if e.split == "validation":
                w = read_windows(local_path(e, cache), SR, int(SR * WINDOW_S))
                vemb[e.label].append(embed_windows(encoder, [w])[0])
        out["validation_package"]["within_class_cosine_to_centroid"] = {
            c: float((torch.stack(v) @ F.normalize(torch.stack(v).mean(0), dim=0)).mean())
            for c, v in vemb.items() if len(v) > 1}
    kuai = kuai_lab_dir()
    if all((kuai / f).is_file() for f in list(KUAI_LAB.values()) + list(KUAI_OUT_OF_CLASS)):
        res = {}
        for label, name in list(KUAI_LAB.items()) + [(None, n) for n in KUAI_OUT_OF_CLASS]:
            w = read_windows(kuai / name, SR, int(SR * WINDOW_S))
            cos = embed_windows(encoder, [w])[0] @ text.T
            k = int(cos.argmax())
            res[name] = {"class": label, "predicted": labels[k], "top_cosine": round(float(cos[k]), 4),
                         "window": w.describe()}
        out["kuai_lab_report_only"] = {"clips": res, "top1": float(np.mean(
            [res[n]["predicted"] == c for c, n in KUAI_LAB.items()]))}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments.toyworld.train_audio", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="directory for toy_audio_encoder.pt and toy_audio_metrics.json")
    p.add_argument("--clip", default=TOY_CLIP)
    p.add_argument("--evaluate-only", action="store_true", help="re-measure the encoder already in --out")
    p.add_argument("--overwrite", action="store_true", help="replace an existing encoder file")
    p.add_argument("--no-real", action="store_true", help="ablation: procedural sounds only")
    p.add_argument("--no-augment", action="store_true", help="ablation: no recording-chain augmentation")
    p.add_argument("--steps", type=int, default=CONFIG["steps"])
    p.add_argument("--seed", type=int, default=CONFIG["seed"], help="seeds the bank, the initialisation and sampling")
    p.add_argument("--device", default="cpu", help="cpu or cuda (training only; evaluation runs on the CPU)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1: these small ops do not split well)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    enc_path, metrics_path = out / ENCODER_FILE, out / METRICS_FILE
    cfg = {**CONFIG, "real": not args.no_real, "augment": not args.no_augment, "steps": args.steps, "seed": args.seed}
    cache = cache_dir()
    entries = read_manifest()
    have_cache = not missing(entries, cache)
    text = prompt_embeddings(args.clip)
    if args.evaluate_only:
        if not enc_path.is_file():
            print(f"train_audio: {enc_path} not found", file=sys.stderr)
            return 1
        metrics = evaluate(load_audio_encoder(enc_path), text, cfg, cache if have_cache else None)
        print(json.dumps(metrics, indent=2))
        return 0
    if cfg["real"] and not have_cache:
        print(f"train_audio: the real recordings are not in {cache}; run `python -m experiments.toyworld.realsounds "
              f"fetch` (Debian) or pass --no-real", file=sys.stderr)
        return 1
    if enc_path.exists() and not args.overwrite:
        print(f"train_audio: {enc_path} exists; pass --overwrite to replace it", file=sys.stderr)
        return 1
    t0 = time.perf_counter()
    encoder = train(cfg, text, cache, device=args.device)
    train_s = time.perf_counter() - t0
    metrics = evaluate(encoder, text, cfg, cache if have_cache else None)
    out.mkdir(parents=True, exist_ok=True)
    if enc_path.exists():
        enc_path.unlink()
    export_audio_encoder(encoder, enc_path)
    record_ = {"command": "python -m experiments.toyworld.train_audio " + " ".join(argv or sys.argv[1:]),
               "machine": {"device": args.device, "threads": args.threads, "platform": platform.platform(),
                           "torch": torch.__version__},
               "config": cfg, "manifest": "experiments/toyworld/realsounds.csv", "clip": args.clip,
               "train_seconds": round(train_s, 1), "metrics": metrics}
    metrics_path.write_text(json.dumps(record_, indent=2) + "\n")
    print(json.dumps(metrics, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main, "python -m experiments.toyworld.train_audio", strip_debug=True))
