"""Learning-curve diagnosis (pure numpy): read a run's curves like a practitioner would.

`diagnose(curves)` takes MLflow-style histories (metric name -> [(step, value)]) and returns
`Finding`s such as overfitting or lr_too_high, each with evidence and a concrete suggestion.
"""

from .core import diagnose
from .curves import ALIASES, canonicalize
from .findings import FINDING_NAMES, Finding, render_markdown, summary

__all__ = [
    "ALIASES",
    "FINDING_NAMES",
    "Finding",
    "canonicalize",
    "diagnose",
    "render_markdown",
    "summary",
]
