"""Assemble the ensemble from the search's top-k models, on held-out predictions only.

Every member file carries its held-out predictions (validation split, or out-of-fold
under cross-validation) and its temperature. Members are compared on those, calibrated;
a member no better than always predicting the commonest class is never kept; and the
ensemble never scores below its best member on them.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass

import numpy as np
import torch

from trainlab import paths
from trainlab.calibration import apply_temperature, fit_temperature
from trainlab.config import Params
from trainlab.data import load_split
from trainlab.ensemble.combine import Ensemble, combine, fit_weights, greedy_selection, save_ensemble
from trainlab.errors import DataError
from trainlab.models import model_from_blob, read_checkpoint
from trainlab.selection import HeldOut, predict_probs


@dataclass
class BuiltEnsemble:
    ensemble: Ensemble
    members: list[dict]
    metrics: dict[str, float]


@dataclass
class Candidate:
    name: str
    blob: dict
    heldout: HeldOut          # calibrated with the member's temperature
    temperature: float


def member_files(params: Params) -> list[tuple[str, object]]:
    """(name, path) of each candidate: search top-k by rank, then the finetuned model and
    finetune's from-scratch and linear baselines where asked for. Every trial starts from the
    pretrained backbone; the baselines do not, so where pretraining hurts, or a linear model
    suits the data, the vote can still use them (and where they add nothing, greedy selection
    leaves them out)."""
    index = paths.SEARCH_MODELS / "members.json"
    if not index.is_file():
        raise DataError(f"{index}: not found; run `dvc repro search` first")
    ranked = json.loads(index.read_text())[: params.ensemble.top_k]
    files = [(f"search_top{m['rank']}", paths.SEARCH_MODELS / m["file"]) for m in ranked]
    if params.ensemble.include_finetuned:
        files.append(("finetuned", paths.FINETUNED))
    if params.ensemble.include_baselines:
        trained = {"scratch": params.finetune.compare_scratch, "linear": params.finetune.linear_baseline}
        files += [(name, path) for name, path in paths.BASELINE_MODELS.items() if trained[name]]
    return files


def load_candidates(params: Params) -> list[Candidate]:
    """Every candidate with its calibrated held-out predictions, all on the same samples."""
    candidates = []
    for name, path in member_files(params):
        blob = read_checkpoint(path)
        meta = blob.get("meta", {})
        if "heldout" in meta:
            heldout, temperature = HeldOut.from_json(meta["heldout"]), float(meta.get("temperature", 1.0))
        else:   # a model written without held-out predictions: score it on the validation split
            val = load_split(paths.PREPARED, "target", "val")
            heldout = HeldOut("val", predict_probs(model_from_blob(blob, name).eval(), val.x), np.asarray(val.y))
            temperature = 1.0
        calibrated = HeldOut(heldout.kind, apply_temperature(heldout.probs, temperature), heldout.y,
                             heldout.folds)
        candidates.append(Candidate(name, blob, calibrated, temperature))
    first = candidates[0].heldout
    for other in candidates[1:]:
        if other.heldout.kind != first.kind or not np.array_equal(other.heldout.y, first.y):
            raise DataError(f"ensemble: {other.name}'s held-out predictions ({other.heldout.describe()}) are not "
                            f"on the same samples as {candidates[0].name}'s ({first.describe()}); "
                            f"rerun the pipeline (dvc repro) so every model is selected the same way")
    return candidates


def chance_level(y: np.ndarray) -> float:
    """Accuracy of always predicting the commonest class."""
    return float(np.bincount(y).max() / len(y))


def build_ensemble(params: Params) -> BuiltEnsemble:
    """Weigh the candidates on held-out predictions, save models/ensemble.pt."""
    candidates = load_candidates(params)
    y = candidates[0].heldout.y
    chance = chance_level(y)
    useful = [c for c in candidates if c.heldout.acc > chance]
    for dropped in (c for c in candidates if c not in useful):
        print(f"ensemble: {dropped.name} dropped: held-out acc {dropped.heldout.acc:.3f} is no better than "
              f"chance ({chance:.3f})", file=sys.stderr)
    useful = useful or [min(candidates, key=lambda c: c.heldout.loss)]
    probs = np.stack([c.heldout.probs for c in useful])
    weights = _weights(params, probs, y)
    ensemble_probs = combine(torch.from_numpy(probs), torch.from_numpy(weights), params.ensemble.method).numpy()
    best_member = max(useful, key=lambda c: (c.heldout.acc, -c.heldout.loss))
    if float((ensemble_probs.argmax(1) == y).mean()) < best_member.heldout.acc:
        # Never ship an ensemble that loses to one of its members where it can be checked.
        print(f"ensemble: the combination scores below {best_member.name} on held-out data; "
              f"keeping {best_member.name} alone", file=sys.stderr)
        weights = np.array([1.0 if c is best_member else 0.0 for c in useful])
        ensemble_probs = best_member.heldout.probs
    kept = [(c, w) for c, w in zip(useful, weights) if w > 0]
    members = [model_from_blob(c.blob, c.name).eval() for c, _ in kept]
    ensemble = Ensemble(members, torch.tensor([w for _, w in kept]), params.ensemble.method,
                        torch.tensor([c.temperature for c, _ in kept]))
    temperature = (fit_temperature(np.log(np.clip(ensemble_probs, 1e-12, None)), y)
                   if params.selection.calibrate else 1.0)
    heldout = HeldOut(candidates[0].heldout.kind, ensemble_probs, y, candidates[0].heldout.folds)
    save_ensemble(paths.ENSEMBLE, ensemble, [c.blob for c, _ in kept], [c.name for c, _ in kept],
                  meta={"heldout": heldout.to_json(), "temperature": temperature})
    weight_of = {c.name: float(w) for c, w in zip(useful, weights)}
    table = [{"name": c.name, "weight": weight_of.get(c.name, 0.0), "heldout_acc": c.heldout.acc,
              "heldout_loss": c.heldout.loss} for c in candidates]
    metrics = {"heldout/acc/ensemble": heldout.acc, "heldout/loss/ensemble": heldout.loss,
               "heldout/acc/member_best": best_member.heldout.acc,
               "heldout/acc/member_mean": float(np.mean([c.heldout.acc for c in candidates])),
               "members": float(len(kept)), "candidates": float(len(candidates)),
               "calibration/temperature": temperature}
    return BuiltEnsemble(ensemble, table, metrics)


def _weights(params: Params, probs: np.ndarray, y: np.ndarray) -> np.ndarray:
    method = params.ensemble.method
    if method == "greedy":
        return greedy_selection(probs, y, params.ensemble.greedy_rounds)
    if method == "weighted":
        return fit_weights(torch.from_numpy(probs).float(), torch.from_numpy(y)).double().numpy()
    return np.ones(len(probs)) / len(probs)
