"""The search's state and faults of the machine: a journal torn by a full disk or a power
loss, a trial stopped by a full disk (ENOSPC, EROFS, EIO), a study published with a lost trial.

A torn last record is cut off before anything appends (Optuna's next append used to glue
onto it, and every later read failed for every study in the file); damage no interrupted
write leaves stops the search in one line. A trial the machine stopped is re-queued like a
killed one and never counts as finished, the stage exits 4, and the rerun runs its slot.
"""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from trainlab.errors import ResourceUnavailable
from trainlab.testing import trainlab, write_params

from helpers.console import Outcome, error_line
from helpers.disk import NO_MOUNT, filled_during, in_mount_namespace
from helpers.search import by_slot, counted, killed, metrics, new_project, only_study, search_params

RESOURCE = 4   # ResourceUnavailable.exit_code
SLOT, RETRY_OF, LOST = "slot", "retry_of", "lost_to"   # trial user attributes (trainlab.search.study)
REASONS = {"ENOSPC": "no space left on the device", "EROFS": "read-only file system",
           "EIO": "input/output error (the disk or its file system failed)"}


# ---------------------------------------------------------------------- the journal, in-process
def write_study(path: Path, trials: int = 3) -> None:
    """A journal with one study of `trials` finished trials, as Optuna writes it."""
    study = optuna.create_study(study_name="s", storage=JournalStorage(JournalFileBackend(str(path))))
    for slot in range(trials):
        trial = study.ask()
        trial.suggest_float("x", 0.0, 1.0)
        trial.set_user_attr(SLOT, slot)
        study.tell(trial, 0.5)


def resume(path: Path, more: int = 2) -> int:
    """What a resumed search does with the journal: open it, run `more` trials; the trial count read back."""
    study = optuna.load_study(study_name="s", storage=JournalStorage(JournalFileBackend(str(path))))
    for _ in range(more):
        trial = study.ask()
        trial.suggest_float("x", 0.0, 1.0)
        study.tell(trial, 0.3)
    return len(optuna.load_study(study_name="s", storage=JournalStorage(JournalFileBackend(str(path)))).trials)


def last_line_offsets(data: bytes) -> range:
    """Every length that cuts into the last record (its newline included)."""
    return range(data.rstrip(b"\n").rfind(b"\n") + 2, len(data))


@pytest.fixture(scope="module")
def journal_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    path = tmp_path_factory.mktemp("journal") / "study.journal"
    write_study(path)
    return path.read_bytes()


def test_a_torn_last_record_is_cut_off_at_every_offset(tmp_path: Path, journal_bytes: bytes, capsys) -> None:
    from trainlab.search.journal import repair_journal

    path = tmp_path / "study.journal"
    whole = journal_bytes[: journal_bytes.rstrip(b"\n").rfind(b"\n") + 1]
    torn_line = whole.count(b"\n") + 1
    for cut in last_line_offsets(journal_bytes):
        path.write_bytes(journal_bytes[:cut])
        assert repair_journal(path) == cut - len(whole), cut
        assert path.read_bytes() == whole, cut
        said = capsys.readouterr().err.splitlines()
        assert said == [f"search: {path}: cut {cut - len(whole)} bytes from line {torn_line} on, a record torn by a "
                        "full disk or an interrupted write; the study goes on from the records before it"], said
        # The torn record was the last trial's tell: it stays RUNNING, and two more trials append.
        assert resume(path) == 5, cut


def test_without_the_cut_optunas_next_append_breaks_the_journal(tmp_path: Path, journal_bytes: bytes) -> None:
    """What the cut prevents (Optuna 5, this environment): the append glues onto the torn record."""
    path = tmp_path / "study.journal"
    failures = set()
    for cut in last_line_offsets(journal_bytes):
        path.write_bytes(journal_bytes[:cut])
        try:
            resume(path)
        except Exception as err:   # noqa: BLE001 - which error depends on where the tear is
            failures.add(type(err).__name__)
    assert failures, "Optuna now survives a torn journal: the cut may no longer be needed"


def test_records_glued_onto_a_torn_one_are_cut_with_it(tmp_path: Path, journal_bytes: bytes, capsys) -> None:
    from trainlab.search.journal import repair_journal

    # The damage an unrepaired journal carries: torn record, then whole records appended after it.
    path = tmp_path / "study.journal"
    whole = journal_bytes[: journal_bytes.rstrip(b"\n").rfind(b"\n") + 1]
    glued = journal_bytes[len(whole): len(whole) + 17] + journal_bytes[len(whole):] + journal_bytes[len(whole):]
    path.write_bytes(whole + glued)
    assert repair_journal(path) == len(glued)
    assert path.read_bytes() == whole
    assert resume(path) == 5
    assert "cut" in capsys.readouterr().err


