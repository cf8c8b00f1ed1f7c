"""How ensemble selection rules hold on held-out data they were not chosen on (issue 29, item 1).

Reads the projects `bench/own_data.py --keep` leaves (one folder per zoo set, after a whole
`dvc repro`), takes every ensemble candidate's calibrated held-out predictions (validation
split or out-of-fold) exactly as the ensemble stage does, and its test-split predictions,
and compares selection rules without training anything:

- greedy       forward selection with replacement from the best member (Caruana et al. 2004;
               trainlab's rule up to now), the best prefix kept
- bagged       greedy on each of BAGS random halves of the candidates, the bags' weights
               averaged (Caruana et al. 2006, "bagged ensemble selection")
- bootstrap    greedy on each of BAGS bootstrap resamples of the held-out samples, averaged
- mean         every useful candidate, equal weights
- best member  the candidate with the lowest held-out loss

Two measurements per rule:
- honest: the held-out samples split in two seeded stratified halves; the rule (and the best
  member) chosen on one half, scored on the other, then swapped; the two scores averaged
  (accuracy or R², and the loss). This is the check issue 29 asks for.
- test:   chosen on all held-out predictions, scored on the test split (what would ship).

Every rule keeps trainlab's guard: a combination scoring below its best member on the
samples it was chosen on ships that member alone.

    .venv/bin/python bench/own_data.py --keep [--only ...]      # prints the folder it kept
    .venv/bin/python bench/ensemble_selection.py KEPT_FOLDER
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import torch

from trainlab import paths
from trainlab.calibration import apply_temperature
from trainlab.config import load_params
from trainlab.data import load_split
from trainlab.ensemble.assemble import chance_level, load_candidates
from trainlab.ensemble.combine import greedy_selection
from trainlab.models import model_from_blob
from trainlab.heldout import HeldOut, predict_outputs

BAGS = 20
ROUNDS = 25
RULES = ("greedy", "bagged", "bootstrap", "mean", "best member")


def weights_of(rule: str, outputs: np.ndarray, y: np.ndarray, seed: int = 0) -> np.ndarray:
    """The rule's member weights from held-out `outputs` (members, n, ...) and labels `y`."""
    if rule == "greedy":
        return greedy_selection(outputs, y, ROUNDS)
    if rule == "bagged":   # Caruana et al. 2006: greedy within random halves of the candidates
        rng, total = np.random.default_rng(seed), np.zeros(len(outputs))
        for _ in range(BAGS):
            bag = np.sort(rng.permutation(len(outputs))[: max(1, len(outputs) // 2)])
            total[bag] += greedy_selection(outputs[bag], y, ROUNDS)
        return total / BAGS
    if rule == "bootstrap":
        rng, total = np.random.default_rng(seed), np.zeros(len(outputs))
        for _ in range(BAGS):
            pick = rng.integers(0, len(y), len(y))
            total += greedy_selection(outputs[:, pick], y[pick], ROUNDS)
        return total / BAGS
    if rule == "mean":
        return np.ones(len(outputs)) / len(outputs)
    losses = [HeldOut("val", o, y).loss for o in outputs]
    return np.eye(len(outputs))[int(np.argmin(losses))]


def guarded(weights: np.ndarray, outputs: np.ndarray, y: np.ndarray) -> np.ndarray:
    """trainlab's guard: below the best member on these samples -> that member alone."""
    scores = [HeldOut("val", o, y).score for o in outputs]
    mixed = HeldOut("val", np.einsum("m,m...->...", weights, outputs), y).score
    return weights if mixed >= max(scores) else np.eye(len(outputs))[int(np.argmax(scores))]


def scored(weights: np.ndarray, outputs: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    held = HeldOut("val", np.einsum("m,m...->...", weights, outputs), y)
    return held.score, held.loss


def halves(y: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Two seeded halves, stratified by class (a regression's by order of the target)."""
    rng = np.random.default_rng(seed)
    groups = (np.argsort(y) // 2 if np.issubdtype(y.dtype, np.floating) else y)
    first = []
    for g in np.unique(groups):
        members = rng.permutation(np.flatnonzero(groups == g))
        first.extend(members[: (len(members) + rng.integers(0, 2)) // 2])
    mask = np.zeros(len(y), bool)
    mask[first] = True
    return np.flatnonzero(mask), np.flatnonzero(~mask)


def measure(project: Path) -> dict[str, dict[str, float]]:
    os.chdir(project)
    params = load_params(paths.PARAMS)
    candidates = load_candidates(params)
    y = candidates[0].heldout.y
    useful = [c for c in candidates if c.heldout.score > chance_level(y)] or candidates
    held = np.stack([c.heldout.outputs for c in useful])
    test = load_split(paths.PREPARED, "target", "test")
    regression = np.issubdtype(np.asarray(test.y).dtype, np.floating)
    test_out = []
    for c in useful:
        raw = predict_outputs(model_from_blob(c.blob, c.name).eval(), test.x, regression)
        test_out.append(raw if regression else apply_temperature(raw, c.temperature))
    test_out = np.stack(test_out)
    results = {}
    for rule in RULES:
        honest = []
        for a, b in (halves(y, 0), halves(y, 0)[::-1]):
            w = guarded(weights_of(rule, held[:, a], y[a]), held[:, a], y[a])
            honest.append(scored(w, held[:, b], y[b]))
        w = guarded(weights_of(rule, held, y), held, y)
        results[rule] = {"honest_score": float(np.mean([h[0] for h in honest])),
                         "honest_loss": float(np.mean([h[1] for h in honest])),
                         "test_score": scored(w, test_out, np.asarray(test.y))[0], "heldout": len(y)}
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("kept", type=Path, help="the folder bench/own_data.py --keep printed")
    args = parser.parse_args()
    torch.set_num_threads(1)
    projects = sorted(p for p in args.kept.resolve().iterdir() if (p / "dvc.lock").is_file())
    print(f"| set | held-out | {' | '.join(f'{r} honest / test' for r in RULES)} |")
    print(f"|---|---|{'---|' * len(RULES)}")
    for project in projects:
        try:
            found = measure(project)
        except Exception as err:   # a set whose pipeline failed: named, not fatal
            print(f"| {project.name} | error: {err} |", file=sys.stderr)
            continue
        cells = [f"{100 * found[r]['honest_score']:.1f} ({found[r]['honest_loss']:.3f}) / "
                 f"{100 * found[r]['test_score']:.1f}" for r in RULES]
        print(f"| {project.name} | {found['greedy']['heldout']} | {' | '.join(cells)} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
