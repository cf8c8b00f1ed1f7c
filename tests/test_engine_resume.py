"""Resume: a run killed at an epoch end or mid-epoch, rerun with the same checkpoint file,
ends bit-identical to a run that was never interrupted; foreign or damaged checkpoints
are refused or ignored as documented."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from trainlab.engine import Checkpointing, FitResult, Hook, LoopState, fit
from trainlab.errors import CheckpointError

from helpers.engine import Recorder, StopAt, assert_same_weights, signal_data, tiny_model, train_spec, trainer_cfg, weights

TRAIN, VAL = signal_data(256, 0), signal_data(64, 1)     # 8 steps per epoch at batch 32
STEPS_PER_EPOCH, EPOCHS, EVERY = 8, 4, 3
# Everything with state: AdamW moments, warmup + cosine, early stopping's best weights,
# batch-norm running statistics, dropout masks.
SPEC = train_spec(EPOCHS, optimizer={"name": "adamw", "lr": 0.01, "weight_decay": 0.01},
                  schedule={"name": "cosine", "warmup_epochs": 1},
                  early_stopping={"enabled": True, "patience": 10})
TRAINER = trainer_cfg(checkpoint_every_steps=EVERY)
TIMING = ("epoch/time_s", "epoch/samples_per_s")


def model_for(init_seed: int = 0) -> torch.nn.Module:
    return tiny_model("cnn1d", seed=init_seed, batchnorm=True, dropout=0.2)


def train(model: torch.nn.Module, *hooks: Hook, spec=SPEC, checkpointing: Checkpointing | None = None) -> FitResult:
    return fit(model, TRAIN, VAL, spec, TRAINER, seed=0, hooks=list(hooks), checkpointing=checkpointing)


def history(result: FitResult) -> list[dict[str, float]]:
    """Per-epoch metrics without wall-clock timings."""
    return [{k: v for k, v in row.items() if k not in TIMING} for row in result.history]


@pytest.fixture(scope="module")
def uninterrupted() -> tuple[dict[str, torch.Tensor], list[dict[str, float]]]:
    model = model_for()
    result = train(model, StopAt())
    assert len(result.history) == EPOCHS
    return weights(model), history(result)


def interrupt(path: Path, stop: StopAt, fingerprint: str | dict = "fp", spec=SPEC, every: int | None = None) -> Recorder:
    """Run until `stop` raises KeyboardInterrupt, checkpointing to `path` (each epoch, every `every` steps)."""
    recorder = Recorder()
    with pytest.raises(KeyboardInterrupt):
        train(model_for(), stop, recorder, spec=spec, checkpointing=Checkpointing(path, fingerprint, every))
    assert path.is_file()
    return recorder


def resume(path: Path, fingerprint: str | dict = "fp") -> tuple[torch.nn.Module, FitResult, Checkpointing]:
    # A different initialisation: whatever the rerun ends with must come from the checkpoint.
    model, checkpointing = model_for(init_seed=1), Checkpointing(path, fingerprint, EVERY)
    result = train(model, StopAt(), Recorder(), checkpointing=checkpointing)
    return model, result, checkpointing


def test_resume_after_an_epoch_end_is_bit_identical(tmp_path: Path, uninterrupted) -> None:
    ref_weights, ref_history = uninterrupted
    path = tmp_path / "resume.pt"
    # Interrupted at the end of epoch 2, before that epoch's checkpoint: epoch 1's is on disk.
    recorder = interrupt(path, StopAt(epoch=2))

    blob = torch.load(path, map_location="cpu", weights_only=True)   # plain tensors and primitives
    assert blob["fingerprint"] == "fp"
    assert blob["counters"]["epoch"] == 2 and blob["counters"]["step"] == 2 * STEPS_PER_EPOCH
    assert blob["counters"]["step_in_epoch"] == 0 and len(blob["history"]) == 2
    assert_same_weights(blob["model"], recorder.epoch_weights[1])

    model, result, checkpointing = resume(path)
    assert result.resumed_from_step == checkpointing.resumed_from == 2 * STEPS_PER_EPOCH
    assert result.steps == EPOCHS * STEPS_PER_EPOCH
    assert_same_weights(weights(model), ref_weights)
    assert history(result) == ref_history          # each epoch once, same values

    # Rerun after completion: nothing left to train, same weights and history.
    model, again, _ = resume(path)
    assert again.resumed_from_step == EPOCHS * STEPS_PER_EPOCH
    assert_same_weights(weights(model), ref_weights)
    assert history(again) == ref_history


def test_resume_mid_epoch_is_bit_identical(tmp_path: Path, uninterrupted) -> None:
    ref_weights, ref_history = uninterrupted
    path = tmp_path / "resume.pt"
    # Step checkpoints at 3, 6, 9, 12; killed after step 13 (epoch 1, its 5th step).
    interrupt(path, StopAt(step=13), every=EVERY)

    counters = torch.load(path, map_location="cpu", weights_only=True)["counters"]
    assert (counters["epoch"], counters["step"], counters["step_in_epoch"]) == (1, 12, 4)

    model, result, _ = resume(path)
    assert result.resumed_from_step == 12
    assert_same_weights(weights(model), ref_weights)
    # The partial epoch's train loss/accuracy sums were carried over, not restarted.
    assert history(result) == ref_history


def test_checkpoint_with_another_fingerprint_is_ignored(tmp_path: Path, capsys) -> None:
    path = tmp_path / "resume.pt"
    other = train_spec(EPOCHS, optimizer={"name": "adamw", "lr": 0.05})   # other params: other weights
    interrupt(path, StopAt(epoch=1), fingerprint="other-params", spec=other)

    model, result, checkpointing = resume(path)
    assert result.resumed_from_step is None and checkpointing.resumed_from is None
    assert "starting afresh" in capsys.readouterr().err
    # It started afresh from its own initialisation: the same as never having had a checkpoint.
    fresh = model_for(init_seed=1)
    train(fresh, StopAt())
    assert_same_weights(weights(model), weights(fresh))
    assert torch.load(path, map_location="cpu", weights_only=True)["fingerprint"] == "fp"


def test_a_restart_names_what_changed(tmp_path: Path, capsys) -> None:
    """A fingerprint given by name (as trainlab.training.fit.run_identity gives it) says which
    inputs differ: a search resumed with other workers gets other trial threads, and says so."""
    path = tmp_path / "resume.pt"
    started = {"trainer.threads": "2", "data": "a" * 16, "seed": "0"}
    interrupt(path, StopAt(epoch=1), fingerprint=started)
    capsys.readouterr()
    _, result, _ = resume(path, fingerprint={**started, "trainer.threads": "1", "data": "b" * 16})
    assert result.resumed_from_step is None
    line = [ln for ln in capsys.readouterr().err.splitlines() if "starting afresh" in ln]
    assert line == [f"note: {path} was made with other data, trainer.threads (2, now 1); starting afresh"]
    # The same names and values resume.
    interrupt(path, StopAt(epoch=1), fingerprint=started)
    _, result, _ = resume(path, fingerprint=dict(started))
    assert result.resumed_from_step == STEPS_PER_EPOCH


class EpochCount(Hook):
    """A hook with state: how many epoch ends it has seen (kept in the checkpoint)."""

    def __init__(self) -> None:
        self.seen = 0

    def on_epoch_end(self, state: LoopState, metrics: dict[str, float]) -> None:
        self.seen += 1

    def state_dict(self) -> dict:
        return {"seen": self.seen}

    def load_state_dict(self, state: dict) -> None:
        self.seen = state["seen"]


def test_hook_states_are_restored_by_name_not_position(tmp_path: Path) -> None:
    path = tmp_path / "resume.pt"
    with pytest.raises(KeyboardInterrupt):
        train(model_for(), StopAt(epoch=2), EpochCount(), checkpointing=Checkpointing(path, "fp"))
    assert torch.load(path, weights_only=True)["hooks"]["EpochCount"] == {"seen": 2}
    # The rerun has one more hook in front (as DDP rank 0 has tracking): the count still resumes.
    counter = EpochCount()
    train(model_for(), Recorder(), counter, StopAt(), checkpointing=Checkpointing(path, "fp"))
    assert counter.seen == EPOCHS


def test_checkpoint_of_an_older_format_is_ignored(tmp_path: Path, capsys) -> None:
    path = tmp_path / "resume.pt"
    interrupt(path, StopAt(epoch=1))
    blob = torch.load(path, weights_only=True)
    torch.save({**blob, "format": "trainlab.resume/1"}, path)
    _, result, _ = resume(path)
    assert result.resumed_from_step is None
    assert "made with an older trainlab; starting afresh" in capsys.readouterr().err


def _payload_that_writes(marker: Path):
    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))
    return {"format": "trainlab.resume/2", "model": Evil()}


@pytest.mark.parametrize("damage", ["truncated", "garbage", "not_a_checkpoint", "unsafe_pickle"])
def test_damaged_checkpoint_raises_checkpoint_error_naming_the_file(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "resume.pt"
    marker = tmp_path / "unpickled"
    if damage == "truncated":
        interrupt(path, StopAt(epoch=1))
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        path.write_bytes(b"\x00garbage, not a zip archive" * 10)
    elif damage == "not_a_checkpoint":
        torch.save({"weights": torch.zeros(3)}, path)
    else:
        torch.save(_payload_that_writes(marker), path)

    with pytest.raises(CheckpointError) as info:
        resume(path)
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)               # one line for the CLI
    assert not marker.exists()                       # never unpickled arbitrary objects
