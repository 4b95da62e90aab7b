"""Metrics against hand-computed values, including the official release's MATH-500 threshold numbers."""

import math

import numpy as np
import pytest

from trim.metrics import (
    Endpoints,
    accuracy_at_budget,
    apgr,
    cost_at_pgr,
    cpt,
    delta_ibc,
    mean_delta_ibc,
    pareto_frontier,
    pgr,
    summarize,
)

# Official release, Qwen2.5-1.5B -> 7B on MATH-500 (as `trim.paper` cites it).
OFFICIAL = Endpoints(weak_accuracy=0.364, strong_accuracy=0.730, strong_cost=494.8)
OFFICIAL_THR = [(70.7, 0.508), (163.8, 0.674), (219.1, 0.714)]  # k = 0.05, 0.5, 0.9


def test_pgr_of_official_thresholds():
    # (50.8 - 36.4) / (73.0 - 36.4) = 14.4 / 36.6
    assert pgr(0.508, OFFICIAL) == pytest.approx(14.4 / 36.6)
    assert pgr(0.674, OFFICIAL) == pytest.approx(31.0 / 36.6)
    assert pgr(0.714, OFFICIAL) == pytest.approx(35.0 / 36.6)


def test_delta_ibc_of_official_thresholds():
    base = 36.6 / 494.8
    assert delta_ibc(0.508, 70.7, OFFICIAL) == pytest.approx((14.4 / 70.7 - base) / base)  # 1.754
    assert delta_ibc(0.508, 70.7, OFFICIAL) == pytest.approx(1.7536, abs=1e-3)
    assert delta_ibc(0.674, 163.8, OFFICIAL) == pytest.approx(1.5586, abs=1e-3)
    assert delta_ibc(0.714, 219.1, OFFICIAL) == pytest.approx(1.1596, abs=1e-3)
    # The straight line from weak-only to strong-only has dIBC 0 everywhere.
    assert delta_ibc(0.547, 247.4, OFFICIAL) == pytest.approx(0.0, abs=1e-9)


def test_cpt_interpolates_on_the_frontier():
    # PGR 50% lies between k=0.05 (PGR .3934 at 70.7) and k=0.5 (PGR .8470 at 163.8):
    g0, g1 = 14.4 / 36.6, 31.0 / 36.6
    expected_cost = 70.7 + (0.5 - g0) / (g1 - g0) * (163.8 - 70.7)
    assert cost_at_pgr(OFFICIAL_THR, OFFICIAL, 0.5) == pytest.approx(expected_cost)
    assert cpt(OFFICIAL_THR, OFFICIAL, 50) == pytest.approx(100 * expected_cost / 494.8)  # about 18.7%
    assert cpt(OFFICIAL_THR, OFFICIAL, 50) == pytest.approx(18.71, abs=0.01)
    # PGR 95%: between k=0.5 and k=0.9 (PGR .9563 at 219.1).
    g2 = 35.0 / 36.6
    expected_95 = 163.8 + (0.95 - g1) / (g2 - g1) * (219.1 - 163.8)
    assert cpt(OFFICIAL_THR, OFFICIAL, 95) == pytest.approx(100 * expected_95 / 494.8)
    # On the first segment from weak-only (0, 0): cost is proportional to PGR.
    assert cost_at_pgr(OFFICIAL_THR, OFFICIAL, 0.2) == pytest.approx(0.2 / g0 * 70.7)


def test_cpt_beyond_the_family_interpolates_towards_strong_only():
    ends = Endpoints(0.4, 0.8, 100.0)
    # (10, PGR .25) -> strong-only (100, PGR 1): PGR .95 at 10 + (.95 - .25) / .75 * 90 = 94.
    assert cpt([(10.0, 0.5)], ends, 95) == pytest.approx(94.0)
    assert math.isnan(cost_at_pgr([(10.0, 0.5)], Endpoints(0.4, 0.8, 100.0), 1.01))


