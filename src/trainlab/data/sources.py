"""Where raw samples come from: MNIST-1D (generated offline), sklearn digits, the user's file.

Each source returns a `RawData`: the target task's train and test pools and the
source (pretraining) corpus, as float32 features and integer labels.
"""

from __future__ import annotations

import numpy as np

from trainlab.config.schema import DataConfig, FileConfig
from trainlab.data.arrays import Arrays, RawData, check_finite
from trainlab.errors import DataError


def load_raw(cfg: DataConfig) -> RawData:
    """Build the raw pools for the configured dataset."""
    if cfg.name == "mnist1d":
        return _mnist1d(cfg)
    if cfg.name == "digits":
        return _digits(cfg)
    from trainlab.data.user_file import load_user_data

    return load_user_data(cfg.file)


# ---------------------------------------------------------------------------- MNIST-1D
def _mnist1d_arrays(overrides: dict) -> dict:
    # make_dataset generates offline from templates; get_dataset would try the network.
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    for key, value in overrides.items():
        setattr(args, key, value)
    return make_dataset(args)


def _mnist1d(cfg: DataConfig) -> RawData:
    target = _mnist1d_arrays({
        "num_samples": cfg.mnist1d.num_samples, "seed": cfg.mnist1d.seed,
        "train_split": cfg.mnist1d.train_split,
    })
    src_cfg = cfg.source
    generation = {k: v for k, v in src_cfg.generation.model_dump().items() if v is not None}
    source = _mnist1d_arrays({
        **generation, "num_samples": src_cfg.num_samples, "seed": src_cfg.seed, "train_split": 1.0,
    })
    source_y, source_classes = relabel(source["y"], src_cfg.labels, src_cfg.seed)
    digits = [str(i) for i in range(10)]
    return RawData(
        target_train=Arrays(target["x"].astype(np.float32), target["y"].astype(np.int64)),
        target_test=Arrays(target["x_test"].astype(np.float32), target["y_test"].astype(np.int64)),
        source=Arrays(source["x"].astype(np.float32), source_y),
        target_classes=digits,
        source_classes=source_classes,
        input_shape=(int(target["x"].shape[1]),),
    )


def relabel(y: np.ndarray, scheme: str, seed: int) -> tuple[np.ndarray, list[str]]:
    """Give the source corpus a label space that does not line up with the target's.

    'permuted' maps digit d to class perm[d] with no fixed point, so the pretrained
    head is useless on the target; 'merged' pairs digits (0+1, 2+3, ...) into 5 classes.
    """
    y = y.astype(np.int64)
    if scheme == "same":
        return y, [str(i) for i in range(10)]
    if scheme == "merged":
        return y // 2, [f"{2 * i}|{2 * i + 1}" for i in range(5)]
    rng = np.random.default_rng(seed)
    perm = rng.permutation(10)
    while np.any(perm == np.arange(10)):
        perm = rng.permutation(10)
    inverse = np.argsort(perm)
    return perm[y], [f"digit {inverse[c]}" for c in range(10)]


# ------------------------------------------------------------------------------ digits
def _digits(cfg: DataConfig) -> RawData:
    from sklearn.datasets import load_digits  # ships inside the sklearn wheel: no download

    bunch = load_digits()
    x = (bunch.images / 16.0).astype(np.float32)     # (n, 8, 8) in [0, 1]
    y = bunch.target.astype(np.int64)
    src, tgt = cfg.digits.source_classes, cfg.digits.target_classes
    if not src or not tgt or set(src) & set(tgt):
        raise DataError("data.digits: source_classes and target_classes must be non-empty and disjoint")
    from trainlab.data.splits import stratified_split

    in_target = np.isin(y, tgt)
    tx, ty = x[in_target], np.searchsorted(sorted(tgt), y[in_target])
    train_idx, test_idx = stratified_split(ty, cfg.digits.test_fraction, cfg.split_seed + 7919, "data.digits")
    in_source = np.isin(y, src)
    return RawData(
        target_train=Arrays(tx[train_idx], ty[train_idx]),
        target_test=Arrays(tx[test_idx], ty[test_idx]),
        source=Arrays(x[in_source], np.searchsorted(sorted(src), y[in_source])),
        target_classes=[str(c) for c in sorted(tgt)],
        source_classes=[str(c) for c in sorted(src)],
        input_shape=(8, 8),
        kind="image",
    )


__all__ = ["Arrays", "FileConfig", "RawData", "check_finite", "load_raw", "relabel"]
