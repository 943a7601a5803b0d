"""Real recordings for the toy world's audio encoder: a committed manifest of sound files from Debian game-data
packages, fetched into a cache outside the repository (the sounds themselves are never committed).

    python -m experiments.toyworld.realsounds fetch      # apt-get download + dpkg -x, keep only manifest files
    python -m experiments.toyworld.realsounds layout     # CACHE/<split>/<class>/<file> links for `listen`

The cache is $AIARTIST_REALSOUNDS_DIR (default ~/.cache/aiartist/realsounds). The manifest
(`realsounds.csv`: package, version, path, sha256, licence, class, split) fixes a leave-one-package-out split
before any training: every file of the validation package (redeclipse-data, the one package with all five
classes) is development data, every other file is training data. Fetching needs a Debian system with
`apt-get` and `dpkg-deb` (no root for `apt-get download`); elsewhere, copy the files listed in the manifest into
CACHE/files/<package>/<path> by hand -- their sha256 is checked either way.
"""

from __future__ import annotations

import argparse
import csv
import fnmatch
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from experiments.cli_errors import run_cli

MANIFEST = Path(__file__).with_name("realsounds.csv")
VALIDATION_PACKAGE = "redeclipse-data"
CLASSES = ("fire crackling", "rain", "wind", "explosion", "thunderstorm")
FIELDS = ("package", "version", "path", "sha256", "licence", "class", "split")


class RealSoundsError(RuntimeError):
    """The cache is missing, incomplete or holds a file whose checksum differs from the manifest."""


@dataclass(frozen=True)
class Entry:
    package: str
    version: str
    path: str  # inside the package's file tree, e.g. usr/share/games/...
    sha256: str
    licence: str
    label: str  # the sound class
    split: str  # train | validation


def cache_dir() -> Path:
    """$AIARTIST_REALSOUNDS_DIR, else ~/.cache/aiartist/realsounds."""
    return Path(os.environ.get("AIARTIST_REALSOUNDS_DIR", Path.home() / ".cache" / "aiartist" / "realsounds"))


def read_manifest(path: str | Path = MANIFEST) -> list[Entry]:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return [Entry(r["package"], r["version"], r["path"], r["sha256"], r["licence"], r["class"], r["split"])
            for r in rows]


def local_path(entry: Entry, cache: Path | None = None) -> Path:
    return (cache or cache_dir()) / "files" / entry.package / entry.path


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def licence_of(copyright_text: str, path: str) -> str:
    """The licence a Debian machine-readable copyright file gives `path`.

    Source-tree patterns and installed paths differ in their leading directories, so every trailing part of the
    path is matched against every trailing part of a pattern that keeps at least two components (a bare "*" only
    as written). The longest matching pattern part wins (the most specific stanza), later stanzas on ties as in
    DEP-5. Unparsable: "see the package's copyright file"."""
    found, best = None, -1
    for stanza in copyright_text.split("\n\n"):
        lines = stanza.splitlines()
        patterns, licence, in_files = [], None, False
        for line in lines:
            if line.startswith("Files:"):
                patterns += line[len("Files:"):].split()
                in_files = True
            elif in_files and line.startswith((" ", "\t")) and ":" not in line:
                patterns += line.split()
            else:
                in_files = False
                if line.startswith("License:") and licence is None:
                    licence = line[len("License:"):].strip()
        if not patterns or not licence:
            continue
        parts = path.split("/")
        tails = ["/".join(parts[i:]) for i in range(len(parts))]
        pattern_tails = {"/".join(q.split("/")[i:]) for q in patterns for i in range(max(1, q.count("/")))}
        matched = [len(q) for q in pattern_tails for t in tails if fnmatch.fnmatch(t, q)]
        if matched and max(matched) >= best:
            found, best = licence, max(matched)
    return found or "see the package's copyright file"


