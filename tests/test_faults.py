"""Fault injection: backends, policies, problems and model folders that break their contracts.

Every fault must fail loudly, naming the backend (or file) and the row, before it can shift a row onto
the wrong problem, write invalid JSON, or score a step at the wrong token. The fake backends come from
tests/test_engine.py; the model checks use the shipped testbed models."""

import dataclasses
import json
import math
import shutil
import warnings

import pytest
from test_engine import PROBLEMS, KeywordPRM, Problem, ScriptedGenerator

from trim.cache import CachedPRM
from trim.engine import BackendError, run_policy
from trim.policies import Decision, Policy, Threshold, WeakOnly
from trim.protocols import StepProposal
from trim.testbed import DATA_DIR
from trim.traces import read_traces


def broken_generator(name, fault):
    generator = ScriptedGenerator(name, bad_steps={2})

    def propose(requests):
        rows = ScriptedGenerator.propose(generator, requests)
        return fault(rows)

    generator.propose = propose
    return generator


def replace_row(rows, **change):
    """The last row of a batch with a field changed (the last problem of the batch: p3)."""
    return rows[:-1] + [dataclasses.replace(rows[-1], **change)]


PROPOSAL_FAULTS = {
    "a row dropped": (lambda rows: rows[:-1], r"weak returned 3 proposals for 4 inputs"),
    "a row added": (lambda rows: rows + rows[:1], r"weak returned 5 proposals for 4 inputs"),
    "not a list": (lambda rows: None, r"weak returned NoneType instead of a list of proposals"),
    "text None": (lambda rows: replace_row(rows, text=None), r"problem 'p3' \(row 3 of 4, step 1\): its text"),
    "negative tokens": (lambda rows: replace_row(rows, tokens=-1), r"'p3' .*token count is -1"),
    "tokens as text": (lambda rows: replace_row(rows, tokens="4"), r"'p3' .*token count is '4'"),
    "flag None": (lambda rows: replace_row(rows, finished=None), r"'p3' .*finished flag is None"),
    "not a proposal": (lambda rows: rows[:-1] + ["weak step"], r"'p3' .*its text is not a string"),
}


@pytest.mark.parametrize("fault", sorted(PROPOSAL_FAULTS))
def test_a_generator_that_breaks_its_rows_is_named(fault):
    transform, message = PROPOSAL_FAULTS[fault]
    with pytest.raises(BackendError, match=message):
        run_policy(PROBLEMS, Threshold(0.5), broken_generator("weak", transform), ScriptedGenerator("strong"),
                   KeywordPRM())


def test_a_strong_generator_fault_names_the_strong_model():
    strong = broken_generator("strong", lambda rows: replace_row(rows, tokens=-2))
    with pytest.raises(BackendError, match=r"strong returned a bad proposal for problem 'p3' \(row 3 of 4, step 2\)"):
        run_policy(PROBLEMS, Threshold(0.5), ScriptedGenerator("weak", bad_steps={2}), strong, KeywordPRM())


class FaultyPRM(KeywordPRM):
    """Scores like KeywordPRM; the row of problem 'p2' (question 2) is broken by `fault`."""

    name = "faulty-prm"

    def __init__(self, fault):
        super().__init__()
        self.fault = fault

    def score(self, questions, steps):
        rows = super().score(questions, steps)
        return [self.fault(row) if q == "question 2" else row for q, row in zip(questions, rows)]


PRM_FAULTS = {
    "one score too few": (lambda row: row[:-1], r"faulty-prm returned 0 scores for problem 'p2' \(row 2 of 4\), "
                                                r"which has 1 steps"),
    "one score too many": (lambda row: row + [0.5], r"returned 2 scores for problem 'p2' .* has 1 steps"),
    "infinite score": (lambda row: [math.inf], r"returned the score inf for step 1 of problem 'p2' \(row 2 of 4\)"),
    "minus infinity": (lambda row: [-math.inf], r"returned the score -inf for step 1 of problem 'p2'"),
    "score above one": (lambda row: [1.5], r"returned the score 1.5 for step 1 of problem 'p2'"),
    "negative score": (lambda row: [-0.1], r"returned the score -0.1 for step 1 of problem 'p2'"),
    "score as text": (lambda row: ["0.9"], r"returned the score '0.9' for step 1 of problem 'p2'"),
    "score as bool": (lambda row: [True], r"returned the score True for step 1 of problem 'p2'"),
    "row not a list": (lambda row: 0.9, r"returned float instead of a list of scores for problem 'p2'"),
}


@pytest.mark.parametrize("fault", sorted(PRM_FAULTS))
def test_a_prm_that_breaks_its_rows_is_named(fault):
    transform, message = PRM_FAULTS[fault]
    with pytest.raises(BackendError, match=message):
        run_policy(PROBLEMS, Threshold(0.5), ScriptedGenerator("weak"), ScriptedGenerator("strong"),
                   FaultyPRM(transform))


