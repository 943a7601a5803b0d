"""Convert downloaded VGGSound videos/audio to mono 16 kHz FLAC, the format `VGGSoundDataModule` reads fastest.

    python -m datamodules.prepare_vggsound SRC DST [--csv vggsound.csv] [--workers N] [--frames K]

Every media file under SRC (searched recursively) becomes `DST/{stem}.flac` (mono, 16 kHz, 16-bit), several
files at a time, with a progress bar. Decoding goes through PyAV (the `av` package, which ships FFmpeg's
libraries), so nothing else needs installing; `--ffmpeg PATH` uses a system ffmpeg executable instead
(`-ac 1 -ar 16000`). Files already converted are skipped, so an interrupted
run just resumes; each conversion is written to a temporary name and renamed when complete, so a killed run
never leaves a truncated file that looks done. Failures (corrupt or empty downloads) are listed in
`DST/prepare_failures.txt`; the exit status is 1 when there were any. With `--csv`, only the clips named in
the CSV are converted and the CSV is copied to `DST/vggsound.csv`, so DST is a complete VGGSound root.

`--frames K` also extracts K frames per video (the centres of K equal parts of the clip, centre square resized
to `--frame-size`, CLIP's input size) into one JPEG strip per clip, `DST/frames/{stem}.jpg`, with the same
atomic writes, skipping and resuming; videos whose frames fail (or clips without a video file) are listed in
`DST/frame_failures.txt`. `python -m experiments.embed_frames DST --clip NAME` then embeds them once.

YouTube ids often start with "-" (e.g. `---g-f_I2yQ`): paths are handed to ffmpeg as absolute `file:` URLs in
an argument list (no shell), so a name can never be read as an option or a protocol.
"""

from __future__ import annotations

import argparse
import filecmp
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
from tqdm import tqdm

from datamodules.av_decode import MediaDecodeError, decode_audio, decode_frames
from datamodules.frame_files import FRAMES_DIR, check_manifest, strip_path, write_strip
from datamodules.vggsound_csv import read_vggsound_csv

VIDEO_EXTENSIONS = {".mp4", ".mkv", ".webm", ".mov", ".avi"}
MEDIA_EXTENSIONS = VIDEO_EXTENSIONS | {".m4a", ".aac", ".mp3", ".opus", ".ogg", ".wav", ".flac"}
FAILURES = "prepare_failures.txt"
FRAME_FAILURES = "frame_failures.txt"


@dataclass
class PrepareReport:
    converted: int = 0
    skipped: int = 0
    duplicates: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)  # (source path, reason)
    frames_extracted: int = 0
    frames_skipped: int = 0
    frames_failed: list[tuple[str, str]] = field(default_factory=list)  # (source path or clip id, reason)


def find_ffmpeg(ffmpeg: str = "ffmpeg") -> str:
    """Absolute path of the ffmpeg executable, or a clear error saying how to get one."""
    found = shutil.which(ffmpeg)
    if found is None:
        raise FileNotFoundError(
            f"ffmpeg not found ({ffmpeg!r} is not an executable on PATH). Install it (e.g. `apt install ffmpeg` or "
            "`conda install -c conda-forge ffmpeg`) or pass --ffmpeg /path/to/ffmpeg."
        )
    return found


def ffmpeg_command(ffmpeg: str, src: Path, dst: Path, sample_rate: int) -> list[str]:
    """The ffmpeg argument list for one file: audio only, mono, `sample_rate`, 16-bit FLAC."""
    return [
        ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
        "-i", f"file:{src.resolve()}",
        "-vn", "-ac", "1", "-ar", str(sample_rate), "-sample_fmt", "s16", "-f", "flac",
        f"file:{dst.resolve()}",
    ]  # fmt: skip


