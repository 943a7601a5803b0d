"""Project images (your own paintings) into a StyleGAN2 generator's W+ space, so they can be edited.

    python -m experiments.project painting.jpg other.png --generator wikiart.pt --out projections/

For each image, DIR/<name>/ receives `w_plus.pt` (a dict {"w_plus": (1, n_latent, style_dim), "names": [name],
...} that `experiments.edit --latent` and the manipulation configs read), `target.png` (the cropped and resized
input), `reconstruction.png` and `metrics.json` (PSNR, LPIPS when its weights are available); DIR/comparison.png
shows inputs next to reconstructions and DIR/summary.json collects the metrics. Settings:
experiments/projection/default.yaml, overridden by --config and the flags below.

`project_cached` is the same projection behind a cache keyed by the image's, the generator's and the settings'
hashes: re-running a figure or an edit on the same painting does not project it again.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path

import torch
import yaml

from datamodules.image_io import (  # noqa: F401 (IMAGE_SUFFIXES, is_image_spec: re-exported)
    DEFAULT_MIN_SIDE,
    IMAGE_SUFFIXES,
    ImageLoadError,
    is_image_spec,
    load_image,
)
from datamodules.input_limits import MAX_IMAGE_PIXELS
from experiments.cli_errors import add_debug_flag, run_cli
from experiments.weights import sha256_of
from lightning_modules.clip_wrapper import CLIPWrapper
from lightning_modules.edit_outputs import make_grid, save_png, to_uint8, unused_path
from lightning_modules.lpips_distance import lpips_available
from lightning_modules.networks.checkpoints import load_generator
from lightning_modules.projection import ProjectionConfig, Projector

DEFAULT_CONFIG = Path(__file__).parent / "projection" / "default.yaml"
OUTPUT_FILES = ("w_plus.pt", "target.png", "reconstruction.png", "metrics.json")


def default_cache_dir() -> Path:
    """Projection cache: $AIARTIST_CACHE_DIR/projections, else ~/.cache/aiartist/projections."""
    root = os.environ.get("AIARTIST_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "aiartist")
    return Path(root) / "projections"


def load_config(path: str | Path | None = None, **overrides) -> ProjectionConfig:
    """ProjectionConfig from a YAML file (unknown keys are an error naming the file), then overrides
    (None values ignored)."""
    values = {}
    if path is not None:
        with open(path) as f:
            values = yaml.safe_load(f) or {}
        known = {f.name for f in fields(ProjectionConfig)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"{path}: unknown projection setting(s) {unknown}; known: {sorted(known)}")
    values.update({k: v for k, v in overrides.items() if v is not None})
    return ProjectionConfig(**values)


def output_names(paths: Sequence[str | Path]) -> list[str]:
    """One output folder name per image: its file stem, suffixed -2, -3, ... when stems repeat."""
    names: list[str] = []
    for path in paths:
        stem, name, n = Path(path).stem, Path(path).stem, 2
        while name in names:
            name, n = f"{stem}-{n}", n + 1
        names.append(name)
    return names


def load_images(paths: Sequence[str | Path], resolution: int, min_side: int = DEFAULT_MIN_SIDE,
                max_pixels: int = MAX_IMAGE_PIXELS) -> torch.Tensor:
    """(N, 3, R, R) in [-1, 1]; every unusable file is named in one ImageLoadError before any work starts."""
    images, errors = [], []
    for path in paths:
        try:
            images.append(load_image(path, resolution, min_side, max_pixels))
        except ImageLoadError as err:
            errors.append(str(err))
    if errors:
        raise ImageLoadError(f"{len(errors)} of {len(paths)} images cannot be used:\n  " + "\n  ".join(errors))
    return torch.stack(images)


def project_files(paths: Sequence[str | Path], generator: torch.nn.Module, out_dir: str | Path,
                  config: ProjectionConfig | None = None, batch_size: int = 4, clip: CLIPWrapper | None = None,
                  overwrite: bool = False, progress: bool = True, extra: dict | None = None,
                  max_pixels: int = MAX_IMAGE_PIXELS) -> list[Path]:
    """Project image files in batches and write each one's outputs to out_dir/<name>/; returns those folders.

    Refuses (before any work) to replace existing outputs unless `overwrite`, and images past `max_pixels`.
    `extra` is stored in every w_plus.pt and metrics.json (e.g. which generator file was used).
    """
    config = config or ProjectionConfig()
    out_dir = Path(out_dir)
    names = output_names(paths)
    dirs = [out_dir / name for name in names]
    existing = [str(d / f) for d in dirs for f in (*OUTPUT_FILES, "progress") if (d / f).exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{len(existing)} projection output(s) exist, e.g. {existing[0]}; "
                              f"choose another --out or pass --overwrite")
    targets = load_images(paths, generator.size, max_pixels=max_pixels)
    projector = Projector(generator, config, clip=clip)
    summary, rows = [], []
    for start in range(0, len(paths), batch_size):
        batch = slice(start, start + batch_size)

        def snapshot(step: int, images: torch.Tensor, batch_dirs=dirs[batch]) -> None:
            for d, img in zip(batch_dirs, to_uint8(images)):
                (d / "progress").mkdir(parents=True, exist_ok=True)
                _save(img, d / "progress" / f"step_{step:05d}.png", overwrite)

        result = projector.project(targets[batch], snapshot=snapshot, progress=progress)
        for i, (target, recon) in enumerate(zip(to_uint8(targets[batch]), to_uint8(result.images))):
            k, d = start + i, dirs[start + i]
            d.mkdir(parents=True, exist_ok=True)
            about = {"image": str(paths[k]), "image_sha256": file_sha256(paths[k]), "name": names[k],
                     "resolution": int(generator.size), **(extra or {})}
            record = {"w_plus": result.w_plus[i : i + 1].clone(), "names": [names[k]], **about}
            if result.noise is not None:
                record["noise"] = [n[i : i + 1].clone() for n in result.noise]
            if overwrite or not (d / "w_plus.pt").exists():
                torch.save(record, d / "w_plus.pt")
            _save(target, d / "target.png", overwrite)
            _save(recon, d / "reconstruction.png", overwrite)
            metrics = {**about, **result.metrics[i],
                       "final_loss": {n: float(v[-1, i]) for n, v in result.history.items()},
                       "weights": projector.loss.weights, "notes": projector.notes, "config": config.result_fields()}
            (d / "metrics.json").write_text(json.dumps(metrics, indent=2))
            summary.append(metrics)
            rows.append([target, recon])
            print(f"{paths[k]} -> {d}  PSNR {metrics['psnr']:.2f} dB"
                  + (f", LPIPS {metrics['lpips']:.4f}" if metrics["lpips"] is not None else ""))
    grid = make_grid(rows, ["input", "reconstruction"], names, cell=max(64, min(256, generator.size)))
    comparison = out_dir / "comparison.png"
    _save(torch.from_numpy(grid.copy()).permute(2, 0, 1), comparison if overwrite else unused_path(comparison),
          overwrite)
    summary_path = out_dir / "summary.json"
    (summary_path if overwrite else unused_path(summary_path)).write_text(json.dumps(summary, indent=2))
    return dirs


def _save(image: torch.Tensor, path: Path, overwrite: bool) -> None:
    """PNG from uint8 (3, H, W); replaces an existing file only when `overwrite`."""
    if overwrite and path.exists():
        path.unlink()
    save_png(image, path)


# ---------------------------------------------------------------------------------------------------------
# Cache


def file_sha256(path: str | Path, _memo: dict = {}) -> str:  # noqa: B006 - deliberate per-process memo
    """sha256 of a file's bytes, memoised per (path, size, mtime) so a large generator is hashed once."""
    st = os.stat(path)
    key = (os.path.abspath(path), st.st_size, st.st_mtime_ns)
    if key not in _memo:
        _memo[key] = sha256_of(Path(path))
    return _memo[key]


