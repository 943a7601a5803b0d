"""Convert downloaded VGGSound videos/audio to mono 16 kHz FLAC, the format `VGGSoundDataModule` reads fastest.

    python -m datamodules.prepare_vggsound SRC DST [--csv vggsound.csv] [--workers N]

Every media file under SRC (searched recursively) becomes `DST/{stem}.flac` through ffmpeg (`-ac 1 -ar 16000`,
16-bit), several files at a time, with a progress bar. Files already converted are skipped, so an interrupted
run just resumes; each conversion is written to a temporary name and renamed when complete, so a killed run
never leaves a truncated file that looks done. Failures (corrupt or empty downloads) are listed in
`DST/prepare_failures.txt`; the exit status is 1 when there were any. With `--csv`, only the clips named in
the CSV are converted and the CSV is copied to `DST/vggsound.csv`, so DST is a complete VGGSound root.

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

from tqdm import tqdm

from datamodules.vggsound_csv import read_vggsound_csv

MEDIA_EXTENSIONS = {".mp4", ".mkv", ".webm", ".mov", ".avi", ".m4a", ".aac", ".mp3", ".opus", ".ogg", ".wav", ".flac"}
FAILURES = "prepare_failures.txt"


@dataclass
class PrepareReport:
    converted: int = 0
    skipped: int = 0
    duplicates: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)  # (source path, reason)


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


def _sources(src: Path, wanted: set[str] | None) -> tuple[dict[str, Path], int]:
    """stem -> media file under `src` (one per stem, FLAC/WAV preferred over lossy containers); duplicates."""
    order = [".flac", ".wav"]
    found: dict[str, Path] = {}
    duplicates = 0
    for dirpath, _, names in os.walk(src):
        for name in sorted(names):
            stem, ext = os.path.splitext(name)
            if ext.lower() not in MEDIA_EXTENSIONS or (wanted is not None and stem not in wanted):
                continue
            path = Path(dirpath) / name
            if stem in found:
                duplicates += 1
                rank = {e: i for i, e in enumerate(order)}
                if rank.get(ext.lower(), len(order)) >= rank.get(found[stem].suffix.lower(), len(order)):
                    continue
            found[stem] = path
    return found, duplicates


def _convert(ffmpeg: str, src: Path, out: Path, sample_rate: int, timeout: float) -> str | None:
    """Convert one file; None on success, else the reason."""
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
    ffmpeg: str = "ffmpeg",
    csv_path: str | os.PathLike | None = None,
    timeout: float = 300.0,
    progress: bool = True,
) -> PrepareReport:
    """Convert every media file under `src` to `dst/{stem}.flac`; see the module docstring."""
    ffmpeg = find_ffmpeg(ffmpeg)
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
    sources, duplicates = _sources(src, wanted)
    report = PrepareReport(duplicates=duplicates)
    todo = []
    for stem, path in sorted(sources.items()):
        out = dst / f"{stem}.flac"
        if out.exists() and out.stat().st_size > 0:
            report.skipped += 1
        else:
            todo.append((path, out))
    workers = workers or os.cpu_count() or 1
    with ThreadPoolExecutor(max_workers=workers) as pool:  # threads only wait on ffmpeg processes
        futures = {pool.submit(_convert, ffmpeg, path, out, sample_rate, timeout): path for path, out in todo}
        for future in tqdm(as_completed(futures), total=len(futures), desc="ffmpeg", disable=not progress):
            reason = future.result()
            if reason is None:
                report.converted += 1
            else:
                report.failed.append((str(futures[future]), reason))
    failures = dst / FAILURES
    if report.failed:
        report.failed.sort()
        failures.write_text("".join(f"{path}\t{reason}\n" for path, reason in report.failed), encoding="utf-8")
    elif failures.exists():
        failures.unlink()  # a stale list from an earlier run would be misleading
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m datamodules.prepare_vggsound", description=__doc__.splitlines()[0])
    parser.add_argument("src", help="folder with the downloaded clips (searched recursively)")
    parser.add_argument("dst", help="output folder for {youtube_id}_{start:06d}.flac")
    parser.add_argument("--csv", dest="csv_path", help="vggsound.csv: convert only its clips and copy it to DST")
    parser.add_argument("--sample-rate", type=int, default=16000)
    parser.add_argument("--workers", type=int, default=None, help="parallel ffmpeg processes (default: all cores)")
    parser.add_argument("--ffmpeg", default="ffmpeg", help="ffmpeg executable")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds allowed per file")
    args = parser.parse_args(argv)
    try:
        report = prepare(args.src, args.dst, args.sample_rate, args.workers, args.ffmpeg, args.csv_path, args.timeout)
    except (FileNotFoundError, FileExistsError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"converted {report.converted}, already done {report.skipped}, failed {len(report.failed)}"
          + (f", duplicate sources ignored {report.duplicates}" if report.duplicates else ""))
    if report.failed:
        print(f"failures listed in {Path(args.dst) / FAILURES}", file=sys.stderr)
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