def _sources(src: Path, wanted: set[str] | None) -> tuple[dict[str, Path], int, dict[str, Path]]:
    """stem -> media file under `src` (one per stem, FLAC/WAV preferred over lossy containers); duplicates;
    stem -> video file (for frames; the first in sorted order when a clip has several)."""
    order = [".flac", ".wav"]
    found: dict[str, Path] = {}
    videos: dict[str, Path] = {}
    duplicates = 0
    for dirpath, _, names in os.walk(src):
        for name in sorted(names):
            stem, ext = os.path.splitext(name)
            if ext.lower() not in MEDIA_EXTENSIONS or (wanted is not None and stem not in wanted):
                continue
            path = Path(dirpath) / name
            if ext.lower() in VIDEO_EXTENSIONS:
                videos.setdefault(stem, path)
            if stem in found:
                duplicates += 1
                rank = {e: i for i, e in enumerate(order)}
                if rank.get(ext.lower(), len(order)) >= rank.get(found[stem].suffix.lower(), len(order)):
                    continue
            found[stem] = path
    return found, duplicates, videos


def _convert_pyav(src: Path, out: Path, sample_rate: int) -> str | None:
    """Convert one file through PyAV; None on success, else the reason."""
    partial = out.with_name(f".{out.stem}.partial.flac")
    try:
        wave = decode_audio(src, sample_rate)
        sf.write(partial, np.clip(wave, -1.0, 1.0), sample_rate, format="FLAC", subtype="PCM_16")
        os.replace(partial, out)
    except (MediaDecodeError, sf.LibsndfileError, OSError) as err:
        return str(err)
    finally:
        partial.unlink(missing_ok=True)
    return None


def _extract(src: Path, out: Path, frames: int, size: int) -> str | None:
    """Extract one video's frames into its strip; None on success, else the reason."""
    try:
        write_strip(out, decode_frames(src, frames, size))
    except (MediaDecodeError, OSError) as err:
        return str(err)
    return None


