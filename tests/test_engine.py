"""The TRIM loop's semantics on scripted models: what is regenerated, what stops, what is traced."""

import dataclasses
import json

import pytest

from trim.cache import CachedGenerator, CachedPRM
from trim.engine import RunSettings, run_policies, run_policy
from trim.policies import RSD, RandomRegeneration, StrongOnly, Threshold, WeakOnly, make_policy
from trim.protocols import SamplingParams, StepProposal
from trim.traces import read_traces, save_parquet, steps_frame, traces_frame


@dataclasses.dataclass(frozen=True)
class Problem:
    id: str
    question: str
    answer: str


class ScriptedGenerator:
    """Writes step i as `<name> step i`, or the scripted text; the last step boxes the answer."""

    def __init__(self, name, length=3, answer="7", bad_steps=(), empty_steps=(), logprob=None):
        self.name, self.seed, self.sampling = name, 0, SamplingParams()
        self.length, self.answer, self.bad, self.empty = length, answer, set(bad_steps), set(empty_steps)
        self.logprob = logprob   # (mean log-probability of an ok step, of a bad one), or None: not reported
        self.calls = []

    def cache_key(self, request):
        return f"{request.question}|{'|'.join(request.steps)}"

    def propose(self, requests):
        self.calls.append(len(requests))
        out = []
        for r in requests:
            i = len(r.steps) + 1
            text = f"{self.name} {'bad' if i in self.bad else 'ok'} step {i}"
            if i in self.empty:
                text = ""
            if i == self.length:
                text += f" so \\boxed{{{self.answer}}}"
            logprob = None if self.logprob is None else self.logprob[i in self.bad]
            out.append(StepProposal(text=text, tokens=len(text.split()), finished=False, truncated=False,
                                    mean_logprob=logprob))
        return out


class KeywordPRM:
    name = "keyword-prm"

    def __init__(self):
        self.calls = 0

    def score(self, questions, steps):
        self.calls += 1
        return [[0.1 if "bad" in s else 0.9 for s in prefix] for prefix in steps]


PROBLEMS = [Problem(f"p{i}", f"question {i}", "7") for i in range(4)]


def test_threshold_regenerates_only_the_low_scored_step_and_returns_control_to_weak():
    weak, strong = ScriptedGenerator("weak", bad_steps={2}), ScriptedGenerator("strong")
    records = run_policy(PROBLEMS, Threshold(0.5), weak, strong, KeywordPRM())
    for r in records:
        assert [s["model"] for s in r["steps"]] == ["weak", "strong", "weak"]
        assert r["steps"][1]["text"] == "strong ok step 2" and r["steps"][1]["weak_candidate"] == "weak bad step 2"
        assert r["steps"][1]["discarded_tokens"] == 4 and r["discarded_tokens"] == 4
        assert r["strong_tokens"] == 4 and r["correct"] and r["stop_reason"] == "boxed"
        assert [s["decision"] for s in r["steps"]] == ["continue", "regenerate", "continue"]
    # Lockstep: one weak batch per step for all problems, one strong batch for the flagged rows.
    assert weak.calls == [4, 4, 4] and strong.calls == [4]


def test_weak_only_and_strong_only_endpoints():
    weak, strong = ScriptedGenerator("weak", bad_steps={2}, answer="8"), ScriptedGenerator("strong")
    prm = KeywordPRM()
    weak_records = run_policy(PROBLEMS, WeakOnly(), weak, strong, prm)
    assert all(r["strong_tokens"] == 0 and not r["correct"] for r in weak_records)
    weak.calls.clear()
    prm.calls = 0
    strong_records = run_policy(PROBLEMS, StrongOnly(), weak, strong, prm)
    assert weak.calls == [] and prm.calls == 0  # strong-only never asks the weak model or the PRM
    assert all(r["correct"] and r["weak_tokens"] == 0 and r["strong_tokens"] > 0 for r in strong_records)


