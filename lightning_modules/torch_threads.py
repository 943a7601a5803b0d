"""A callback that sets torch's intra-op thread count for a run (and restores it afterwards).

Small networks on a CPU (the demo's encoder) run ops too short to split across cores: every op then pays
a thread barrier, and when another process holds one of the cores the barrier waits for a scheduler
time slice. Measured on a loaded 2-core machine: a 10-epoch run of the demo config took 13 s with one
thread and 3 min 7 s with two. Configured in the YAML (trainer.callbacks) so a run states how it used the CPU.
"""

from __future__ import annotations

import pytorch_lightning as pl
import torch


class TorchThreads(pl.Callback):
    """`torch.set_num_threads(num_threads)` from setup to teardown of a fit/validate/test/predict run."""

    def __init__(self, num_threads: int = 1) -> None:
        if num_threads < 1:
            raise ValueError(f"TorchThreads: num_threads must be >= 1, got {num_threads}")
        self.num_threads = num_threads
        self._previous: int | None = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self._previous is None:
            self._previous = torch.get_num_threads()
        torch.set_num_threads(self.num_threads)

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self._previous is not None:
            torch.set_num_threads(self._previous)
            self._previous = None
