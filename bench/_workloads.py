"""The pretrain workload three ways, one per process: `python bench/_workloads.py KIND --project DIR`.

KIND is
  handwritten         a minimal PyTorch loop: same model, AdamW, warmup+cosine per step,
                      grad-norm clipping, tensors in memory, eval under inference_mode
  trainlab            trainlab.training.train_source as a user gets it: MLflow tracking to
                      sqlite (training.tracking_hook), per-step metrics, per-layer grad
                      norms, a checkpoint every epoch, progress in log mode
  trainlab-untracked  the same without the tracking hook (no MLflow at all)
  trainlab-nosysmetrics  tracked, with MLflow's system metrics off (tracking.system_metrics: false)
  lightning           Lightning's Trainer on the same model and maths: CSV logger,
                      checkpointing on, no progress bar, no model summary

DIR holds params.yaml and data/prepared (the source task trains). Each kind sets
torch's intra-op threads explicitly AFTER its imports, because importing some
libraries changes torch's thread settings, and imports torch._dynamo before its timer
(the first torch.optim optimizer of a process imports it lazily: a one-time cost of
seconds under load that would otherwise land in whichever timer builds the optimizer).
The last stdout line is one JSON result: train_s (wall time of the training call
alone: optimizer construction, epochs, validation, hooks), epochs, val_acc, threads.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit_result  # noqa: E402

EVAL_BATCH = 1024   # as trainlab's evaluate()


def _load_arrays(project: Path):
    """The source task's train/val arrays, straight from the prepared .npy files."""
    import numpy as np

    manifest = json.loads((project / "data/prepared/manifest.json").read_text())
    task = manifest["tasks"]["source"]
    arrays = {split: tuple(np.load(project / "data/prepared" / task["splits"][split]["files"][name]["path"])
                           for name in ("x", "y")) for split in ("train", "val")}
    return arrays, tuple(manifest["input_shape"]), task["num_classes"]


def _lr_factor(step: int, steps_per_epoch: int, epochs: int, warmup_epochs: float, floor: float) -> float:
    """Linear warmup from 0, then cosine to floor: the same maths as trainlab's Schedule."""
    warm = int(round(warmup_epochs * steps_per_epoch))
    if step < warm:
        return (step + 1) / warm
    total = max(1, steps_per_epoch * epochs)
    t, span = step - warm, max(1, total - warm)
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(t, span) / span))


def _warm_imports() -> None:
    """Pay one-time lazy imports before any timer: the first torch.optim optimizer imports
    torch._dynamo (seconds on a loaded machine), whichever way the loop is written."""
    import torch._dynamo  # noqa: F401


def handwritten(project: Path, threads: int) -> dict:
    import torch
    import torch.nn.functional as F

    from trainlab.config import load_params
    from trainlab.engine.budget import resolve_budget
    from trainlab.models import build_model

    torch.set_num_threads(threads)
    params = load_params(project / "params.yaml")
    trainer = params.trainer
    arrays, input_shape, num_classes = _load_arrays(project)
    x, y = (torch.as_tensor(a) for a in arrays["train"])
    spec = resolve_budget(params.pretrain, trainer, len(y)).spec   # the numbers fit() uses for `auto`
    vx, vy = (torch.as_tensor(a) for a in arrays["val"])
    torch.manual_seed(params.seed)
    model = build_model(params.model, input_shape, num_classes)
    batch = spec.batch_size
    steps_per_epoch = math.ceil(len(y) / batch)
    opt_cfg = spec.optimizer
    _warm_imports()

    started = time.perf_counter()   # the optimizer is built inside the timer, as in fit() and Lightning
    optimizer = torch.optim.AdamW(model.parameters(), lr=opt_cfg.lr, betas=opt_cfg.betas, eps=opt_cfg.eps,
                                  weight_decay=opt_cfg.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: _lr_factor(
        s, steps_per_epoch, spec.epochs, spec.schedule.warmup_epochs, spec.schedule.min_lr_ratio))
    epoch_times, val_acc = [], float("nan")
    for epoch in range(spec.epochs):
        epoch_start = time.perf_counter()
        model.train()
        order = torch.randperm(len(y))
        for start in range(0, len(y), batch):
            index = order[start:start + batch]
            loss = F.cross_entropy(model(x[index]), y[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), trainer.clip_grad_norm)
            optimizer.step()
            schedule.step()
        epoch_times.append(time.perf_counter() - epoch_start)
        model.eval()
        correct = 0
        with torch.inference_mode():
            for start in range(0, len(vy), EVAL_BATCH):
                logits = model(vx[start:start + EVAL_BATCH])
                correct += int((logits.argmax(-1) == vy[start:start + EVAL_BATCH]).sum())
        val_acc = correct / len(vy)
        print(f"epoch {epoch + 1} loss {loss.item():.4f} val/acc {val_acc:.4f}", file=sys.stderr)
    train_s = time.perf_counter() - started
    return {"train_s": train_s, "epochs": spec.epochs, "val_acc": val_acc, "steps_time_s": epoch_times,
            "threads": torch.get_num_threads()}


