"""Assemble the ensemble from the search's top-k models, on held-out predictions only.

Every member file carries its held-out predictions (validation split, or out-of-fold
under cross-validation) and its temperature. Members are compared on those, calibrated;
a member no better than always predicting the commonest class is never kept; and the
ensemble never scores below its best member on them.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import numpy as np
import torch

from trainlab import paths
from trainlab.config import Params
from trainlab.data import load_split
from trainlab.ensemble.combine import Ensemble, combine, fit_weights, greedy_selection, save_ensemble
from trainlab.errors import DataError
from trainlab.models import check_recorded, model_from_blob, read_checkpoint, read_members
from trainlab.heldout import HeldOut, model_meta, predict_outputs


@dataclass
class BuiltEnsemble:
    ensemble: Ensemble
    members: list[dict]
    metrics: dict[str, float]
    heldout: HeldOut           # the ensemble's own held-out predictions


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
    ranked = read_members()[: params.ensemble.top_k]   # a damaged index is one line, not a KeyError
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
        check_recorded(path)   # the file its stage wrote (members.json, models/manifests), not a copy of another
        meta = blob.get("meta", {})
        if "heldout" in meta:
            heldout, temperature = HeldOut.from_json(meta["heldout"]), float(meta.get("temperature", 1.0))
        else:   # a model written without held-out predictions: score it on the validation split
            val = load_split(paths.PREPARED, "target", "val")
            y = np.asarray(val.y)
            outputs = predict_outputs(model_from_blob(blob, name).eval(), val.x, np.issubdtype(y.dtype, np.floating))
            heldout, temperature = HeldOut("val", outputs, y), 1.0
        candidates.append(Candidate(name, blob, heldout.calibrated(temperature), temperature))
    first = candidates[0].heldout
    for other in candidates[1:]:
        if other.heldout.kind != first.kind or not np.array_equal(other.heldout.y, first.y):
            raise DataError(f"ensemble: {other.name}'s held-out predictions ({other.heldout.describe()}) are not "
                            f"on the same samples as {candidates[0].name}'s ({first.describe()}); "
                            f"rerun the pipeline (dvc repro) so every model is selected the same way")
    return candidates


def chance_level(y: np.ndarray) -> float:
    """The score of a model that learned nothing: the accuracy of always predicting the
    commonest class, or the R^2 of always predicting the mean (0)."""
    if np.issubdtype(y.dtype, np.floating):
        return 0.0
    return float(np.bincount(y).max() / len(y))


def build_ensemble(params: Params) -> BuiltEnsemble:
    """Weigh the candidates on held-out predictions, save models/ensemble.pt."""
    candidates = load_candidates(params)
    first = candidates[0].heldout
    y, regression, score = first.y, first.regression, first.score_name
    chance = chance_level(y)
    useful = [c for c in candidates if c.heldout.score > chance]
    for dropped in (c for c in candidates if c not in useful):
        print(f"ensemble: {dropped.name} dropped: held-out {score} {dropped.heldout.score:.3f} is no better "
              f"than {'predicting the mean' if regression else 'chance'} ({chance:.3f})", file=sys.stderr)
    useful = useful or [min(candidates, key=lambda c: c.heldout.loss)]
    outputs = np.stack([c.heldout.outputs for c in useful])
    weights = _weights(params, outputs, y)
    ensemble_outputs = combine(torch.from_numpy(outputs), torch.from_numpy(weights), params.ensemble.method,
                               regression).numpy()
    best_member = max(useful, key=lambda c: (c.heldout.score, -c.heldout.loss))
    if HeldOut(first.kind, ensemble_outputs, y).score < best_member.heldout.score:
        # Never ship an ensemble that loses to one of its members where it can be checked.
        print(f"ensemble: the combination scores below {best_member.name} on held-out data; "
              f"keeping {best_member.name} alone", file=sys.stderr)
        weights = np.array([1.0 if c is best_member else 0.0 for c in useful])
        ensemble_outputs = best_member.heldout.outputs
    kept = [(c, w) for c, w in zip(useful, weights) if w > 0]
    members = [model_from_blob(c.blob, c.name).eval() for c, _ in kept]
    ensemble = Ensemble(members, torch.tensor([w for _, w in kept]), params.ensemble.method,
                        torch.tensor([c.temperature for c, _ in kept]), regression)
    heldout = HeldOut(first.kind, ensemble_outputs, y, first.folds)
    temperature = model_meta(heldout, params.selection.calibrate)["temperature"]
    save_ensemble(paths.ENSEMBLE, ensemble, [c.blob for c, _ in kept], [c.name for c, _ in kept],
                  meta={"heldout": heldout.to_json(), "temperature": temperature})
    weight_of = {c.name: float(w) for c, w in zip(useful, weights)}
    table = [{"name": c.name, "weight": weight_of.get(c.name, 0.0), f"heldout_{score}": c.heldout.score,
              "heldout_loss": c.heldout.loss} for c in candidates]
    metrics = {f"heldout/{score}/ensemble": heldout.score, "heldout/loss/ensemble": heldout.loss,
               f"heldout/{score}/member_best": best_member.heldout.score,
               f"heldout/{score}/member_mean": float(np.mean([c.heldout.score for c in candidates])),
               "members": len(kept), "candidates": len(candidates),   # counts: ints in the JSON files too
               "calibration/temperature": temperature}
    return BuiltEnsemble(ensemble, table, metrics, heldout)


def _weights(params: Params, probs: np.ndarray, y: np.ndarray) -> np.ndarray:
    method = params.ensemble.method
    if method == "greedy":
        return greedy_selection(probs, y, params.ensemble.greedy_rounds)
    if method == "weighted":
        return fit_weights(torch.from_numpy(probs).float(), torch.from_numpy(y)).double().numpy()
    return np.ones(len(probs)) / len(probs)
