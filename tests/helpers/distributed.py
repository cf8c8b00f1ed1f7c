"""What the multi-process tests share: a free loopback port and the DDP reference task."""

from __future__ import annotations

import socket

from helpers.engine import signal_data, train_spec

# 249 samples in batches of 32: the last global batch (25) splits unevenly, 13/12, over two
# ranks; each rank's loss is weighted by its share of the global batch, so it still matches.
TRAIN, VAL = signal_data(249, 0), signal_data(61, 1)   # an odd val split: ranks evaluate 31 + 30
SPEC = train_spec(3, optimizer={"name": "adamw", "lr": 0.01, "weight_decay": 0.01},
                  schedule={"name": "cosine", "warmup_epochs": 1})


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
