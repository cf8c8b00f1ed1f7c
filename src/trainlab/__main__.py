"""`python -m trainlab` (used by torchrun, which needs a module to start)."""

from trainlab.cli import main

main()
