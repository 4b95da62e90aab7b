"""The TRIM loop, run for every active problem in lockstep (the book's appendix draws it).

Each round: one weak batch proposes the next step of every active problem, one PRM batch scores
them, the policy decides, and one strong batch rewrites only the flagged steps. Regeneration replaces
the current step only; control then returns to the weak model. A solution stops at a step holding
``\\boxed{}``, at the model's end of text, at `max_steps`, or at `max_tokens` decoded tokens.

Every step record keeps what the policy saw (its `Observation`) and what it decided, with the
policy's per-decision extras, so learners build their rollouts from these traces."""

from __future__ import annotations

import collections
import dataclasses
import math
from typing import Sequence

from trim import grading
from trim.policies import Observation, Policy
from trim.progress import progress_bar
from trim.protocols import STEP_DELIMITER, StepRequest
from trim.traces import TraceWriter


@dataclasses.dataclass(frozen=True)
class RunSettings:
    seed: int = 0
    max_steps: int = 30
    max_tokens: int = 4096


@dataclasses.dataclass
class _State:
    problem: object
    steps: list = dataclasses.field(default_factory=list)     # accepted step texts
    records: list = dataclasses.field(default_factory=list)   # per-step trace records
    scores: list = dataclasses.field(default_factory=list)    # PRM scores of the accepted steps, as last read
    strong_tokens: int = 0
    weak_tokens: int = 0
    discarded_tokens: int = 0
    empty_steps: int = 0
    stop_reason: str | None = None


def settings_record(policy: Policy, weak, strong, prm, run: RunSettings) -> dict:
    """Everything that determines a trace; stored with every problem's record."""
    return {"policy": policy.name, "policy_class": type(policy).__name__, "policy_params": policy.params(),
            "weak": weak.name, "strong": strong.name, "prm": prm.name if prm is not None else None,
            "sampling_weak": dataclasses.asdict(weak.sampling),
            "sampling_strong": dataclasses.asdict(strong.sampling),
            **dataclasses.asdict(run)}


def run_policy(problems: Sequence, policy: Policy, weak, strong, prm, run: RunSettings = RunSettings(),
               trace_path=None, progress: bool | None = None) -> list[dict]:
    """Solve every problem with `policy`; return one trace record per problem (in input order).

    With `trace_path`, finished problems are appended as they finish and skipped on a rerun."""
    duplicates = [i for i, n in collections.Counter(p.id for p in problems).items() if n > 1]
    if duplicates:
        raise ValueError(f"problem ids must be unique; repeated: {', '.join(map(str, duplicates[:5]))}")
    if prm is None and policy.uses_weak and policy.uses_prm:
        raise ValueError(f"policy {policy.name} reads PRM scores, but no PRM was given")
    settings = settings_record(policy, weak, strong, prm, run)
    writer = TraceWriter(trace_path, settings) if trace_path else None
    done = dict(writer.done) if writer else {}
    active = [_State(p) for p in problems if p.id not in done]
    bar = progress_bar(progress=progress, total=len(problems), initial=len(problems) - len(active),
                       desc=policy.name)
    while active:
        _round(active, policy, weak, strong, prm, run)
        still = []
        for state in active:
            if state.stop_reason is None:
                still.append(state)
                continue
            record = _finish(state, policy)
            done[state.problem.id] = {**record, "settings": settings}
            if writer:
                writer.write(record)
            bar.update(1)
        active = still
    bar.close()
    return [done[p.id] for p in problems]


def _checked(rows: list, expected: int, backend, what: str) -> list:
    # A backend that drops or adds a row would silently shift every later row onto the wrong problem.
    if len(rows) != expected:
        raise RuntimeError(f"{getattr(backend, 'name', backend)!s} returned {len(rows)} {what} for "
                           f"{expected} inputs")
    return rows


