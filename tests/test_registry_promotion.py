"""Who gets `champion` (issue 28, item 1): the rule by hand, then on a real MLflow store.

Every registration is a new version with its lineage; `champion` moves only when there is
none, when the new version has a lower held-out loss on the same held-out data, or when
evaluate.promote says so; otherwise the version is `challenger` with one line why. Two
evaluates deciding at once take turns (tests/test_mlflow_ui.py runs the whole story:
`dvc repro`, a worse experiment and a smoke test on shrunk data, then the UI).
"""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient

from trainlab.data.served_inputs import ServedInputs
from trainlab.tracking import promotion
from trainlab.tracking.logged_model import ModelSpec, register
from trainlab.tracking.model_card import Champion
from trainlab.tracking.promotion import CHALLENGER, PROMOTION_TAG, Standing, decide

DATA_A = {"input.target/train/x.npy.sha256": "aa", "input.target/val/x.npy.sha256": "ab",
          "input.source/train/x.npy.sha256": "s1"}
DATA_B = {**DATA_A, "input.target/train/x.npy.sha256": "ba"}   # shrunk: other training rows


def standing(loss: float, data: dict = DATA_A, heldout: str = "validation") -> Standing:
    return Standing.of({"heldout_loss": f"{loss:.6g}", "selected_on": heldout, **data})


# ------------------------------------------------------------------------------------ the rule
def test_first_version_is_champion() -> None:
    assert decide("auto", standing(0.5), None, None, "champion").promote


def test_lower_heldout_loss_on_the_same_data_wins() -> None:
    better = decide("auto", standing(0.0064), standing(0.0080), "1", "champion")
    assert better.promote and better.why == "held-out loss 0.0064 < v1's 0.008 on the same data"
    worse = decide("auto", standing(0.0080), standing(0.0064), "1", "champion")
    assert not worse.promote and "not below v1's 0.0064 on the same data" in worse.why
    assert not decide("auto", standing(0.5), standing(0.5), "1", "champion").promote   # a tie keeps it


def test_other_held_out_data_never_displaces_the_champion_by_default() -> None:
    # A smoke test on shrunk data: a much lower loss, measured on other samples.
    shrunk = decide("auto", standing(0.0001, DATA_B), standing(0.5), "2", "champion")
    assert not shrunk.promote and shrunk.why.startswith("held out on different data than champion v2")
    # Only the source corpus differs (pretraining data): the held-out data is the same.
    assert decide("auto", standing(0.1, {**DATA_A, "input.source/train/x.npy.sha256": "s2"}),
                  standing(0.5), "2", "champion").promote
    # Validation split against k-fold CV (selection.cv_below changed): not comparable either.
    cv = decide("auto", standing(0.1, heldout="5-fold CV over 60 labelled samples"), standing(0.5), "2", "champion")
    assert not cv.promote and "held-out predictions differ" in cv.why
    # No data hashes recorded at all: nothing says the data is the same.
    assert not decide("auto", standing(0.1, {}), standing(0.5, {}), "2", "champion").promote


def test_the_user_decides_with_evaluate_promote() -> None:
    assert decide("always", standing(0.9, DATA_B), standing(0.1), "1", "champion").promote
    assert not decide("never", standing(0.1), standing(0.9), "1", "champion").promote
    assert not decide("never", standing(0.1), None, None, "champion").promote


def test_versions_registered_before_the_rule_compare_by_their_input_tags() -> None:
    old = Standing.of({"heldout_loss": "0.5", "selected_on": "validation", **DATA_A})   # no trainlab.heldout_data
    assert old.data == standing(0.5).data != standing(0.5, DATA_B).data != ""


# ------------------------------------------------------------------ on a real MLflow store
class Tiny(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.flatten(1))


def registered(client: MlflowClient, store: Path, loss: float, data: dict, exp: str, promote: str = "auto"):
    run = client.create_run(client.get_experiment_by_name("trainlab").experiment_id,
                            tags={**data, "dvc.exp_name": exp, "git.commit": "abc", "trainlab.pipeline_run": exp})
    spec = ModelSpec(Tiny(), ServedInputs((4,)), ["a", "b", "c"], np.zeros((2, 4), np.float32))
    champion = Champion("ensemble", ["a", "b", "c"], {"acc": 0.9, "loss": loss, "temperature": 1.0}, loss,
                        "validation", 10)
    got = register(client, run.info.run_id, spec, "trainlab", "champion", champion, promote,
                   f"sqlite:///{store}", store.parent)
    client.set_terminated(run.info.run_id)
    return got


def aliases(client: MlflowClient) -> dict[str, str]:
    return {alias: str(version) for alias, version in client.get_registered_model("trainlab").aliases.items()}