def test_a_dropped_score_row_is_named():
    prm = KeywordPRM()
    prm.score = lambda questions, steps: KeywordPRM.score(prm, questions, steps)[1:]
    with pytest.raises(BackendError, match="keyword-prm returned 3 score rows for 4 inputs"):
        run_policy(PROBLEMS, Threshold(0.5), ScriptedGenerator("weak"), ScriptedGenerator("strong"), prm)


def test_nan_scores_are_recorded_as_unscored_in_valid_json(tmp_path):
    """NaN is what a PRM returns for a step it could not read (its tag fell outside its context): the
    policy reads 0.5, as before, and the step record lists the unscored steps; the trace stays JSON."""
    nan_first = FaultyPRM(lambda row: [math.nan] + row[1:])
    path = tmp_path / "thr.jsonl"
    records = run_policy(PROBLEMS, Threshold(0.5), ScriptedGenerator("weak"), ScriptedGenerator("strong"), nan_first,
                         trace_path=path)
    p2 = records[2]["steps"]
    assert p2[0]["score"] == 0.5 and p2[0]["unscored_steps"] == [1]
    assert p2[1]["observation"]["previous_scores"] == [0.5] and p2[1]["unscored_steps"] == [1]
    assert all("unscored_steps" not in s for r in records if r["problem_id"] != "p2" for s in r["steps"])
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    for line in text.splitlines():
        json.loads(line, parse_constant=lambda name: pytest.fail(f"non-JSON constant {name}"))
    assert [r["problem_id"] for r in read_traces(path)] == ["p0", "p1", "p2", "p3"]


class Faulty(Policy):
    name = "faulty-policy"

    def __init__(self, fault):
        self.fault = fault

    def decide(self, observations):
        return self.fault([Decision(o.score < 0.5) for o in observations])


def last(rows, decision):
    return rows[:-1] + [decision]


POLICY_FAULTS = {
    "a decision dropped": (lambda rows: rows[:-1], r"faulty-policy returned 3 decisions for 4 inputs"),
    "regenerate None": (lambda rows: last(rows, Decision(None)),
                        r"faulty-policy returned a decision without a boolean `regenerate` for problem 'p3' "
                        r"\(row 3 of 4, step 1\)"),
    "a bare bool": (lambda rows: last(rows, True), r"without a boolean `regenerate` for problem 'p3'"),
    "NaN extra": (lambda rows: last(rows, Decision(False, {"log_prob": math.nan})),
                  r"returned extras that a trace cannot hold for problem 'p3'"),
    "infinite extra": (lambda rows: last(rows, Decision(False, {"value": -math.inf})),
                       r"extras that a trace cannot hold for problem 'p3'"),
    "object extra": (lambda rows: last(rows, Decision(False, {"state": object()})),
                     r"extras that a trace cannot hold for problem 'p3'"),
}


@pytest.mark.parametrize("fault", sorted(POLICY_FAULTS))
def test_a_policy_that_breaks_its_rows_is_named(fault):
    transform, message = POLICY_FAULTS[fault]
    with pytest.raises(BackendError, match=message):
        run_policy(PROBLEMS, Faulty(transform), ScriptedGenerator("weak"), ScriptedGenerator("strong"), KeywordPRM())


class FailsAtStepThree(ScriptedGenerator):
    """Problem 'short' ends at step 1; at step 3 the generator drops a row."""

    def propose(self, requests):
        rows = [StepProposal("so \\boxed{7}", 3, False, False) if r.problem_id == "short" else p
                for r, p in zip(requests, super().propose(requests))]
        return rows[:-1] if any(len(r.steps) == 2 for r in requests) else rows


def test_a_fault_keeps_finished_records_and_releases_the_trace(tmp_path):
    """Problems that finished before the fault stay in the trace, and the file is not left locked."""
    path = tmp_path / "t.jsonl"
    problems = [Problem("short", "question short", "7")] + PROBLEMS[:2]
    with pytest.raises(BackendError, match="weak returned 1 proposals for 2 inputs"):
        run_policy(problems, WeakOnly(), FailsAtStepThree("weak"), ScriptedGenerator("strong"), KeywordPRM(),
                   trace_path=path)
    assert [r["problem_id"] for r in read_traces(path)] == ["short"]
    weak = ScriptedGenerator("weak")
    rerun = run_policy(problems, WeakOnly(), weak, ScriptedGenerator("strong"), KeywordPRM(), trace_path=path)
    assert [r["problem_id"] for r in rerun] == ["short", "p0", "p1"] and weak.calls == [2, 2, 2]
    assert rerun[0]["final_answer"] == "7" and rerun[0]["weak_tokens"] == 3  # the record from before the fault


def test_duplicate_problem_ids_are_refused_before_any_model_runs():
    weak = ScriptedGenerator("weak")
    with pytest.raises(ValueError, match="unique; repeated: p1"):
        run_policy(PROBLEMS + PROBLEMS[1:2], Threshold(0.5), weak, ScriptedGenerator("strong"), KeywordPRM())
    assert weak.calls == []


class TaggedPRM(KeywordPRM):
    step_tag = "<extra_0>"


