"""Imported by the search workers' fork server only (the last of workers.PRELOAD): that
process ends without tearing its interpreter down.

The fork server exits with SystemExit when `trainlab search` ends. Freeing the torch and
MLflow it imported took it ~2 s, during which it held the search's stdout and stderr open,
so a caller reading them (a pipe, `| tee`, a benchmark) waited that long after the search
had finished. The workers are forks of it but never run its atexit handlers (multiprocessing
ends them with os._exit), and the server itself has nothing to flush or close.
"""

import atexit
import os
import sys

if sys.argv == ["-c"] and "multiprocessing.forkserver" in sys.modules:   # the fork server, started by `python -c`
    atexit.register(os._exit, 0)   # registered last, so run first
