"""TRIM-POMDP: the grid solver against exact answers, the routing model, and the policy."""

import itertools
import math

import numpy as np
import pytest

from trim.policies import Observation, make_policy
from trim.policies.pomdp import TrimPOMDP, solve
from trim.pomdp.model import (
    BINS,
    RoutingModel,
    from_release,
    hazard_from_lengths,
    load_model,
    reflected_kde_table,
    shipped,
)
from trim.pomdp.solver import SimplexGrid, Stage, solve_discounted, solve_finite
from trim.testbed.reference import REAL_PRM_STATES


@pytest.mark.parametrize("states, resolution", [(2, 7), (3, 10), (4, 6)])
def test_the_grid_interpolates_linear_functions_exactly_and_returns_its_own_values(states, resolution):
    grid = SimplexGrid(states, resolution)
    assert np.allclose(grid.points.sum(1), 1) and np.all(grid.points >= 0)
    assert len({tuple(p) for p in np.round(grid.points * resolution).astype(int)}) == len(grid)
    beliefs = np.random.default_rng(0).dirichlet(np.ones(states), size=500)
    linear = np.arange(1, states + 1, dtype=float) ** 2
    assert np.allclose(grid.interpolate(grid.points @ linear, beliefs), beliefs @ linear)
    values = np.random.default_rng(1).normal(size=len(grid))
    assert np.allclose(grid.interpolate(values, grid.points), values)
    index, weights = grid.weights(beliefs)
    assert np.allclose((grid.points[index] * weights[..., None]).sum(-2), beliefs)   # the vertices hold the belief
    assert np.all(weights >= -1e-12)


def tiger() -> Stage:
    """Kaelbling, Littman & Cassandra's Tiger: listen (-1, hears the tiger's side right 85% of the time) or
    open a door (+10 without the tiger, -100 with it), after which the problem resets."""
    transitions = np.stack([np.eye(2), np.full((2, 2), 0.5), np.full((2, 2), 0.5)])
    observations = np.stack([[[0.85, 0.15], [0.15, 0.85]], np.full((2, 2), 0.5), np.full((2, 2), 0.5)])
    rewards = np.array([[-1.0, -1.0], [-100.0, 10.0], [10.0, -100.0]])   # states: tiger left, tiger right
    return Stage(transitions, observations, rewards)


def exact_values(stage: Stage, discount: float, horizon: int, beliefs: np.ndarray) -> np.ndarray:
    """Exact value iteration with alpha vectors (Monahan's enumeration, pruned to the vectors that are best
    somewhere on a fine sample of beliefs): an independent reference for the grid solver."""
    sample = np.linspace(0, 1, 2001)[:, None] * [1, -1] + [0, 1]
    alphas = np.zeros((1, stage.rewards.shape[1]))
    for _ in range(horizon):
        candidates = []
        for a in range(len(stage.rewards)):
            # g[o, k, s] = discount * sum_s' T(s, a, s') O(o | s', a) alpha_k(s')
            g = discount * np.einsum("st,to,kt->oks", stage.transitions[a], stage.observations[a], alphas)
            for choice in itertools.product(range(len(alphas)), repeat=g.shape[0]):
                candidates.append(stage.rewards[a] + sum(g[o, k] for o, k in enumerate(choice)))
        candidates = np.array(candidates)
        alphas = candidates[np.unique((sample @ candidates.T).argmax(1))]
    return (beliefs @ alphas.T).max(1)


def test_the_grid_solver_finds_the_tiger_problems_known_value_and_policy():
    grid, stage = SimplexGrid(2, 200), tiger()
    q = solve_discounted(grid, stage, discount=0.95)
    beliefs = np.array([[0.5, 0.5], [0.85, 0.15], [0.97, 0.03], [0.3, 0.7]])
    values = grid.interpolate(q.max(1), beliefs)
    assert values[0] == pytest.approx(19.37, abs=0.01)          # the published optimum of tiger.95
    assert np.allclose(values, exact_values(stage, 0.95, 400, beliefs), atol=0.02)
    actions = grid.interpolate(q, beliefs).argmax(1)
    # Optimal: listen until two net growls on one side (belief 0.97), then open the other door.
    assert list(actions[:3]) == [0, 0, 2]


def test_finite_horizon_values_match_exact_enumeration():
    grid, stage = SimplexGrid(2, 400), tiger()
    beliefs = np.linspace(0, 1, 41)[:, None] * [1, -1] + [0, 1]
    for horizon in (1, 2, 4):
        q = solve_finite(grid, [stage] * horizon)
        assert np.allclose(grid.interpolate(q[0].max(1), beliefs), exact_values(stage, 1.0, horizon, beliefs),
                           atol=0.05)
    assert grid.interpolate(solve_finite(grid, [stage])[0], np.array([0.5, 0.5])).tolist() == \
        pytest.approx([-1.0, -45.0, -45.0])                      # one step: listening beats guessing


