"""A perfect PRM for the testbed: it knows which steps are right, because the task can be checked.

Real PRMs are noisy; the oracle is the ceiling they aim at. Routing with it (TRIM-Thr at any k in
(0, 1)) regenerates exactly the first wrong step of every weak attempt, which tells how many strong
tokens targeted routing needs when the targeting itself is perfect."""

from __future__ import annotations

import itertools
import operator
from typing import Sequence

from trim.testbed import task


class OraclePRM:
    """Scores 1.0 while every step so far is correct and 0.0 from the first wrong step on."""

    def __init__(self, problems: Sequence[task.ChainProblem], name: str = "testbed-oracle-prm"):
        self.name = name
        self._by_question = {p.question: p for p in problems}

    def score(self, questions: Sequence[str], steps: Sequence[Sequence[str]]) -> list[list[float]]:
        out = []
        for question, prefix in zip(questions, steps):
            problem = self._by_question.get(question)
            if problem is None:
                raise KeyError(f"the oracle PRM was not given this problem: {question[:60]!r}; "
                               "pass every problem you route to OraclePRM(problems)")
            on_track = itertools.accumulate(task.step_labels(problem, prefix), operator.and_)
            out.append([1.0 if ok else 0.0 for ok in on_track])
        return out
