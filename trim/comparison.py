"""Every router and policy on one split, and the same comparison carried to another split (transfer).

`compare_all` is what `trim baselines` runs: the query-level routers fit on train and validation, then
every step-level family swept on the split (TRIM-Thr, RSD, the confidence router, TRIM-Agg/Seq, TRIM-POMDP,
TRIM-Thr with k calibrated on validation) and the oracle router, as one frontier table and one table of
curve points. `trim transfer` runs it on the test split and on the shifted one, so every number of a
policy on shifted problems comes from knobs fit where it was trained."""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np
import pandas as pd

from trim.experiment import Harness
from trim.metrics import Endpoints, accuracy_at_budget, cost_at_pgr, frontier_table, pareto_frontier
from trim.policies import RSD, ConfidenceThreshold, Threshold

# Budgets a user calibrates TRIM-Thr for, as shares of strong-only's tokens (chapter 4's calibration).
CALIBRATION_SHARES = (0.15, 0.30, 0.50)
# The testbed weak model's confidence (geometric-mean token probability) is above 0.95 on most steps and above
# 0.99 on half of them (chapter 9), so the grid is dense just below 1.
CONFIDENCE_GRID = (0.0, 0.5, 0.8, 0.9, 0.95, 0.97, 0.98, 0.985, 0.99, 0.9925, 0.995, 0.9965, 0.9975, 0.9985,
                   0.999, 0.9995, 0.9998, 1.0)
KNOBS = ("k", "c", "lambda", "belief", "target_share")   # what a curve point was made with


@dataclasses.dataclass
class Comparison:
    """One split's comparison: the frontier table (CPT, dIBC, APGR and PRM tokens per family), every
    curve point with its knob, and the endpoints they are measured against."""

    table: pd.DataFrame
    points: pd.DataFrame
    ends: Endpoints


def confidence_sweep(harness: Harness, problems: Sequence, grid: Sequence[float] = CONFIDENCE_GRID) -> pd.DataFrame:
    """The confidence router (no PRM) over its threshold c."""
    return harness.sweep(problems, [ConfidenceThreshold(c) for c in grid])


def calibrated_thresholds(harness: Harness, validation: Sequence, shares: Sequence[float] = CALIBRATION_SHARES,
                          points: int = 21) -> dict[float, float]:
    """TRIM-Thr's k for each target share of strong-only's tokens, calibrated on `validation` (one grid,
    interpolated: `trim.sweep.calibrate_threshold`)."""
    from trim.sweep import calibrate_threshold

    return {share: calibrate_threshold(harness, validation, share, points)["k"] for share in shares}


def calibrated_sweep(harness: Harness, problems: Sequence, ks: dict[float, float]) -> pd.DataFrame:
    """TRIM-Thr run at the calibrated k's on `problems`, each row with the target share it was calibrated for."""
    table = harness.sweep(problems, [Threshold(k) for k in ks.values()])
    table.insert(0, "target_share", list(ks))
    return table


def compare_all(harness: Harness, problems: Sequence, train: Sequence, validation: Sequence, model, root,
                points: int = 21, ks: dict[float, float] | None = None) -> Comparison:
    """Every family on `problems`: query-level routers fit on `train`/`validation`, the step-level families
    swept, the oracle router (a PRM that knows each step's label) as the ceiling.

    `model` is TRIM-POMDP's routing model, `root` the folder of trained TRIM-Agg/Seq policies; `ks` the
    calibrated thresholds (default: calibrated on `validation` now)."""
    from trim.baselines import compare
    from trim.sweep import learned_sweeps, pomdp_sweeps, threshold_grid
    from trim.testbed.oracle import OraclePRM

    if ks is None:   # calibrated on validation, traced apart from this split's runs of the same thresholds
        calibration = harness.with_prm(None, harness.trace_dir and harness.trace_dir / "calibration-validation")
        ks = calibrated_thresholds(calibration, validation, points=points)
    steps = {"TRIM-Thr": harness.sweep(problems, threshold_grid(points)), "RSD": harness.sweep(problems, [RSD()]),
             "TRIM-Thr (k calibrated on validation)": calibrated_sweep(harness, problems, ks),
             "confidence router (no PRM)": confidence_sweep(harness, problems),
             **learned_sweeps(harness, problems, root),
             **pomdp_sweeps(harness, problems, model)}
    oracle = harness.with_prm(OraclePRM(problems), trace_dir=harness.trace_dir and harness.trace_dir / "oracle")
    steps["oracle router"] = oracle.sweep(problems, [Threshold(0.5)])
    table, curves = compare(harness, train, validation, problems, steps)
    ends, weak, strong = harness.endpoints(problems)
    families = {**steps, **curves}
    # The PRM's own cost beside the strong tokens: per family, at the point that first reaches 95% of the gap.
    table["PRM tokens (at CPT 95%)"] = [_prm_at_95(families[name], ends) for name in table.index]
    rows = [pd.DataFrame({"family": name, "strong_tokens": frame["strong_tokens"], "accuracy": frame["accuracy"],
                          # unknown (NaN) where the generator had no tokenizer to count the question with
                          "prm_tokens": frame["prm_tokens"] if "prm_tokens" in frame else float("nan"),
                          **{knob: frame[knob] for knob in KNOBS if knob in frame}})
            for name, frame in families.items() if len(frame)]
    rows.append(pd.DataFrame({"family": ["weak-only", "strong-only"], "strong_tokens": [0.0, ends.strong_cost],
                              "accuracy": [weak["accuracy"], strong["accuracy"]], "prm_tokens": [0.0, 0.0]}))
    return Comparison(table, pd.concat(rows, ignore_index=True), ends)


