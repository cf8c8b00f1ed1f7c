"""trainlab: reproducible neural-network training experiments (DVC + PyTorch + MLflow)."""

__version__ = "0.1.0"
