"""PPO and the learned policies: the known optimum of a toy routing problem, determinism, resume, episodes
rebuilt from engine traces, save and load."""

import json

import numpy as np
import pytest
import torch

from trim import testbed
from trim.experiment import Harness
from trim.policies import Observation
from trim.policies.learned import TrimAgg, TrimSeq, agg_features, load_policy, seq_features
from trim.ppo import EngineEnvironment, Episode, PPOConfig, advantages, episodes_from_records, train
from trim.toy_routing import TwoStepRouting

TOY_BATCHES = 300


def _toy_config(**changes):
    return PPOConfig(lam=TwoStepRouting().lam, batches=TOY_BATCHES, validate_every=25, **changes)


def test_the_toy_optimum_is_the_rule_a_reader_would_derive():
    toy = TwoStepRouting()
    value, best = toy.optimum()
    low, high = toy.low, toy.high
    # Regenerate a doubtful first step; at step 2 only when the kept first step looks right.
    assert best == {(1, None, low): 1, (1, None, high): 0, (2, low, low): 0, (2, low, high): 0,
                    (2, high, low): 1, (2, high, high): 0}
    never = toy.expected_return({s: 0 for s in toy.situations()})
    always = toy.expected_return({s: 1 for s in toy.situations()})
    assert never == pytest.approx(0.7 * 0.7)
    assert always == pytest.approx(0.85 * 0.85 - toy.lam * sum(toy.tokens))
    assert value > max(never, always) + 0.05


def test_ppo_reaches_the_toy_optimum_within_2_percent():
    toy = TwoStepRouting()
    best, _ = toy.optimum()
    for kind in (TrimAgg, TrimSeq):
        policy = kind.new(toy.lam, seed=0)
        record = train(policy, toy, _toy_config(), progress=False)
        reached = toy.expected_return(toy.greedy_actions(policy))
        assert reached >= 0.98 * best, (kind.label, reached, best, toy.greedy_actions(policy))
        assert record["chosen"]["objective"] == pytest.approx(reached)


def test_the_same_seed_trains_the_same_weights_and_another_seed_does_not():
    toy = TwoStepRouting()
    config = _toy_config(seed=3)
    weights = []
    for seed in (3, 3, 4):
        policy = TrimAgg.new(toy.lam, seed=seed)
        train(policy, toy, PPOConfig(**{**config.__dict__, "seed": seed, "batches": 40}), progress=False)
        weights.append(policy.model.state_dict())
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert not all(torch.equal(weights[0][k], weights[2][k]) for k in weights[0])


def test_an_interrupted_training_resumes_to_the_same_weights(tmp_path, monkeypatch):
    toy = TwoStepRouting()
    config = PPOConfig(lam=toy.lam, batches=60, validate_every=20)
    straight = TrimAgg.new(toy.lam, seed=0)
    train(straight, toy, config, progress=False)

    collect = TwoStepRouting.collect

    def crash_at_batch_45(self, policy, batch):
        if batch == 45:
            raise KeyboardInterrupt
        return collect(self, policy, batch)

    monkeypatch.setattr(TwoStepRouting, "collect", crash_at_batch_45)
    with pytest.raises(KeyboardInterrupt):
        train(TrimAgg.new(toy.lam, seed=0), toy, config, out=tmp_path, progress=False)
    assert (tmp_path / "state.pt").exists()
    monkeypatch.setattr(TwoStepRouting, "collect", collect)
    resumed = TrimAgg.new(toy.lam, seed=0)
    record = train(resumed, toy, config, out=tmp_path, progress=False)
    assert record["training"][-1]["batch"] == 60 and len(record["validation"]) == 3
    assert all(torch.equal(straight.model.state_dict()[k], resumed.model.state_dict()[k])
               for k in straight.model.state_dict())
    assert not (tmp_path / "state.pt").exists()
    loaded = load_policy(tmp_path)
    assert loaded.params() == resumed.params()
    saved = json.loads((tmp_path / "training.json").read_text())
    assert saved["lambda"] == toy.lam and saved["chosen"]["batch"] in (20, 40, 60)

    # A state left by one run is not resumed by a run with other settings.
    monkeypatch.setattr(TwoStepRouting, "collect", crash_at_batch_45)
    with pytest.raises(KeyboardInterrupt):
        train(TrimAgg.new(toy.lam, seed=0), toy, config, out=tmp_path, progress=False)
    with pytest.raises(ValueError, match="another training run"):
        train(TrimAgg.new(toy.lam, seed=0), toy, PPOConfig(lam=toy.lam, batches=61, validate_every=20),
              out=tmp_path, progress=False)


