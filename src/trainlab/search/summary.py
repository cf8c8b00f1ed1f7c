"""The study summary: best params (diffable YAML), metrics, and Optuna's plots as PNGs."""

from __future__ import annotations

from pathlib import Path

import optuna
import yaml

from trainlab.io import atomic_path, write_text


def best_params_yaml(trial: optuna.trial.FrozenTrial) -> str:
    header = f"# best search trial (slot {trial.user_attrs.get('slot')}): value {trial.value}\n"
    return header + yaml.safe_dump(dict(sorted(trial.params.items())), sort_keys=True)


def write_plots(study: optuna.Study, folder: Path) -> list[Path]:
    """Optimisation history and parameter importances (the latter needs >= 2 finished trials)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as ovm

    written = []
    plots = {"optimization_history.png": ovm.plot_optimization_history,
             "param_importances.png": ovm.plot_param_importances}
    for name, plot in plots.items():
        try:
            axes = plot(study)
        except (ValueError, RuntimeError, ZeroDivisionError):
            continue   # too few completed trials, or a single-valued space, to draw this one
        figure = axes.figure if hasattr(axes, "figure") else plt.gcf()
        figure.set_size_inches(7, 4)
        figure.tight_layout()
        with atomic_path(folder / name) as tmp:
            figure.savefig(tmp, dpi=90, format="png")
        plt.close("all")
        written.append(folder / name)
    return written


def write_best_params(trial: optuna.trial.FrozenTrial, path: Path) -> None:
    write_text(path, best_params_yaml(trial))
