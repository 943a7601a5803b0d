"""Fetch the third-party weights a real run needs (`make weights`), from the registry in experiments/weights.json.

    python -m experiments.weights                      # the defaults: CLIP ViT-B/32 + the WikiArt generator
    python -m experiments.weights landscape-256 ViT-L/14
    python -m experiments.weights landscape-256 official-resnet18-57   # the official CVPR 2022 models
    python -m experiments.weights --list               # names, files, formats, licences

CLIP models go through the `clip` package (its cache, its checksum). Generator and audio-encoder files download
with a progress bar into a `.part` file that a re-run resumes (HTTP Range), are checked against the registry's
sha256 where one is known, and only then take their final name. Without network, it says what could not be
fetched and where each file is expected, and exits with status 1.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from tqdm.auto import tqdm

from experiments.cli_errors import UsageError, add_debug_flag, run_cli
from lightning_modules.clip_wrapper import resolve_clip_file

REGISTRY = Path(__file__).with_name("weights.json")
GENERATOR_FIELDS = ("name", "file", "url", "format", "resolution", "sha256", "url_verified", "licence")
AUDIO_ENCODER_FIELDS = ("name", "file", "url", "format", "sha256", "url_verified", "licence")


class DownloadError(RuntimeError):
    """A download that failed or produced a file that is not the expected one."""


def load_registry(path: str | Path = REGISTRY) -> dict:
    """The registry, checked: every generator and audio-encoder entry has all fields; names are unique."""
    reg = json.loads(Path(path).read_text())
    reg.setdefault("audio_encoders", [])
    for kind, fields in (("generators", GENERATOR_FIELDS), ("audio_encoders", AUDIO_ENCODER_FIELDS)):
        for entry in reg[kind]:
            absent = [f for f in fields if f not in entry]
            if absent:
                raise ValueError(f"{path}: {kind} entry {entry.get('name')!r} lacks {absent}")
    names = [e["name"] for e in reg["clip"] + reg["generators"] + reg["audio_encoders"]]
    if len(set(names)) != len(names):
        raise ValueError(f"{path}: duplicate names in {names}")
    return reg


def select(reg: dict, names: list[str]) -> tuple[list[dict], list[dict]]:
    """(CLIP entries, file entries: generators and audio encoders) for the names, or the defaults when none given."""
    entries = {e["name"]: ("clip", e) for e in reg["clip"]} | {
        e["name"]: ("gen", e) for e in reg["generators"] + reg["audio_encoders"]}
    unknown = [n for n in names if n not in entries]
    if unknown:
        raise UsageError(f"unknown weights {unknown}; known: {sorted(entries)} (see --list)")
    chosen = [entries[n] for n in names] if names else [v for v in entries.values() if v[1].get("default")]
    return [e for kind, e in chosen if kind == "clip"], [e for kind, e in chosen if kind == "gen"]


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def download(url: str, dest: str | Path, sha256: str | None = None,
             urlopen: Callable = urllib.request.urlopen, timeout: float = 60.0) -> Path:
    """Download ``url`` to ``dest`` via ``dest.part``, resuming a partial file; verify sha256 when given."""
    dest = Path(dest)
    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    have = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": "aiartist-weights"} | ({"Range": f"bytes={have}-"} if have else {})
    try:
        with urlopen(urllib.request.Request(url, headers=headers), timeout=timeout) as resp:
            if "text/html" in (resp.headers.get("Content-Type") or ""):
                raise DownloadError(f"{url} returned a web page, not a checkpoint (moved or login required?)")
            if have and getattr(resp, "status", 200) != 206:
                have = 0  # the server ignored the range: start over
            length = resp.headers.get("Content-Length")
            total = have + int(length) if length is not None else None
            with open(part, "ab" if have else "wb") as f, tqdm(total=total, initial=have, unit="B", unit_scale=True,
                                                                unit_divisor=1024, desc=dest.name) as bar:
                while chunk := resp.read(1 << 20):
                    f.write(chunk)
                    bar.update(len(chunk))
    except urllib.error.HTTPError as err:
        if not (err.code == 416 and have):  # 416 with a partial file: it is already complete
            raise
    if sha256:
        digest = sha256_of(part)
        if digest != sha256.lower():
            bad = part.with_name(dest.name + ".sha256-mismatch")
            part.replace(bad)
            raise DownloadError(f"{url}: sha256 {digest} != expected {sha256}; the file was kept as {bad}")
    part.replace(dest)
    return dest


def fetch_generator(entry: dict, urlopen: Callable = urllib.request.urlopen) -> str:
    """Download one generator entry unless its file is already there; returns a one-line status."""
    dest = Path(entry["file"])
    if dest.is_file():
        if entry["sha256"] and sha256_of(dest) != entry["sha256"].lower():
            raise DownloadError(f"{dest} exists but its sha256 differs from the registry's; move it away and re-run")
        return f"{entry['name']}: already present at {dest}"
    download(entry["url"], dest, entry["sha256"], urlopen=urlopen)
    check = "sha256 verified" if entry["sha256"] else "no published sha256 to verify against"
    return f"{entry['name']}: downloaded to {dest} ({check})"


def print_list(reg: dict) -> None:
    for e in reg["clip"]:
        print(f"{e['name']}{' (default)' if e.get('default') else ''}: CLIP, {e['use']}\n    licence: {e['licence']}")
    for e in reg["generators"] + reg["audio_encoders"]:
        verified = "" if e["url_verified"] else " [URL not verified]"
        kind = f"{e['resolution']} px" if "resolution" in e else "audio encoder"
        print(f"{e['name']}{' (default)' if e.get('default') else ''}: {kind}, {e['format']}\n"
              f"    file: {e['file']}\n    url: {e['url']}{verified}\n    sha256: {e['sha256'] or 'unknown'}\n"
              f"    use: {e['use']}\n    licence: {e['licence']}")


def main(argv: list[str] | None = None, urlopen: Callable = urllib.request.urlopen) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.weights", description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="registry names (default: the entries marked default)")
    parser.add_argument("--list", action="store_true", help="show the registry with licences and exit")
    parser.add_argument("--clip-root", default=None, help="CLIP cache directory (default ~/.cache/clip)")
    parser.add_argument("--registry", default=str(REGISTRY))
    add_debug_flag(parser)
    args = parser.parse_args(argv)
    reg = load_registry(args.registry)
    if args.list:
        print_list(reg)
        return 0
    clips, generators = select(reg, args.names)
    failed: list[str] = []
    for entry in clips:
        try:
            print(f"{entry['name']}: CLIP at {resolve_clip_file(entry['name'], args.clip_root)}")
        except FileNotFoundError as err:
            failed.append(f"CLIP {entry['name']}: {err}")
    for entry in generators:
        try:
            print(fetch_generator(entry, urlopen=urlopen))
            print(f"    licence: {entry['licence']}")
        except (urllib.error.URLError, OSError, DownloadError) as err:
            reason = getattr(err, "reason", None) or err
            failed.append(f"{entry['name']}: {entry['url']} -> expected at {entry['file']} ({reason}); "
                          f"a re-run resumes any partial download")
    if failed:
        print("could not fetch:\n" + "\n".join(f"  - {line}" for line in failed), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main, "python -m experiments.weights"))