def _round(active: list[_State], policy: Policy, weak, strong, prm, run: RunSettings) -> None:
    t_index = len(active[0].steps)  # lockstep: every active problem is at the same step index
    requests = [StepRequest(s.problem.id, s.problem.question, tuple(s.steps), run.seed) for s in active]
    decisions = None
    candidates: list = [None] * len(active)
    if policy.uses_weak:
        candidates = _checked(weak.propose(requests), len(requests), weak, "proposals")
        scored = _score(active, candidates, prm) if prm is not None else {}
        observations = []
        for i, (state, candidate) in enumerate(zip(active, candidates)):
            score = None
            if prm is not None:
                if i in scored:
                    state.scores = [_finite(x) for x in scored[i][:-1]]
                    score = _finite(scored[i][-1])
                else:
                    state.empty_steps += 1
                    score = 0.0  # an empty step has nothing to score: it gets the worst score, the policy decides
            observations.append(Observation(
                problem_id=state.problem.id, step_index=t_index + 1, score=score,
                previous_scores=tuple(state.scores), tokens=candidate.tokens,
                strong_tokens=state.strong_tokens, weak_tokens=state.weak_tokens))
            state.weak_tokens += candidate.tokens
            state.records.append({"score": score if i in scored else None})
        decisions = _checked(policy.decide(observations), len(observations), policy, "decisions")
        for state, observation, decision in zip(active, observations, decisions):
            state.records[-1]["observation"] = observation.record()
            if decision.info:
                state.records[-1]["policy_info"] = dict(decision.info)
        regenerate = [bool(d.regenerate) for d in decisions]
    else:
        regenerate = [True] * len(active)
        for state in active:
            state.records.append({"score": None})
    flagged = [i for i, r in enumerate(regenerate) if r]
    rewrites = {}
    if flagged:
        proposals = _checked(strong.propose([requests[i] for i in flagged]), len(flagged), strong, "proposals")
        rewrites = dict(zip(flagged, proposals))
    for i, state in enumerate(active):
        record = state.records[-1]
        if i in rewrites:
            chosen, model = rewrites[i], "strong"
            state.strong_tokens += chosen.tokens
            state.empty_steps += not chosen.text.strip()
            discarded = candidates[i].tokens if candidates[i] is not None else 0
            state.discarded_tokens += discarded
            record.update(decision="regenerate" if candidates[i] is not None else "strong-only",
                          discarded_tokens=discarded,
                          weak_candidate=candidates[i].text if candidates[i] is not None else None)
        else:
            chosen, model = candidates[i], "weak"
            record.update(decision="continue", discarded_tokens=0, weak_candidate=None)
        record.update(text=chosen.text, model=model, tokens=chosen.tokens, truncated=chosen.truncated)
        state.steps.append(chosen.text)
        state.stop_reason = _stop_reason(state, chosen, run)


def _score(active: list[_State], candidates: list, prm) -> dict[int, list[float]]:
    """PRM scores of every accepted prefix plus its non-empty candidate, by row."""
    nonempty = [i for i, c in enumerate(candidates) if c.text.strip()]
    if not nonempty:
        return {}
    rows = _checked(prm.score([active[i].problem.question for i in nonempty],
                              [active[i].steps + [candidates[i].text] for i in nonempty]), len(nonempty), prm,
                    "score rows")
    return dict(zip(nonempty, rows))


def _finite(x: float) -> float:
    # A step whose tag fell outside the PRM's context has no score; treat it as uninformative (0.5).
    return 0.5 if x is None or math.isnan(x) else float(x)


def _stop_reason(state: _State, step, run: RunSettings) -> str | None:
    if "\\boxed" in step.text:
        return "boxed"
    if not step.text.strip():
        return "empty-step"
    if step.finished:
        return "end-of-text"
    if len(state.steps) >= run.max_steps:
        return "max-steps"
    if state.strong_tokens + state.weak_tokens - state.discarded_tokens >= run.max_tokens:
        return "max-tokens"
    return None


def _finish(state: _State, policy: Policy) -> dict:
    solution = STEP_DELIMITER.join(state.steps)
    graded = grading.grade(str(state.problem.answer), solution)
    return {
        "problem_id": state.problem.id, "policy": policy.name, "gold": str(state.problem.answer),
        "final_answer": graded.extracted, "correct": graded.correct, "grade_status": graded.status,
        "strong_tokens": state.strong_tokens, "weak_tokens": state.weak_tokens,
        "discarded_tokens": state.discarded_tokens, "num_steps": len(state.steps),
        "regenerated_steps": sum(r["model"] == "strong" for r in state.records),
        "empty_steps": state.empty_steps, "stop_reason": state.stop_reason, "steps": state.records,
    }