def test_threshold_one_matches_strong_only_answers_and_strong_tokens():
    weak, strong = ScriptedGenerator("weak"), ScriptedGenerator("strong")
    a = run_policy(PROBLEMS, Threshold(1.0), weak, strong, KeywordPRM())
    b = run_policy(PROBLEMS, StrongOnly(), weak, strong, KeywordPRM())
    assert [r["strong_tokens"] for r in a] == [r["strong_tokens"] for r in b]
    assert [[s["text"] for s in r["steps"]] for r in a] == [[s["text"] for s in r["steps"]] for r in b]


def test_stops_at_max_steps_and_max_tokens():
    weak = ScriptedGenerator("weak", length=100)
    strong = ScriptedGenerator("strong")
    records = run_policy(PROBLEMS[:1], WeakOnly(), weak, strong, KeywordPRM(), RunSettings(max_steps=5))
    assert records[0]["num_steps"] == 5 and records[0]["stop_reason"] == "max-steps" and not records[0]["correct"]
    assert records[0]["grade_status"] == "no_answer"
    records = run_policy(PROBLEMS[:1], WeakOnly(), weak, strong, KeywordPRM(), RunSettings(max_tokens=10))
    assert records[0]["stop_reason"] == "max-tokens" and records[0]["num_steps"] == 3


def test_an_empty_weak_step_scores_zero_and_is_counted():
    weak, strong = ScriptedGenerator("weak", empty_steps={2}), ScriptedGenerator("strong")
    r = run_policy(PROBLEMS[:1], Threshold(0.2), weak, strong, KeywordPRM())[0]
    assert r["empty_steps"] == 1 and r["steps"][1]["model"] == "strong" and r["correct"]
    # Weak-only keeps it (it never pays for strong tokens) and the solution ends there, counted.
    r = run_policy(PROBLEMS[:1], WeakOnly(), weak, strong, KeywordPRM())[0]
    assert r["empty_steps"] == 1 and r["strong_tokens"] == 0 and r["stop_reason"] == "empty-step" and not r["correct"]


def test_traces_append_resume_and_refuse_other_settings(tmp_path):
    path = tmp_path / "thr.jsonl"
    weak, strong = ScriptedGenerator("weak", bad_steps={1}), ScriptedGenerator("strong")
    run_policy(PROBLEMS, Threshold(0.5), weak, strong, KeywordPRM(), trace_path=path)
    assert len(read_traces(path)) == 4
    # A crash after two problems, mid-write: half a line is dropped and the finished problems are not redone.
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:2]) + '{"problem_id": "p2", "trunc')
    weak.calls.clear()
    records = run_policy(PROBLEMS, Threshold(0.5), weak, strong, KeywordPRM(), trace_path=path)
    assert weak.calls == [2, 2, 2]  # only p2 and p3 were solved
    assert [r["problem_id"] for r in records] == ["p0", "p1", "p2", "p3"]
    assert [r["problem_id"] for r in read_traces(path)] == ["p0", "p1", "p2", "p3"]
    with pytest.raises(ValueError, match="other settings"):
        run_policy(PROBLEMS, Threshold(0.6), weak, strong, KeywordPRM(), trace_path=path)


def test_policies_side_by_side_give_their_own_runs_records_and_resume_each_trace(tmp_path):
    policies = [Threshold(0.5), StrongOnly(), WeakOnly(), RSD()]
    weak, strong = ScriptedGenerator("weak", bad_steps={2}), ScriptedGenerator("strong")
    alone = [run_policy(PROBLEMS, policy, weak, strong, KeywordPRM()) for policy in policies]
    paths = [tmp_path / f"{i}.jsonl" for i in range(len(policies))]
    weak.calls.clear()
    together = run_policies(PROBLEMS, policies, weak, strong, KeywordPRM(), trace_paths=paths)
    assert together == alone
    assert weak.calls == [12, 12, 12], "the three policies that read the weak model shared its batches"
    # A crash that lost the last two problems of one trace: only those two rows run again.
    lines = paths[0].read_text().splitlines(keepends=True)
    paths[0].write_text("".join(lines[:2]))
    weak.calls.clear()
    assert run_policies(PROBLEMS, policies, weak, strong, KeywordPRM(), trace_paths=paths) == alone
    assert weak.calls == [2, 2, 2]
    with pytest.raises(ValueError, match="same trace"):
        run_policies(PROBLEMS, policies[:2], weak, strong, KeywordPRM(), trace_paths=[paths[0], paths[0]])