def test_a_journal_power_loss_filled_with_zeros_is_cut_too(tmp_path: Path, journal_bytes: bytes) -> None:
    from trainlab.search.journal import repair_journal

    path = tmp_path / "study.journal"
    path.write_bytes(journal_bytes + b"\0" * 300)
    assert repair_journal(path) == 300 and path.read_bytes() == journal_bytes
    assert repair_journal(path) == 0   # an intact journal is left as it is


def test_damage_inside_the_journal_is_one_line_naming_the_file_and_what_to_run(tmp_path: Path,
                                                                              journal_bytes: bytes) -> None:
    from trainlab.search.journal import repair_journal

    path = tmp_path / "study.journal"
    lines = journal_bytes.split(b"\n")
    damaged = b"\n".join([*lines[:3], b"x" * len(lines[3]), *lines[4:]])
    path.write_bytes(damaged)
    with pytest.raises(ResourceUnavailable) as raised:
        repair_journal(path)
    offset = sum(len(line) + 1 for line in lines[:3])
    assert str(raised.value) == (
        f"{path}: line 4 is damaged, not a record Optuna wrote (no interrupted write leaves that); keep the "
        f"records before it with `truncate -s {offset} {path}` (the {len(lines) - 5} lines after it are lost: "
        f"their trials run again), or move the file away to start every study in it afresh")
    assert path.read_bytes() == damaged   # left for the user


# ------------------------------------------------------------------------ the search stage
def tear(journal: Path, keep: int) -> None:
    """Cut `keep` bytes into the journal's last record, as a full disk leaves it."""
    data = journal.read_bytes()
    start = data.rstrip(b"\n").rfind(b"\n") + 1
    journal.write_bytes(data[: start + keep])


