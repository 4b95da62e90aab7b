"""A two-step routing problem small enough to solve exactly: the check that PPO (`trim.ppo`) works.

A weak model writes two steps; step t is wrong with probability `weak_error[t]`. A noisy PRM scores each
step `low` or `high` (a wrong step scores low with probability `p_low_if_wrong`, a right one with
`p_low_if_right`). The policy sees the observation a TRIM policy sees (the candidate's score and tokens,
the accepted step's score at step 2) and may regenerate: the strong model then writes the step, right with
probability `strong_accuracy`, for `tokens[t]` strong tokens at `lam` each. The answer is right, reward +1,
iff both accepted steps are right. With the defaults the best rule needs the earlier score: regenerate a
doubtful first step, and a doubtful second step only if the kept first step looks right (a strong rewrite
costs 0.24 or 0.48 of a right answer and is itself wrong 15% of the time, so it is wasted on a solution
already lost).

A policy that reads these features faces 6 situations (step 1: two scores; step 2: two earlier scores x
two scores), each met at most once per episode, so the expected return is multilinear in the action
probabilities and some deterministic policy is optimal: `optimum` enumerates all 2^6 and returns the
best, with its exact value. `expected_return` scores any policy exactly, with no sampling noise."""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np

from trim.policies.base import Observation


@dataclasses.dataclass(frozen=True)
class TwoStepRouting:
    lam: float = 0.008
    weak_error: tuple[float, float] = (0.3, 0.3)
    strong_accuracy: float = 0.85
    p_low_if_wrong: float = 0.8
    p_low_if_right: float = 0.15
    tokens: tuple[int, int] = (30, 60)
    low: float = 0.2
    high: float = 0.8
    episodes_per_batch: int = 64
    seed: int = 0

    @property
    def description(self) -> str:
        return f"toy: {self!r}"

    # -- the situations a policy can tell apart, and what it sees in each
    def situations(self) -> list[tuple[int, float | None, float]]:
        """(step, accepted step 1's score or None, candidate's score)."""
        scores = (self.low, self.high)
        return [(1, None, s) for s in scores] + [(2, p, s) for p in scores for s in scores]

    def observation(self, step: int, previous: float | None, score: float) -> Observation:
        earlier = () if previous is None else (previous,)
        return Observation(problem_id="toy", step_index=step, score=score, previous_scores=earlier,
                           tokens=self.tokens[step - 1], strong_tokens=0, weak_tokens=0,
                           previous_tokens=tuple(self.tokens[: step - 1]), previous_models=("weak",) * (step - 1))

    def _p_score(self, score: float, right: bool) -> float:
        p_low = self.p_low_if_right if right else self.p_low_if_wrong
        return p_low if score == self.low else 1 - p_low

    # -- exact evaluation
    def expected_return(self, act: dict) -> float:
        """Exact expected return of a deterministic policy: `act` maps each situation to 0/1 (regenerate)."""
        total = 0.0
        for right1, score1 in itertools.product((True, False), (self.low, self.high)):
            p1 = (1 - self.weak_error[0] if right1 else self.weak_error[0]) * self._p_score(score1, right1)
            for ok1, kept1, q1, cost1 in self._accept(1, right1, score1, act[(1, None, score1)]):
                for right2, score2 in itertools.product((True, False), (self.low, self.high)):
                    p2 = (1 - self.weak_error[1] if right2 else self.weak_error[1]) * self._p_score(score2, right2)
                    for ok2, _, q2, cost2 in self._accept(2, right2, score2, act[(2, kept1, score2)]):
                        total += p1 * q1 * p2 * q2 * (float(ok1 and ok2) - cost1 - cost2)
        return total

    def _accept(self, step: int, right: bool, score: float, regenerate: int):
        """(accepted step right?, its score as the PRM reads it later, probability, cost) outcomes."""
        if not regenerate:
            return [(right, score, 1.0, 0.0)]
        cost = self.lam * self.tokens[step - 1]
        out = []
        for ok in (True, False):
            p_ok = self.strong_accuracy if ok else 1 - self.strong_accuracy
            out += [(ok, s, p_ok * self._p_score(s, ok), cost) for s in (self.low, self.high)]
        return out

    def optimum(self) -> tuple[float, dict]:
        """The best deterministic policy (hence the best policy on these features) and its value."""
        situations = self.situations()
        best = max((dict(zip(situations, actions)) for actions in itertools.product((0, 1), repeat=len(situations))),
                   key=self.expected_return)
        return self.expected_return(best), best

    def greedy_actions(self, policy) -> dict:
        situations = self.situations()
        decisions = policy.decide([self.observation(*s) for s in situations])
        return {s: int(d.regenerate) for s, d in zip(situations, decisions)}

    # -- the Environment protocol of trim.ppo
    def collect(self, policy, batch: int) -> list:
        from trim.ppo import Episode

        rng = np.random.default_rng([self.seed, batch, 3])
        n = self.episodes_per_batch
        episodes = [Episode([], [], [], [], []) for _ in range(n)]
        ok = np.ones(n, dtype=bool)
        kept: list[float | None] = [None] * n
        for step in (1, 2):
            right = rng.random(n) >= self.weak_error[step - 1]
            p_low = np.where(right, self.p_low_if_right, self.p_low_if_wrong)
            scores = np.where(rng.random(n) < p_low, self.low, self.high)
            observations = [self.observation(step, kept[i], float(scores[i])) for i in range(n)]
            decisions = policy.decide(observations)
            strong_right = rng.random(n) < self.strong_accuracy
            strong_low = rng.random(n) < np.where(strong_right, self.p_low_if_right, self.p_low_if_wrong)
            for i, (o, d) in enumerate(zip(observations, decisions)):
                e = episodes[i]
                e.inputs.append(policy.features(o))
                e.actions.append(int(d.regenerate))
                e.logprobs.append(d.info["logprob"])
                e.values.append(d.info["value"])
                if d.regenerate:
                    e.rewards.append(-self.lam * self.tokens[step - 1])
                    ok[i] &= strong_right[i]
                    kept[i] = self.low if strong_low[i] else self.high
                else:
                    e.rewards.append(0.0)
                    ok[i] &= right[i]
                    kept[i] = float(scores[i])
        for e, good in zip(episodes, ok):
            e.rewards[-1] += float(good)
        return episodes

    def validate(self, policy) -> dict:
        return {"objective": self.expected_return(self.greedy_actions(policy))}
