"""Re-make the development zoo's data files from the copies that ship inside packages.

Run once; the outputs are committed next to this script (origin and licence of each in
README.md). Nothing is downloaded: the sklearn sets come with scikit-learn (already a
project dependency), Trace with tslearn's wheel and JapaneseVowels / UnitTest with aeon's
wheel. tslearn and aeon need not be importable (nor project dependencies): only their
bundled data files are read, from a throwaway venv where they were installed without
their dependencies:

    python3 -m venv /tmp/zoo-venv
    /tmp/zoo-venv/bin/pip install --no-deps tslearn==0.10.0 aeon==1.6.0
    .venv/bin/python bench/zoo/convert.py --packages /tmp/zoo-venv/lib/python3.11/site-packages

Outputs (every file keeps the package's own train/test split):
- iris.csv, wine.csv, breast_cancer.csv, digits.csv: feature columns f0.., `label`, and a
  `split` column (train/test). These sets have no official split, so a stratified 25%
  test split with a fixed seed (SPLIT_SEED) is written into the file.
- trace.npz, japanese_vowels.npz, unit_test.npz: x_train, y_train, x_test, y_test;
  univariate series as [n, length], JapaneseVowels as [n, 12 channels, 25 steps].
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

ZOO = Path(__file__).resolve().parent
SPLIT_SEED = 0
TEST_FRACTION = 0.25
SKLEARN_SETS = ("iris", "wine", "breast_cancer", "digits")
TSLEARN_TRACE = Path("tslearn/.cached_datasets/Trace.npz")
AEON_DATA = Path("aeon/datasets/data")
AEON_SETS = {"japanese_vowels": "JapaneseVowels/JapaneseVowels_eq", "unit_test": "UnitTest/UnitTest"}


def sklearn_csv(name: str, out: Path) -> Path:
    """One bundled sklearn set as a CSV with a seeded, stratified train/test split column."""
    import pandas as pd
    from sklearn import datasets
    from sklearn.model_selection import train_test_split

    x, y = getattr(datasets, f"load_{name}")(return_X_y=True)
    _, test_idx = train_test_split(np.arange(len(y)), test_size=TEST_FRACTION, stratify=y,
                                   random_state=SPLIT_SEED)
    split = np.full(len(y), "train", dtype=object)
    split[test_idx] = "test"
    if np.array_equal(x, np.round(x)):   # digits: grey levels 0-16, written as integers
        x = x.astype(np.int64)
    frame = pd.DataFrame(x, columns=[f"f{i}" for i in range(x.shape[1])])
    frame["label"], frame["split"] = y, split
    frame.to_csv(out, index=False)   # floats as their shortest exact repr
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
                        help="site-packages holding tslearn and aeon (installed with --no-deps)")
    parser.add_argument("--out", type=Path, default=ZOO, help="where the files go (default: bench/zoo)")
    args = parser.parse_args()
    written = [sklearn_csv(name, args.out / f"{name}.csv") for name in SKLEARN_SETS]
    written.append(trace_npz(args.packages, args.out / "trace.npz"))
    written += [aeon_npz(args.packages, stem, args.out / f"{name}.npz") for name, stem in AEON_SETS.items()]
    for path in written:
        print(f"{path.name}: {path.stat().st_size / 1024:.0f} KiB")


if __name__ == "__main__":
    main()
