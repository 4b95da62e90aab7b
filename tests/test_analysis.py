"""The analysis helpers the chapters use: oracle PRM, step labels, ROC and reliability, plots, sweeps."""

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest

from trim import metrics, paper, plots, prm_quality, testbed
from trim.engine import run_policies, run_policy
from trim.experiment import Harness
from trim.policies import RandomRegeneration, StrongOnly, Threshold
from trim.sweep import random_matched, threshold_grid
from trim.testbed import evaluate, task
from trim.testbed.oracle import OraclePRM


@pytest.fixture(scope="module")
def tb():
    return testbed.load(seed=0)


@pytest.fixture(scope="module")
def problems(tb):
    return tb.splits["test"][:40]


def _corrupt(step: str) -> str:
    """The same step with a wrong result (mod 11 values are 0..10, so +1 mod 11 is always different)."""
    head, _, result = step.rpartition(" = ")
    value = int(result.split(",")[0]) if "," in result else int(result)
    return f"{head} = {(value + 1) % 11}" + (result[result.index(","):] if "," in result else "")


def test_oracle_prm_scores_on_track_prefixes(problems):
    oracle = OraclePRM(problems)
    p = next(p for p in problems if len(p.operations) >= 4)
    gold = p.gold_steps()
    assert oracle.score([p.question], [gold]) == [[1.0] * len(gold)]
    bad = gold[:1] + [_corrupt(gold[1])] + gold[2:]
    assert not task.check_step(p, gold[:1], bad[1])
    # From the first wrong step on, the prefix is off track, even where later steps are locally right.
    assert oracle.score([p.question], [bad]) == [[1.0] + [0.0] * (len(gold) - 1)]


def test_oracle_prm_names_unknown_problems(problems):
    with pytest.raises(KeyError, match="not given this problem"):
        OraclePRM(problems[:1]).score([problems[1].question], [["1) 1 + 1 = 2"]])


def test_oracle_routing_keeps_only_correct_weak_steps(tb, problems):
    oracle = OraclePRM(problems)
    records = run_policy(problems, Threshold(0.5), tb.weak, tb.strong, oracle)
    steps = evaluate.label_steps(records, problems)
    assert len(steps) == sum(r["num_steps"] for r in records)
    kept = steps[~steps["regenerated"]]
    assert kept["weak_correct"].all() and kept["correct"].all()
    # A regenerated step had a wrong weak candidate, or followed a wrong strong step (off track).
    assert steps["regenerated"].any()
    assert (steps["strong_tokens"] > 0).sum() <= steps["regenerated"].sum()
    per_problem = steps.groupby("problem_id")["strong_tokens"].sum().to_dict()
    assert per_problem == {r["problem_id"]: r["strong_tokens"] for r in records}


def test_solutions_frame_finds_first_error(problems):
    p = next(p for p in problems if len(p.operations) >= 3)
    gold = p.gold_steps()
    steps = gold[:2] + [_corrupt(gold[2])] + gold[3:]
    sample = evaluate.Sample(p, steps, [5] * len(steps), task.step_labels(p, steps), False)
    clean = evaluate.Sample(p, gold, [5] * len(gold), task.step_labels(p, gold), True)
    frame = evaluate.solutions_frame([sample, clean])
    assert frame.loc[0, "first_error"] == 3 and frame.loc[0, "first_error_type"] == p.step_types[2]
    assert frame.loc[0, "wrong_steps"] >= 1 and np.isnan(frame.loc[1, "first_error"])
    assert frame["tokens"].tolist() == [5 * len(steps), 5 * len(gold)]


def test_roc_points_and_reliability():
    scores = np.array([0.1, 0.2, 0.8, 0.9])
    labels = np.array([False, False, True, True])
    roc = prm_quality.roc_points(scores, labels)
    assert (roc["fpr"].iloc[0], roc["tpr"].iloc[0]) == (0.0, 0.0)
    assert (roc["fpr"].iloc[-1], roc["tpr"].iloc[-1]) == (1.0, 1.0)
    area = np.trapezoid(roc["tpr"], roc["fpr"])
    assert area == pytest.approx(prm_quality.auroc(scores, labels)) == pytest.approx(1.0)
    noisy = np.array([0.9, 0.2, 0.8, 0.1])
    roc = prm_quality.roc_points(noisy, labels)
    area = np.trapezoid(roc["tpr"], roc["fpr"])
    assert area == pytest.approx(prm_quality.auroc(noisy, labels)) == pytest.approx(0.25)
    rel = prm_quality.reliability(scores, labels, bins=2)
    assert rel["steps"].sum() == 4 and rel["correct_share"].tolist() == [0.0, 1.0]


