"""PRMs for the testbed that know which steps are right, because the task can be checked.

`OraclePRM` is perfect. Real PRMs are noisy; the oracle is the ceiling they aim at. Routing with it (TRIM-Thr
at any k in (0, 1)) regenerates exactly the first wrong step of every weak attempt, which tells how many
strong tokens targeted routing needs when the targeting itself is perfect.

`RealNoisePRM` knows the hidden state of every step (S0, S1, S2) and reports it with the real PRM's noise:
its score is drawn from Qwen2.5-Math-PRM-7B's measured per-state score distribution (DESIGN 3.1). It is
the counterfactual for the testbed's own PRM: what routing on the testbed would look like with a PRM as
noisy as the real one, but no noisier, and noisy at random rather than on particular kinds of step."""

from __future__ import annotations

import itertools
import operator
from typing import Sequence

import numpy as np

from trim.hashing import join_key, stable_int
from trim.testbed import task
from trim.testbed.reference import REAL_PRM_BINS, REAL_PRM_STATES, real_prm_bin_masses


class OraclePRM:
    """Scores 1.0 while every step so far is correct and 0.0 from the first wrong step on."""

    def __init__(self, problems: Sequence[task.ChainProblem], name: str = "testbed-oracle-prm"):
        self.name = name
        self._by_question = {p.question: p for p in problems}

    def _problem(self, question: str) -> task.ChainProblem:
        problem = self._by_question.get(question)
        if problem is None:
            raise KeyError(f"{type(self).__name__} was not given this problem: {question[:60]!r}; "
                           f"pass every problem you route to {type(self).__name__}(problems)")
        return problem

    def score(self, questions: Sequence[str], steps: Sequence[Sequence[str]]) -> list[list[float]]:
        out = []
        for question, prefix in zip(questions, steps):
            on_track = itertools.accumulate(task.step_labels(self._problem(question), prefix), operator.and_)
            out.append([1.0 if ok else 0.0 for ok in on_track])
        return out


# The real PRM's score distribution per hidden state: the four bins of REAL_PRM_BINS with the top one cut
# at 0.95 (the marginals give P(r>=0.95) too); a score is uniform within its interval.
REAL_NOISE_EDGES = (*REAL_PRM_BINS[:-1], 0.95, 1.0)
REAL_NOISE_MASSES = {state: [*real_prm_bin_masses(state)[:-1], m["P(r>=0.9)"] - m["P(r>=0.95)"], m["P(r>=0.95)"]]
                     for state, m in REAL_PRM_STATES.items()}


class RealNoisePRM(OraclePRM):
    """Knows each step's hidden state and scores it with the real PRM's per-state distribution.

    A step's score is seeded by (seed, question, the steps up to it), so reading the same step again,
    in a longer prefix or another run, gives the same score, as a real PRM's would."""

    def __init__(self, problems: Sequence[task.ChainProblem], seed: int = 0, name: str | None = None):
        super().__init__(problems, name or f"testbed-real-noise-prm-{seed}")
        self.seed = seed

    def score(self, questions: Sequence[str], steps: Sequence[Sequence[str]]) -> list[list[float]]:
        out = []
        for question, prefix in zip(questions, steps):
            states = task.step_states(task.step_labels(self._problem(question), prefix))
            out.append([self._draw(state, join_key(self.seed, question, *prefix[: i + 1]))
                        for i, state in enumerate(states)])
        return out

    @staticmethod
    def _draw(state: str, key: str) -> float:
        rng = np.random.default_rng(stable_int(key))
        interval = rng.choice(len(REAL_NOISE_EDGES) - 1, p=REAL_NOISE_MASSES[state])
        return float(rng.uniform(REAL_NOISE_EDGES[interval], REAL_NOISE_EDGES[interval + 1]))


# PRMs that know the task, by the name the CLI's --testbed-prm takes ("model" is the trained PRM).
KNOWING_PRMS = {"oracle": OraclePRM, "real-noise": RealNoisePRM}