def _convert(ffmpeg: str, src: Path, out: Path, sample_rate: int, timeout: float) -> str | None:
    """Convert one file through an ffmpeg executable; None on success, else the reason."""
    partial = out.with_name(f".{out.stem}.partial.flac")
    try:
        result = subprocess.run(
            ffmpeg_command(ffmpeg, src, partial, sample_rate), capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        partial.unlink(missing_ok=True)
        return f"ffmpeg took longer than {timeout:g} s"
    if result.returncode != 0 or not partial.exists() or partial.stat().st_size == 0:
        partial.unlink(missing_ok=True)
        lines = result.stderr.strip().splitlines()
        return f"ffmpeg exit {result.returncode}: {lines[-1] if lines else 'no output'}"
    os.replace(partial, out)
    return None


def prepare(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    sample_rate: int = 16000,
    workers: int | None = None,
    ffmpeg: str | None = None,
    csv_path: str | os.PathLike | None = None,
    timeout: float = 300.0,
    progress: bool = True,
    frames: int = 0,
    frame_size: int = 224,
) -> PrepareReport:
    """Convert every media file under `src` to `dst/{stem}.flac` (and with `frames` > 0 extract frames).

    `ffmpeg`: None decodes through PyAV; an executable name or path uses that ffmpeg (`timeout` per file).
    See the module docstring.
    """
    if frames < 0 or frame_size < 1:
        raise ValueError(f"prepare: frames must be >= 0 and frame_size >= 1, got {frames} and {frame_size}")
    ffmpeg = find_ffmpeg(ffmpeg) if ffmpeg is not None else None
    src, dst = Path(src), Path(dst)
    if not src.is_dir():
        raise FileNotFoundError(f"source folder not found: {src}")
    dst.mkdir(parents=True, exist_ok=True)
    wanted = None
    if csv_path is not None:
        wanted = {row.key for row in read_vggsound_csv(csv_path)}
        target = dst / "vggsound.csv"
        if target.exists() and not filecmp.cmp(csv_path, target, shallow=False):
            raise FileExistsError(f"{target} exists and differs from {csv_path}; not overwriting it")
        if not target.exists():
            shutil.copyfile(csv_path, target)
    sources, duplicates, videos = _sources(src, wanted)
    report = PrepareReport(duplicates=duplicates)
    todo = []
    for stem, path in sorted(sources.items()):
        out = dst / f"{stem}.flac"
        if out.exists() and out.stat().st_size > 0:
            report.skipped += 1
        else:
            todo.append((path, out))
    workers = workers or os.cpu_count() or 1
    # Threads: ffmpeg runs in its own processes, and PyAV releases the GIL while FFmpeg decodes.
    with ThreadPoolExecutor(max_workers=workers) as pool:
        if ffmpeg is None:
            futures = {pool.submit(_convert_pyav, path, out, sample_rate): path for path, out in todo}
        else:
            futures = {pool.submit(_convert, ffmpeg, path, out, sample_rate, timeout): path for path, out in todo}
        for future in tqdm(as_completed(futures), total=len(futures), desc="audio", disable=not progress):
            reason = future.result()
            if reason is None:
                report.converted += 1
            else:
                report.failed.append((str(futures[future]), reason))
        if frames:
            _frames(pool, sources, videos, dst, frames, frame_size, report, progress)
    _write_failures(dst / FAILURES, report.failed)
    if frames:
        _write_failures(dst / FRAME_FAILURES, report.frames_failed)
    return report


def _frames(pool: ThreadPoolExecutor, sources: dict[str, Path], videos: dict[str, Path], dst: Path, frames: int,
            size: int, report: PrepareReport, progress: bool) -> None:
    """Extract the frames of every clip's video not yet done; clips without a video file are failures."""
    frames_dir = dst / FRAMES_DIR
    check_manifest(frames_dir, frames, size)
    todo = []
    for stem in sorted(sources):
        out = strip_path(frames_dir, stem)
        if out.exists() and out.stat().st_size > 0:
            report.frames_skipped += 1
        elif stem not in videos:
            report.frames_failed.append((str(sources[stem]), "no video file for this clip"))
        else:
            todo.append((videos[stem], out))
    futures = {pool.submit(_extract, path, out, frames, size): path for path, out in todo}
    for future in tqdm(as_completed(futures), total=len(futures), desc="frames", disable=not progress):
        reason = future.result()
        if reason is None:
            report.frames_extracted += 1
        else:
            report.frames_failed.append((str(futures[future]), reason))


def _write_failures(path: Path, failed: list[tuple[str, str]]) -> None:
    if failed:
        failed.sort()
        path.write_text("".join(f"{src}\t{reason}\n" for src, reason in failed), encoding="utf-8")
    elif path.exists():
        path.unlink()  # a stale list from an earlier run would be misleading


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m datamodules.prepare_vggsound", description=__doc__.splitlines()[0])
    parser.add_argument("src", help="folder with the downloaded clips (searched recursively)")
    parser.add_argument("dst", help="output folder for {youtube_id}_{start:06d}.flac")
    parser.add_argument("--csv", dest="csv_path", help="vggsound.csv: convert only its clips and copy it to DST")
    parser.add_argument("--sample-rate", type=int, default=16000)
    parser.add_argument("--workers", type=int, default=None, help="files decoded in parallel (default: all cores)")
    parser.add_argument("--ffmpeg", default=None,
                        help="decode audio with this ffmpeg executable instead of PyAV (e.g. --ffmpeg ffmpeg)")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds allowed per file (--ffmpeg only)")
    parser.add_argument("--frames", type=int, default=0, help="also extract K evenly spaced frames per video")
    parser.add_argument("--frame-size", type=int, default=224, help="side of the square frames (CLIP's input)")
    args = parser.parse_args(argv)
    try:
        report = prepare(args.src, args.dst, args.sample_rate, args.workers, args.ffmpeg, args.csv_path, args.timeout,
                         frames=args.frames, frame_size=args.frame_size)
    except (FileNotFoundError, FileExistsError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"converted {report.converted}, already done {report.skipped}, failed {len(report.failed)}"
          + (f", duplicate sources ignored {report.duplicates}" if report.duplicates else ""))
    if args.frames:
        print(f"frames: extracted {report.frames_extracted}, already done {report.frames_skipped}, "
              f"failed {len(report.frames_failed)}")
    if report.failed:
        print(f"failures listed in {Path(args.dst) / FAILURES}", file=sys.stderr)
    if report.frames_failed:
        print(f"frame failures listed in {Path(args.dst) / FRAME_FAILURES}", file=sys.stderr)
    return 1 if report.failed or report.frames_failed else 0


if __name__ == "__main__":
    sys.exit(main())
