"""pretrain with `pretrain.from` set: import a pretrained network instead of training one.

The stage writes what a trained pretrain writes, so finetune, search, ensemble, serving and
the scratch twin work on the imported network unchanged: models/pretrained.pt (a trainlab
model file built for the target's input shape, its head the file's), its manifest, and the
declared reports (an empty curves.json: nothing was trained; details.json and
artifacts/imported.md name the file, its SHA-256 and what the import adapted). The MLflow
run gets the file's name and SHA-256 as tags, beside the `pretrain.from` param.
"""

from __future__ import annotations

from pathlib import Path

from trainlab import paths
from trainlab.config import Params
from trainlab.data import data_hashes
from trainlab.data.prepared import task_info
from trainlab.dvc_metrics import write_stage_metrics
from trainlab.hashing import sha256_file
from trainlab.io import write_json, write_text
from trainlab.models import save_model, write_manifest
from trainlab.models.imported import ImportedNetwork, import_network
from trainlab.params_record import ParamsRecord
from trainlab.tracking import NullRun, StageRun, open_stage_run


def run_import(params: Params, params_path: str, ran_with: ParamsRecord, is_main: bool = True) -> StageRun | NullRun:
    """Import `pretrain.from` -> models/pretrained.pt, its manifest and reports; returns the stage's run."""
    source = params.pretrain.imported()
    assert source is not None
    info = task_info(paths.PREPARED, "target")
    with open_stage_run("pretrain", params, is_main, inputs=data_hashes(paths.PREPARED),
                        params_file=params_path) as run:
        network = import_network(source, params.model, info.input_shape, info.kind, info.class_names)
        if not is_main:
            return run
        digest = sha256_file(source)
        ran_with.check_unchanged()
        save_model(paths.PRETRAINED, network.model, params.model, info.input_shape, network.class_names,
                   meta={"stage": "pretrain", "imported_from": source.name, "imported_sha256": digest})
        report = paths.stage_reports("pretrain")
        details = {"imported/tensors": len(network.model.state_dict()),
                   "imported/parameters": sum(p.numel() for p in network.model.parameters())}
        write_stage_metrics(report, "pretrain", details)
        write_json(report / "curves.json", [])   # the declared plot: no epochs, nothing was trained
        write_text(report / "artifacts" / "imported.md", _report(source, digest, network))
        write_manifest("pretrain", [paths.PRETRAINED], params=ran_with.values)
        run.set_tags({"trainlab.pretrain.from": str(source), "trainlab.pretrain.from_sha256": digest,
                      "trainlab.pretrain.layout": network.layout})
        run.log_scores(details, step=0)
        run.log_artifact(report / "artifacts" / "imported.md")
        if params.tracking.log_models:   # the DVC output byte for byte, as a trained pretrain's
            run.log_artifact(paths.PRETRAINED, "model")
        print(f"pretrain: imported {network.model.config.arch} from {source} (sha256 {digest[:12]}, "
              f"{network.layout} layout, {details['imported/tensors']} tensors)"
              + "".join(f"; {note}" for note in network.notes), flush=True)
    return run


def _report(source: Path, digest: str, network: ImportedNetwork) -> str:
    lines = ["# pretrain: imported, not trained", "",
             f"- file: `{source}`", f"- SHA-256: `{digest}`",
             f"- layout: {network.layout}; network: model.arch {network.model.config.arch}",
             f"- head: {len(network.class_names)} outputs (replaced by finetune's head for the target's classes)",
             *(f"- {note}" for note in network.notes)]
    return "\n".join(lines) + "\n"
