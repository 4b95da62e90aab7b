"""Measure the testbed models: next-step accuracy, whole solutions, errors by step type, PRM quality."""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np
import pandas as pd

from trim.engine import RunSettings, run_policy
from trim.policies import WeakOnly
from trim.protocols import StepRequest
from trim.testbed import task

MAX_STEPS = 30


@dataclasses.dataclass
class Sample:
    """One model-written solution with exact step labels."""

    problem: task.ChainProblem
    steps: list[str]
    tokens: list[int]
    step_correct: list[bool]   # each step correct given its own prefix
    answer_correct: bool

    @property
    def on_track(self) -> list[bool]:
        """Step t is on track iff steps 1..t are all correct (the PRM's label, see prm_training)."""
        return list(np.cumprod(self.step_correct).astype(bool))


def next_step_samples(generator, problems: Sequence[task.ChainProblem], seed: int = 0) -> pd.DataFrame:
    """One sampled step after every gold prefix of every problem, checked exactly."""
    requests, meta = [], []
    for p in problems:
        gold = p.gold_steps()
        for i in range(len(gold)):
            requests.append(StepRequest(p.id, p.question, tuple(gold[:i]), seed))
            meta.append((p, i))
    proposals = generator.propose(requests)
    rows = []
    for (p, i), proposal in zip(meta, proposals):
        rows.append({"problem_id": p.id, "step": i + 1, "step_type": p.step_types[i], "tokens": proposal.tokens,
                     "correct": task.check_step(p, p.gold_steps()[:i], proposal.text)})
    return pd.DataFrame(rows)


def sample_solutions(generator, problems: Sequence[task.ChainProblem], seed: int = 0) -> list[Sample]:
    """Whole solutions written by one model alone: the engine's loop with the weak-only policy and no PRM,
    so a sample is exactly what the weak-only endpoint of a routing run writes."""
    records = run_policy(problems, WeakOnly(), generator, generator, None, RunSettings(seed=seed, max_steps=MAX_STEPS),
                         progress=False)
    samples = []
    for p, record in zip(problems, records):
        steps = [s["text"] for s in record["steps"]]
        labels = task.step_labels(p, steps)
        final = task.step_result(steps[-1]) if steps else None
        boxed = "\\boxed" in steps[-1] if steps else False
        samples.append(Sample(p, steps, [s["tokens"] for s in record["steps"]], labels,
                              boxed and final == int(p.answer)))
    return samples


def solution_table(samples: Sequence[Sample]) -> dict[str, float]:
    has_error = [s for s in samples if not all(s.step_correct)]
    return {
        "solution_accuracy": float(np.mean([s.answer_correct for s in samples])),
        "cascade_recovery": float(np.mean([s.answer_correct for s in has_error])) if has_error else 0.0,
        "solutions_with_error": len(has_error),
        "tokens_per_solution": float(np.mean([sum(s.tokens) for s in samples])),
        "tokens_per_step": float(np.mean([t for s in samples for t in s.tokens])),
    }


def prm_step_table(prm, samples: Sequence[Sample]) -> pd.DataFrame:
    """PRM score of every step of every sample, beside its exact labels."""
    scores = prm.score([s.problem.question for s in samples], [s.steps for s in samples])
    rows = []
    for s, sc in zip(samples, scores):
        first_error = next((i for i, ok in enumerate(s.step_correct) if not ok), -1)
        for i, (r, ok, track) in enumerate(zip(sc, s.step_correct, s.on_track)):
            rows.append({"problem_id": s.problem.id, "step": i + 1, "step_type": s.problem.step_type(i),
                         "score": r, "correct": ok, "on_track": track, "first_error": first_error})
    return pd.DataFrame(rows)


def solutions_frame(samples: Sequence[Sample]) -> pd.DataFrame:
    """One row per solution: its length, where it first goes wrong (1-based, NaN if never), the type
    of that step, how many steps are wrong, and whether the final answer is right."""
    rows = []
    for s in samples:
        wrong = [i for i, ok in enumerate(s.step_correct) if not ok]
        rows.append({"problem_id": s.problem.id, "operations": len(s.problem.operations), "steps": len(s.steps),
                     "first_error": wrong[0] + 1 if wrong else np.nan,
                     "first_error_type": s.problem.step_type(wrong[0]) if wrong else None,
                     "wrong_steps": len(wrong), "answer_correct": s.answer_correct, "tokens": sum(s.tokens)})
    return pd.DataFrame(rows)


def label_steps(records: Sequence[dict], problems: Sequence[task.ChainProblem]) -> pd.DataFrame:
    """Engine traces (`trim.engine.run_policy`) with exact labels: one row per accepted step.

    `weak_correct` judges the weak model's candidate for that position (the step kept, or the one the
    policy threw away), `correct` the step that was kept; both given the accepted prefix."""
    by_id = {p.id: p for p in problems}
    rows = []
    for r in records:
        problem, accepted = by_id[r["problem_id"]], []
        for i, step in enumerate(r["steps"]):
            correct = task.check_step(problem, accepted, step["text"])
            weak_correct = None  # strong-only runs have no weak candidate
            if step["score"] is not None:
                weak_correct = (task.check_step(problem, accepted, step["weak_candidate"])
                                if step["decision"] == "regenerate" else correct)
            rows.append({"problem_id": r["problem_id"], "policy": r["policy"], "step": i + 1,
                         "step_type": problem.step_type(i),
                         "score": step["score"], "model": step["model"], "regenerated": step["model"] == "strong",
                         "weak_correct": weak_correct, "correct": correct,
                         "strong_tokens": step["tokens"] if step["model"] == "strong" else 0,
                         "answer_correct": r["correct"]})
            accepted.append(step["text"])
    return pd.DataFrame(rows)