def test_gae_with_gamma_1_and_lambda_1_is_the_return_to_go_minus_the_value():
    episode = Episode(inputs=[0, 0, 0], actions=[0, 1, 0], logprobs=[0, 0, 0], values=[0.5, 0.2, 0.1],
                      rewards=[0.0, -0.1, 1.0])
    adv, returns = advantages(episode, gamma=1.0, gae_lambda=1.0)
    assert np.allclose(returns, [0.9, 0.9, 1.0])
    assert np.allclose(adv, [0.4, 0.7, 0.9])


def test_features_follow_the_release():
    first = Observation("p", 1, 0.4, (), 30, 0, 0)
    assert agg_features(first) == pytest.approx([1.0, 1.0, 0.4, 0.1, 0.0])
    later = Observation("p", 3, 0.9, (0.5, 0.8), 60, 12, 40, previous_tokens=(20, 12),
                        previous_models=("weak", "strong"))
    assert agg_features(later) == pytest.approx([0.5, 0.4, 0.9, 0.2, 2 / 30])
    rows = seq_features(later)
    assert TrimSeq.new(0.01).features(later) == (rows, agg_features(later))
    assert np.allclose(rows, [[0.5, 20 / 300, 0.0, 0.0, 0.0], [0.8, 12 / 300, 1.0, 0.0, 1 / 30],
                              [0.9, 0.2, 0.0, 1.0, 2 / 30]])
    with pytest.raises(ValueError, match="reads PRM scores"):
        agg_features(Observation("p", 1, None, (), 30, 0, 0))


@pytest.fixture(scope="module")
def tb():
    return testbed.load(seed=0)


def test_engine_episodes_carry_the_rollout_decisions_and_rewards(tb):
    harness = Harness(tb.weak, tb.strong, tb.prm, progress=False)
    problems = tb.splits["train"][:200]
    config = PPOConfig(lam=0.01, batch_problems=16)
    environment = EngineEnvironment(harness, problems, tb.splits["validation"][:10], config)
    policy = TrimSeq.new(0.01, seed=1)
    sampler = policy.sampler(seed=5)
    episodes = environment.collect(sampler, batch=0)
    assert len(episodes) == 16
    again = environment.collect(policy.sampler(seed=5), batch=0)
    assert [e.actions for e in episodes] == [e.actions for e in again]
    regenerated = [a for e in episodes for a in e.actions]
    assert 0 < sum(regenerated) < len(regenerated)   # a near-uniform first policy does both
    for e in episodes:
        costs = [r for r, a in zip(e.rewards[:-1], e.actions[:-1]) if a]
        assert all(c < 0 for c in costs)
        assert all(r == 0 for r, a in zip(e.rewards[:-1], e.actions[:-1]) if not a)
        assert np.all(np.exp(e.logprobs) > 0.2)
    result = environment.validate(policy)
    assert result["objective"] == pytest.approx(result["accuracy"] - 0.01 * result["strong_tokens"])


def test_episodes_need_a_learned_policys_records(tb):
    from trim.engine import run_policy
    from trim.policies import Threshold

    records = run_policy(tb.splits["train"][:2], Threshold(0.5), tb.weak, tb.strong, tb.prm, progress=False)
    with pytest.raises(ValueError, match="no policy_info"):
        episodes_from_records(records, TrimAgg.new(0.01), 0.01)


def test_a_missing_policy_folder_names_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="python -m trim.ppo"):
        load_policy(tmp_path)


def test_a_decision_map_reads_the_actor_over_scores():
    from trim.policies.learned import decision_map

    toy = TwoStepRouting()
    policy = TrimAgg.new(toy.lam, seed=0)
    train(policy, toy, _toy_config(), progress=False)
    table = decision_map(policy, step_index=2, tokens=toy.tokens[1], grid=6, prefix_tokens=toy.tokens[0])
    assert table.shape == (6, 6) and ((table >= 0) & (table <= 1)).all().all()
    # The toy's optimal rule at step 2: regenerate a low r_t only when the kept first step looks right.
    assert table.loc[toy.low, toy.high] > 0.5 > table.loc[toy.low, toy.low]
    assert table.loc[toy.high, toy.high] < 0.5
    with pytest.raises(ValueError, match="step_index >= 2"):
        decision_map(policy, step_index=1, tokens=10)