def _prm_at_95(frame: pd.DataFrame, ends: Endpoints) -> float:
    """PRM tokens per query where the family's frontier first closes 95% of the gap (its CPT(95%)); NaN if never."""
    if not len(frame):
        return float("nan")
    cost = cost_at_pgr(frame, ends, 0.95)
    return prm_tokens_at_cost(frame, ends, cost) if np.isfinite(cost) else float("nan")


def prm_tokens_at_cost(frame: pd.DataFrame, ends: Endpoints, cost: float) -> float:
    """A family's PRM tokens per query at `cost` strong tokens on its Pareto frontier, interpolated between
    frontier points as CPT is (a per-query mix of two operating points); the endpoints join the frontier and
    read no PRM."""
    prm = frame["prm_tokens"] if "prm_tokens" in frame else pd.Series(0.0, index=frame.index)
    read = dict(zip(zip(frame["strong_tokens"], frame["accuracy"]), prm))   # NaN where unknown
    read.update({(0.0, ends.weak_accuracy): 0.0, (ends.strong_cost, ends.strong_accuracy): 0.0})
    frontier = pareto_frontier(frame, ends)
    return float(np.interp(cost, frontier[:, 0], [read[(c, a)] for c, a in frontier]))


def weighted_cost(points: pd.DataFrame, price_ratio: float) -> pd.DataFrame:
    """Curve points with cost = strong tokens + price_ratio x PRM tokens (a PRM token priced at `price_ratio`
    strong tokens), in the `strong_tokens` column that the metrics read. Points whose PRM tokens are unknown
    (NaN) cannot be priced and are left out."""
    weighted = points.dropna(subset=["prm_tokens"]).copy()
    weighted["strong_tokens"] = weighted["strong_tokens"] + price_ratio * weighted["prm_tokens"]
    return weighted


def price_sweep(points: pd.DataFrame, ratios: Sequence[float], families: Sequence[str] | None = None,
                metric: str = "CPT(95%)") -> pd.DataFrame:
    """`metric` of each family with cost = strong tokens + ratio x PRM tokens, one column per price ratio.
    The endpoints stay those of strong tokens alone: strong-only and weak-only read no PRM."""
    ends = endpoints_of(points)
    return pd.DataFrame({ratio: frontier_by_family(weighted_cost(points, ratio), ends, families)[metric]
                         for ratio in ratios}).rename_axis(columns="PRM token price, in strong tokens")


def break_even_price(points: pd.DataFrame, family: str, rival: str, metric: str = "CPT(95%)",
                     highest: float = 10.0) -> float:
    """The price of a PRM token (in strong tokens) at which `family`, paying for its PRM, stops beating
    `rival` on `metric` (a cost: lower is better); inf if it still wins at `highest`, 0 if it never wins.
    The crossing is found by bisection, which assumes one crossing: true when the rival reads no PRM (its
    cost stays put while the family's grows); against a rival that reads one too, check `price_sweep`."""
    ends = endpoints_of(points)

    def margin(ratio: float) -> float:
        table = frontier_by_family(weighted_cost(points, ratio), ends, [family, rival])[metric]
        return float(table[rival] - table[family])   # > 0: the family is cheaper

    if not margin(0.0) > 0:
        return 0.0
    if margin(highest) > 0:
        return float("inf")
    low, high = 0.0, highest
    for _ in range(40):
        middle = (low + high) / 2
        low, high = (middle, high) if margin(middle) > 0 else (low, middle)
    return (low + high) / 2


def family_names(points: pd.DataFrame, families: Sequence[str] | None = None) -> list[str]:
    """The policy families of a points table (not its endpoints), in order; only those in `families` if given."""
    return [f for f in points["family"].unique() if f not in ("weak-only", "strong-only")
            and (families is None or f in families)]


def frontier_by_family(points: pd.DataFrame, ends: Endpoints, families: Sequence[str] | None = None) -> pd.DataFrame:
    """`frontier_table` of the families in a points table (as `Comparison.points` or curves.csv holds)."""
    return frontier_table({name: points[points["family"] == name] for name in family_names(points, families)}, ends)


def endpoints_of(points: pd.DataFrame) -> Endpoints:
    """The endpoints recorded in a points table (its weak-only and strong-only rows) of one split."""
    weak, strong = points[points["family"] == "weak-only"], points[points["family"] == "strong-only"]
    if len(weak) != 1 or len(strong) != 1:
        raise ValueError(f"a points table of one split has one weak-only and one strong-only row; this one has "
                         f"{len(weak)} and {len(strong)}: select one split first (e.g. points[points['split'] == "
                         "'test'])")
    weak, strong = weak.iloc[0], strong.iloc[0]
    return Endpoints(float(weak["accuracy"]), float(strong["accuracy"]), float(strong["strong_tokens"]))


def accuracy_at(points: pd.DataFrame, budget: float, families: Sequence[str] | None = None) -> pd.Series:
    """Each family's best accuracy at a strong-token budget (tokens per query), from its frontier."""
    ends = endpoints_of(points)
    return pd.Series({name: accuracy_at_budget(points[points["family"] == name], ends, budget)
                      for name in family_names(points, families)}, name=f"accuracy at {budget:g}")


__all__ = ["CALIBRATION_SHARES", "CONFIDENCE_GRID", "Comparison", "accuracy_at", "break_even_price",
           "calibrated_sweep", "calibrated_thresholds", "compare_all", "confidence_sweep", "endpoints_of",
           "family_names", "frontier_by_family", "price_sweep", "prm_tokens_at_cost", "weighted_cost"]
