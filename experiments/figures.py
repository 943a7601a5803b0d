"""Paper figures from manipulate configs. `make figures` reproduces Figure 3's layout:

    python -m experiments.figures --config experiments/figures/paper_fig3.yaml [--out figures/paper_fig3.png]

Rows are the config's sources, columns the source and then each sound in the config's order. Before any work, every
input (generator, audio encoder, CLIP, clips, W+ files, source images) is checked; missing ones are listed with where
they are expected and the command exits with status 1. Sources given as image files (your own paintings) are projected
into W+ first (`experiments.project`, settings from --projection-config) and cached by image hash. Further arguments
are manipulate-CLI overrides (e.g. --trainer.devices=4 --model.steps=200).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from experiments import manipulate
from experiments.cli_errors import add_debug_flag, run_cli
from experiments.project import DEFAULT_CONFIG as PROJECTION_CONFIG
from experiments.project import load_config, missing_image_sources, project_image_sources
from lightning_modules.edit_outputs import unused_path

DEFAULT_CONFIG = "experiments/figures/paper_fig3.yaml"


def main(argv: list[str] | None = None) -> int:
    """The command: exit status 0, 1 (missing or bad input, failure; named on stderr) or 2 (usage)."""
    return run_cli(run, "python -m experiments.figures", argv, spellings=manipulate.SPELLINGS)


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.figures", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=DEFAULT_CONFIG, help="a manipulate config (model, data, trainer)")
    parser.add_argument("--out", help="figure path (default: figures/<config name>.png); never overwritten")
    parser.add_argument("--projection-config", default=str(PROJECTION_CONFIG), help="settings for image sources")
    add_debug_flag(parser)
    args, overrides = parser.parse_known_args(argv)
    if not Path(args.config).is_file():
        print(f"figure config not found: {args.config}", file=sys.stderr)
        return 1
    cli = manipulate.main(["--config", args.config, *overrides], run=False)
    missing = (cli.model.missing_inputs() + cli.datamodule.missing_inputs()
               + missing_image_sources(cli.datamodule.source_specs))
    if missing:
        lines = "\n".join(f"  - {what}: expected at {path}" for what, path in missing)
        print(f"cannot make the figure from {args.config}; missing inputs:\n{lines}\n"
              "Weights: `make weights` (CLIP, generators); audio encoder: `make train`; clips: see the comments in "
              "the config and README 'Using real weights and data'.", file=sys.stderr)
        return 1
    cli.datamodule.source_specs = project_image_sources(  # image files -> cached W+ files
        cli.datamodule.source_specs, cli.model.hparams.generator, config=load_config(args.projection_config))
    cli.trainer.predict(cli.model, datamodule=cli.datamodule, return_predictions=False)
    if cli.trainer.is_global_zero:
        out = unused_path(args.out or Path("figures") / f"{Path(args.config).stem}.png")
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(cli.model.grid_path, out)
        print(f"figure: {out} (run directory {cli.model.run_dir}; per-pair metrics in metrics.json)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
