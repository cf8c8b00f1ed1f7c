"""Re-make the development zoo's data files from the copies that ship inside packages.

Run once; the outputs are committed next to this script (origin and licence of each in
README.md). Nothing is downloaded: the sklearn sets come with scikit-learn (already a
project dependency), Trace with tslearn's wheel, JapaneseVowels / UnitTest with aeon's
wheel, cars and seattle-weather with vega_datasets' wheel. tslearn, aeon and
vega_datasets need not be importable (nor project dependencies): only their bundled data
files are read, from a throwaway venv where they were installed without their
dependencies:

    python3 -m venv /tmp/zoo-venv
    /tmp/zoo-venv/bin/pip install --no-deps tslearn==0.10.0 aeon==1.6.0 vega_datasets==0.9.0
    .venv/bin/python bench/zoo/convert.py --packages /tmp/zoo-venv/lib/python3.11/site-packages

Outputs (the NPZ files keep the archive's own train/test split; the CSVs get a seeded one):
- iris.csv, wine.csv, breast_cancer.csv, digits.csv: feature columns f0.., `label`, and a
  `split` column (train/test). These sets have no official split, so a stratified 25%
  test split with a fixed seed (SPLIT_SEED) is written into the file.
- diabetes.csv (issue 25): sklearn's `load_diabetes(scaled=False)`, the raw unscaled
  values, columns as sklearn names them (age, sex, bmi, bp, s1..s6), regression label
  `target`, and a `split` column: a seeded, plainly shuffled 25% test split.
- cars.csv, seattle_weather.csv (issue 25): vega_datasets' bundled cars.json and
  seattle-weather.csv, every column and cell as the package has them (strings, empty NA
  cells and date strings kept; nothing encoded or cleaned), plus a `split` column: a
  seeded 25% test split stratified on the class column (cars: `Origin`, which also serves
  the regression label `Miles_per_Gallon`; seattle_weather: `weather`).
- trace.npz, japanese_vowels.npz, unit_test.npz: x_train, y_train, x_test, y_test;
  univariate series as [n, length], JapaneseVowels as [n, 12 channels, 25 steps].
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

ZOO = Path(__file__).resolve().parent
SPLIT_SEED = 0
TEST_FRACTION = 0.25
SKLEARN_SETS = ("iris", "wine", "breast_cancer", "digits")
TSLEARN_TRACE = Path("tslearn/.cached_datasets/Trace.npz")
AEON_DATA = Path("aeon/datasets/data")
AEON_SETS = {"japanese_vowels": "JapaneseVowels/JapaneseVowels_eq", "unit_test": "UnitTest/UnitTest"}
VEGA_DATA = Path("vega_datasets/_data")
VEGA_SETS = {"cars": ("cars.json", "Origin"), "seattle_weather": ("seattle-weather.csv", "weather")}


def sklearn_csv(name: str, out: Path) -> Path:
    """One bundled sklearn set as a CSV with a seeded, stratified train/test split column."""
    import pandas as pd
    from sklearn import datasets

    x, y = getattr(datasets, f"load_{name}")(return_X_y=True)
    if np.array_equal(x, np.round(x)):   # digits: grey levels 0-16, written as integers
        x = x.astype(np.int64)
    frame = pd.DataFrame(x, columns=[f"f{i}" for i in range(x.shape[1])])
    frame["label"], frame["split"] = y, split_column(len(y), stratify=y)
    frame.to_csv(out, index=False)   # floats as their shortest exact repr
    return out


def split_column(n: int, stratify=None) -> np.ndarray:
    """`train`/`test` per row: a seeded 25% test split, stratified on `stratify` when given."""
    from sklearn.model_selection import train_test_split

    _, test_idx = train_test_split(np.arange(n), test_size=TEST_FRACTION, stratify=stratify,
                                   random_state=SPLIT_SEED)
    split = np.full(n, "train", dtype=object)
    split[test_idx] = "test"
    return split


def diabetes_csv(out: Path) -> Path:
    """sklearn's diabetes, raw (unscaled) values, label `target`, a shuffled (regression) split column."""
    from sklearn.datasets import load_diabetes

    frame = load_diabetes(scaled=False, as_frame=True).frame
    frame["split"] = split_column(len(frame))
    frame.to_csv(out, index=False)
    return out


def vega_csv(packages: Path, name: str, out: Path) -> Path:
    """One of vega_datasets' bundled tables, as shipped, plus a split column stratified on its class."""
    import pandas as pd

    source, label = VEGA_SETS[name]
    path = packages / VEGA_DATA / source
    if path.suffix == ".json":
        # the records as they are: no pandas date or dtype guessing (pd.read_json would parse dates)
        frame = pd.DataFrame(json.loads(path.read_text()))
    else:
        # every cell's text as in the file: no number or date parsing, no NA guessing
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    frame["split"] = split_column(len(frame), stratify=frame[label])
    frame.to_csv(out, index=False)
    return out


def trace_npz(packages: Path, out: Path) -> Path:
    """tslearn's bundled Trace: [n, 275, 1] float64 -> [n, 275] float32, labels as shipped (1-4)."""
    arrays = np.load(packages / TSLEARN_TRACE, allow_pickle=False)
    return _save(out, arrays["X_train"][..., 0], arrays["y_train"], arrays["X_test"][..., 0], arrays["y_test"])


def read_ts(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """A .ts file of the UCR/UEA archive (equal length, no missing values): x [n, channels, length], y."""
    series, labels, in_data = [], [], False
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if not in_data:
            in_data = line.lower() == "@data"
            continue
        *channels, label = line.split(":")
        if any("?" in c for c in channels):
            raise ValueError(f"{path}: missing values are not expected in this file")
        series.append([[float(v) for v in c.split(",")] for c in channels])
        labels.append(label)
    return np.asarray(series, dtype=np.float64), np.asarray(labels)


def aeon_npz(packages: Path, stem: str, out: Path) -> Path:
    """One of aeon's bundled .ts problems, its own TRAIN/TEST files kept as the split."""
    x_train, y_train = read_ts(packages / AEON_DATA / f"{stem}_TRAIN.ts")
    x_test, y_test = read_ts(packages / AEON_DATA / f"{stem}_TEST.ts")
    if x_train.shape[1] == 1:   # univariate: [n, length], like Trace
        x_train, x_test = x_train[:, 0], x_test[:, 0]
    return _save(out, x_train, y_train.astype(np.int64), x_test, y_test.astype(np.int64))


def _save(out: Path, x_train, y_train, x_test, y_test) -> Path:
    np.savez_compressed(out, x_train=np.asarray(x_train, np.float32), y_train=np.asarray(y_train),
                        x_test=np.asarray(x_test, np.float32), y_test=np.asarray(y_test))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--packages", type=Path, required=True,
                        help="site-packages holding tslearn, aeon and vega_datasets (installed with --no-deps)")
    parser.add_argument("--out", type=Path, default=ZOO, help="where the files go (default: bench/zoo)")
    args = parser.parse_args()
    written = [sklearn_csv(name, args.out / f"{name}.csv") for name in SKLEARN_SETS]
    written.append(diabetes_csv(args.out / "diabetes.csv"))
    written += [vega_csv(args.packages, name, args.out / f"{name}.csv") for name in VEGA_SETS]
    written.append(trace_npz(args.packages, args.out / "trace.npz"))
    written += [aeon_npz(args.packages, stem, args.out / f"{name}.npz") for name, stem in AEON_SETS.items()]
    for path in written:
        print(f"{path.name}: {path.stat().st_size / 1024:.0f} KiB")


if __name__ == "__main__":
    main()