@pytest.fixture
def store(tmp_path: Path, monkeypatch) -> tuple[MlflowClient, Path]:
    import mlflow

    path = tmp_path / "mlflow.db"
    monkeypatch.chdir(tmp_path)   # the default artifact root ./mlruns
    mlflow.set_tracking_uri(f"sqlite:///{path}")
    client = MlflowClient(f"sqlite:///{path}")
    client.create_experiment("trainlab")
    return client, path


def test_registrations_move_champion_only_by_the_rule(store) -> None:
    client, path = store
    first = registered(client, path, 0.0064, DATA_A, "main-run")
    assert (first.version, first.alias) == ("1", "champion")
    worse = registered(client, path, 0.0080, DATA_A, "shock-wool")
    assert (worse.version, worse.alias) == ("2", CHALLENGER)
    smoke = registered(client, path, 0.0001, DATA_B, "tiny-smoke")
    assert (smoke.version, smoke.alias) == ("3", CHALLENGER)
    assert aliases(client) == {"champion": "1", CHALLENGER: "3"}   # v2 keeps no alias

    versions = {str(v.version): v for v in client.search_model_versions("name = 'trainlab'")}
    # Every version says which experiment made it, on which data, and why it got its alias.
    assert {k: versions[k].tags["dvc.exp_name"] for k in "123"} == {"1": "main-run", "2": "shock-wool",
                                                                     "3": "tiny-smoke"}
    assert versions["1"].tags[promotion.HELDOUT_DATA_TAG] == versions["2"].tags[promotion.HELDOUT_DATA_TAG] \
        != versions["3"].tags[promotion.HELDOUT_DATA_TAG]
    assert versions["2"].tags[PROMOTION_TAG] == worse.why and "not below v1's 0.0064" in worse.why
    assert smoke.why.startswith("held out on different data than champion v1")
    assert versions["3"].description.startswith("# trainlab v3: ensemble")
    assert "Registered as version 3 with alias `challenger`: held out on different data" in versions["3"].description
    assert "DVC experiment `tiny-smoke`" in versions["3"].description

    better = registered(client, path, 0.0050, DATA_A, "good-idea")
    assert (better.version, better.alias) == ("4", "champion")
    forced = registered(client, path, 0.9, DATA_B, "forced", promote="always")
    assert forced.alias == "champion" and forced.why == "evaluate.promote is always"

    # By hand: the challenger becomes champion, and keeps no challenger alias.
    assert promotion.promote(client, f"sqlite:///{path}", path.parent, "trainlab", "3", "champion") == "5"
    assert aliases(client) == {"champion": "3"}
    assert client.get_model_version("trainlab", "3").tags[PROMOTION_TAG] == "promoted by hand (trainlab promote)"


def _settle_in_child(db: str, version: str, delay_s: float, start_after_s: float, done) -> None:
    """Another evaluate: settle `version` after `start_after_s`, slowed down between its look at the
    champion and its move of the alias (where an unlocked pair of evaluates would race)."""
    time.sleep(start_after_s)
    decide_now = promotion.decide

    def slow(*args, **kwargs):
        decision = decide_now(*args, **kwargs)
        time.sleep(delay_s)
        return decision

    promotion.decide = slow
    client = MlflowClient(f"sqlite:///{db}")
    done.put((version, promotion.settle(client, f"sqlite:///{db}", Path(db).parent, "trainlab", version,
                                        "champion", "auto").why))


def test_two_evaluates_at_once_do_not_race_on_the_alias(tmp_path: Path) -> None:
    db = tmp_path / "mlflow.db"
    client = MlflowClient(f"sqlite:///{db}")
    client.create_registered_model("trainlab")
    for loss in (0.5, 0.3, 0.4):   # v1 the champion; v2 the best; v3 better than v1 only
        client.create_model_version("trainlab", str(tmp_path), tags={
            "heldout_loss": str(loss), "selected_on": "validation", **DATA_A})
    client.set_registered_model_alias("trainlab", "champion", "1")
    done = multiprocessing.get_context("fork").Queue()
    # v3's evaluate looks first and is slow to move the alias; v2's looks while it waits.
    slow = multiprocessing.get_context("fork").Process(target=_settle_in_child, args=(str(db), "3", 1.5, 0.0, done))
    fast = multiprocessing.get_context("fork").Process(target=_settle_in_child, args=(str(db), "2", 0.0, 0.5, done))
    slow.start(), fast.start()
    slow.join(60), fast.join(60)
    assert slow.exitcode == fast.exitcode == 0
    why = dict(done.get(timeout=5) for _ in range(2))
    # Unlocked, v2 would have compared with v1 and then lost the alias to v3's late move.
    assert str(client.get_model_version_by_alias("trainlab", "champion").version) == "2"
    assert why["2"] == "held-out loss 0.3 < v3's 0.4 on the same data"
