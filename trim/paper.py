"""Numbers reported for TRIM (Kapoor et al., ICLR 2026) and its official release, as the book cites them.

The book sets these *beside* the testbed's numbers, always labelled as the paper's: the testbed is an
analogue of the paper's setting, not a reproduction. Sources: the paper (arXiv 2601.10245; main setting
weak Qwen2.5-3B-Instruct, strong Claude 3.7 Sonnet, PRM Qwen2.5-Math-PRM-7B) and the official release
(github.com/Vansh28Kapoor/TRIM; Qwen2.5-1.5B-Instruct -> Qwen2.5-7B-Instruct on MATH-500)."""

from __future__ import annotations

import pandas as pd

from trim.metrics import Endpoints

# Next-step accuracy given a correct prefix, measured by the official release.
STEP_ACCURACY = {"Qwen2.5-1.5B-Instruct": 0.866, "Qwen2.5-7B-Instruct": 0.9704, "Qwen3-8B": 0.992}

# MATH-500, main setting: CPT(95%) in % of strong-only tokens, mean dIBC. NaN: not reported.
MATH500 = pd.DataFrame(
    {"CPT(95%)": [17.98, 17.21, float("nan"), 53.96], "dIBC": [5.86, 5.67, 4.75, 0.95]},
    index=pd.Index(["TRIM-POMDP", "TRIM-Agg", "TRIM-Thr", "AutoMix-PRM (best query-level)"], name="policy"))

# Official release on MATH-500 (Qwen2.5-1.5B -> 7B): endpoints and TRIM-Thr points, accuracy and
# strong tokens per query.
RELEASE_ENDS = Endpoints(weak_accuracy=0.364, strong_accuracy=0.730, strong_cost=494.8)
RELEASE_THR = pd.DataFrame({"k": [0.05, 0.5, 0.9], "accuracy": [0.508, 0.674, 0.714],
                            "strong_tokens": [70.7, 163.8, 219.1]})
