"""Measure the testbed models: next-step accuracy, whole solutions, errors by step type, step lengths,
PRM scores by hidden state, and how well the weak model's own likelihood judges its steps."""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np
import pandas as pd

from trim.engine import RunSettings, run_policy
from trim.policies import WeakOnly
from trim.protocols import StepRequest
from trim.testbed import task
from trim.testbed.task import step_states  # noqa: F401  (the book reads it here)

MAX_STEPS = 30


def torch_no_grad_lazy(fn):
    """`torch.no_grad` without importing torch when this module is imported."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        import torch

        with torch.no_grad():
            return fn(*args, **kwargs)

    return wrapper


@dataclasses.dataclass
class Sample:
    """One model-written solution with exact step labels."""

    problem: task.ChainProblem
    steps: list[str]
    tokens: list[int]
    step_correct: list[bool]   # each step correct given its own prefix
    answer_correct: bool
    # The generator's confidence in each step as it wrote it (exp of the mean token log-probability, what
    # `Observation.confidence` carries); empty when the generator reports none.
    confidence: list[float] = dataclasses.field(default_factory=list)

    @property
    def on_track(self) -> list[bool]:
        """Step t is on track iff steps 1..t are all correct."""
        return list(np.cumprod(self.step_correct).astype(bool))

    @property
    def states(self) -> list[str]:
        """The hidden state of every step (`task.step_states`)."""
        return task.step_states(self.step_correct)


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
        confidence = [s["observation"]["confidence"] for s in record["steps"]]
        samples.append(Sample(p, steps, [s["tokens"] for s in record["steps"]], labels,
                              boxed and final == int(p.answer), [] if None in confidence else confidence))
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
    """PRM score of every step of every sample, beside its exact labels, hidden state and length."""
    scores = prm.score([s.problem.question for s in samples], [s.steps for s in samples])
    rows = []
    for s, sc in zip(samples, scores):
        first_error = next((i for i, ok in enumerate(s.step_correct) if not ok), -1)
        for i, (r, ok, track, state) in enumerate(zip(sc, s.step_correct, s.on_track, s.states)):
            rows.append({"problem_id": s.problem.id, "step": i + 1, "step_type": s.problem.step_type(i),
                         "score": r, "correct": ok, "on_track": track, "first_error": first_error,
                         "state": state, "tokens": s.tokens[i]})
    return pd.DataFrame(rows)


def step_length_stats(samples: Sequence[Sample]) -> dict[str, float]:
    """Tokens per step: mean, coefficient of variation, and the first wrong step's length against the mean
    (real chain-of-thought: CV 0.70, first error 1.44x the mean step)."""
    lengths = np.array([t for s in samples for t in s.tokens], dtype=float)
    first = [s.tokens[s.step_correct.index(False)] for s in samples if not all(s.step_correct)]
    return {"steps_per_solution": float(np.mean([len(s.steps) for s in samples])),
            "tokens_per_step": float(lengths.mean()),
            "tokens_per_step_cv": float(lengths.std() / lengths.mean()),
            "first_error_length_ratio": float(np.mean(first) / lengths.mean()) if first else float("nan")}


def state_stats(scores: np.ndarray, states: np.ndarray) -> dict[str, dict[str, float]]:
    """Marginals of a score per hidden state, as DESIGN 3.1 tabulates the real PRM's."""
    out = {}
    for state in ("S0", "S1", "S2"):
        r = scores[states == state]
        out[state] = {"steps": int(len(r)),
                      "P(r<0.1)": float(np.mean(r < 0.1)) if len(r) else float("nan"),
                      "P(r<0.5)": float(np.mean(r < 0.5)) if len(r) else float("nan"),
                      "P(r>=0.9)": float(np.mean(r >= 0.9)) if len(r) else float("nan"),
                      "P(r>=0.95)": float(np.mean(r >= 0.95)) if len(r) else float("nan")}
    return out


def state_auroc(scores: np.ndarray, states: np.ndarray, positive: str = "S0", negative: str = "S2") -> float:
    """AUROC of a score separating steps in state `positive` from steps in state `negative`."""
    from trim.prm_quality import auroc

    keep = (states == positive) | (states == negative)
    return auroc(scores[keep], (states[keep] == positive).astype(int))


@torch_no_grad_lazy
def self_confidence(generator, samples: Sequence[Sample], batch_size: int = 64) -> list[list[float]]:
    """The weak model's own judgement of each step it wrote: the mean log-probability per token of the
    step given its prefix, at temperature 1 (what AutoMix's self-verification reads, per step; see
    `trim.baselines.weak_confidence` for whole solutions)."""
    import torch

    from trim.protocols import STEP_DELIMITER, StepRequest

    tok, model = generator.tokenizer, generator.model
    delimiter = tok(STEP_DELIMITER, add_special_tokens=False).input_ids
    out: list[list[float]] = []
    for start in range(0, len(samples), batch_size):
        chunk = samples[start: start + batch_size]
        rows, spans = [], []
        for s in chunk:
            ids = tok(generator.prompt(StepRequest("", s.problem.question)), add_special_tokens=False).input_ids
            bounds = []
            for i, step in enumerate(s.steps):
                if i:
                    ids = ids + delimiter
                piece = tok(step, add_special_tokens=False).input_ids
                bounds.append((len(ids), len(ids) + len(piece)))
                ids = ids + piece
            rows.append(ids)
            spans.append(bounds)
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), tok.pad_token_id)
        mask = torch.zeros_like(ids)
        for row, r in enumerate(rows):
            ids[row, : len(r)], mask[row, : len(r)] = torch.tensor(r), 1
        logp = torch.log_softmax(model(input_ids=ids, attention_mask=mask).logits[:, :-1].float(), -1)
        token_logp = logp.gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
        for row, bounds in enumerate(spans):
            out.append([float(token_logp[row, a - 1: b - 1].mean()) if b > a else 0.0 for a, b in bounds])
    return out


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
