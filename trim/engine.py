"""The TRIM loop, run for every active problem in lockstep (the book's appendix draws it).

Each round: one weak batch proposes the next step of every active problem, one PRM batch scores
them, the policy decides, and one strong batch rewrites only the flagged steps. Several policies can
share the rounds (`run_policies`, as a sweep does), each deciding for its own rows. Regeneration
replaces the current step only; control then returns to the weak model. A solution stops at a step holding
``\\boxed{}``, at the model's end of text, at `max_steps`, or at `max_tokens` decoded tokens.

Every step record keeps what the policy saw (its `Observation`) and what it decided, with the
policy's per-decision extras, so learners build their rollouts from these traces.

The engine trusts no backend: every round it checks one well-formed proposal per request, one score
row per prefix with one score per step (P(correct) in [0, 1], or NaN for a step the PRM could not read)
and one decision per observation with JSON-safe extras; anything else is a `BackendError` naming the
backend and the problem. A NaN score is read by the policy as 0.5 (uninformative) and listed in the
step record's `unscored_steps`, so traces stay valid JSON and say which scores were missing."""

from __future__ import annotations

import collections
import dataclasses
import json
import math
from numbers import Real
from typing import Sequence

from trim import grading
from trim.hashing import stable_digest
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
    policy: int = 0                                            # index into the run's policies
    steps: list = dataclasses.field(default_factory=list)     # accepted step texts
    records: list = dataclasses.field(default_factory=list)   # per-step trace records
    scores: list = dataclasses.field(default_factory=list)    # PRM scores of the accepted steps, as last read
    strong_tokens: int = 0
    weak_tokens: int = 0
    discarded_tokens: int = 0
    empty_steps: int = 0
    stop_reason: str | None = None


class BackendError(RuntimeError):
    """A generator, PRM or policy returned something the engine cannot use; the message names it and the row."""


def problem_set(problems: Sequence) -> dict:
    """The identity of a list of problems: how many, the first and last id, and a digest of every
    (id, question, answer), so that another split, dataset, size or problem generator never shares a trace."""
    rows = sorted((str(p.id), str(p.question), str(p.answer)) for p in problems)
    digest = stable_digest(json.dumps(rows))
    return {"count": len(rows), "first_id": rows[0][0] if rows else None,
            "last_id": rows[-1][0] if rows else None, "digest": digest}


def settings_record(policy: Policy, weak, strong, prm, run: RunSettings, problems: Sequence | None = None) -> dict:
    """Everything that determines a trace; stored with every problem's record.

    With `problems`, the problem set (`problem_set`) is part of it: a trace resumes only on the same problems."""
    settings = {"policy": policy.name, "policy_class": type(policy).__name__, "policy_params": policy.params(),
                "weak": weak.name, "strong": strong.name, "prm": prm.name if prm is not None else None,
                # Which weights each name stood for (`trim.hashing.weights_fingerprint`): a trace written by
                # other weights under the same names is never resumed.
                "weights": {role: getattr(model, "fingerprint", None)
                            for role, model in (("weak", weak), ("strong", strong), ("prm", prm))},
                "sampling_weak": dataclasses.asdict(weak.sampling),
                "sampling_strong": dataclasses.asdict(strong.sampling),
                **dataclasses.asdict(run)}
    if problems is not None:
        settings["problems"] = problem_set(problems)
    return settings


def _step_tag(prm) -> str | None:
    """The step tag of a step-tag PRM, looking through wrappers (caches) that keep it in `.prm`."""
    for _ in range(8):
        if prm is None or getattr(prm, "step_tag", None):
            return getattr(prm, "step_tag", None)
        prm = getattr(prm, "prm", None)
    return None


def run_policy(problems: Sequence, policy: Policy, weak, strong, prm, run: RunSettings = RunSettings(),
               trace_path=None, progress: bool | None = None) -> list[dict]:
    """Solve every problem with `policy`; return one trace record per problem (in input order).

    With `trace_path`, finished problems are appended as they finish and skipped on a rerun."""
    return run_policies(problems, [policy], weak, strong, prm, run, [trace_path], progress)[0]