def test_pareto_frontier_drops_dominated_points():
    pts = [(10, 0.5), (20, 0.45), (30, 0.7), (25, 0.7), (40, 0.69)]
    front = pareto_frontier(pts)
    assert front.tolist() == [[10, 0.5], [25, 0.7]]


def test_mean_delta_ibc_on_a_single_segment_is_constant():
    # Frontier (0, P_w) -> (50, P_s) -> strong-only at 100: dIBC = C_s/50 - 1 = 1 on the whole way.
    ends = Endpoints(0.4, 0.8, 100.0)
    assert mean_delta_ibc([(50.0, 0.8)], ends) == pytest.approx(1.0)
    assert mean_delta_ibc([], ends) == pytest.approx(0.0)  # the straight line itself


def test_mean_delta_ibc_official_thresholds_by_hand():
    targets = np.linspace(0.01, 1.0, 100)
    base = 36.6 / 494.8
    expected = np.mean([((g * 36.6) / cost_at_pgr(OFFICIAL_THR, OFFICIAL, g) - base) / base for g in targets])
    assert mean_delta_ibc(OFFICIAL_THR, OFFICIAL) == pytest.approx(expected)
    assert 1.0 < mean_delta_ibc(OFFICIAL_THR, OFFICIAL) < 1.8


def test_apgr_of_the_diagonal_is_one_half_and_of_a_perfect_router_near_one():
    ends = Endpoints(0.4, 0.8, 100.0)
    assert apgr([], ends) == pytest.approx(0.5, abs=1e-3)
    assert apgr([(1.0, 0.8)], ends) == pytest.approx(0.995, abs=1e-3)


def test_accuracy_at_budget_interpolates():
    ends = Endpoints(0.4, 0.8, 100.0)
    assert accuracy_at_budget([(50.0, 0.7)], ends, 25.0) == pytest.approx(0.55)
    assert accuracy_at_budget([(50.0, 0.7)], ends, 75.0) == pytest.approx(0.75)


def test_endpoints_reject_a_weaker_strong_model():
    with pytest.raises(ValueError, match="strong model to beat"):
        Endpoints(0.8, 0.7, 100.0)


def test_summarize_counts_tokens_per_query():
    records = [
        {"correct": True, "strong_tokens": 10, "weak_tokens": 30, "discarded_tokens": 5, "num_steps": 4,
         "regenerated_steps": 1},
        {"correct": False, "strong_tokens": 0, "weak_tokens": 20, "discarded_tokens": 0, "num_steps": 2,
         "regenerated_steps": 0},
    ]
    s = summarize(records)
    assert s["accuracy"] == 0.5 and s["strong_tokens"] == 5 and s["weak_tokens"] == 25
    assert s["discarded_tokens"] == 2.5 and s["regenerated_share"] == pytest.approx(1 / 6)


def test_metrics_take_a_sweep_table_as_well_as_points():
    import pandas as pd

    ends = Endpoints(0.40, 0.80, 100.0)
    points = [(20.0, 0.52), (40.0, 0.64), (60.0, 0.74)]
    table = pd.DataFrame(points, columns=["strong_tokens", "accuracy"])
    assert cpt(table, ends, 50) == cpt(points, ends, 50)
    assert apgr(table, ends) == apgr(points, ends)


def test_prm_tokens_count_what_a_prefix_cached_prm_reads():
    from trim.metrics import prm_tokens, summarize

    steps = [{"score": 0.9, "model": "weak", "tokens": 5, "discarded_tokens": 0},
             {"score": 0.2, "model": "strong", "tokens": 7, "discarded_tokens": 4},   # candidate 4 read, rewrite 7
             {"score": None, "model": "strong", "tokens": 3, "discarded_tokens": 0},  # empty candidate: no call
             {"score": 0.8, "model": "weak", "tokens": 6, "discarded_tokens": 0}]
    # question 10 + 5, + 4, then the rewrites 7 and 3 read as the prefix of the last call, + 6
    assert prm_tokens({"steps": steps}, 10) == 10 + 5 + 4 + 7 + 3 + 6
    assert prm_tokens({"steps": [{"score": None, "model": "strong", "tokens": 9, "discarded_tokens": 0}]}, 10) == 0
    record = {"problem_id": "p", "steps": steps, "correct": True, "strong_tokens": 10, "weak_tokens": 15,
              "discarded_tokens": 4, "num_steps": 4, "regenerated_steps": 2}
    assert summarize([record], {"p": 10})["prm_tokens"] == 35
    assert summarize([record], {"p": 10}, reads_prm=False)["prm_tokens"] == 0
    assert "prm_tokens" not in summarize([record])


