"""Score an audio encoder on a folder of real (or any) recordings, the way the toy world hears them.

    python -m experiments.toyworld.listen ENCODER DIR [--clip experiments/toyworld/weights/toy_clip.pt]

DIR is laid out ``DIR/<class>/<files>`` (any format soundfile reads, any rate and channel count; underscores
in folder names read as spaces). Each clip is embedded through the window reader (default: the normalised mean
of the encoder's embeddings of consecutive windows, a clip shorter than one window zero-padded) and scored
against the toy CLIP's text embeddings of "a painting with {label}" for the seven demo labels. Printed: one line
per clip (prediction, cosine, the part used), per-class top-1, then the macro mean last; a folder whose name is
not a label is reported as out-of-class (its top label and cosine) and not scored; a file soundfile cannot
decode is listed, not scored. Written into a new run directory: a confusion-matrix PNG and results.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from datamodules.audio_io import AudioDecodeError
from datamodules.audio_windows import POLICIES, read_windows
from datamodules.class_folders import folder_label, list_clips
from datamodules.output_root import default_output_dir
from experiments.cli_errors import run_cli
from experiments.toyworld.paintings import ATTRIBUTES, PROMPT_TEMPLATE
from lightning_modules.audio_export import load_audio_encoder
from lightning_modules.clip_wrapper import CLIPWrapper
from lightning_modules.edit_outputs import new_run_dir
from lightning_modules.sound_embedding import embed_windows

TOY_CLIP = "experiments/toyworld/weights/toy_clip.pt"


@dataclass
class ClipScore:
    """One clip's verdict."""

    path: str
    folder: str  # the class folder's label (or its name when out of class)
    predicted: str
    cosine: float  # cosine to the predicted label's prompt
    window: str  # AudioWindows.describe()


@dataclass
class ListenReport:
    """Per-clip scores, per-class top-1 and their macro mean over the in-class folders."""

    labels: list[str]
    clips: list[ClipScore] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)

    def in_class(self) -> list[ClipScore]:
        return [c for c in self.clips if c.folder in self.labels]

    def per_class(self) -> dict[str, float]:
        """Top-1 per class folder present, in label order."""
        out = {}
        for label in self.labels:
            mine = [c for c in self.clips if c.folder == label]
            if mine:
                out[label] = float(np.mean([c.predicted == label for c in mine]))
        return out

    def macro(self) -> float:
        per = self.per_class()
        return float(np.mean(list(per.values()))) if per else float("nan")

    def confusion(self) -> tuple[list[str], np.ndarray]:
        """(row labels, counts[rows, labels]): rows are the class folders present, columns every label."""
        rows = [label for label in self.labels if any(c.folder == label for c in self.clips)]
        counts = np.zeros((len(rows), len(self.labels)), dtype=int)
        for c in self.in_class():
            counts[rows.index(c.folder), self.labels.index(c.predicted)] += 1
        return rows, counts


@torch.no_grad()
def listen(encoder: torch.nn.Module, text_emb: torch.Tensor, labels: list[str], root: str | Path,
           policy: str = "mean", batch_clips: int = 16) -> ListenReport:
    """Embed every clip under `root` by `policy` and score it against `text_emb` (len(labels), D), normalised."""
    report = ListenReport(labels=list(labels))
    try:
        found = list_clips(root)
    except (NotADirectoryError, FileNotFoundError) as err:
        raise type(err)(f"listen: {err}") from None
    for start in range(0, len(found), batch_clips):
        chunk, windows = [], []
        for folder, path in found[start : start + batch_clips]:
            try:
                windows.append(read_windows(path, encoder.sample_rate, encoder.clip_samples, policy=policy))
                chunk.append((folder, path))
            except AudioDecodeError as err:
                report.unreadable.append(str(err))
        if not chunk:
            continue
        cos = embed_windows(encoder, windows) @ text_emb.T.to(torch.float32)
        for (folder, path), row, w in zip(chunk, cos, windows):
            k = int(row.argmax())
            report.clips.append(ClipScore(str(path), folder, labels[k], float(row[k]), w.describe()))
    return report


