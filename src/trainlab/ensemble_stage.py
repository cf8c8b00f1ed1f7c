"""Assemble the ensemble from the search's top-k models, on validation data only."""

from __future__ import annotations

import json
from dataclasses import dataclass

import torch

from trainlab import paths
from trainlab.config import Params
from trainlab.data import load_split
from trainlab.ensemble import Ensemble, combine, fit_weights, member_from_blob, member_probabilities, save_ensemble
from trainlab.errors import DataError
from trainlab.models import read_checkpoint


@dataclass
class BuiltEnsemble:
    ensemble: Ensemble
    members: list[dict]
    metrics: dict[str, float]


def member_files(params: Params) -> list[tuple[str, object]]:
    """(name, path) of each member: search top-k by rank, then optionally the finetuned model."""
    index = paths.SEARCH_MODELS / "members.json"
    if not index.is_file():
        raise DataError(f"{index}: not found; run `dvc repro search` first")
    ranked = json.loads(index.read_text())[: params.ensemble.top_k]
    files = [(f"search_top{m['rank']}", paths.SEARCH_MODELS / m["file"]) for m in ranked]
    if params.ensemble.include_finetuned:
        files.append(("finetuned", paths.FINETUNED))
    return files


def build_ensemble(params: Params) -> BuiltEnsemble:
    """Load members, weigh them (fitted on val for 'weighted'), save models/ensemble.pt."""
    val = load_split(paths.PREPARED, "target", "val")
    x, y = torch.as_tensor(val.x), torch.as_tensor(val.y)
    names, blobs = [], []
    for name, path in member_files(params):
        names.append(name)
        blobs.append(read_checkpoint(path))
    members = [member_from_blob(blob, name) for name, blob in zip(names, blobs)]
    probs = member_probabilities(members, x)
    method = params.ensemble.method
    weights = fit_weights(probs, y) if method == "weighted" else torch.ones(len(members))
    ensemble = Ensemble(members, weights, method)
    member_acc = [(p.argmax(-1) == y).float().mean().item() for p in probs]
    ens_acc = (combine(probs, ensemble.weights, method).argmax(-1) == y).float().mean().item()
    save_ensemble(paths.ENSEMBLE, ensemble, blobs, names)
    table = [{"name": n, "weight": float(w), "val_acc": a} for n, w, a in zip(names, ensemble.weights, member_acc)]
    metrics = {"val/acc/ensemble": ens_acc, "val/acc/member_mean": sum(member_acc) / len(member_acc),
               "val/acc/member_best": max(member_acc), "members": float(len(members))}
    return BuiltEnsemble(ensemble, table, metrics)
