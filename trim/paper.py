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

# The official release's whole TRIM-Thr sweep on MATH-500 (Qwen2.5-1.5B -> 7B, Qwen2.5-Math-PRM-7B;
# thr_results/math500/summary.jsonl of github.com/Vansh28Kapoor/TRIM, MIT licence): per query, strong
# tokens decoded, weak tokens decoded, weak tokens discarded by a regeneration, and strong calls.
RELEASE_THR_SWEEP = pd.DataFrame({
    "k": [0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85,
          0.9, 0.95, 1.0],
    "accuracy": [0.364, 0.508, 0.548, 0.592, 0.604, 0.578, 0.654, 0.648, 0.65, 0.634, 0.674, 0.658, 0.644, 0.674,
                 0.686, 0.66, 0.682, 0.706, 0.714, 0.716, 0.73],
    "strong_tokens": [0.0, 70.7, 98.2, 107.2, 135.9, 139.9, 133.5, 145.3, 164.5, 160.3, 163.8, 165.4, 184.5, 188.6,
                      171.0, 211.0, 210.2, 204.8, 219.1, 233.3, 494.8],
    "weak_tokens": [400.9, 375.5, 382.0, 356.7, 350.1, 332.2, 324.8, 318.1, 318.8, 320.0, 298.5, 303.8, 304.0,
                    292.7, 301.6, 278.5, 280.1, 275.4, 256.5, 246.9, 0.0],
    "discarded_tokens": [0.0, 75.5, 109.2, 106.6, 140.9, 149.5, 150.8, 159.6, 168.1, 160.0, 176.9, 180.2, 183.2,
                         202.6, 194.5, 217.2, 218.2, 215.7, 224.3, 239.3, 0.0],
    "strong_calls": [0.0, 0.98, 1.34, 1.5, 1.75, 1.92, 1.88, 2.07, 2.2, 2.12, 2.19, 2.29, 2.39, 2.54, 2.52, 2.76,
                     2.82, 2.86, 2.93, 3.33, 8.02],
})

# AIME (trained and tested on AIME; the paper's hardest in-distribution setting): CPT(95%) in % of strong-only
# tokens and mean dIBC; TRIM-Agg's dIBC is the transfer table's AIME column (the same setting).
AIME = pd.DataFrame(
    {"CPT(95%)": [28.17, 38.01, 82.34], "dIBC": [5.00, 2.50, 0.79]},
    index=pd.Index(["TRIM-POMDP", "TRIM-Agg", "SW ranking (best query-level)"], name="policy"))

# Transfer: routers trained on AIME, tested on AIME, OlympiadBench and Minerva Math; mean dIBC. NaN: not reported.
TRANSFER = pd.DataFrame(
    {"AIME (where trained)": [2.50, float("nan"), 0.44, 0.79],
     "OlympiadBench": [2.57, 1.31, -0.04, 0.07],
     "Minerva Math": [3.12, 2.23, -0.10, 0.04]},
    index=pd.Index(["TRIM-Agg", "TRIM-Thr", "BERT classifier", "SW ranking"], name="policy"))