class _TimedHook:
    """A hook whose event calls are timed: what it costs the training thread itself."""

    def __init__(self, hook) -> None:
        self.hook, self.seconds = hook, 0.0

    def __getattr__(self, name: str):
        method = getattr(self.hook, name)
        if not name.startswith("on_"):
            return method

        def timed(*args, **kwargs):
            started = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - started
        return timed


_SYSTEM_THREAD_CPU_S: list[float] = []


def _time_system_metrics_thread() -> None:
    """Record the CPU seconds MLflow's system-metrics thread used: its whole cost to the run."""
    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

    original = SystemMetricsMonitor.monitor

    def monitor(self):
        try:
            original(self)
        finally:
            _SYSTEM_THREAD_CPU_S.append(time.thread_time())
    SystemMetricsMonitor.monitor = monitor


def trainlab_run(project: Path, threads: int, tracking: bool, system_metrics: bool = True) -> dict:
    import torch

    from trainlab.config import load_params
    from trainlab.engine import setup_runtime
    from trainlab.tracking import StageRun
    from trainlab import paths
    from trainlab.data import data_hashes
    from trainlab.training import TrainRequest, finish, train_source
    from trainlab.training.tracking_hook import tracking_hooks

    os.chdir(project)   # trainlab's paths (data/prepared, .trainlab/resume, mlflow.db) are relative
    params = load_params("params.yaml")
    params = params.model_copy(update={"tracking": params.tracking.model_copy(
        update={"system_metrics": system_metrics})})
    _time_system_metrics_thread()
    runtime = setup_runtime(params.trainer)
    torch.set_num_threads(threads)
    _warm_imports()
    setup_s = close_s = 0.0
    timed_hooks: list[_TimedHook] = []

    def train(hooks) -> tuple:
        started = time.perf_counter()
        trained = train_source(TrainRequest(params, params.pretrain, "pretrain", "pretrain", runtime, tuple(hooks)))
        return trained, time.perf_counter() - started

    if tracking:
        opened = time.perf_counter()
        run = StageRun("pretrain", params, inputs=data_hashes(paths.PREPARED))
        run.__enter__()
        setup_s = time.perf_counter() - opened
        timed_hooks = [_TimedHook(hook) for hook in tracking_hooks(run)]
        try:
            trained, train_s = train(timed_hooks)
        finally:
            closing = time.perf_counter()
            run.__exit__(None, None, None)
            close_s = time.perf_counter() - closing
    else:
        trained, train_s = train([])
    finish(trained)
    history = trained.result.history
    return {"train_s": train_s, "epochs": len(history), "val_acc": history[-1]["val/acc"],
            "steps_time_s": [h["epoch/time_s"] for h in history], "threads": torch.get_num_threads(),
            "tracking_setup_s": setup_s, "tracking_close_s": close_s, "precision": trained.result.precision,
            "tracking_hook_s": sum(hook.seconds for hook in timed_hooks),
            "system_metrics": tracking and system_metrics, "system_thread_cpu_s": sum(_SYSTEM_THREAD_CPU_S)}