def test_traces_record_settings_and_load_as_frames(tmp_path):
    records = run_policy(PROBLEMS, RSD(), ScriptedGenerator("weak", bad_steps={3}), ScriptedGenerator("strong"),
                         KeywordPRM(), RunSettings(seed=5))
    settings = records[0]["settings"]
    assert settings["seed"] == 5 and settings["policy_params"] == {"k": 0.7} and settings["weak"] == "weak"
    assert settings["sampling_weak"]["temperature"] == 0.7
    frame = traces_frame(records)
    assert len(frame) == 4 and frame["correct"].all()
    steps = steps_frame(records)
    assert len(steps) == 12 and (steps.groupby("model").size().to_dict() == {"strong": 4, "weak": 8})
    save_parquet(records, tmp_path / "t.parquet")
    import pandas as pd

    back = pd.read_parquet(tmp_path / "t.parquet")
    assert json.loads(back["steps"][0])[2]["model"] == "strong"


def test_cache_serves_shared_prefixes_once():
    weak = CachedGenerator(ScriptedGenerator("weak", bad_steps={2}))
    strong = CachedGenerator(ScriptedGenerator("strong"))
    prm = CachedPRM(KeywordPRM())
    first = run_policy(PROBLEMS, Threshold(0.5), weak, strong, prm)
    misses = (weak.misses, strong.misses, prm.misses)
    second = run_policy(PROBLEMS, Threshold(0.6), weak, strong, prm)
    assert (weak.misses, strong.misses, prm.misses) == misses  # nothing new to generate or score
    assert [r["steps"] for r in first] == [r["steps"] for r in second]


def test_random_policy_is_deterministic_and_matches_its_rate():
    from trim.policies import Observation

    policy = RandomRegeneration(0.3, seed=1)
    obs = [Observation(f"p{i}", j, 0.5, (), 5, 0, 0) for i in range(200) for j in range(1, 6)]
    decisions = policy.decide(obs)
    assert decisions == RandomRegeneration(0.3, seed=1).decide(obs)
    assert 0.25 < sum(d.regenerate for d in decisions) / len(decisions) < 0.35


def test_policy_factory_rejects_bad_values():
    with pytest.raises(ValueError, match="threshold k must be in"):
        Threshold(1.5)
    with pytest.raises(ValueError, match="unknown policy"):
        make_policy("nope")
    with pytest.raises(ValueError, match="needs a value"):
        make_policy("thr")


def test_fakes_fill_the_protocols():
    from trim.protocols import PRM, Generator

    assert isinstance(ScriptedGenerator("weak"), Generator) and isinstance(KeywordPRM(), PRM)
    assert isinstance(CachedGenerator(ScriptedGenerator("weak")), Generator)


def test_step_records_carry_the_observation_and_the_policys_extras():
    from trim.policies import Decision, Policy

    class Coin(Policy):
        name = "coin"

        def decide(self, observations):
            return [Decision(o.score < 0.5, {"log_prob": -0.25, "value": float(o.step_index)}) for o in observations]

    weak, strong = ScriptedGenerator("weak", bad_steps={2}), ScriptedGenerator("strong")
    record = run_policy(PROBLEMS[:1], Coin(), weak, strong, KeywordPRM())[0]
    second = record["steps"][1]
    assert second["observation"] == {"step_index": 2, "score": 0.1, "previous_scores": [0.9], "tokens": 4,
                                     "strong_tokens": 0, "weak_tokens": 4, "previous_tokens": [4],
                                     "previous_models": ["weak"], "confidence": None}
    assert second["policy_info"] == {"log_prob": -0.25, "value": 2.0} and second["decision"] == "regenerate"
    third = record["steps"][2]["observation"]
    assert third["strong_tokens"] == 4  # the rewrite is counted before step 3
    assert third["previous_models"] == ["weak", "strong"] and third["previous_tokens"] == [4, 4]


