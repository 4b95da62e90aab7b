"""What the real models measure, and the ranges the testbed must land in (DESIGN 3.1).

Every number labelled *real* here was measured on real models, not on the testbed:

- step accuracies: the official TRIM release (Qwen2.5-1.5B-Instruct 0.866, Qwen2.5-7B-Instruct 0.9704);
  whole-solution accuracies: its MATH-500 endpoints (weak-only 36.4-37.6%, strong-only 73.0-77.1%);
- step lengths: 1,000 model-written solutions of ProcessBench's MATH split (6.5 steps, coefficient of
  variation of step length 0.70, first wrong step 1.44x the mean step);
- the PRM: marginals of Qwen2.5-Math-PRM-7B's score r_t per hidden state, from the observation tables
  the official release fit on ProcessBench's MATH split (S0 all steps so far correct, S1 an earlier
  step wrong, S2 this step is the first error).
"""

from __future__ import annotations

# Qwen2.5-Math-PRM-7B: P(r_t in a range | hidden state) and AUROCs of r_t between states.
REAL_PRM_STATES = {
    "S0": {"P(r<0.1)": 0.006, "P(r<0.5)": 0.023, "P(r>=0.9)": 0.906, "P(r>=0.95)": 0.704},
    "S1": {"P(r<0.1)": 0.108, "P(r<0.5)": 0.354, "P(r>=0.9)": 0.265, "P(r>=0.95)": 0.140},
    "S2": {"P(r<0.1)": 0.337, "P(r<0.5)": 0.763, "P(r>=0.9)": 0.058, "P(r>=0.95)": 0.030},
}
REAL_PRM_AUROC = {"S0 vs S2": 0.961, "S0 vs S1": 0.861}

# Four bins of r_t per state, from the marginals above: [0, 0.1), [0.1, 0.5), [0.5, 0.9), [0.9, 1].
REAL_PRM_BINS = (0.0, 0.1, 0.5, 0.9, 1.0)


def real_prm_bin_masses(state: str) -> list[float]:
    """The real PRM's probability mass in each of `REAL_PRM_BINS`' intervals for one hidden state."""
    m = REAL_PRM_STATES[state]
    below_01, below_05, above_09 = m["P(r<0.1)"], m["P(r<0.5)"], m["P(r>=0.9)"]
    return [below_01, below_05 - below_01, 1 - below_05 - above_09, above_09]


# measure -> (real value, (low, high)); None where the issue gives no range.
REAL = {
    "weak next-step accuracy": (0.866, (0.82, 0.90)),
    "strong next-step accuracy": (0.9704, (0.965, 1.0)),
    "weak whole-solution accuracy": (0.376, (0.30, 0.50)),
    "strong whole-solution accuracy": (0.771, (0.70, 0.90)),
    "weak steps per solution": (6.5, (5.0, 8.0)),
    "weak tokens-per-step CV": (0.70, (0.5, 0.9)),
    "weak first-error length / mean step": (1.44, (1.2, float("inf"))),
    "PRM S0 P(r<0.5)": (0.023, (0.0, 0.06)),
    "PRM S0 P(r>=0.9)": (0.906, (0.80, 0.95)),
    "PRM S2 P(r<0.5)": (0.763, (0.65, 0.85)),
    "PRM S2 P(r>=0.9)": (0.058, (0.0, 0.12)),
    "PRM S1 P(r<0.5)": (0.354, (0.20, 0.60)),
    "PRM AUROC S0 vs S2": (0.961, (0.93, 0.98)),
    "self-confidence AUROC S0 vs S2": (None, (0.0, 0.80)),
    "PRM AUROC minus self-confidence AUROC": (None, (0.10, 1.0)),
}
