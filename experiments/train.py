"""Train the audio encoder into CLIP space (LightningCLI): `python -m experiments.train fit --config <yaml>`.

LightningCLI over `AudioCLIPModule` + `VGGSoundDataModule`; every knob lives in the YAML. On top of
the plain CLI, one run = one directory (`trainer.default_root_dir`, the "run dir"):

- checkpoints go to `<run dir>/checkpoints` (best by val/top1 as `best.ckpt`, `last.ckpt` every few
  steps), never to a path that depends on the W&B run id;
- the W&B run id is stable per run dir (or `$WANDB_RUN_ID`), with `resume="allow"`, so a resumed or
  SLURM-requeued job continues the same W&B run; under a sweep agent each trial gets
  `<run dir>/sweeps/<sweep id>/<run id>`;
- `--ckpt_path last` resumes from the newest of `last*.ckpt` and Lightning's SLURM `hpc_ckpt_*.ckpt`
  (starting fresh if there is none); a fresh `fit` refuses to start in a run dir that already holds
  checkpoints instead of overwriting them;
- the full config is written to `<run dir>/config.yaml` (a resumed run with a changed config adds
  `config.1.yaml`, ...; it never aborts) and logged to the logger.
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path
from typing import Any

from jsonargparse import Namespace
from pytorch_lightning import LightningModule, Trainer
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from pytorch_lightning.loggers import WandbLogger

from datamodules.vggsound import VGGSoundDataModule
from experiments.cli_errors import run_cli
from lightning_modules.audio_clip import AudioCLIPModule


class SaveRunConfig(SaveConfigCallback):
    """Writes the full config into the run dir without ever aborting or overwriting, and logs it."""

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if self.already_saved or not trainer.is_global_zero:
            return
        text = self.parser.dump(self.config, skip_none=False)
        run_dir = Path(trainer.default_root_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        path, n = run_dir / "config.yaml", 0
        while path.exists() and path.read_text() != text:
            n += 1
            path = run_dir / f"config.{n}.yaml"
        if not path.exists():
            path.write_text(text)
        for logger in trainer.loggers:
            logger.log_hyperparams(_plain(self.config))
        self.already_saved = True


def _plain(config: Namespace) -> dict[str, Any]:
    """The config as nested plain dicts (what W&B's config panel shows)."""
    return config.clone().as_dict()


def run_dir_for(base: str | os.PathLike) -> Path:
    """The run dir: `base`, or a per-trial subdirectory of it when launched by a W&B sweep agent."""
    sweep, run = os.environ.get("WANDB_SWEEP_ID"), os.environ.get("WANDB_RUN_ID")
    return Path(base) / "sweeps" / sweep / run if sweep and run else Path(base)


def stable_run_id(run_dir: str | os.PathLike) -> str:
    """`$WANDB_RUN_ID` if set, else a hash of the absolute run dir: the same directory, the same W&B run."""
    return os.environ.get("WANDB_RUN_ID") or hashlib.blake2b(
        str(Path(run_dir).resolve()).encode(), digest_size=8).hexdigest()


def existing_checkpoints(run_dir: Path) -> list[Path]:
    """Every checkpoint a fresh run in `run_dir` could overwrite or be confused with."""
    return sorted((run_dir / "checkpoints").glob("*.ckpt")) + sorted(run_dir.glob("hpc_ckpt_*.ckpt"))


def newest_resume_checkpoint(run_dir: Path) -> Path | None:
    """The newest of `checkpoints/last*.ckpt` and SLURM's `hpc_ckpt_*.ckpt`, or None."""
    candidates = list((run_dir / "checkpoints").glob("last*.ckpt")) + list(run_dir.glob("hpc_ckpt_*.ckpt"))
    return max(candidates, key=lambda p: p.stat().st_mtime) if candidates else None


def _as_list(value: Any) -> list[Any]:
    if value is None or isinstance(value, bool):
        return []
    return list(value) if isinstance(value, list) else [value]


class RunDirCLI(LightningCLI):
    """A LightningCLI with the run-dir conventions above (checkpoints, stable W&B id, resume, never overwrite)."""

    default_run_dir = "outputs/run"

    def __init__(self, model_class, datamodule_class=None, **kwargs: Any) -> None:
        kwargs.setdefault("save_config_callback", SaveRunConfig)
        kwargs.setdefault("auto_configure_optimizers", False)  # the module configures its own optimiser
        super().__init__(model_class, datamodule_class, **kwargs)

    def before_instantiate_classes(self) -> None:
        cfg = self.config[self.subcommand] if self.subcommand else self.config
        trainer = cfg.trainer
        run_dir = run_dir_for(trainer.default_root_dir or self.default_run_dir)
        trainer.default_root_dir = str(run_dir)
        for callback in _as_list(trainer.callbacks):
            if str(callback.class_path).endswith("ModelCheckpoint") and callback.init_args.dirpath is None:
                callback.init_args.dirpath = str(run_dir / "checkpoints")
        for logger in _as_list(trainer.logger):
            if str(logger.class_path).endswith("WandbLogger"):
                if logger.init_args.save_dir in (None, "."):
                    logger.init_args.save_dir = str(run_dir)
                if logger.init_args.id is None:
                    logger.init_args.id = stable_run_id(run_dir)
                if logger.init_args.get("resume") is None:
                    logger.init_args.resume = "allow"
        if self.subcommand == "fit":
            if cfg.ckpt_path == "last":
                newest = newest_resume_checkpoint(run_dir)
                cfg.ckpt_path = str(newest) if newest is not None else None
            elif cfg.ckpt_path is None and existing_checkpoints(run_dir):
                raise SystemExit(
                    f"{run_dir} already holds checkpoints ({existing_checkpoints(run_dir)[0].name}, ...): pass "
                    "--ckpt_path last to resume, or choose another --trainer.default_root_dir for a new run.")


class AudioCLIPCLI(RunDirCLI):
    default_run_dir = "outputs/audio_clip"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(AudioCLIPModule, VGGSoundDataModule, **kwargs)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        # One source of truth: the encoder's front end runs at the data's rate, its clip length is the
        # evaluation length of the data (what eval and manipulation crop to).
        parser.link_arguments("data.sample_rate", "model.encoder.init_args.sample_rate")
        parser.link_arguments("data.clip_seconds", "model.encoder.init_args.clip_seconds")


def finish_wandb(trainer: Trainer) -> None:
    """Close the W&B run so that its files are complete and a next run in this process starts its own."""
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger) and logger._experiment is not None:  # (`.experiment` would start one)
            logger.experiment.finish()


def main(args: list[str] | None = None, run: bool = True) -> AudioCLIPCLI:
    cli = AudioCLIPCLI(args=args, run=run)
    if run:
        finish_wandb(cli.trainer)
    return cli


if __name__ == "__main__":
    sys.exit(run_cli(main, "python -m experiments.train", strip_debug=True))