def lightning_run(project: Path, threads: int) -> dict:
    import torch
    import torch.nn.functional as F
    from torch.utils.data import BatchSampler, DataLoader, RandomSampler, SequentialSampler, TensorDataset

    import lightning.pytorch as pl
    from lightning.pytorch.loggers import CSVLogger

    from trainlab.config import load_params
    from trainlab.engine.budget import resolve_budget
    from trainlab.models import build_model

    torch.set_num_threads(threads)   # after importing lightning, which may change it
    warnings.filterwarnings("ignore")   # "few dataloader workers" and friends
    params = load_params(project / "params.yaml")
    trainer_cfg = params.trainer
    arrays, input_shape, num_classes = _load_arrays(project)
    train_set = TensorDataset(*(torch.as_tensor(a) for a in arrays["train"]))
    val_set = TensorDataset(*(torch.as_tensor(a) for a in arrays["val"]))
    spec = resolve_budget(params.pretrain, trainer_cfg, len(train_set)).spec
    batch = spec.batch_size
    steps_per_epoch = math.ceil(len(train_set) / batch)
    # Whole batches by index (batch_size=None + a BatchSampler): the same in-memory lookup
    # as the other two, so the comparison is of the training loops, not of collation.
    train_loader = DataLoader(train_set, batch_size=None,
                              sampler=BatchSampler(RandomSampler(train_set), batch, drop_last=False))
    val_loader = DataLoader(val_set, batch_size=None,
                            sampler=BatchSampler(SequentialSampler(val_set), EVAL_BATCH, drop_last=False))

    class Module(pl.LightningModule):
        def __init__(self, model: torch.nn.Module):
            super().__init__()
            self.model = model

        def training_step(self, batch, batch_idx):
            x, y = batch
            logits = self.model(x)
            loss = F.cross_entropy(logits, y)
            self.log("train/loss", loss, on_step=True, on_epoch=True)
            self.log("train/acc", (logits.argmax(-1) == y).float().mean(), on_step=False, on_epoch=True)
            return loss

        def validation_step(self, batch, batch_idx):
            x, y = batch
            logits = self.model(x)
            self.log("val/loss", F.cross_entropy(logits, y), on_epoch=True, batch_size=len(y))
            self.log("val/acc", (logits.argmax(-1) == y).float().mean(), on_epoch=True, batch_size=len(y))

        def configure_optimizers(self):
            cfg = spec.optimizer
            optimizer = torch.optim.AdamW(self.parameters(), lr=cfg.lr, betas=cfg.betas, eps=cfg.eps,
                                          weight_decay=cfg.weight_decay)
            schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: _lr_factor(
                s, steps_per_epoch, spec.epochs, spec.schedule.warmup_epochs, spec.schedule.min_lr_ratio))
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    pl.seed_everything(params.seed, verbose=False)
    module = Module(build_model(params.model, input_shape, num_classes))
    root = project / "lightning"
    trainer = pl.Trainer(max_epochs=spec.epochs, accelerator="cpu", devices=1, precision="32-true",
                         logger=CSVLogger(root), enable_checkpointing=True, enable_progress_bar=False,
                         enable_model_summary=False, num_sanity_val_steps=0,
                         gradient_clip_val=trainer_cfg.clip_grad_norm, gradient_clip_algorithm="norm",
                         default_root_dir=root)
    torch.set_num_threads(threads)   # and again after the Trainer is built, to be sure
    _warm_imports()
    started = time.perf_counter()
    trainer.fit(module, train_loader, val_loader)
    train_s = time.perf_counter() - started
    return {"train_s": train_s, "epochs": trainer.current_epoch, "val_acc": float(trainer.callback_metrics["val/acc"]),
            "threads": torch.get_num_threads(),
            "checkpoints": len(list(root.rglob("*.ckpt")))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=["handwritten", "trainlab", "trainlab-untracked",
                                                     "trainlab-nosysmetrics", "lightning"])
    parser.add_argument("--project", type=Path, required=True)
    parser.add_argument("--threads", type=int, required=True)
    args = parser.parse_args()
    project = args.project.resolve()
    if args.kind == "handwritten":
        result = handwritten(project, args.threads)
    elif args.kind == "lightning":
        result = lightning_run(project, args.threads)
    else:
        result = trainlab_run(project, args.threads, tracking=args.kind != "trainlab-untracked",
                              system_metrics=args.kind != "trainlab-nosysmetrics")
    emit_result({"kind": args.kind, **result})


if __name__ == "__main__":
    main()
