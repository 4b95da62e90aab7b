"""Accuracy-cost metrics for routers, with cost in strong-model tokens per query (chapter 3 of the book
derives each one).

A policy family swept over its knob gives points (cost, accuracy). Everything is measured against the
two endpoints: weak-only (accuracy P_w, cost 0) and strong-only (accuracy P_s, cost C_s).

- PGR = (P - P_w) / (P_s - P_w): the share of the weak-to-strong gap recovered.
- CPT(x%): the smallest cost, as % of C_s, at which the Pareto frontier reaches PGR x%.
- IBC = (P - P_w) / C, dIBC = (IBC - IBC_base) / IBC_base with IBC_base = (P_s - P_w) / C_s: how much
  more accuracy per strong token than the straight line from weak-only to strong-only. One number per
  family: the mean over 100 evenly spaced PGR targets along the frontier.
- APGR: area under PGR against cost / C_s (RouteLLM).
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np
import pandas as pd


@dataclasses.dataclass(frozen=True)
class Endpoints:
    weak_accuracy: float      # P_w
    strong_accuracy: float    # P_s
    strong_cost: float        # C_s, strong tokens per query of strong-only

    def __post_init__(self):
        if self.strong_accuracy <= self.weak_accuracy:
            raise ValueError("PGR needs the strong model to beat the weak one "
                             f"(P_s={self.strong_accuracy}, P_w={self.weak_accuracy})")
        if self.strong_cost <= 0:
            raise ValueError(f"strong-only cost must be positive, got {self.strong_cost}")


def summarize(records: Sequence[dict], question_tokens: dict | None = None, reads_prm: bool = True) -> dict:
    """Accuracy and tokens per query of one run's traces.

    With `question_tokens` (problem id -> the question's length in tokens) it adds `prm_tokens`, the PRM's
    own tokens per query (see `prm_tokens`); a policy that never reads a score (`reads_prm=False`) costs none,
    even where its trace keeps scores (weak-only's)."""
    n = len(records)
    if n == 0:
        raise ValueError("no traces to summarize")
    mean = lambda key: float(sum(r[key] for r in records)) / n  # noqa: E731
    steps = sum(r["num_steps"] for r in records)
    summary = {"accuracy": mean("correct"), "strong_tokens": mean("strong_tokens"), "weak_tokens": mean("weak_tokens"),
               "discarded_tokens": mean("discarded_tokens"), "steps": steps / n,
               "regenerated_share": sum(r["regenerated_steps"] for r in records) / max(steps, 1), "problems": n}
    if question_tokens is not None:
        summary["prm_tokens"] = (sum(prm_tokens(r, question_tokens[r["problem_id"]]) for r in records) / n
                                 if reads_prm else 0.0)
    return summary


def prm_tokens(record: dict, question_tokens: int) -> int:
    """The tokens a PRM reads to score one solution's steps, with prefix caching (vLLM's automatic prefix
    caching, or `trim.backends.prefix_cache`): each call reads only what follows the prefix it read last,
    so the question once, every candidate it scores (kept or not), and every strong rewrite that a later
    call reads in its prefix. Counted in the generators' tokens; the PRM's template and step tags add a few
    per step. Steps never scored (an empty candidate, strong-only) cost nothing."""
    total, unread, called = 0, 0, False   # unread: rewrites since the last call, read as the next one's prefix
    for step in record["steps"]:
        if step.get("score") is not None:
            candidate = step["tokens"] if step["model"] == "weak" else step["discarded_tokens"]
            total += (0 if called else question_tokens) + unread + candidate
            unread, called = 0, True
        if step["model"] == "strong":
            unread += step["tokens"]
    return total


def pgr(accuracy: float, ends: Endpoints) -> float:
    return (accuracy - ends.weak_accuracy) / (ends.strong_accuracy - ends.weak_accuracy)


def as_points(points) -> list[tuple[float, float]]:
    """(strong tokens per query, accuracy) pairs from a list of them or a sweep table with those columns."""
    if isinstance(points, pd.DataFrame):
        return list(zip(points["strong_tokens"], points["accuracy"])) if len(points) else []
    return list(points)


def pareto_frontier(points, ends: Endpoints | None = None) -> np.ndarray:
    """Non-dominated (cost, accuracy) points sorted by cost, each more accurate than every cheaper one.

    `points` is a list of (cost, accuracy) pairs or a sweep table (`as_points`). With `ends`, the
    weak-only and strong-only endpoints join the frontier: any router can buy them."""
    pts = as_points(points)
    if ends is not None:
        pts += [(0.0, ends.weak_accuracy), (ends.strong_cost, ends.strong_accuracy)]
    pts = sorted(pts, key=lambda p: (p[0], -p[1]))
    frontier, best = [], -np.inf
    for cost, acc in pts:
        if acc > best:
            frontier.append((cost, acc))
            best = acc
    return np.array(frontier, dtype=float)


def cost_at_pgr(points, ends: Endpoints, target: float) -> float:
    """Smallest strong tokens/query at which the frontier reaches PGR `target` (linear interpolation); NaN if never."""
    frontier = pareto_frontier(points, ends)
    gains = np.array([pgr(a, ends) for a in frontier[:, 1]])
    above = np.flatnonzero(gains >= target - 1e-12)
    if len(above) == 0:
        return float("nan")
    j = above[0]
    if j == 0:
        return float(frontier[0, 0])
    (c0, g0), (c1, g1) = (frontier[j - 1, 0], gains[j - 1]), (frontier[j, 0], gains[j])
    return float(c0 + (target - g0) / (g1 - g0) * (c1 - c0))


def cpt(points, ends: Endpoints, percent: float) -> float:
    """CPT(percent): cost, in % of strong-only's cost, to reach PGR = percent %."""
    return 100.0 * cost_at_pgr(points, ends, percent / 100.0) / ends.strong_cost


def delta_ibc(accuracy: float, cost: float, ends: Endpoints) -> float:
    base = (ends.strong_accuracy - ends.weak_accuracy) / ends.strong_cost
    return ((accuracy - ends.weak_accuracy) / cost - base) / base


def mean_delta_ibc(points, ends: Endpoints, targets: int = 100) -> float:
    """dIBC averaged over `targets` evenly spaced PGR levels in (0, 1] that the frontier reaches."""
    values = []
    for g in np.linspace(1.0 / targets, 1.0, targets):
        cost = cost_at_pgr(points, ends, g)
        if np.isfinite(cost) and cost > 0:
            accuracy = ends.weak_accuracy + g * (ends.strong_accuracy - ends.weak_accuracy)
            values.append(delta_ibc(accuracy, cost, ends))
    return float(np.mean(values)) if values else float("nan")


def accuracy_at_budget(points, ends: Endpoints | None, budget: float) -> float:
    """Best frontier accuracy with at most `budget` strong tokens per query (interpolated)."""
    frontier = pareto_frontier(points, ends)
    costs, accs = frontier[:, 0], frontier[:, 1]
    if budget < costs[0]:
        return float("nan")
    return float(np.interp(budget, costs, accs))


def apgr(points, ends: Endpoints, grid: int = 1001) -> float:
    """Area under PGR(cost / C_s) on [0, 1], the frontier held flat beyond its last point."""
    frontier = pareto_frontier(points, ends)
    x = np.linspace(0.0, 1.0, grid)
    gains = np.interp(x * ends.strong_cost, frontier[:, 0], [pgr(a, ends) for a in frontier[:, 1]])
    return float(np.trapezoid(gains, x))


def frontier_table(families: dict[str, Sequence[tuple[float, float]] | pd.DataFrame], ends: Endpoints) -> pd.DataFrame:
    """One row per policy family: CPT(50/80/95) in % of C_s, mean dIBC and APGR.

    A family is a list of (strong tokens per query, accuracy) points, or a sweep table with those
    columns (`strong_tokens`, `accuracy`); empty families are left out."""
    rows = []
    for name, points in families.items():
        points = as_points(points)
        if not len(points):
            continue
        rows.append({"policy": name, "CPT(50%)": cpt(points, ends, 50), "CPT(80%)": cpt(points, ends, 80),
                     "CPT(95%)": cpt(points, ends, 95), "dIBC": mean_delta_ibc(points, ends),
                     "APGR": apgr(points, ends)})
    return pd.DataFrame(rows).set_index("policy")