def confusion_png(report: ListenReport, path: str | Path, cell: int = 56) -> Path:
    """Row-normalised confusion matrix (true folder x predicted label) with counts, as a PNG."""
    rows, counts = report.confusion()
    labels = report.labels
    font = ImageFont.load_default(size=12)
    left, top = 130, 110
    img = Image.new("RGB", (left + cell * len(labels) + 10, top + cell * max(1, len(rows)) + 30), "white")
    draw = ImageDraw.Draw(img)
    for j, label in enumerate(labels):  # column titles, written upwards
        txt = Image.new("RGB", (top - 6, 16), "white")
        ImageDraw.Draw(txt).text((4, 1), label, font=font, fill="black")
        img.paste(txt.rotate(90, expand=True), (left + j * cell + cell // 2 - 8, 2))
    for i, row_label in enumerate(rows):
        total = max(1, int(counts[i].sum()))
        draw.text((4, top + i * cell + cell // 2 - 7), f"{row_label} ({total})", font=font, fill="black")
        for j in range(len(labels)):
            frac = counts[i, j] / total
            shade = int(255 * (1 - frac))
            x0, y0 = left + j * cell, top + i * cell
            draw.rectangle((x0, y0, x0 + cell - 1, y0 + cell - 1), fill=(shade, shade, 255),
                           outline=(0, 160, 0) if labels[j] == row_label else (200, 200, 200))
            if counts[i, j]:
                draw.text((x0 + cell // 2 - 6, y0 + cell // 2 - 7), str(counts[i, j]), font=font,
                          fill="white" if frac > 0.5 else "black")
    draw.text((4, img.height - 22), f"rows: true class (clips); columns: predicted; macro top-1 "
              f"{report.macro():.3f}", font=font, fill="black")
    path = Path(path)
    img.save(path)
    return path


def format_report(report: ListenReport) -> str:
    lines = [f"{c.path}: {c.folder} -> {c.predicted} (cos {c.cosine:.3f}; {c.window})" for c in report.clips]
    lines += [f"unreadable, not scored: {u}" for u in report.unreadable]
    for folder in sorted({c.folder for c in report.clips} - set(report.labels)):
        mine = [c for c in report.clips if c.folder == folder]
        top = max(mine, key=lambda c: c.cosine)
        lines.append(f"out-of-class {folder}: {len(mine)} clips, top cosine {top.cosine:.3f} ({top.predicted})")
    per = report.per_class()
    lines += [f"top-1 {label}: {acc:.3f} ({sum(c.folder == label for c in report.clips)} clips)"
              for label, acc in per.items()]
    lines.append(f"macro top-1 over {len(per)} classes: {report.macro():.3f}")
    return "\n".join(lines)


def report_json(report: ListenReport) -> dict:
    rows, counts = report.confusion()
    return {"labels": report.labels, "per_class_top1": report.per_class(), "macro_top1": report.macro(),
            "confusion": {"rows": rows, "counts": counts.tolist()}, "unreadable": report.unreadable,
            "clips": [vars(c) for c in report.clips]}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m experiments.toyworld.listen", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("encoder", help="exported audio encoder (or AudioCLIP checkpoint)")
    p.add_argument("dir", help="folder laid out DIR/<class>/<files>")
    p.add_argument("--clip", default=TOY_CLIP, help="CLIP the encoder was trained against")
    p.add_argument("--labels", nargs="+", default=list(ATTRIBUTES), help="the labels scored against")
    p.add_argument("--template", default=PROMPT_TEMPLATE, help="prompt per label")
    p.add_argument("--window", default="mean", choices=POLICIES, help="which part of each clip is heard")
    p.add_argument("--out", default=None, help="a new run directory is made inside (default: $AIARTIST_OUTPUT_DIR "
                   "or ./outputs, /listen)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for what, path in (("encoder", args.encoder), ("--clip", args.clip)):
        if not Path(path).is_file():
            print(f"listen: {what} file not found: {path}", file=sys.stderr)
            return 1
    labels = [folder_label(label) for label in args.labels]
    encoder = load_audio_encoder(args.encoder)
    text = CLIPWrapper(args.clip).encode_text([args.template.format(label=label) for label in labels])
    if text.shape[-1] != encoder.embed_dim:
        print(f"listen: encoder {args.encoder} embeds into {encoder.embed_dim} dims, CLIP {args.clip} into "
              f"{text.shape[-1]}: use the CLIP the encoder was trained against", file=sys.stderr)
        return 1
    try:
        report = listen(encoder, text, labels, args.dir, policy=args.window)
    except (NotADirectoryError, FileNotFoundError) as err:
        print(err, file=sys.stderr)
        return 1
    run = new_run_dir(Path(args.out) if args.out else default_output_dir() / "listen", "listen")
    png = confusion_png(report, run / "confusion.png")
    (run / "results.json").write_text(json.dumps(report_json(report), indent=2) + "\n")
    print(f"confusion matrix: {png}; per clip: {run / 'results.json'}")
    print(format_report(report))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main, "python -m experiments.toyworld.listen", strip_debug=True))