@pytest.mark.parametrize("wrap", [False, True])
def test_a_question_holding_the_prms_step_tag_is_refused_up_front(wrap):
    prm = CachedPRM(TaggedPRM()) if wrap else TaggedPRM()
    weak = ScriptedGenerator("weak")
    problems = PROBLEMS[:2] + [Problem("tagged", "what is 1<extra_0>2?", "7")]
    with pytest.raises(ValueError, match=r"question of problem 'tagged' contains the PRM's step tag '<extra_0>'"):
        run_policy(problems, Threshold(0.5), weak, ScriptedGenerator("strong"), prm)
    assert weak.calls == []


def test_proposals_from_a_real_protocol_object_pass_the_checks():
    ok = StepProposal(text="a", tokens=0, finished=False, truncated=True)
    weak = ScriptedGenerator("weak")
    weak.propose = lambda requests: [dataclasses.replace(ok, text=f"{r.problem_id} \\boxed{{7}}") for r in requests]
    records = run_policy(PROBLEMS, Threshold(0.5), weak, ScriptedGenerator("strong"), KeywordPRM())
    assert all(r["correct"] and r["steps"][0]["tokens"] == 0 for r in records)


# --- the transformers backends at load time and on over-long inputs ---------------------------------


def test_a_prm_tokenizer_without_the_step_tag_is_refused_at_load():
    from trim.backends.transformers import StepTagPRM

    with pytest.raises(ValueError, match=r"PRM .*prm: its tokenizer has no token for the step tag '<step>'"):
        StepTagPRM(DATA_DIR / "prm", step_tag="<step>")


def test_a_causal_lm_folder_is_refused_as_a_prm():
    from trim.backends.transformers import StepTagPRM

    with pytest.raises(ValueError, match=r"PRM: the checkpoint in .*weak has no trained weights for score.bias, "
                                         r"score.weight \(it was saved as \['LlamaForCausalLM'\]\)"):
        StepTagPRM(DATA_DIR / "weak")


def test_a_prm_folder_is_refused_as_a_generator():
    from trim.backends.transformers import TransformersGenerator

    with pytest.raises(ValueError, match=r"generator: the model in .*prm is a LlamaForTokenClassification, not a "
                                         r"causal language model"):
        TransformersGenerator(DATA_DIR / "prm")


def test_corrupt_weights_name_the_file(tmp_path):
    from trim.backends.transformers import TransformersGenerator

    folder = tmp_path / "weak"
    shutil.copytree(DATA_DIR / "weak", folder)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(ValueError, match=rf"cannot load the weights {weights} \(SafetensorError: .*\); the file may "
                                         "be corrupt"):
        TransformersGenerator(folder)


@pytest.fixture(scope="module")
def prm():
    from trim.backends.transformers import StepTagPRM

    return StepTagPRM(DATA_DIR / "prm", max_length=120)


def test_a_step_tag_in_the_question_is_refused_by_the_prm(prm):
    with pytest.raises(ValueError, match=r"question of row 1 contains the PRM's step tag"):
        prm.score(["q", "a <extra_0> b"], [["1) x"], ["1) y"]])


def test_an_over_long_prm_input_keeps_the_question_and_drops_the_earliest_steps(prm):
    from trim.testbed import task

    problem = max(task.make_split("test", size=50), key=lambda p: len(p.operations))
    steps = problem.gold_steps()
    prm.overflows = 0
    with pytest.warns(UserWarning, match=r"1 of 1 inputs are longer than the PRM's context \(longest \d+ tokens > "
                                         r"120\); their earliest steps were dropped, keeping the question"):
        scores = prm.score([problem.question], [steps])[0]
    dropped = sum(math.isnan(s) for s in scores)
    assert 0 < dropped < len(steps) and not any(math.isnan(s) for s in scores[dropped:])
    kept = prm.tokenizer.decode(prm._fit(problem.question, steps, prm.tokenizer(
        prm.text(problem.question, steps), add_special_tokens=False).input_ids))
    assert problem.question in kept and steps[-1] in kept and steps[0] not in kept
    # The kept steps are scored exactly as if the PRM had been given only them (with the question).
    alone = prm.score([problem.question], [steps[dropped:]])[0]
    assert scores[dropped:] == pytest.approx(alone, abs=1e-5)
    assert prm.overflows == 1


def test_an_over_long_generator_prompt_is_reported_with_counts():
    from trim.backends.transformers import TransformersGenerator
    from trim.protocols import SamplingParams, StepRequest

    generator = TransformersGenerator(DATA_DIR / "weak", SamplingParams(1.0, 1.0, 0, 2), name="w")
    long = StepRequest("long", "Start at 1. " + "1) add 2. " * (generator.context // 4) + "What is the result?", ())
    short = StepRequest("short", "Start at 1 and work mod 97. 1) add 2. What is the result?", ())
    with pytest.warns(UserWarning, match=rf"w: 1 of 2 prompts are longer than the model's context \(longest \d+ "
                                         rf"tokens > {generator.context}\)"):
        generator.propose([long, short])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        generator.propose([long])  # reported once per generator; later ones are counted
    assert generator.overflows == 2
