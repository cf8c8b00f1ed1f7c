"""The Finding record and its renderings: a diagnosis.md body and a flat 0/1 metrics dict."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

# Ordered by severity: the report lists findings in this order.
FINDING_NAMES: tuple[str, ...] = (
    "diverged",
    "exploding_gradients",
    "vanishing_gradients",
    "lr_too_high",
    "lr_too_low",
    "poor_initialization",
    "premature_lr_decay",
    "overfitting",
    "underfitting",
    "small_validation",
    "healthy",
    # no loss/accuracy curve at all: refusing a verdict beats a false "healthy"
    "insufficient_data",
)

TITLES: dict[str, str] = {
    "diverged": "Training diverged",
    "exploding_gradients": "Exploding gradients",
    "vanishing_gradients": "Vanishing gradients",
    "lr_too_high": "Learning rate too high",
    "lr_too_low": "Learning rate too low",
    "poor_initialization": "Poor initialisation",
    "premature_lr_decay": "Learning rate decayed too early",
    "overfitting": "Overfitting",
    "underfitting": "Underfitting",
    "small_validation": "Validation split too small to select",
    "healthy": "Healthy training",
    "insufficient_data": "Not enough data to judge",
}

SUMMARY_PREFIX = "diagnosis/"


@dataclass(frozen=True)
class Finding:
    """One diagnosis: what was seen (evidence, data) and what to change (suggestion)."""

    name: str
    evidence: str
    suggestion: str
    data: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.name not in FINDING_NAMES:
            raise ValueError(f"unknown finding name {self.name!r}; known: {FINDING_NAMES}")


def sort_findings(findings: Iterable[Finding]) -> list[Finding]:
    """Findings in severity order (the order of FINDING_NAMES)."""
    return sorted(findings, key=lambda f: FINDING_NAMES.index(f.name))


def summary(findings: Iterable[Finding]) -> dict[str, int]:
    """`diagnosis/<name>: 1` for each finding made, in severity order.

    Only the findings made, not a 0 for each of the twelve names: those were twelve mostly-"-"
    columns of `dvc metrics show` and `dvc exp show`. A change of verdict still shows in
    `dvc metrics diff`, as a key that appears (`- -> 1`) and one that goes (`1 -> -`).
    """
    return {f"{SUMMARY_PREFIX}{f.name}": 1 for f in sort_findings(findings)}


def _verdict(findings: list[Finding]) -> str:
    names = [f.name for f in findings]
    if names == ["healthy"]:
        return "**Verdict: healthy** - no problem found."
    if names == ["insufficient_data"]:
        return "**Verdict: unknown** - the run logged no usable loss or accuracy curve."
    problems = [n for n in names if n not in ("healthy", "insufficient_data")]
    label = "problem" if len(problems) == 1 else "problems"
    return (
        f"**Verdict: {len(problems)} {label} found** - "
        + ", ".join(f"`{n}`" for n in problems)
        + "."
    )


def _data_line(data: dict[str, Any]) -> str:
    items = ", ".join(f"`{k}={_compact(v)}`" for k, v in data.items())
    return f"Data: {items}" if items else ""


def _compact(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_compact(v) for v in value) + "]"
    return str(value)


def render_markdown(findings: Iterable[Finding]) -> str:
    """A `diagnosis.md` body: heading, verdict, then one section per finding."""
    ordered = sort_findings(findings)
    lines = ["# Training diagnosis", "", _verdict(ordered), ""]
    for f in ordered:
        lines += [f"## {TITLES[f.name]} (`{f.name}`)", "", f"**Evidence:** {f.evidence}", ""]
        lines += [f"**Suggestion:** {f.suggestion}", ""]
        data_line = _data_line(f.data)
        if data_line:
            lines += [data_line, ""]
    return "\n".join(lines).rstrip() + "\n"