def test_bad_stages_are_refused_with_what_is_wrong():
    stage = tiger()
    with pytest.raises(ValueError, match="summing to at most 1"):
        Stage(stage.transitions * 2, stage.observations, stage.rewards)
    with pytest.raises(ValueError, match="must sum to 1"):
        Stage(stage.transitions, stage.observations * 0.5, stage.rewards)
    with pytest.raises(ValueError, match="shapes disagree"):
        Stage(stage.transitions, stage.observations, stage.rewards[:2])
    with pytest.raises(ValueError, match="discount"):
        solve_discounted(SimplexGrid(2, 4), stage, discount=1.0)


# --- the routing model --------------------------------------------------------------------------------


def toy_model(hazard=(1.0,), p_weak=0.8, p_strong=0.95, tokens=(20.0,)) -> RoutingModel:
    """Scores that tell S0 (high), S1 (middle) and S2 (low) apart with some noise."""
    obs = np.full((3, BINS, BINS), 0.1 / (BINS * BINS - 1))
    for state, cell in enumerate((BINS - 1, BINS // 2, 0)):
        obs[state, BINS - 1, cell] = 0
        obs[state] *= 0.1 / obs[state].sum()
        obs[state, BINS - 1, cell] = 0.9
    return RoutingModel("toy", p_weak, p_strong, hazard, obs, tokens, (1.0,) * len(tokens))


def test_one_step_routing_values_are_the_hand_computed_ones(tmp_path):
    # The last step: keeping is right iff the solution is in S0; rewriting is right iff the strong step is
    # right (p_s) and the earlier steps were (S0 or S2), at lambda x 20 tokens.
    model, lam = toy_model(), 0.01
    q = solve(model, lam, "score", resolution=10, cache_dir=tmp_path)
    points = SimplexGrid(3, 10).points
    assert np.allclose(q[0, :, 0], points[:, 0])
    assert np.allclose(q[0, :, 1], 0.95 * (points[:, 0] + points[:, 2]))       # the cost is added at decision time
    policy = TrimPOMDP(model, lam, "filter", resolution=10, cache_dir=tmp_path)
    # b = (0.5, 0.1, 0.4): keep 0.5, rewrite 0.95 x 0.9 - 0.2 = 0.655 -> rewrite; for a 40-token step
    # 0.855 - 0.4 = 0.455 -> keep.
    assert np.allclose(policy.action_values([0.5, 0.1, 0.4], 1), [0.5, 0.855])
    step = Observation("p", 1, 0.01, (), 20, 0, 0)
    belief = policy.belief_after(step)
    expected = np.array([0.8, 0.0, 0.2]) * model.observation_table("score")[:, 0]
    assert np.allclose(belief, expected / expected.sum())
    assert policy.regenerate(step) == bool(0.95 * (belief[0] + belief[2]) - 0.2 > belief[0])


def test_the_filter_remembers_earlier_doubt_and_follows_the_actions_taken(tmp_path):
    model = toy_model(hazard=(0.0, 0.0, 1.0))
    policy = TrimPOMDP(model, 0.001, "filter", resolution=10, cache_dir=tmp_path)
    high = 0.99
    clean = policy.filter(Observation("p", 2, high, (high,), 20, 0, 0, (20,), ("weak",)))
    doubted = policy.filter(Observation("p", 2, high, (0.01,), 20, 0, 0, (20,), ("weak",)))
    rewritten = policy.filter(Observation("p", 2, high, (0.01,), 20, 20, 0, (20,), ("strong",)))
    # A kept low score leaves mass on S1 (unrecoverable) even after a high one; a rewrite removed it.
    assert doubted[-1][1] > 0.1 > 1e-3 > clean[-1][1]
    assert rewritten[-1][1] < 1e-3
    # One filter step by hand: keep from the belief after step 1, then read step 2's score.
    move, like = model.transitions(), model.observation_table("score")
    after_two = (doubted[0] @ move[0]) * like[:, BINS - 1]
    assert np.allclose(doubted[1], after_two / after_two.sum())


def test_the_release_belief_is_the_one_shot_likelihood_and_its_gate_keeps_clear_steps(tmp_path):
    model = toy_model()
    policy = TrimPOMDP(model, 0.0, "release", resolution=10, cache_dir=tmp_path)
    low = Observation("p", 1, 0.01, (), 20, 0, 0)
    like = model.observations[:, BINS - 1, 0]
    assert np.allclose(policy.belief_after(low), like / like.sum())
    assert policy.regenerate(low)                            # S2 is likeliest: consult the table; free to rewrite
    clear = Observation("p", 1, 0.99, (), 20, 0, 0)
    assert policy.belief_after(clear)[0] - policy.belief_after(clear)[2] >= 0.4 and not policy.regenerate(clear)


def test_a_solved_policy_is_cached_by_model_and_lambda_and_a_torn_cache_is_solved_again(tmp_path):
    model = toy_model(hazard=(0.2, 1.0))
    q = solve(model, 0.002, "joint", resolution=8, cache_dir=tmp_path)
    files = list(tmp_path.glob("*.npy"))
    assert len(files) == 1 and model.digest()[:16] in files[0].name and "lambda-0.002" in files[0].name
    files[0].write_bytes(b"torn")
    assert np.array_equal(solve(model, 0.002, "joint", resolution=8, cache_dir=tmp_path), q)
    np.save(files[0], np.zeros((1, 2, 3)))                   # a table of another shape is not trusted either
    assert np.array_equal(solve(model, 0.002, "joint", resolution=8, cache_dir=tmp_path), q)
    solve(model, 0.004, "joint", resolution=8, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("*.npy"))) == 2


def test_hazard_and_kde_fit_what_they_are_given():
    assert hazard_from_lengths([2, 2, 3, 4], 5) == (0.0, 0.5, 0.5, 1.0, 1.0)
    rng = np.random.default_rng(0)
    points = np.column_stack([rng.uniform(0.8, 1, 500), rng.uniform(0, 0.1, 500)])
    table = reflected_kde_table(points)
    assert table.shape == (BINS, BINS) and np.isclose(table.sum(), 1)
    assert table[BINS // 2:, :4].sum() > 0.9                 # the mass stays where the points are, inside the square


def test_the_shipped_models_hold_what_they_say():
    real = shipped("real")
    marginal = real.observation_table("score")              # r_t's distribution per state
    for state, row in zip(("S0", "S1", "S2"), marginal):
        assert row[:2].sum() == pytest.approx(REAL_PRM_STATES[state]["P(r<0.1)"], abs=1e-3)
        assert row[:10].sum() == pytest.approx(REAL_PRM_STATES[state]["P(r<0.5)"], abs=1e-3)
    assert (real.p_weak, real.p_strong) == (0.866, 0.9704)
    testbed = shipped("testbed")
    assert 0.82 <= testbed.p_weak <= 0.9 and testbed.p_strong >= 0.96
    composed = testbed.with_observations(real)
    assert np.array_equal(composed.observations, real.observations) and composed.hazard == testbed.hazard
    assert composed.digest() != testbed.digest()


def test_missing_or_malformed_model_files_are_one_clear_error(tmp_path, capsys):
    from trim.cli import main

    with pytest.raises(FileNotFoundError, match="no routing POMDP model"):
        load_model(tmp_path / "none.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"name": "x", "p_weak": 0.8}')
    with pytest.raises(ValueError, match="bad.json is not a routing POMDP model .*missing fields"):
        load_model(bad)
    bad.write_text("[1, 2]")
    with pytest.raises(ValueError, match="holds a JSON list, not an object"):
        load_model(bad)
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="is not a routing POMDP model"):
        make_policy("pomdp", 0.004, obs_model=str(bad))
    assert main(["run", "--policy", "pomdp", "--lam", "0.004", "--obs-model", str(bad), "--problems", "1",
                 "--out", str(tmp_path / "runs"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "bad.json is not a routing POMDP model" in err


def test_blended_noise_keeps_a_steps_score_fixed_and_scales_from_the_prm_to_pure_noise():
    from trim.prm_quality import BlendedNoisePRM

    class Constant:
        name = "constant"

        def score(self, questions, steps):
            return [[0.9] * len(s) for s in steps]

    class Unscored(Constant):
        def score(self, questions, steps):
            return [[None, float("nan")] for _ in steps]

    questions, steps = ["q1", "q2"], [["a", "b", "c"], ["a", "b"]]
    kept = BlendedNoisePRM(Unscored(), 0.5).score(["q"], [["a", "b"]])[0]
    assert kept[0] is None and math.isnan(kept[1])          # an unscored step stays unscored
    assert BlendedNoisePRM(Constant(), 0.0).score(questions, steps) == Constant().score(questions, steps)
    half = BlendedNoisePRM(Constant(), 0.5, seed=3)
    rows = half.score(questions, steps)
    assert rows == half.score(questions, steps) and rows[0][:2] == half.score(["q1"], [["a", "b"]])[0]
    assert all(0.45 <= r <= 0.95 for row in rows for r in row) and len({r for row in rows for r in row}) == 5
    pure = BlendedNoisePRM(Constant(), 1.0).score(questions, steps)
    assert pure[0][0] != pure[1][0]                         # the same step text under another question differs
    with pytest.raises(ValueError, match="noise strength"):
        BlendedNoisePRM(Constant(), 1.5)


def test_prm_noise_command_writes_one_row_per_strength_and_family(tmp_path, capsys):
    from trim.cli import main

    assert main(["prm-noise", "--problems", "6", "--strengths", "0", "0.5", "--sample-problems", "20", "--quiet",
                 "--out", str(tmp_path)]) == 0
    import pandas as pd

    table = pd.read_csv(tmp_path / "prm_noise.csv")
    assert len(table) == 6 and set(table["policy"]) == {"TRIM-Thr", "TRIM-Agg", "TRIM-POMDP"}
    assert set(table["strength"]) == {0.0, 0.5}


def test_a_release_table_that_asks_to_run_code_is_refused(tmp_path):
    import os
    import pickle

    class Payload:
        def __reduce__(self):
            return os.system, ("echo this must not run",)

    (tmp_path / "pomdp_data").mkdir()
    (tmp_path / "pomdp_data" / "math-train_obs_distributions_bin_size_0.05.pkl").write_bytes(pickle.dumps(Payload()))
    with pytest.raises(ValueError, match="asks for posix.system"):
        from_release(tmp_path)