def _points(**families):
    """A curves table (as `trim.comparison` writes) with both endpoints and the given families."""
    import pandas as pd

    rows = [{"family": "weak-only", "strong_tokens": 0.0, "accuracy": 0.4, "prm_tokens": 0.0},
            {"family": "strong-only", "strong_tokens": 100.0, "accuracy": 0.8, "prm_tokens": 0.0}]
    for name, points in families.items():
        rows += [{"family": name, "strong_tokens": c, "accuracy": a, "prm_tokens": p} for c, a, p in points]
    return pd.DataFrame(rows)


def test_a_prm_priced_in_strong_tokens_moves_a_frontier_and_a_break_even_price_is_where_the_rival_catches_up():
    from trim import comparison

    # "stepwise" reaches 95% of the gap (0.78) at 20 strong tokens and reads 100 PRM tokens there; "query" at 60.
    points = _points(stepwise=[(10, 0.7, 50), (20, 0.78, 100)], query=[(30, 0.6, 0), (60, 0.78, 0)])
    cpt = comparison.price_sweep(points, [0.0, 0.2, 1.0], ["stepwise", "query"])
    assert cpt.loc["stepwise", 0.0] == pytest.approx(20) and cpt.loc["query", 0.0] == pytest.approx(60)
    assert cpt.loc["stepwise", 0.2] == pytest.approx(40) and cpt.loc["query", 1.0] == pytest.approx(60)
    # 20 + 100 rho = 60 at rho = 0.4
    assert comparison.break_even_price(points, "stepwise", "query") == pytest.approx(0.4, abs=1e-6)
    assert comparison.break_even_price(points, "query", "stepwise") == 0.0
    # At a budget of 15: between stepwise's two points, and on query's chord from weak-only to its first point.
    assert comparison.accuracy_at(points, 15).to_dict() == pytest.approx({"stepwise": 0.74, "query": 0.5})


def test_the_budget_explorer_redraws_for_a_chosen_budget_and_split():
    import matplotlib

    matplotlib.use("Agg")
    from trim import plots

    points = _points(stepwise=[(10, 0.7, 50), (20, 0.78, 100)])
    explorer = plots.budget_explorer({"a": points, "b": points})
    explorer.children[1].value = 35.0   # the budget slider: the figure is drawn again, without error
    assert [c.description for c in explorer.children[:2]] == ["split", "budget %"]


def test_prm_tokens_at_a_cost_follow_the_frontier_and_its_endpoints():
    from trim import comparison
    from trim.metrics import Endpoints

    ends = Endpoints(0.4, 0.8, 100.0)
    points = _points(stepwise=[(0, 0.4, 60), (10, 0.7, 50), (20, 0.78, 100), (30, 0.7, 500)])
    family = points[points["family"] == "stepwise"]
    # On a frontier point, its own count; between two, the mix; beyond the last, towards strong-only's 0.
    assert comparison.prm_tokens_at_cost(family, ends, 10) == pytest.approx(50)
    assert comparison.prm_tokens_at_cost(family, ends, 15) == pytest.approx(75)
    assert comparison.prm_tokens_at_cost(family, ends, 60) == pytest.approx(50)
    # At zero cost weak-only is on the frontier and reads nothing, however much the k = 0 point reads.
    assert comparison.prm_tokens_at_cost(family, ends, 0) == 0
