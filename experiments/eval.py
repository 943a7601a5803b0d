"""Evaluate a trained audio encoder: zero-shot classification and a linear probe, per official fold.

    python -m experiments.eval outputs/audio_clip/vggsound/checkpoints/best.ckpt \\
        --vggsound_root data/vggsound --esc50_root data/ESC-50-master --urbansound8k_root data/UrbanSound8K

- VGGSound test split: zero-shot top-1/top-5 against the class prompts, and text -> audio retrieval (each class
  prompt a query over the clips; mAP and R@1/5/10, as in validation: `lightning_modules.zero_shot_metrics`).
- ESC-50 (5 folds) and UrbanSound8K (10 folds) in their released layouts: the same zero-shot scores per fold
  and a leave-one-fold-out linear probe (logistic regression on the frozen embeddings; top-1/top-5), per fold
  and mean.
Zero-shot is reported for each prompt template (default: "This is a sound of {label}." and the bare
label). Clips are centre-cropped or zero-padded to the encoder's clip length. Results are printed as a
table, written as JSON (never over an existing file unless --overwrite) and, with --wandb_project,
logged to W&B (offline with WANDB_MODE=offline). `--checkpoint` takes a training checkpoint (.ckpt), an
exported encoder file, or the official code's `resnet18_57.pth` (`make weights WEIGHTS=official-resnet18-57`),
whose ESC-50/UrbanSound8K clips get its exact preprocessing.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import torch
from jsonargparse import CLI
from torch.utils.data import DataLoader
from tqdm import tqdm

from datamodules.fold_sets import FoldClipDataset, FoldSet, read_esc50, read_urbansound8k
from datamodules.official_frontend import KAISER_BEST
from datamodules.output_root import default_output_dir
from datamodules.torch_files import load_torch_file
from datamodules.vggsound import VGGSoundDataModule
from experiments.cli_errors import run_cli
from lightning_modules.audio_export import load_audio_encoder
from lightning_modules.clip_wrapper import CLIPWrapper
from lightning_modules.linear_probe import leave_one_fold_out
from lightning_modules.networks.audio_encoder import AudioEncoder
from lightning_modules.networks.official_audio_encoder import OfficialAudioEncoder
from lightning_modules.zero_shot import BARE_LABEL, DEFAULT_TEMPLATE, class_prompt_embeddings
from lightning_modules.zero_shot_metrics import RECALL_AT, zero_shot_scores

log = logging.getLogger(__name__)

# Zero-shot top-1 (%) reported for related models (docs/reference.md §zero-shot); the official code is the reference.
REFERENCE_TOP1 = {
    "ESC-50": {"official code (CVPR 2022)": 57.8, "Wav2CLIP": 41.4, "AudioCLIP": 69.4},
    "UrbanSound8K": {"official code (CVPR 2022)": 45.7, "Wav2CLIP": 40.4, "AudioCLIP": 68.8},
}


@torch.no_grad()
def embed_folds(encoder: AudioEncoder | OfficialAudioEncoder, fold_set: FoldSet, batch_size: int, num_workers: int,
                device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """Embeddings (N, D), labels, folds of the decodable clips, and the count of undecodable ones."""
    # The official encoder's preprocessing works on whole clips (dB reference = the clip's loudest bin, centre
    # crop/pad in frames) resampled like librosa 0.8.1: pad after the clip and pass its length.
    official = isinstance(encoder, OfficialAudioEncoder)
    dataset = FoldClipDataset(fold_set.clips, encoder.sample_rate, encoder.clip_samples, pad_end=official,
                              resample_kwargs=KAISER_BEST if official else None)
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers, shuffle=False)
    embeddings, indices = [], []
    for batch in tqdm(loader, desc=f"embed {fold_set.name}", unit="batch"):
        ok = batch["ok"]
        if ok.any():
            lengths = {"lengths": batch["length"][ok]} if official else {}
            embeddings.append(encoder(batch["waveform"][ok].to(device), **lengths).float().cpu())
            indices.append(batch["index"][ok])
    index = torch.cat(indices)
    labels = torch.tensor([fold_set.clips[i].label for i in index.tolist()])
    folds = torch.tensor([fold_set.clips[i].fold for i in index.tolist()])
    return torch.cat(embeddings), labels, folds, len(dataset) - len(index)


RETRIEVAL_KEYS = ("t2a_map", *(f"t2a_r{k}" for k in RECALL_AT))


def zero_shot(emb: torch.Tensor, labels: torch.Tensor, class_text: torch.Tensor) -> dict[str, float]:
    """Top-1/top-5 and text -> audio retrieval of clip embeddings against the class-prompt embeddings."""
    return zero_shot_scores(emb @ class_text.cpu().T, labels)


def _with_mean(per_fold: dict) -> dict:
    """Per-fold scores and their unweighted mean over folds (the protocol of ESC-50 and UrbanSound8K)."""
    keys = [k for k in next(iter(per_fold.values())) if k != "n"]
    mean = {k: sum(r[k] for r in per_fold.values()) / len(per_fold) for k in keys}
    return {"folds": {str(k): v for k, v in per_fold.items()}, "mean": mean}


def evaluate_fold_set(encoder: AudioEncoder, clip: CLIPWrapper, fold_set: FoldSet, templates: list[str],
                      probe_l2: float, batch_size: int, num_workers: int, device: torch.device) -> dict:
    emb, labels, folds, skipped = embed_folds(encoder, fold_set, batch_size, num_workers, device)
    result: dict = {"num_clips": len(labels), "skipped_undecodable": skipped, "missing_files": len(fold_set.missing),
                    "zero_shot": {}}
    for template in templates:
        class_text = class_prompt_embeddings(clip, fold_set.class_names, [template])
        per_fold = {int(f): zero_shot(emb[folds == f], labels[folds == f], class_text)
                    for f in sorted(folds.unique().tolist())}
        result["zero_shot"][template] = _with_mean(per_fold)
    if len(folds.unique()) > 1:
        result["linear_probe"] = _with_mean(leave_one_fold_out(emb, labels, folds, len(fold_set.class_names),
                                                               probe_l2))
    return result


@torch.no_grad()
def evaluate_vggsound(encoder: AudioEncoder, clip: CLIPWrapper, root: str, csv_path: str | None,
                      templates: list[str], batch_size: int, num_workers: int, device: torch.device) -> dict:
    dm = VGGSoundDataModule(root, csv_path=csv_path, sample_rate=encoder.sample_rate,
                            clip_seconds=encoder.clip_samples / encoder.sample_rate, batch_size=batch_size,
                            num_workers=num_workers)
    dm.setup("test")
    embeddings, labels, bad = [], [], 0
    for batch in tqdm(dm.test_dataloader(), desc="embed VGGSound test", unit="batch"):
        embeddings.append(encoder(batch["waveform"].to(device)).float().cpu())
        labels.append(batch["label"])
        bad += int(batch["bad"].sum())
    emb, lab = torch.cat(embeddings), torch.cat(labels)
    result: dict = {"num_clips": len(lab), "replaced_bad_clips": bad, "missing_files": len(dm.missing),
                    "zero_shot": {}}
    for template in templates:
        class_text = class_prompt_embeddings(clip, dm.class_names, [template])
        result["zero_shot"][template] = _with_mean({"test": zero_shot(emb, lab, class_text)})
    return result


def format_table(results: dict) -> str:
    """Plain-text table: one row per dataset and method, fold means (%) of top-1/top-5 and of text -> audio
    retrieval (mAP, R@k; zero-shot rows only), then per-fold top-1."""
    heads = "".join(f" {h:>6}" for h in ("t2aMAP", *(f"R@{k}" for k in RECALL_AT)))
    lines = [f"{'dataset':<14} {'method':<40} {'top1':>6} {'top5':>6}{heads}  per-fold top1"]
    for name, res in results["datasets"].items():
        rows = [(f"zero-shot {t!r}", r) for t, r in res["zero_shot"].items()]
        if "linear_probe" in res:
            rows.append(("linear probe (leave-one-fold-out)", res["linear_probe"]))
        for method, r in rows:
            folds = " ".join(f"{100 * v['top1']:.1f}" for v in r["folds"].values())
            retrieval = "".join(f" {100 * r['mean'][k]:6.1f}" if k in r["mean"] else f" {'-':>6}"
                                for k in RETRIEVAL_KEYS)
            lines.append(f"{name:<14} {method:<40} {100 * r['mean']['top1']:6.1f} {100 * r['mean']['top5']:6.1f}"
                         f"{retrieval}  {folds}")
        for model, top1 in REFERENCE_TOP1.get(name, {}).items():
            lines.append(f"{name:<14} {'reference zero-shot: ' + model:<40} {top1:6.1f}")
    return "\n".join(lines)


def _default_out(checkpoint: str) -> Path:
    base = default_output_dir() / "eval"
    return base / f"{Path(checkpoint).stem}.json"


def _clip_model_of(checkpoint: str) -> str | None:
    blob = load_torch_file(checkpoint, "audio encoder or AudioCLIP checkpoint")
    return (blob.get("hyper_parameters") or {}).get("clip_model") if isinstance(blob, dict) else None


def evaluate(
    checkpoint: str,
    clip_model: str | None = None,
    vggsound_root: str | None = None,
    vggsound_csv: str | None = None,
    esc50_root: str | None = None,
    urbansound8k_root: str | None = None,
    templates: tuple[str, ...] = (DEFAULT_TEMPLATE, BARE_LABEL),
    probe_l2: float = 1e-3,
    batch_size: int = 32,
    num_workers: int = 4,
    device: str = "auto",
    out: str | None = None,
    overwrite: bool = False,
    wandb_project: str | None = None,
) -> dict:
    """Evaluate `checkpoint` on the given datasets.

    Args:
        checkpoint: AudioCLIPModule checkpoint (.ckpt) or exported audio encoder.
        clip_model: CLIP name or file; default the checkpoint's `clip_model`, else "ViT-B/32".
        vggsound_root: VGGSound clips (test split of its CSV is used).
        vggsound_csv: VGGSound CSV; default `vggsound_root/vggsound.csv`.
        esc50_root: ESC-50 in its released layout (meta/esc50.csv, audio/).
        urbansound8k_root: UrbanSound8K in its released layout (metadata/UrbanSound8K.csv, audio/fold*/).
        templates: zero-shot prompt templates, each reported separately.
        probe_l2: L2 penalty of the linear probe (on standardised features).
        batch_size: clips per forward pass.
        num_workers: data loader processes.
        device: "auto" (CUDA when present), "cpu" or "cuda".
        out: JSON output; default $AIARTIST_OUTPUT_DIR/eval/<checkpoint name>.json.
        overwrite: replace an existing JSON file.
        wandb_project: also log the results to this W&B project.
    """
    if not (vggsound_root or esc50_root or urbansound8k_root):
        raise ValueError("nothing to evaluate: give --vggsound_root, --esc50_root and/or --urbansound8k_root")
    out_path = Path(out) if out else _default_out(checkpoint)
    if out_path.exists() and not overwrite:
        raise FileExistsError(f"{out_path} exists; pass --overwrite or choose another --out")
    dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                       ("cpu" if device == "auto" else device))
    encoder = load_audio_encoder(checkpoint, map_location=dev)
    clip_model = clip_model or _clip_model_of(checkpoint) or "ViT-B/32"
    clip = CLIPWrapper(clip_model, device=dev)
    results: dict = {"checkpoint": str(checkpoint), "clip_model": clip_model, "encoder": encoder.config,
                     "templates": list(templates), "datasets": {}, "reference_zero_shot_top1": REFERENCE_TOP1}
    common = dict(batch_size=batch_size, num_workers=num_workers, device=dev)
    if vggsound_root:
        results["datasets"]["VGGSound"] = evaluate_vggsound(encoder, clip, vggsound_root, vggsound_csv,
                                                            list(templates), **common)
    for root, reader in ((esc50_root, read_esc50), (urbansound8k_root, read_urbansound8k)):
        if root:
            fold_set = reader(root)
            if fold_set.missing:
                log.warning("%s: %d listed clips have no file (first: %s)", fold_set.name, len(fold_set.missing),
                            fold_set.missing[0])
            results["datasets"][fold_set.name] = evaluate_fold_set(encoder, clip, fold_set, list(templates),
                                                                   probe_l2, **common)
    table = format_table(results)
    print(table)
    log.info("evaluation of %s\n%s", checkpoint, table)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(results, indent=1))
    print(f"wrote {out_path}")
    if wandb_project:
        _log_wandb(results, table, wandb_project, out_path)
    return results


def _log_wandb(results: dict, table: str, project: str, out_path: Path) -> None:
    import wandb

    run = wandb.init(project=project, job_type="eval", name=f"eval-{Path(results['checkpoint']).stem}",
                     config={k: results[k] for k in ("checkpoint", "clip_model", "encoder", "templates")},
                     dir=str(out_path.parent))
    rows, metrics = [], {}
    columns = ["top1", "top5", *RETRIEVAL_KEYS]
    for name, res in results["datasets"].items():
        methods = {f"zero_shot/{t}": r for t, r in res["zero_shot"].items()}
        if "linear_probe" in res:
            methods["linear_probe"] = res["linear_probe"]
        for method, r in methods.items():
            rows.append([name, method, *(r["mean"].get(k) for k in columns)])
            for key in columns:
                if key in r["mean"]:
                    metrics[f"eval/{name}/{method}/{key}"] = r["mean"][key]
    metrics["eval/table"] = wandb.Table(columns=["dataset", "method", *columns], data=rows)
    run.log(metrics)
    run.summary["table_text"] = table
    run.finish()


def main(args: list[str] | None = None) -> dict:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return CLI(evaluate, args=args)


if __name__ == "__main__":
    sys.exit(run_cli(main, "python -m experiments.eval", strip_debug=True))