def run_policies(problems: Sequence, policies: Sequence[Policy], weak, strong, prm, run: RunSettings = RunSettings(),
                 trace_paths: Sequence | None = None, progress: bool | None = None) -> list[list[dict]]:
    """Solve every problem with every policy in one lockstep batch; one list of records per policy.

    Each (policy, problem) is a row of the same rounds, so the rows of a sweep that share a prefix are
    asked for it together, and a cache in front of the models (`trim.experiment.Harness`) generates and
    scores it once, in batches as large as all the policies' rows together. Each policy decides for its
    own rows, in the order and rounds of a run of its own, so its records are those of `run_policy`.
    `trace_paths`, one per policy (or None), are written and resumed as `run_policy` does."""
    duplicates = [i for i, n in collections.Counter(p.id for p in problems).items() if n > 1]
    if duplicates:
        raise ValueError(f"problem ids must be unique; repeated: {', '.join(map(str, duplicates[:5]))}")
    trace_paths = list(trace_paths) if trace_paths is not None else [None] * len(policies)
    if len(trace_paths) != len(policies):
        raise ValueError(f"{len(policies)} policies but {len(trace_paths)} trace paths")
    shared = [str(t) for t, n in collections.Counter(str(t) for t in trace_paths if t).items() if n > 1]
    if shared:
        raise ValueError(f"two policies would write the same trace {shared[0]}; give each its own")
    for policy in policies:
        if prm is None and policy.uses_weak and policy.uses_prm:
            raise ValueError(f"policy {policy.name} reads PRM scores, but no PRM was given")
    tag = _step_tag(prm) if any(policy.uses_weak for policy in policies) else None
    if tag:
        holding = [p.id for p in problems if tag in str(p.question)]
        if holding:
            raise ValueError(f"the question of problem {holding[0]!r} contains the PRM's step tag {tag!r}, which "
                             f"would add a score ({len(holding)} problem(s) in all); remove the tag from the questions")
    settings = [settings_record(policy, weak, strong, prm, run, problems) for policy in policies]
    ids = {p.id for p in problems}
    writers = [TraceWriter(path, record, ids) if path else None for path, record in zip(trace_paths, settings)]
    try:
        done = [dict(writer.done) if writer else {} for writer in writers]
        active = [_State(p, policy=j) for j in range(len(policies)) for p in problems if p.id not in done[j]]
        total = len(problems) * len(policies)
        bar = progress_bar(progress=progress, total=total, initial=total - len(active),
                           desc=policies[0].name if len(policies) == 1 else f"{len(policies)} policies")
        while active:
            _round(active, policies, weak, strong, prm, run)
            still = []
            for state in active:
                if state.stop_reason is None:
                    still.append(state)
                    continue
                record = _finish(state, policies[state.policy])
                done[state.policy][state.problem.id] = {**record, "settings": settings[state.policy]}
                if writers[state.policy]:
                    writers[state.policy].write(record)
                bar.update(1)
            active = still
        bar.close()
    finally:
        for writer in writers:
            if writer:
                writer.close()
    return [[done[j][p.id] for p in problems] for j in range(len(policies))]


def _name(backend) -> str:
    return str(getattr(backend, "name", None) or type(backend).__name__)


def check_rows(rows: list, expected: int, backend, what: str) -> list:
    # A backend that drops or adds a row would silently shift every later row onto the wrong problem.
    try:
        rows = list(rows)
    except TypeError:
        raise BackendError(f"{_name(backend)} returned {type(rows).__name__} instead of a list of {what}") from None
    if len(rows) != expected:
        raise BackendError(f"{_name(backend)} returned {len(rows)} {what} for {expected} inputs")
    return rows


def _proposal_fault(p) -> str | None:
    tokens = getattr(p, "tokens", None)
    if not isinstance(getattr(p, "text", None), str):
        return "its text is not a string"
    if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 0:
        return f"its token count is {tokens!r}, not an int >= 0"
    for flag in ("finished", "truncated"):
        if not isinstance(getattr(p, flag, None), bool):
            return f"its {flag} flag is {getattr(p, flag, None)!r}, not a bool"
    logprob = getattr(p, "mean_logprob", None)
    if logprob is not None and (isinstance(logprob, bool) or not isinstance(logprob, Real) or math.isnan(logprob)
                                or logprob > 1e-6):
        return f"its mean log-probability is {logprob!r}, not a number <= 0 (or None)"
    return None


def check_proposals(rows, requests: list[StepRequest], backend) -> list:
    """One well-formed proposal per request: text, a token count, and the two flags as booleans."""
    rows = check_rows(rows, len(requests), backend, "proposals")
    for k, (request, p) in enumerate(zip(requests, rows)):
        fault = _proposal_fault(p)
        if fault:
            raise BackendError(f"{_name(backend)} returned a bad proposal for problem {request.problem_id!r} "
                               f"(row {k} of {len(rows)}, step {len(request.steps) + 1}): {fault}")
    return rows


def check_score_row(row, problem_id, n_steps: int, k: int, n_rows: int, prm) -> list:
    """A PRM row holds one score per step, each P(correct) in [0, 1] or NaN (a step the PRM could not read)."""
    where = f"problem {problem_id!r} (row {k} of {n_rows})"
    try:
        row = list(row)
    except TypeError:
        raise BackendError(f"{_name(prm)} returned {type(row).__name__} instead of a list of scores for "
                           f"{where}") from None
    if len(row) != n_steps:
        raise BackendError(f"{_name(prm)} returned {len(row)} scores for {where}, which has {n_steps} steps; "
                           "a PRM returns one score per step")
    for j, x in enumerate(row, 1):
        if x is None or (isinstance(x, Real) and not isinstance(x, bool) and (math.isnan(x) or 0.0 <= x <= 1.0)):
            continue
        raise BackendError(f"{_name(prm)} returned the score {x!r} for step {j} of {where}; a PRM returns "
                           "P(correct) in [0, 1], or NaN for a step it could not read")
    return row


