"""Sweeps of a policy family over its knob, and budget calibration (RouteLLM's calibrate-threshold).

Sweeps run through one `trim.experiment.Harness`, so all runs share one generation cache and one PRM
cache: every prefix that two thresholds share is generated and scored once."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from trim.experiment import Harness
from trim.metrics import summarize
from trim.policies import RandomRegeneration, Threshold


def threshold_grid(points: int = 21) -> list[Threshold]:
    # Rounded so that a grid point is the number a reader would type (0.15, not 0.15000000000000002).
    return [Threshold(round(float(k), 10)) for k in np.linspace(0.0, 1.0, points)]


def random_matched(harness: Harness, problems: Sequence, sweep: pd.DataFrame, runs: int = 5,
                   seed: int = 0) -> pd.DataFrame:
    """The control for a sweep: regenerate the same shares of steps as `sweep`'s points, at random.

    It spends strong tokens like the swept policy but ignores the PRM, so the gap between the two
    curves is what the PRM's targeting buys. `runs` rates are picked evenly among the sweep's points
    strictly between weak-only and strong-only."""
    inner = sweep[(sweep["regenerated_share"] > 0) & (sweep["regenerated_share"] < 1)]
    if inner.empty or runs < 1:
        return pd.DataFrame()
    picks = inner.iloc[np.linspace(0, len(inner) - 1, min(runs, len(inner))).round().astype(int)]
    return harness.sweep(problems, [RandomRegeneration(rate, seed=seed) for rate in picks["regenerated_share"]])


def calibrate_threshold(harness: Harness, problems: Sequence, target_share: float, points: int = 21) -> dict:
    """The k whose strong-token share (strong tokens / strong-only's) on `problems` is `target_share`.

    The share grows with k, so the grid is interpolated and the chosen k run once to report the share
    it actually reaches on these problems."""
    if not 0.0 < target_share <= 1.0:
        raise ValueError(f"target share must be in (0, 1], got {target_share}")
    ends, _, _ = harness.endpoints(problems)
    table = harness.sweep(problems, threshold_grid(points))
    shares = np.maximum.accumulate(table["strong_tokens"].to_numpy() / ends.strong_cost)
    k = float(np.interp(target_share, shares, table["k"].to_numpy()))
    reached = summarize(harness.run(problems, Threshold(k)))["strong_tokens"] / ends.strong_cost
    return {"k": k, "target_share": target_share, "calibration_share": reached, "grid": table}


def learned_sweeps(harness: Harness, problems: Sequence, root=None, kinds: Sequence[str] | None = None
                   ) -> dict[str, pd.DataFrame]:
    """Each trained policy family (TRIM-Agg, TRIM-Seq, or those in `kinds`) over every lambda it was trained
    for, as a sweep table with a `lambda` column: the learned counterpart of a threshold sweep. Families
    with no trained policy under `root` (default data/policies) are left out."""
    from trim.policies.learned import KINDS, POLICY_DIR, shipped_lambdas, trained

    root = POLICY_DIR if root is None else root
    sweeps = {}
    for kind, cls in KINDS.items():
        if kinds is not None and kind not in kinds:
            continue
        lambdas = shipped_lambdas(kind, root)
        if lambdas:
            sweeps[cls.label] = harness.sweep(problems, [trained(kind, lam, root) for lam in lambdas])
    return sweeps


# Prices of a strong token for TRIM-POMDP's curve: from nearly free (close to strong-only) to dear enough that
# it keeps almost every weak step, densest where the curve bends. A POMDP solves in seconds, so unlike a
# trained policy each point costs only its run.
POMDP_LAMBDAS = (0.0005, 0.001, 0.002, 0.004, 0.006, 0.008, 0.01, 0.012, 0.016, 0.024, 0.032)


def pomdp_sweeps(harness: Harness, problems: Sequence, model, lambdas: Sequence[float] = POMDP_LAMBDAS,
                 beliefs: Sequence[str] = ("filter", "release")) -> dict[str, pd.DataFrame]:
    """TRIM-POMDP over `lambdas` with each belief rule (`trim.policies.pomdp`), solved for `model` (a
    `trim.pomdp.model.RoutingModel`): "TRIM-POMDP" is the Bayes filter, "TRIM-POMDP (release belief)" the
    official release's one-shot belief."""
    from trim.policies.pomdp import TrimPOMDP

    names = {"filter": "TRIM-POMDP", "release": "TRIM-POMDP (release belief)"}
    return {names[belief]: harness.sweep(problems, [TrimPOMDP(model, lam, belief) for lam in lambdas])
            for belief in beliefs}


def prm_noise_sweeps(harness: Harness, problems: Sequence, strengths: Sequence[float], model, samples: Sequence,
                     root=None, points: int = 11, lambdas: Sequence[float] = POMDP_LAMBDAS,
                     seed: int = 0) -> pd.DataFrame:
    """How TRIM-Thr, TRIM-Agg and TRIM-POMDP degrade as the PRM's scores are blended with uniform noise
    (`trim.prm_quality.BlendedNoisePRM`): one frontier row (CPT, dIBC, APGR) per (strength, family).

    TRIM-Thr sweeps its threshold as before; TRIM-Agg keeps the weights it learned on clean scores (a
    retrained policy costs minutes per lambda); TRIM-POMDP's observation model is refit on the noisy
    scores of `samples` (labelled weak solutions, `evaluate.sample_solutions`), as a user would refit it."""
    from trim.metrics import frontier_table
    from trim.policies.pomdp import TrimPOMDP
    from trim.pomdp.model import refit_observations
    from trim.prm_quality import BlendedNoisePRM

    ends, _, _ = harness.endpoints(problems)
    rows = []
    for strength in strengths:
        prm = BlendedNoisePRM(harness.prm, strength, seed)   # the clean scores come from the harness's cache
        noisy = harness.with_prm(prm, None if harness.trace_dir is None else harness.trace_dir / f"noise-{strength!r}")
        refit = refit_observations(model, prm, samples, seed)
        families = {"TRIM-Thr": noisy.sweep(problems, threshold_grid(points)),
                    **learned_sweeps(noisy, problems, root, kinds=("agg",)),
                    "TRIM-POMDP": noisy.sweep(problems, [TrimPOMDP(refit, lam) for lam in lambdas])}
        rows.append(frontier_table(families, ends).assign(strength=strength))
    return pd.concat(rows).reset_index().set_index(["strength", "policy"])
