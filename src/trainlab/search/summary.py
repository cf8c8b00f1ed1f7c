"""The study summary: best params (diffable YAML) and Optuna's plots as PNGs."""

from __future__ import annotations

from pathlib import Path

import optuna
import yaml

from trainlab.io import atomic_path, write_text

PLOTS = ("optimization_history.png", "param_importances.png", "intermediate_values.png")


def best_params_yaml(trial: optuna.trial.FrozenTrial, study_name: str) -> str:
    header = (f"# best search trial (slot {trial.user_attrs.get('slot')}) of study {study_name}: "
              f"value {trial.value}\n")
    return header + yaml.safe_dump(dict(sorted(trial.params.items())), sort_keys=True)


def import_plotting() -> None:
    """Import what write_plots and the trial table need: matplotlib, Optuna's plots, fANOVA's
    scikit-learn and pandas, ~1.5 s. A search with worker processes calls it in a thread
    while it waits for them, so publishing does not pay it after the last trial."""
    import importlib

    import matplotlib

    matplotlib.use("Agg")
    for name in ("matplotlib.pyplot", "optuna.importance", "optuna.visualization.matplotlib", "pandas"):
        try:
            importlib.import_module(name)
        except ImportError:   # only a head start: write_plots meets (and reports) the same error
            return


def write_plots(study: optuna.Study, folder: Path) -> list[Path]:
    """Optimisation history, parameter importances and intermediate values (pruning's input).

    A plot this study cannot draw (importances need >= 2 finished trials) is removed, so
    the folder never shows one left over from another study.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as ovm

    from optuna.importance import FanovaImportanceEvaluator

    def importances(study: optuna.Study):
        # fANOVA's random forest is seeded: the same study draws the same importances on every rerun.
        return ovm.plot_param_importances(study, evaluator=FanovaImportanceEvaluator(seed=0))

    written = []
    plots = dict(zip(PLOTS, (ovm.plot_optimization_history, importances, ovm.plot_intermediate_values)))
    for name, plot in plots.items():
        try:
            axes = plot(study)
        except (ValueError, RuntimeError, ZeroDivisionError):
            (folder / name).unlink(missing_ok=True)   # too few completed trials, or a single-valued space
            plt.close("all")
            continue
        figure = axes.figure if hasattr(axes, "figure") else plt.gcf()
        figure.set_size_inches(7, 4)
        figure.tight_layout()
        with atomic_path(folder / name) as tmp:
            figure.savefig(tmp, dpi=90, format="png")
        plt.close("all")
        written.append(folder / name)
    return written


def write_best_params(trial: optuna.trial.FrozenTrial, study_name: str, path: Path) -> None:
    write_text(path, best_params_yaml(trial, study_name))