def _decisions(rows, observations: list[Observation], policy) -> list:
    rows = check_rows(rows, len(observations), policy, "decisions")
    for k, (observation, d) in enumerate(zip(observations, rows)):
        where = f"problem {observation.problem_id!r} (row {k} of {len(rows)}, step {observation.step_index})"
        try:
            valid = getattr(d, "regenerate", None) in (True, False)
        except (TypeError, ValueError, RuntimeError):
            valid = False
        if not valid:
            raise BackendError(f"{_name(policy)} returned a decision without a boolean `regenerate` for {where}: "
                               f"{d!r}")
        info = getattr(d, "info", None) or {}
        try:
            json.dumps(dict(info), allow_nan=False)
        except (TypeError, ValueError) as error:
            raise BackendError(f"{_name(policy)} returned extras that a trace cannot hold for {where} ({error}); "
                               "extras are plain, finite numbers") from None
    return rows


def _round(active: list[_State], policies: Sequence[Policy], weak, strong, prm, run: RunSettings) -> None:
    requests = [StepRequest(s.problem.id, s.problem.question, tuple(s.steps), run.seed) for s in active]
    candidates: list = [None] * len(active)
    regenerate = [True] * len(active)     # a policy that never reads the weak model asks the strong one
    unscored: dict[int, list[int]] = {}   # row -> steps whose PRM score was NaN (read as 0.5)
    weak_rows = [i for i, s in enumerate(active) if policies[s.policy].uses_weak]
    if weak_rows:
        asked = [requests[i] for i in weak_rows]
        for i, candidate in zip(weak_rows, check_proposals(weak.propose(asked), asked, weak)):
            candidates[i] = candidate
        # Only the rows of policies that read the scores (or keep them in their trace) ask the PRM.
        to_score = [i for i in weak_rows if policies[active[i].policy].uses_prm
                    or policies[active[i].policy].records_scores] if prm is not None else []
        scored = _score(active, candidates, to_score, prm) if to_score else {}
        to_score = set(to_score)   # asked once per row below, and a sweep's round holds thousands of rows
        observations = {}
        for i in weak_rows:
            state, candidate = active[i], candidates[i]
            score = None
            if i in scored:
                state.scores = [_finite(x) for x in scored[i][:-1]]
                score = _finite(scored[i][-1])
                unscored[i] = [j for j, x in enumerate(scored[i], 1) if x is None or math.isnan(x)]
            elif i in to_score:
                score = 0.0  # an empty step has nothing to score: it gets the worst score, the policy decides
            state.empty_steps += not candidate.text.strip()
            observations[i] = Observation(
                problem_id=state.problem.id, step_index=len(state.steps) + 1, score=score,
                previous_scores=tuple(state.scores), tokens=candidate.tokens,
                strong_tokens=state.strong_tokens, weak_tokens=state.weak_tokens,
                previous_tokens=tuple(r["tokens"] for r in state.records),
                previous_models=tuple(r["model"] for r in state.records),
                confidence=_confidence(candidate))
            state.weak_tokens += candidate.tokens
            state.records.append({"score": score if i in scored else None})
        for j, policy in enumerate(policies):
            rows = [i for i in weak_rows if active[i].policy == j]
            if not rows:
                continue
            seen = [observations[i] for i in rows]
            for i, observation, decision in zip(rows, seen, _decisions(policy.decide(seen), seen, policy)):
                active[i].records[-1]["observation"] = observation.record()
                if decision.info:
                    active[i].records[-1]["policy_info"] = dict(decision.info)
                regenerate[i] = bool(decision.regenerate)
    for i, state in enumerate(active):
        if candidates[i] is None:
            state.records.append({"score": None})
    flagged = [i for i, r in enumerate(regenerate) if r]
    rewrites = {}
    if flagged:
        asked = [requests[i] for i in flagged]
        proposals = check_proposals(strong.propose(asked), asked, strong)
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
        if unscored.get(i):
            record["unscored_steps"] = unscored[i]  # NaN from the PRM: recorded here, read as 0.5 above
        state.steps.append(chosen.text)
        state.stop_reason = _stop_reason(state, chosen, run)


def _score(active: list[_State], candidates: list, weak_rows: list[int], prm) -> dict[int, list[float]]:
    """PRM scores of every accepted prefix plus its non-empty candidate, for `weak_rows`, by row."""
    nonempty = [i for i in weak_rows if candidates[i].text.strip()]
    if not nonempty:
        return {}
    rows = check_rows(prm.score([active[i].problem.question for i in nonempty],
                              [active[i].steps + [candidates[i].text] for i in nonempty]), len(nonempty), prm,
                    "score rows")
    return {i: check_score_row(row, active[i].problem.id, len(active[i].steps) + 1, k, len(rows), prm)
            for k, (i, row) in enumerate(zip(nonempty, rows))}


def _confidence(proposal) -> float | None:
    # An empty step has no tokens to be confident in: the worst confidence, as it gets the worst PRM score.
    if proposal.tokens == 0:
        return 0.0
    logprob = getattr(proposal, "mean_logprob", None)
    return None if logprob is None else math.exp(min(float(logprob), 0.0))


def _finite(x: float) -> float:
    # A step whose tag fell outside the PRM's context has no score; the policy reads it as uninformative
    # (0.5), and the step record lists it in `unscored_steps`.
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