def test_the_confidence_policy_regenerates_the_steps_its_generator_doubts_and_needs_no_prm():
    from trim.policies import ConfidenceThreshold

    weak = ScriptedGenerator("weak", bad_steps={2}, logprob=(-0.1, -2.0))
    record = run_policy(PROBLEMS[:1], ConfidenceThreshold(0.5), weak, ScriptedGenerator("strong"), None)[0]
    assert [s["model"] for s in record["steps"]] == ["weak", "strong", "weak"]
    assert record["steps"][1]["observation"]["confidence"] == pytest.approx(0.1353, abs=1e-4)  # exp(-2)
    assert record["steps"][1]["observation"]["score"] is None   # no PRM was asked
    with pytest.raises(ValueError, match="reports no token log-probabilities"):
        run_policy(PROBLEMS[:1], ConfidenceThreshold(0.5), ScriptedGenerator("weak"), ScriptedGenerator("strong"),
                   None)
    # Beside a PRM, in one sweep: the confidence router's rows never ask it; weak-only's keep their scores.
    prm = KeywordPRM()
    confident, weak_only = run_policies(PROBLEMS[:2], [ConfidenceThreshold(0.5), WeakOnly()], weak,
                                        ScriptedGenerator("strong"), prm)
    assert all(s["score"] is None for r in confident for s in r["steps"])
    assert all(s["score"] is not None for r in weak_only for s in r["steps"]) and prm.calls > 0
    alone = KeywordPRM()
    run_policy(PROBLEMS[:2], ConfidenceThreshold(0.5), weak, ScriptedGenerator("strong"), alone)
    assert alone.calls == 0


@pytest.mark.parametrize("logprob", [0.5, float("nan"), "high", True])
def test_a_generator_reporting_an_impossible_log_probability_is_named(logprob):
    weak = ScriptedGenerator("weak", logprob=(logprob, logprob))
    with pytest.raises(RuntimeError, match=r"weak returned a bad proposal .* mean log-probability"):
        run_policy(PROBLEMS[:1], Threshold(0.5), weak, ScriptedGenerator("strong"), KeywordPRM())


def test_a_learned_policys_identity_includes_its_weights(tmp_path):
    import torch

    from trim.policies import LearnedPolicy

    class Linear(LearnedPolicy):
        name = "linear"

        def __init__(self, bias):
            self.model = torch.nn.Linear(1, 1)
            torch.nn.init.zeros_(self.model.weight)
            torch.nn.init.constant_(self.model.bias, bias)

        def regenerate(self, observation):
            return bool(self.model(torch.tensor([observation.score])).item() > 0)

    weak, strong, prm = ScriptedGenerator("weak", bad_steps={2}), ScriptedGenerator("strong"), KeywordPRM()
    path = tmp_path / "linear.jsonl"
    run_policy(PROBLEMS, Linear(-1.0), weak, strong, prm, trace_path=path)
    assert Linear(-1.0).params() == Linear(-1.0).params() != Linear(1.0).params()
    run_policy(PROBLEMS, Linear(-1.0), weak, strong, prm, trace_path=path)  # same weights: resumes
    with pytest.raises(ValueError, match="other settings"):
        run_policy(PROBLEMS, Linear(1.0), weak, strong, prm, trace_path=path)


def test_the_registry_feeds_make_policy_and_the_cli():
    from trim.cli import build_parser
    from trim.policies import POLICIES

    assert {"weak-only", "strong-only", "thr", "rsd", "random"} <= set(POLICIES)
    run_parser = build_parser()._subparsers._group_actions[0].choices["run"]
    choices = next(a.choices for a in run_parser._actions if a.dest == "policy")
    assert list(choices) == list(POLICIES)
    assert make_policy("random", 0.25, seed=3).params() == {"rate": 0.25, "seed": 3}


