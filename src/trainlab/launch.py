"""Data-parallel launch: `trainer.devices: N` reruns the same command as N local processes.

The processes meet through a file store in a private temporary folder, not torchrun's
rendezvous: torch's TCPStore listens on every network interface whatever host it is
given (measured: `*:PORT` in `ss -ltn`), and nothing here should be reachable from
outside the machine. The gloo/NCCL connections between the processes use the loopback
interface. Under an existing launcher (RANK set) nothing is relaunched: that is how
multi-node runs work, `torchrun --nnodes ... -m trainlab STAGE` on every node.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from trainlab.config.schema import TrainerConfig
from trainlab.engine.runtime import STORE_ENV
from trainlab.processes import die_with_parent
LOOPBACK = {"GLOO_SOCKET_IFNAME": "lo", "NCCL_SOCKET_IFNAME": "lo", "MASTER_ADDR": "127.0.0.1"}


def relaunch_if_needed(trainer: TrainerConfig, argv: list[str]) -> int | None:
    """Run `python -m trainlab ARGV` on `devices` local processes; None if no relaunch is needed."""
    if trainer.devices <= 1 or "RANK" in os.environ:
        return None
    return run_local_workers(trainer.devices, [sys.executable, "-m", "trainlab", *argv])


def run_local_workers(count: int, command: list[str]) -> int:
    """Start `count` ranks of `command`, wait for all; the first failure stops the others."""
    with tempfile.TemporaryDirectory(prefix="trainlab-ddp-") as folder:
        shared = {**os.environ, **{k: os.environ.get(k, v) for k, v in LOOPBACK.items()},
                  "WORLD_SIZE": str(count), "LOCAL_WORLD_SIZE": str(count),
                  STORE_ENV: str(Path(folder) / "store")}
        workers = [subprocess.Popen(command, env={**shared, "RANK": str(rank), "LOCAL_RANK": str(rank)},
                                    preexec_fn=die_with_parent) for rank in range(count)]
        try:
            return _wait(workers)
        except BaseException:
            # Ctrl-C reached the workers too (one process group); SIGTERM or an error here did not.
            _stop(workers, signal.SIGINT)
            raise


def _wait(workers: list[subprocess.Popen]) -> int:
    while True:
        codes = [w.poll() for w in workers]
        failed = next((c for c in codes if c not in (None, 0)), None)
        if failed is not None:
            _stop(workers, signal.SIGTERM)   # a rank that died leaves the others waiting forever
            return failed if failed > 0 else 128 - failed
        if all(c == 0 for c in codes):
            return 0
        time.sleep(0.2)


def _stop(workers: list[subprocess.Popen], signum: int, grace_s: float = 30.0) -> None:
    for worker in workers:
        if worker.poll() is None:
            worker.send_signal(signum)
    deadline = time.monotonic() + grace_s
    for worker in workers:
        try:
            worker.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
