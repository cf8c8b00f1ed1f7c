"""`optimizer.lr: auto` and weight averaging against the shipped settings (issue 32, item 3).

On a representative part of bench/own_data.py's zoo (MNIST-1D at 400 labels, two small
series sets, one table, one image set) this runs the whole default pipeline once per
variant, in throwaway projects exactly as own_data.py builds them (params.yaml as shipped,
its `data.*` keys for the set, plus the variant's keys), the variants of a set one after
the other:

    fixed   params.yaml as shipped (lr 3e-3 in pretrain and finetune; no averaging)
    auto    pretrain.optimizer.lr and finetune.optimizer.lr: auto (the range test chooses)
    ema     trainer.averaging: ema (every training: pretrain, finetune, baselines, trials)
    swa     trainer.averaging: swa

It prints per set every variant's champion test accuracy (and every final model's), whether
the variant keeps `fixed`'s results (no test score, the champion's or any final model's,
lower by more than one test sample or 1 point, whichever is larger: DEVELOPERS.md), and
each `dvc repro`'s wall and CPU seconds (`auto` - `fixed` is what the range tests add).
Last, per variant, whether it may become a default: only if it kept the results on every
measured set.

    .venv/bin/python bench/lr_averaging.py                          # 5 sets x 4 variants (about an hour)
    .venv/bin/python bench/lr_averaging.py --variants fixed,auto    # the learning-rate table only
    .venv/bin/python bench/lr_averaging.py --quick                  # unit_test, shrunk: does it run?
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _variants import variant_bench  # noqa: E402

SETS = ["unit_test", "iris", "trace", "digits", "mnist1d-400"]   # quickest first
QUICK_SET = "unit_test"
VARIANTS: dict[str, dict[str, Any]] = {
    "fixed": {},
    "auto": {"pretrain.optimizer.lr": "auto", "finetune.optimizer.lr": "auto"},
    "ema": {"trainer.averaging": "ema"},
    "swa": {"trainer.averaging": "swa"},
}


TITLE = "lr: auto and weight averaging against the shipped settings, on part of the zoo"


def main() -> int:
    return variant_bench(__doc__, TITLE, "bench/lr_averaging.py", "lr-averaging", SETS, QUICK_SET, VARIANTS)


if __name__ == "__main__":
    sys.exit(main())
