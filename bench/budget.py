"""Fine-tuning budgets for small sets: the rule before issue 29 against longer ones (issue 29, item 2).

The published deep-learning results on small series sets train far longer than
`finetune.epochs: auto` did (Ismail Fawaz et al. 2019: FCN 2,000 epochs at batch 16,
capped at a tenth of the training set). On the zoo's small sets this runs the whole default
pipeline once per variant, in throwaway projects exactly as bench/own_data.py builds them
(params.yaml as shipped, its `data.*` keys for the set, plus the variant's keys), the
variants of a set one after the other:

    before   the rule until issue 29: batch at most a quarter of the set, 500 steps at least
             (finetune.auto.max_batch_fraction 0.25, min_samples 0): 125 epochs below 128 samples
    long     before, with min_steps 2000 (every fit of fewer than 2,000 steps gets up to 4x more)
    tenth    min_steps 2000 and the batch at most a tenth of the set (the published recipe's cap)
    samples  the batch at most a tenth of the set and enough epochs to see 16,000 samples (what
             500 steps of the full batch of 32 see), on every kind of data: the budget of before
             wherever the batch is not capped (MNIST-1D at 400 labels: 40 epochs of 32), more
             epochs of smaller batches below 320 samples
    shipped  params.yaml as it is: `auto` = samples for series, before for tables and images

It prints per set every variant's champion test accuracy (and every final model's), whether
the variant keeps `before`'s results (no test score lower by more than one test sample or
1 point, whichever is larger: DEVELOPERS.md), and each `dvc repro`'s wall and CPU seconds.

    .venv/bin/python bench/budget.py --only unit_test,trace --variants before,shipped
    .venv/bin/python bench/budget.py                          # 7 sets x 5 variants (hours)
    .venv/bin/python bench/budget.py --quick                  # unit_test, shrunk: does it run?
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _variants import variant_bench  # noqa: E402

# Every set the rule changes a budget of (below 320 samples): the small series, two small
# tables, and digits (images; its budget is unchanged, a check that nothing moved).
SETS = ["unit_test", "iris", "wine", "mnist1d-100", "trace", "digits", "japanese_vowels"]   # quickest first
QUICK_SET = "unit_test"
BEFORE = {"finetune.auto.max_batch_fraction": 0.25, "finetune.auto.min_samples": 0}
VARIANTS: dict[str, dict[str, Any]] = {
    "before": BEFORE,
    "long": {**BEFORE, "finetune.auto.min_steps": 2000},
    "tenth": {"finetune.auto.min_steps": 2000, "finetune.auto.max_batch_fraction": 0.1,
              "finetune.auto.min_samples": 0},
    "samples": {"finetune.auto.max_batch_fraction": 0.1, "finetune.auto.min_samples": 16000},
    "shipped": {},
}


TITLE = "fine-tuning budgets for small sets: the rule before issue 29 against longer ones"


def main() -> int:
    return variant_bench(__doc__, TITLE, "bench/budget.py", "budget", SETS, QUICK_SET, VARIANTS)


if __name__ == "__main__":
    sys.exit(main())