def make_manifest(raw_root: Path, selection: list[tuple[str, str, str]], out: Path = MANIFEST) -> list[Entry]:
    """Write the manifest for `selection` (package, path, class) from packages extracted under raw_root/<package>
    (with their VERSION file and usr/share/doc/<package>/copyright): the maintainer's step, run once."""
    entries = []
    for package, path, label in selection:
        if label not in CLASSES:
            raise ValueError(f"make_manifest: {path}: class {label!r} is not one of {CLASSES}")
        root = raw_root / package
        copyright_text = (root / "usr/share/doc" / package / "copyright").read_text(errors="replace")
        split = "validation" if package == VALIDATION_PACKAGE else "train"
        entries.append(Entry(package, (root / "VERSION").read_text().strip(), path, sha256(root / path),
                             licence_of(copyright_text, path), label, split))
    with open(out, "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(FIELDS)
        writer.writerows([[e.package, e.version, e.path, e.sha256, e.licence, e.label, e.split] for e in entries])
    return entries


def missing(entries: list[Entry], cache: Path | None = None) -> list[Entry]:
    """Manifest entries absent from the cache or whose checksum differs."""
    return [e for e in entries if not local_path(e, cache).is_file() or sha256(local_path(e, cache)) != e.sha256]


def fetch(entries: list[Entry], cache: Path | None = None, log=print) -> dict[str, float]:
    """Download each package with files missing from the cache, keep only its manifest files, delete the .deb.

    Returns seconds per package (download and extraction). Raises RealSoundsError naming what is wrong."""
    cache = cache or cache_dir()
    for tool in ("apt-get", "dpkg-deb"):
        if shutil.which(tool) is None:
            raise RealSoundsError(f"fetching needs {tool} (a Debian system); elsewhere copy the manifest's files "
                                  f"into {cache}/files/<package>/<path>")
    times = {}
    for package in sorted({e.package for e in missing(entries, cache)}):
        wanted = [e for e in entries if e.package == package]
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory(dir=cache.parent if cache.parent.exists() else None) as tmp:
            run = subprocess.run(["apt-get", "download", f"{package}={wanted[0].version}"], cwd=tmp,
                                 capture_output=True, text=True)
            if run.returncode:
                raise RealSoundsError(f"apt-get download {package}={wanted[0].version} failed: "
                                      f"{run.stderr.strip().splitlines()[-1:]} (run apt-get update first?)")
            deb = next(Path(tmp).glob("*.deb"))
            subprocess.run(["dpkg-deb", "-x", str(deb), str(Path(tmp) / "x")], check=True)
            deb.unlink()
            for e in wanted:
                src = Path(tmp) / "x" / e.path
                if not src.is_file() or sha256(src) != e.sha256:
                    raise RealSoundsError(f"{package} {e.version}: {e.path} is missing or differs from the manifest")
                dst = local_path(e, cache)
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, dst)
        times[package] = time.perf_counter() - t0
        log(f"{package} {wanted[0].version}: {len(wanted)} files in {times[package]:.0f} s")
    return times


def layout(entries: list[Entry], cache: Path | None = None) -> dict[str, Path]:
    """Link the cached files as CACHE/<split>/<class>/<package>__<file> (the layout `listen` reads)."""
    cache = cache or cache_dir()
    bad = missing(entries, cache)
    if bad:
        raise RealSoundsError(f"{len(bad)} manifest files are missing from {cache} (e.g. {bad[0].package}: "
                              f"{bad[0].path}); run `python -m experiments.toyworld.realsounds fetch`")
    roots = {}
    for e in entries:
        root = roots.setdefault(e.split, cache / e.split)
        link = root / e.label.replace(" ", "_") / f"{e.package}__{e.path.replace('/', '_')}"
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.exists():
            link.symlink_to(local_path(e, cache))
    return roots


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments.toyworld.realsounds", description=__doc__.split("\n\n")[0])
    p.add_argument("command", choices=("fetch", "layout", "check"))
    args = p.parse_args(argv)
    entries = read_manifest()
    try:
        if args.command == "fetch":
            times = fetch(entries)
            print(f"fetched {len(times)} packages in {sum(times.values()):.0f} s; cache: {cache_dir()}")
        if args.command in ("fetch", "layout"):
            for split, root in layout(entries).items():
                print(f"{split}: {root}")
        bad = missing(entries)
        print(f"{len(entries) - len(bad)} of {len(entries)} manifest files present in {cache_dir()}")
        return 0 if not bad else 1
    except RealSoundsError as err:
        print(f"realsounds: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(run_cli(main, "python -m experiments.toyworld.realsounds", strip_debug=True))
