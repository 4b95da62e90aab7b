"""How good a PRM is as a judge of steps: AUROC, calibration (reliability, ECE), ROC points and
ProcessBench's first-error F1. Scores are P(step correct); labels are True for a correct step."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve as the Mann-Whitney statistic (ties count half)."""
    from scipy.stats import rankdata

    labels = np.asarray(labels).astype(bool)
    positives, negatives = labels.sum(), (~labels).sum()
    if positives == 0 or negatives == 0:
        raise ValueError("AUROC needs both correct and wrong steps")
    ranks = rankdata(scores)
    return float((ranks[labels].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def expected_calibration_error(scores: np.ndarray, labels: np.ndarray, bins: int = 10) -> float:
    """Gap between mean score and share correct, averaged over the reliability diagram's bins by size."""
    table = reliability(scores, labels, bins)
    gaps = (table["mean_score"] - table["correct_share"]).abs()
    return float((gaps * table["steps"]).sum() / table["steps"].sum())


def reliability(scores: np.ndarray, labels: np.ndarray, bins: int = 10) -> pd.DataFrame:
    """Mean score against the observed share of correct steps, per score bin (a reliability diagram)."""
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(scores, edges[1:-1]), 0, bins - 1)
    frame = pd.DataFrame({"bin": which, "score": scores, "correct": np.asarray(labels, dtype=float)})
    return frame.groupby("bin").agg(mean_score=("score", "mean"), correct_share=("correct", "mean"),
                                    steps=("score", "size"))


def roc_points(scores: np.ndarray, labels: np.ndarray) -> pd.DataFrame:
    """False and true positive rates of "flag as wrong" = score below t, for every threshold t.

    Positives are the wrong steps, because that is what a router looks for."""
    scores, wrong = np.asarray(scores, dtype=float), ~np.asarray(labels).astype(bool)
    thresholds = np.concatenate([[-np.inf], np.unique(scores), [np.inf]])
    flagged = scores[None, :] < thresholds[:, None]
    return pd.DataFrame({"threshold": thresholds, "fpr": (flagged & ~wrong).sum(1) / max((~wrong).sum(), 1),
                         "tpr": (flagged & wrong).sum(1) / max(wrong.sum(), 1)})


def processbench_f1(table: pd.DataFrame, threshold: float = 0.5) -> dict[str, float]:
    """ProcessBench's metric: predicted first error = first step scored below `threshold` (-1 if none);
    accuracy on erroneous and on correct solutions, and their harmonic mean (F1)."""
    predicted, actual = [], []
    for _, group in table.groupby("problem_id", sort=False):
        below = np.flatnonzero(group["score"].to_numpy() < threshold)
        predicted.append(int(below[0]) if len(below) else -1)
        actual.append(int(group["first_error"].iloc[0]))
    predicted, actual = np.array(predicted), np.array(actual)
    err, ok = actual >= 0, actual < 0
    acc_err = float((predicted[err] == actual[err]).mean()) if err.any() else 0.0
    acc_ok = float((predicted[ok] == -1).mean()) if ok.any() else 0.0
    f1 = 2 * acc_err * acc_ok / (acc_err + acc_ok) if acc_err + acc_ok else 0.0
    return {"error_acc": acc_err, "correct_acc": acc_ok, "f1": f1}


class BlendedNoisePRM:
    """Another PRM with its scores blended with uniform noise: r' = (1 - strength) r + strength u.

    u is drawn per step from (seed, question, the steps up to it), so reading a step again, in a longer
    prefix or in another run, gives the same score, as a real PRM's would. Strength 0 is the PRM itself,
    strength 1 a PRM that knows nothing: a dial for how much a policy relies on the PRM being good."""

    def __init__(self, prm, strength: float, seed: int = 0):
        if not 0 <= strength <= 1:
            raise ValueError(f"noise strength must be in [0, 1] (got {strength})")
        self.prm, self.strength, self.seed = prm, float(strength), seed
        self.name = f"{prm.name}+uniform-noise-{self.strength!r}-seed-{seed}"   # whole: two strengths, two names

    def score(self, questions, steps) -> list[list[float]]:
        from trim.hashing import join_key, stable_uniform

        out = []
        for question, prefix, row in zip(questions, steps, self.prm.score(questions, steps)):
            out.append([r if r is None or math.isnan(r)   # an unscored step stays unscored
                        else (1 - self.strength) * r + self.strength * stable_uniform(join_key(self.seed, question,
                                                                                               *prefix[: i + 1]))
                        for i, r in enumerate(row)])
        return out
