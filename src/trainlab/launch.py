"""Data-parallel launch: `trainer.devices: N` reruns the same command under torchrun.

Under torchrun (RANK set), nothing is relaunched: that is also how multi-node runs
work, by starting the same command with `torchrun --nnodes ... -m trainlab STAGE`.
"""

from __future__ import annotations

import os
import subprocess
import sys

from trainlab.config.schema import TrainerConfig


def relaunch_if_needed(trainer: TrainerConfig, argv: list[str]) -> int | None:
    """Run `python -m trainlab ARGV` on `devices` local processes; None if no relaunch is needed."""
    if trainer.devices <= 1 or "RANK" in os.environ:
        return None
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc_per_node={trainer.devices}", "-m", "trainlab", *argv]
    return subprocess.call(command)
