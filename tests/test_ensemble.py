"""Ensembles: soft and hard voting against hand computations, weights fitted on val,
save/load round trips, and the pipeline never touching the test split before evaluate."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from trainlab import paths
from trainlab.config.schema import ModelConfig
from trainlab.ensemble.combine import Ensemble, fit_weights, load_any, load_ensemble, save_ensemble
from trainlab.models import Classifier, build_model, model_from_blob, read_checkpoint, save_model
from trainlab.testing import copy_project, trainlab


class FixedLogits(nn.Module):
    """A 'model' whose logits are given: row i of the batch gets row i of `logits`."""

    def __init__(self, logits: list[list[float]]):
        super().__init__()
        self.register_buffer("logits", torch.tensor(logits, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits[: len(x)]


def softmax(row: list[float]) -> list[float]:
    exps = [math.exp(v) for v in row]
    return [e / sum(exps) for e in exps]


def test_soft_vote_is_the_mean_of_member_probabilities() -> None:
    logits = [[[2.0, 0.5, -1.0], [0.0, 0.0, 3.0]],
              [[-1.0, 1.5, 0.2], [1.0, 2.0, 0.5]],
              [[0.3, 0.3, 0.9], [4.0, -2.0, 0.0]]]
    ensemble = Ensemble([FixedLogits(m) for m in logits], torch.ones(3), "soft_vote")
    out = ensemble(torch.zeros(2, 5)).exp()
    winners = []
    for sample in range(2):
        expected = [sum(softmax(m[sample])[c] for m in logits) / 3 for c in range(3)]
        # fp32 softmax, mean and log/exp against Python's float64: 1e-5 is 84 fp32 eps.
        assert out[sample].tolist() == pytest.approx(expected, rel=1e-5)
        winners.append(expected.index(max(expected)))
    assert ensemble(torch.zeros(2, 5)).argmax(-1).tolist() == winners == [1, 0]


def test_hard_vote_majority_and_tie_breaks() -> None:
    # sample 0: members vote 1, 1, 0; member 3 is so sure of class 0 that the *mean*
    #           probability favours 0, but the majority says 1.
    # sample 1: one vote each for 0, 2 and 1 (a three-way tie).
    members = [
        [[0.0, 1.0, 0.0], [2.0, 0.0, 1.0]],
        [[0.0, 1.0, 0.0], [1.0, 0.0, 2.0]],
        [[20.0, 0.0, 0.0], [0.0, 5.0, 0.0]],
    ]
    probs = torch.stack([torch.tensor(m).softmax(-1) for m in members])
    assert probs.mean(0)[0].argmax().item() == 0          # soft vote would pick 0
    ensemble = Ensemble([FixedLogits(m) for m in members], torch.ones(3), "hard_vote")
    assert ensemble(torch.zeros(2, 1)).argmax(-1)[0].item() == 1   # majority picks 1
    # sample 1 has one vote each for 0, 2 and 1: a three-way tie; the mean probability
    # decides, and member 3's confident class 1 has the highest mean.
    assert probs.mean(0)[1].argmax().item() == 1
    assert ensemble(torch.zeros(2, 1)).argmax(-1)[1].item() == 1


def test_hard_vote_tie_goes_to_higher_mean_probability_then_lower_index() -> None:
    # Two members, one vote each for class 0 and class 2.
    by_probability = [[[2.0, 0.0, 1.9]],    # votes 0 (barely), high p(2)
                      [[-3.0, 0.0, 2.0]]]   # votes 2
    probs = torch.stack([torch.tensor(m).softmax(-1) for m in by_probability]).mean(0)[0]
    assert probs[2] > probs[0]
    ensemble = Ensemble([FixedLogits(m) for m in by_probability], torch.ones(2), "hard_vote")
    assert ensemble(torch.zeros(1, 1)).argmax(-1).item() == 2

    # Mirror images: equal votes AND exactly equal mean probabilities: the lower index wins.
    # (These logits give bitwise-mirrored softmax outputs, so the means are exactly equal.)
    mirrored = [[[3.0, 0.0, 1.0]], [[1.0, 0.0, 3.0]]]
    p_a, p_b = (torch.tensor(m).softmax(-1)[0] for m in mirrored)
    assert torch.equal(p_a, p_b.flip(0)) and p_a.argmax() == 0 and p_b.argmax() == 2
    for order in (mirrored, mirrored[::-1]):
        ensemble = Ensemble([FixedLogits(m) for m in order], torch.ones(2), "hard_vote")
        assert ensemble(torch.zeros(1, 1)).argmax(-1).item() == 0


def member_probs_for(y: np.ndarray, accuracy: float, classes: int, rng) -> torch.Tensor:
    """Probabilities of a member that puts 0.8 on its prediction, right `accuracy` of the time."""
    n = len(y)
    predicted = np.where(rng.random(n) < accuracy, y, (y + rng.integers(1, classes, n)) % classes)
    probs = np.full((n, classes), 0.2 / (classes - 1))
    probs[np.arange(n), predicted] = 0.8
    return torch.tensor(probs, dtype=torch.float32)


def test_fit_weights_prefers_the_better_member() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 400)
    good, bad = member_probs_for(y, 0.85, 4, rng), member_probs_for(y, 0.45, 4, rng)
    stacked = torch.stack([good, bad])
    labels = torch.as_tensor(y)
    weights = fit_weights(stacked, labels)

    assert weights.sum().item() == pytest.approx(1.0, abs=1e-6)   # two fp32 weights: 8 eps (measured 0.5)
    assert (weights >= 0).all() and weights[0] > weights[1]

    # Reference: the NLL-minimising weight of the good member by a fine 1-D grid.
    def nll(w: float) -> float:
        mix = w * good + (1 - w) * bad
        return torch.nn.functional.nll_loss(mix.log(), labels).item()

    grid = np.linspace(0.0, 1.0, 1001)
    best = grid[int(np.argmin([nll(w) for w in grid]))]
    assert 0.0 < best < 1.0, "the test needs an interior optimum"
    assert weights[0].item() == pytest.approx(best, abs=0.02)
    assert nll(weights[0].item()) <= nll(0.5)


# ------------------------------------------------------------------------ save / load
def small_member(seed: int) -> tuple[Classifier, ModelConfig]:
    cfg = ModelConfig(arch="cnn1d", width=4, depth=1, kernel_size=3, dropout=0.0)
    torch.manual_seed(seed)
    model = build_model(cfg, (40,), 5).eval()
    with torch.no_grad():   # non-trivial BN statistics, so a lost buffer would show
        for module in model.modules():
            if isinstance(module, nn.BatchNorm1d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    return model, cfg


@pytest.mark.parametrize("method", ["soft_vote", "hard_vote", "weighted"])
def test_save_load_round_trip(tmp_path: Path, method: str) -> None:
    files, blobs = [], []
    for seed in range(3):
        model, cfg = small_member(seed)
        path = tmp_path / f"member{seed}.pt"
        save_model(path, model, cfg, (40,), [f"c{i}" for i in range(5)])
        files.append(path)
        blobs.append(read_checkpoint(path))
    members = [model_from_blob(blob, str(path)).eval() for blob, path in zip(blobs, files)]
    weights = torch.tensor([0.5, 0.3, 0.2]) if method == "weighted" else torch.ones(3)
    ensemble = Ensemble(members, weights, method).eval()
    save_ensemble(tmp_path / "ensemble.pt", ensemble, blobs, ["a", "b", "c"])

    loaded, meta = load_ensemble(tmp_path / "ensemble.pt")
    x = torch.randn(16, 40, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        assert torch.equal(loaded(x), ensemble(x))
        predicted = loaded(x).argmax(-1)
    assert predicted.shape == (16,) and predicted.dtype == torch.int64
    assert meta["method"] == method and meta["names"] == ["a", "b", "c"]
    assert torch.allclose(loaded.weights, weights / weights.sum())

    # load_any tells the two kinds of file apart.
    any_ensemble, _ = load_any(tmp_path / "ensemble.pt")
    any_member, member_meta = load_any(files[0])
    assert isinstance(any_ensemble, Ensemble) and isinstance(any_member, Classifier)
    assert member_meta["class_names"] == [f"c{i}" for i in range(5)]
    with torch.inference_mode():
        assert torch.equal(any_ensemble(x), ensemble(x))
        assert torch.equal(any_member(x), members[0](x))


# ------------------------------------------------------------- the test split stays unread
@pytest.mark.slow
def test_no_stage_before_evaluate_reads_the_test_split(prepared_project: Path, tmp_path: Path) -> None:
    project = copy_project(prepared_project, tmp_path / "project")
    target = project / paths.PREPARED / "target"
    hidden = tmp_path / "hidden"
    hidden.mkdir()
    # As root, chmod 000 would not stop a read: move the files out of reach instead.
    test_files = sorted(target.glob("test_*.npy"))
    assert [f.name for f in test_files] == ["test_x.npy", "test_y.npy"]
    for f in test_files:
        shutil.move(f, hidden / f.name)

    for stage in ("pretrain", "finetune", "search", "ensemble"):
        trainlab([stage], project)
    assert (project / paths.ENSEMBLE).is_file()
    failed = trainlab(["evaluate"], project, check=False)   # the control: evaluate needs it
    assert failed.returncode == 2 and "test_x.npy" in failed.stderr

    for f in test_files:
        shutil.move(hidden / f.name, f)
    trainlab(["evaluate"], project)
    assert (project / "reports/evaluate/metrics.json").is_file()


@pytest.mark.parametrize("method", ["soft_vote", "hard_vote"])
def test_combine_takes_held_out_float64_probabilities_with_any_weights(method: str) -> None:
    from trainlab.ensemble.combine import combine

    probs = torch.tensor([[[0.9, 0.1], [0.2, 0.8]], [[0.6, 0.4], [0.7, 0.3]]], dtype=torch.float64)
    for weights in (torch.tensor([0.5, 0.5]), torch.tensor([0.5, 0.5], dtype=torch.float64)):
        combined = combine(probs, weights, method)
        assert combined.dtype == torch.float64 and combined.argmax(-1).tolist()[0] == 0