@pytest.mark.slow
def test_a_search_resumes_after_its_journal_was_torn(prepared_project: Path, tmp_path: Path) -> None:
    params = search_params(search__sampler="random", search__n_trials=2)
    searched = new_project(prepared_project, tmp_path / "searched", params)
    trainlab(["search"], searched)
    reference = by_slot(only_study(searched))
    for keep in ("a byte", "mid-record", "all but the newline"):
        project = new_project(searched, tmp_path / keep.replace(" ", "-"), params)
        journal = project / ".trainlab/search/study.journal"
        last = journal.read_bytes().rstrip(b"\n").rsplit(b"\n", 1)[-1]
        tear(journal, {"a byte": 1, "mid-record": len(last) // 2}.get(keep, len(last)))
        done = trainlab(["search"], project, check=False)
        assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr[-3000:]
        assert f"search: {Path('.trainlab/search/study.journal')}: cut " in done.stderr
        trials = only_study(project)   # the journal reads back whole
        assert sorted(by_slot(trials)) == sorted(reference) and len(counted(trials)) == 2
        assert trainlab(["search"], project).returncode == 0   # and takes further appends


# ----------------------------------------------------------------- a fault of the machine in a trial
def test_a_trial_lost_to_the_machine_is_requeued_and_never_counted(tmp_path: Path) -> None:
    from trainlab.search.publish import lost_line
    from trainlab.search.study import lose_trial, lost_slots

    study = optuna.create_study(storage=JournalStorage(JournalFileBackend(str(tmp_path / "j"))))
    trial = study.ask()
    trial.suggest_float("x", 0.0, 1.0)
    trial.set_user_attr(SLOT, 0)
    lose_trial(study, trial, 0, "models: cannot write: no space left on the device")
    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.WAITING]
    assert trials[0].user_attrs[LOST] == "models: cannot write: no space left on the device"
    assert trials[1].user_attrs == {SLOT: 0, RETRY_OF: 0} and trials[1].system_attrs["fixed_params"] == trials[0].params
    assert counted(trials) == []
    assert lost_slots(study) == {0: "models: cannot write: no space left on the device"}
    assert lost_line(lost_slots(study), 4) == (
        "search: published without 1 of 4 trials, lost to a fault of the machine and not run again (slot 0: "
        "models: cannot write: no space left on the device); `trainlab search` runs them")
    # Once its copy has run, nothing is lost.
    again = study.ask()
    assert again.suggest_float("x", 0.0, 1.0) == trials[0].params["x"]
    study.tell(again, 0.1)
    assert lost_slots(study) == {} and lost_line({}, 4) is None


@pytest.mark.slow
@pytest.mark.parametrize("code", ["ENOSPC", "EROFS", "EIO"])
def test_a_fault_in_a_trial_requeues_it_and_exits_4(prepared_project: Path, tmp_path: Path, code: str) -> None:
    params = search_params(search__sampler="random", search__n_trials=2)
    project = new_project(prepared_project, tmp_path / "project", params)
    faulty = trainlab(["search"], project, check=False, TRAINLAB_TEST_FAULT_AT_STEP=f"3:{code}")
    line = error_line(Outcome(faulty.returncode, faulty.stdout, faulty.stderr), RESOURCE)
    assert line == f"error: (test fault at step 3): cannot write: {REASONS[code]}", line
    trials = only_study(project)
    assert counted(trials) == [] and [t.user_attrs[LOST] for t in killed(trials)] == [line[len("error: "):]]
    assert not (project / "models/search").exists()   # nothing published

    done = trainlab(["search"], project)   # the fault mended: the lost slot runs again
    assert "lost" not in done.stderr
    trials = only_study(project)
    assert sorted(by_slot(trials)) == [0, 1] and all(s == "COMPLETE" for _, _, s in by_slot(trials).values())
    found = metrics(project)
    assert (found["trials/complete"], found["trials/failed"], found["trials/killed_and_retried"]) == (2, 0, 1)


@pytest.mark.slow
def test_a_study_published_without_a_lost_trial_says_so(prepared_project: Path, tmp_path: Path) -> None:
    # Slot 0 (batch 64) ends before step 10; slot 1 (batch 16) meets the fault there.
    space = {"finetune.batch_size": {"type": "categorical", "choices": [64, 16]}}
    params = search_params(search__sampler="grid", search__n_trials=2, search__space=space)
    project = new_project(prepared_project, tmp_path / "project", params)
    faulty = trainlab(["search"], project, check=False, TRAINLAB_TEST_FAULT_AT_STEP="10:ENOSPC")
    assert faulty.returncode == RESOURCE, faulty.stderr[-3000:]
    assert {s: state for s, (_, _, state) in by_slot(only_study(project)).items()} == {0: "COMPLETE"}
    # Rerun with a time budget already spent: it publishes what it has, and says what is missing.
    write_params(project, search_params(search__sampler="grid", search__n_trials=2, search__space=space,
                                        search__timeout_s=1e-9))
    done = trainlab(["search"], project)
    assert ("search: published without 1 of 2 trials, lost to a fault of the machine and not run again (slot 1: "
            "(test fault at step 10): cannot write: no space left on the device); `trainlab search` runs them"
            ) in done.stderr.splitlines(), done.stderr[-3000:]
    assert metrics(project)["trials/complete"] == 1


@pytest.mark.slow
def test_a_fault_in_worker_processes_requeues_their_trials_and_exits_4(prepared_project: Path,
                                                                      tmp_path: Path) -> None:
    params = search_params(search__sampler="random", search__n_trials=2, search__workers=2)
    project = new_project(prepared_project, tmp_path / "project", params)
    faulty = trainlab(["search"], project, check=False, TRAINLAB_TEST_FAULT_AT_STEP="3:ENOSPC")
    line = error_line(Outcome(faulty.returncode, faulty.stdout, faulty.stderr), RESOURCE)
    assert line == ("error: search: 2 worker(s) stopped by a fault of the machine (see their messages above); "
                    "their trials run again when the search is rerun"), line
    assert faulty.stderr.count("search worker: (test fault at step 3): cannot write: no space left on the device") == 2
    assert counted(only_study(project)) == []
    trainlab(["search"], project)
    slots = by_slot(only_study(project))
    assert sorted(slots) == [0, 1] and all(state == "COMPLETE" for _, _, state in slots.values())


@pytest.mark.slow
def test_a_disk_that_fills_up_during_a_trial(prepared_project: Path, tmp_path: Path) -> None:
    """The project on a small tmpfs, filled once the first trial's checkpoint exists; freed, the rerun
    finishes every trial (before, the trial was stored FAILED and the rerun published 1 of 2)."""
    params = search_params(search__sampler="random", search__n_trials=2, search__epochs=6,
                           trainer__checkpoint_every_steps=2)
    project = new_project(prepared_project, tmp_path / "project", params)
    mnt, out = tmp_path / "mnt", tmp_path / "out"
    mnt.mkdir()
    out.mkdir()
    script = filled_during(project, mnt, out, "trainlab search", ".trainlab/resume/search-slot-000.pt",
                           then=f"trainlab search > {out}/second.log 2>&1; echo $? > {out}/second.rc")
    done = in_mount_namespace(script, tmp_path)
    if done.returncode == NO_MOUNT:
        pytest.skip("mounting a tmpfs needs rights this machine does not give (root or user namespaces)")
    assert done.returncode == 0, done.stderr
    first = (out / "first.log").read_text()
    assert int((out / "first.rc").read_text()) == RESOURCE, first[-3000:]
    assert "Traceback" not in first, first[-3000:]
    last = first.strip().splitlines()[-1]
    assert last.startswith("error: ") and ("no space left on the device" in last or "disk is full" in last), last
    second = (out / "second.log").read_text()
    assert int((out / "second.rc").read_text()) == 0, second[-3000:]
    trials = only_study(out / "after")
    slots = by_slot(trials)
    assert sorted(slots) == [0, 1] and all(state == "COMPLETE" for _, _, state in slots.values()), slots
    assert len(killed(trials)) >= 1
    found = json.loads((out / "after/reports/search/details.json").read_text())
    assert found["trials/complete"] == 2 and found["trials/failed"] == 0

