"""Train the sound-conditioned latent mapper (LightningCLI): `python -m experiments.train_mapper fit --config <yaml>`.

LightningCLI over `MapperModule` with the run-dir conventions of `experiments.train` (checkpoints in
`<run dir>/checkpoints`, a stable W&B run id per run dir, `--ckpt_path last` resumes, a fresh run refuses a run dir
that holds checkpoints). At the end of `fit` the mapper file is written to `<run dir>/mapper.pt` (or
`model.export_path`), the file every editing entry point reads with `--mapper` / `model.mapper`.
"""

from __future__ import annotations

from typing import Any

from experiments.train import RunDirCLI, finish_wandb
from lightning_modules.mapper import MapperModule


class MapperCLI(RunDirCLI):
    default_run_dir = "outputs/mapper"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(MapperModule, None, **kwargs)


def main(args: list[str] | None = None, run: bool = True) -> MapperCLI:
    cli = MapperCLI(args=args, run=run)
    if run:
        finish_wandb(cli.trainer)
    return cli


if __name__ == "__main__":
    main()