def cache_key(image_path: str | Path, generator_path: str | Path, config: ProjectionConfig) -> str:
    """Hash of everything that determines a projection: image bytes, generator bytes, the settings, and whether
    the LPIPS term can run here (offline it is dropped, and such a projection must not be reused once it can)."""
    settings = config.result_fields()
    settings.pop("lpips_download")
    settings["lpips_used"] = config.lpips_weight > 0 and lpips_available(config.lpips_net, config.lpips_download)
    payload = json.dumps({"image": file_sha256(image_path), "generator": file_sha256(generator_path),
                          "settings": settings}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


def project_cached_many(image_paths: Sequence[str | Path], generator_path: str | Path,
                        cache_dir: str | Path | None = None, config: ProjectionConfig | None = None,
                        device: str | torch.device | None = None, generator: torch.nn.Module | None = None,
                        batch_size: int = 4, trust_pickle: bool = False, progress: bool = True,
                        max_pixels: int = MAX_IMAGE_PIXELS) -> list[Path]:
    """The w_plus.pt of each image, projecting (in batches) only those not in the cache yet.

    Entries are cache_dir/<stem>-<key[:16]>/ with the files `project_files` writes; they are written to a
    temporary folder and renamed into place, so an interrupted run never leaves a half entry.
    `generator` (already loaded from generator_path) saves loading it again.
    """
    config = config or ProjectionConfig()
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    missing = [str(p) for p in image_paths if not Path(p).is_file()]
    if missing:
        raise ImageLoadError(f"image file(s) not found: {', '.join(missing)}")
    entries = [cache_dir / f"{Path(p).stem}-{cache_key(p, generator_path, config)[:16]}" for p in image_paths]
    todo = [(p, e) for p, e in zip(image_paths, entries) if not (e / "w_plus.pt").is_file()]
    if todo:
        if generator is None:
            device = device or ("cuda" if torch.cuda.is_available() else "cpu")
            generator = load_generator(generator_path, trust_pickle=trust_pickle).to(device)
        cache_dir.mkdir(parents=True, exist_ok=True)
        print(f"projecting {len(todo)} image(s) not in the cache {cache_dir}")
        with tempfile.TemporaryDirectory(dir=cache_dir, prefix=".tmp-") as tmp:
            extra = {"generator": str(generator_path), "generator_sha256": file_sha256(generator_path)}
            made = project_files([p for p, _ in todo], generator, tmp, config, batch_size=batch_size,
                                 progress=progress, extra=extra, max_pixels=max_pixels)
            for (_, entry), folder in zip(todo, made):
                try:
                    os.replace(folder, entry)
                except OSError:  # another process cached the same entry meanwhile: keep theirs
                    shutil.rmtree(folder, ignore_errors=True)
    return [e / "w_plus.pt" for e in entries]


def project_cached(image_path: str | Path, generator_path: str | Path, cache_dir: str | Path | None = None,
                   config: ProjectionConfig | None = None, **kwargs) -> Path:
    """The cached w_plus.pt for one image (projected now if not cached); see `project_cached_many`."""
    return project_cached_many([image_path], generator_path, cache_dir, config, **kwargs)[0]


def missing_image_sources(specs: Sequence[object]) -> list[tuple[str, str]]:
    """(what, path) for each image source that does not exist, in the form the edit commands list them."""
    return [("source image", spec) for spec in specs if is_image_spec(spec) and not Path(spec).is_file()]


def project_image_sources(specs: Sequence[object], generator_path: str | Path, **kwargs) -> list[object]:
    """Edit-source specs with every image file replaced by its cached W+ file (projecting uncached images
    together); seeds, 'mean' and W+ files pass through. kwargs go to `project_cached_many`."""
    images = list(dict.fromkeys(spec for spec in specs if is_image_spec(spec)))
    if not images:
        return list(specs)
    latents = dict(zip(images, project_cached_many(images, generator_path, **kwargs)))
    return [str(latents[spec]) if is_image_spec(spec) else spec for spec in specs]


# ---------------------------------------------------------------------------------------------------------
# Command line


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m experiments.project", description=__doc__.split("\n\n")[0])
    p.add_argument("images", nargs="+", help="image files (any size, aspect and mode; centre-cropped and resized)")
    p.add_argument("--generator", required=True, help="generator checkpoint (rosinality .pt or NVlabs .pkl)")
    p.add_argument("--out", required=True, help="output folder (one sub-folder per image)")
    p.add_argument("--config", default=str(DEFAULT_CONFIG), help="projection settings YAML (default: %(default)s)")
    p.add_argument("--steps", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--lpips-weight", type=float)
    p.add_argument("--lpips-net", choices=("vgg", "alex", "squeeze"))
    p.add_argument("--lpips-fallback", choices=("drop", "clip", "error"))
    p.add_argument("--clip-weight", type=float)
    p.add_argument("--clip-model", help="CLIP name (e.g. ViT-B/32) or file")
    p.add_argument("--pixel-weight", type=float)
    p.add_argument("--pixel-loss", choices=("l2", "l1"))
    p.add_argument("--optimize-noise", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--save-every", type=int, help="save intermediate reconstructions every k steps")
    p.add_argument("--seed", type=int)
    p.add_argument("--batch-size", type=int, default=4, help="images projected at once (default: %(default)s)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs in --out")
    p.add_argument("--trust-pickle", action="store_true", help="allow a generator pickle to run code when loaded")
    p.add_argument("--max-image-pixels", type=int, default=MAX_IMAGE_PIXELS, help="refuse larger images")
    add_debug_flag(p)
    return p


def main(argv: Sequence[str] | None = None) -> list[Path]:
    args = build_parser().parse_args(argv)
    overrides = {name: getattr(args, name) for name in (
        "steps", "lr", "lpips_weight", "lpips_net", "lpips_fallback", "clip_weight", "clip_model", "pixel_weight",
        "pixel_loss", "optimize_noise", "save_every", "seed")}
    config = load_config(args.config, **overrides)
    generator = load_generator(args.generator, trust_pickle=args.trust_pickle).to(args.device)
    dirs = project_files(args.images, generator, args.out, config, batch_size=args.batch_size,
                         overwrite=args.overwrite, max_pixels=args.max_image_pixels)
    print(f"wrote {len(dirs)} projection(s) to {args.out} (comparison.png, summary.json); edit one with\n"
          f"  python -m experiments.edit --latent {dirs[0] / 'w_plus.pt'} --sound SOUND.wav "
          f"--generator {args.generator} --audio-encoder ENCODER --out OUT")
    return dirs


if __name__ == "__main__":
    sys.exit(run_cli(main, "python -m experiments.project", spellings={"trust_pickle=True": "--trust-pickle"}))