def test_frontier_table_takes_sweep_tables_and_skips_empty_ones():
    ends = metrics.Endpoints(0.4, 0.8, 100.0)
    table = pd.DataFrame({"strong_tokens": [10.0, 30.0], "accuracy": [0.55, 0.70]})
    families = {"table": table, "points": [(10.0, 0.55), (30.0, 0.70)], "empty": pd.DataFrame()}
    out = metrics.frontier_table(families, ends)
    assert list(out.index) == ["table", "points"]
    assert out.loc["table"].equals(out.loc["points"].rename("table"))


def test_paper_numbers_are_consistent_with_the_metrics():
    release = list(zip(paper.RELEASE_THR["strong_tokens"], paper.RELEASE_THR["accuracy"]))
    assert metrics.cpt(release, paper.RELEASE_ENDS, 50) == pytest.approx(18.71, abs=0.01)
    dibc = paper.MATH500["dIBC"]
    assert dibc["TRIM-Thr"] / dibc["AutoMix-PRM (best query-level)"] == pytest.approx(5.0)


def test_a_sweep_side_by_side_routes_as_independent_runs_do(tb, problems):
    """The policies of a sweep share rounds and cached batches; each one's steps, decisions and costs are
    those of its own run (scores agree to float noise: a row's padding differs with its batch)."""
    policies = [Threshold(0.3), Threshold(0.8), StrongOnly(), RandomRegeneration(0.3, seed=1)]
    harness = Harness(tb.weak, tb.strong, tb.prm, progress=False)
    together = run_policies(problems, policies, harness.weak, harness.strong, harness.prm, progress=False)
    route = lambda r: [(s["text"], s["model"], s["tokens"]) for s in r["steps"]]  # noqa: E731
    for policy, records in zip(policies, together):
        alone = run_policy(problems, policy, tb.weak, tb.strong, tb.prm, progress=False)
        assert [route(r) for r in records] == [route(r) for r in alone], policy.name
        assert [r["correct"] for r in records] == [r["correct"] for r in alone]
        scores = [(a["score"], b["score"]) for r, q in zip(records, alone) for a, b in zip(r["steps"], q["steps"])
                  if a["score"] is not None]
        if scores:
            assert np.allclose(*zip(*scores), atol=1e-5)
        else:   # the policies that never read a score do not ask the PRM (and strong-only asks no weak step)
            assert not (policy.uses_prm or policy.records_scores), policy.name


def test_a_harness_with_another_prm_reuses_the_steps_and_routes_as_a_fresh_one(tb, problems):
    harness = Harness(tb.weak, tb.strong, tb.prm, progress=False)
    harness.run(problems, Threshold(0.5))
    oracle = OraclePRM(problems)
    shared = harness.with_prm(oracle)
    hits, misses = harness.weak.hits, harness.weak.misses
    records = shared.run(problems, Threshold(0.5))
    fresh = Harness(tb.weak, tb.strong, oracle, progress=False).run(problems, Threshold(0.5))
    # A step's confidence comes from logits computed in another batch: equal to float noise, the rest exactly.
    confidences = [[s["observation"].pop("confidence") for s in r["steps"]] for run in (records, fresh) for r in run]
    half = len(confidences) // 2
    assert np.allclose(sum(confidences[:half], []), sum(confidences[half:], []), atol=1e-5)
    assert records == fresh
    assert all(r["settings"]["prm"] == oracle.name for r in records)
    # The weak steps come from the first run's cache; only prefixes new to the oracle's routing are decoded.
    assert harness.weak.hits - hits > 4 * (harness.weak.misses - misses)
    assert shared.weak is harness.weak and shared.prm.prm is oracle


def test_random_matched_follows_the_sweep_rates(tb, problems):
    harness = Harness(tb.weak, tb.strong, tb.prm, progress=False)
    sweep = harness.sweep(problems, threshold_grid(5))
    control = random_matched(harness, problems, sweep, runs=2)
    assert len(control) == 2
    inner = sweep[(sweep["regenerated_share"] > 0) & (sweep["regenerated_share"] < 1)]["regenerated_share"]
    assert set(control["rate"]).issubset(set(inner))
    assert random_matched(harness, problems, sweep.iloc[:0], runs=2).empty


def test_plots_draw_every_family(problems):
    ends = metrics.Endpoints(0.4, 0.8, 100.0)
    curves = {"a": pd.DataFrame({"strong_tokens": [10.0, 20.0, 30.0, 40.0], "accuracy": [0.5, 0.6, 0.7, 0.75]}),
              "b": pd.DataFrame({"strong_tokens": [50.0], "accuracy": [0.7]})}
    ax = plots.accuracy_cost(curves, ends, title="t")
    labels = [line.get_label() for line in ax.get_lines()]
    assert {"a", "b", "weak-only to strong-only"} <= set(labels)
    steps = pd.DataFrame({"score": [0.1, 0.9, 0.8, 0.3], "on_track": [False, True, True, False]})
    assert len(plots.prm_quality(steps).axes) == 3