@pytest.mark.parametrize("fault", ["proposals", "scores", "decisions"])
def test_a_backend_that_drops_a_row_is_named(fault):
    from trim.policies import Policy

    weak, strong, prm = ScriptedGenerator("weak"), ScriptedGenerator("strong"), KeywordPRM()
    policy = Threshold(0.5)
    if fault == "proposals":
        weak.propose = lambda requests: ScriptedGenerator.propose(weak, requests)[:-1]
    elif fault == "scores":
        prm.score = lambda questions, steps: KeywordPRM.score(prm, questions, steps)[:-1]
    else:
        class Short(Policy):
            name = "short"

            def decide(self, observations):
                return super().decide(observations)[:-1]

            def regenerate(self, observation):
                return False

        policy = Short()
    with pytest.raises(RuntimeError, match=r"returned 3 .* for 4 inputs"):
        run_policy(PROBLEMS, policy, weak, strong, prm)


@pytest.mark.parametrize("fault", ["proposals", "scores"])
@pytest.mark.parametrize("extra", [-1, 1])
def test_a_backend_behind_a_cache_that_drops_or_adds_a_row_is_named(fault, extra):
    """Through the caches a sweep and PPO use: a wrong row count is a named error, never results filed
    under another problem's key (one row too many) or a KeyError (one too few)."""
    weak, strong, prm = ScriptedGenerator("weak"), ScriptedGenerator("strong"), KeywordPRM()

    def wrong(rows):
        return rows[:-1] if extra < 0 else rows + rows[:1]

    if fault == "proposals":
        weak.propose = lambda requests: wrong(ScriptedGenerator.propose(weak, requests))
    else:
        prm.score = lambda questions, steps: wrong(KeywordPRM.score(prm, questions, steps))
    with pytest.raises(RuntimeError, match=rf"returned {4 + extra} .* for 4 inputs"):
        run_policy(PROBLEMS, Threshold(0.5), CachedGenerator(weak), CachedGenerator(strong), CachedPRM(prm))


def test_a_trace_records_which_weights_and_refuses_other_weights_under_the_same_name(tmp_path):
    from trim.traces import TraceError

    weak, strong, prm = ScriptedGenerator("weak"), ScriptedGenerator("strong"), KeywordPRM()
    weak.fingerprint = "weights-a"
    path = tmp_path / "t.jsonl"
    record = run_policy(PROBLEMS[:2], Threshold(0.5), weak, strong, prm, trace_path=path)[0]
    assert record["settings"]["weights"] == {"weak": "weights-a", "strong": None, "prm": None}
    weak.fingerprint = "weights-b"
    with pytest.raises(TraceError, match="weights.weak"):
        run_policy(PROBLEMS[:2], Threshold(0.5), weak, strong, prm, trace_path=path)


def test_weights_fingerprints_tell_checkpoints_apart(tmp_path):
    from trim.hashing import weights_fingerprint

    for name, payload in (("a", b"x" * 3_000_000), ("b", b"x" * 2_999_999 + b"y"), ("c", b"x" * 3_000_000)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "model.safetensors").write_bytes(payload)
    a, b, c = (weights_fingerprint(tmp_path / n) for n in "abc")
    assert a == c and a != b
    assert weights_fingerprint("Qwen/Qwen2.5-7B-Instruct") == "hub:Qwen/Qwen2.5-7B-Instruct"


def test_duplicate_problem_ids_are_refused():
    with pytest.raises(ValueError, match="unique; repeated: p0"):
        run_policy([PROBLEMS[0], PROBLEMS[0]], WeakOnly(), ScriptedGenerator("w"), ScriptedGenerator("s"), KeywordPRM())


def test_run_seed_and_generator_seed_do_not_collide():
    from trim.protocols import StepRequest, request_seed

    request = StepRequest("p", "q", ("a",), seed=1)
    swapped = StepRequest("p", "q", ("a",), seed=0)
    assert request_seed(0, "m", request) != request_seed(1, "m", swapped)
    assert len({request_seed(g, "m", StepRequest("p", "q", (), seed=r)) for g in range(3) for r in range(3)}) == 9
