"""Sound-guided edits of StyleGAN2 paintings (paper Eq. 2) as a Lightning predict job:

    python -m experiments.manipulate predict --config experiments/manipulation/wikiart.yaml

LightningCLI over `ManipulationModule` (the method: generator, audio encoder, CLIP, steps, lr, lambda_sim, ...) and
`EditPairsDataModule` (the job: sources x sounds, batch size). Every pair is optimised with its own W+ code; with
several devices the pairs are spread over them (DDP). Outputs land in a new run directory (edited PNGs, W+ codes,
the captioned grid, metrics.json, job.json); the grid also goes to W&B when a WandbLogger is configured.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Any

from pytorch_lightning.cli import LightningCLI

from datamodules.edit_pairs import EditPairsDataModule
from experiments.cli_errors import run_cli
from lightning_modules.manipulation import ManipulationModule

# How this CLI spells the module's options that error messages offer (experiments.cli_errors).
SPELLINGS = {"trust_pickle=True": "--model.trust_pickle=true", "allow_silence=True": "--model.allow_silence=true"}


class ManipulateCLI(LightningCLI):
    """Predict-only CLI: gradients on inside predict, no checkpoints, the job config written into the run dir."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("trainer_defaults", {})
        kwargs["trainer_defaults"] = {"inference_mode": False, "enable_checkpointing": False,
                                      **kwargs["trainer_defaults"]}
        # The module writes job.json (hyper-parameters, sources, sounds) into its own fresh run directory, so
        # Lightning's config file (which would land in a shared log dir and clash between runs) is not needed.
        kwargs.setdefault("save_config_callback", None)
        super().__init__(ManipulationModule, EditPairsDataModule, **kwargs)

    def before_instantiate_classes(self) -> None:
        cfg = self.config[self.subcommand] if self.subcommand else self.config
        if cfg.trainer.inference_mode:
            raise SystemExit("trainer.inference_mode must be false: the edit optimises W+ codes inside predict")


@contextmanager
def own_argv():
    """Run a LightningCLI with explicit args without it also seeing (and warning about) the caller's sys.argv."""
    saved = sys.argv
    sys.argv = saved[:1]
    try:
        yield
    finally:
        sys.argv = saved


def main(args: list[str] | None = None, run: bool = True) -> ManipulateCLI:
    """The CLI on `args` (a list, as on the command line), or on the process's command line when None."""
    if args is None:
        return ManipulateCLI(run=run)
    with own_argv():
        return ManipulateCLI(args=args, run=run)


if __name__ == "__main__":
    sys.exit(run_cli(main, "python -m experiments.manipulate", spellings=SPELLINGS, strip_debug=True))
