"""The OpenAI-compatible backend against a small fake server that misbehaves in every way a real one can.

The server's behaviour is chosen by the first part of the URL's path (`http://127.0.0.1:PORT/<mode>/v1`).
Against a real `vllm serve`, tests/test_vllm.py runs the same backend end to end."""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from trim import testbed
from trim.backends.openai import OpenAICompletionsGenerator, ServerError, _mean_logprob
from trim.protocols import StepRequest

GREEDY = dataclasses.replace(testbed.SAMPLING["weak"], temperature=0.0)
TOKENIZER = testbed.DATA_DIR / "weak"
GOOD = {"id": "c", "object": "text_completion", "created": 0, "model": "fake",
        "choices": [{"index": 0, "text": "1) 3 + 4 = 7", "finish_reason": "stop", "stop_reason": "\n\n",
                     "logprobs": {"tokens": ["1", ")", " 3"], "token_logprobs": [-0.5, -0.25, -0.75]}}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}}


def reply(**changes) -> dict:
    body = json.loads(json.dumps(GOOD))
    for key, value in changes.items():
        if value is None:
            body.pop(key, None)
        else:
            body[key] = value
    return body


class Handler(BaseHTTPRequestHandler):
    calls: dict = {}               # per mode; fresh for each module run (the `server` fixture)
    stop = threading.Event()

    def _send(self, status: int, body: bytes, length: int | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body) if length is None else length))
        self.end_headers()
        self.wfile.write(body)

    def _json(self, payload, status: int = 200) -> None:
        self._send(status, json.dumps(payload).encode())

    def do_GET(self):  # noqa: N802 (http.server's name)
        if self.path.startswith("/silent-all/"):
            self.stop.wait(60)
            return
        if not self.path.endswith("/v1/models"):
            self._json({"detail": "Not Found"}, 404)
            return
        self._json({"object": "list", "data": [{"id": "fake", "object": "model"}]})

    def do_POST(self):  # noqa: N802
        self.rfile.read(int(self.headers["Content-Length"]))
        mode = self.path.split("/")[1]
        calls = self.calls[mode] = self.calls.get(mode, 0) + 1
        if mode == "ok":
            self._json(GOOD)
        elif mode == "seedless":  # a new word every time, whatever the seed
            self._json(reply(choices=[{"index": 0, "text": f"word{calls}", "finish_reason": "stop"}]))
        elif mode == "trickle":  # a byte a second
            body = json.dumps(GOOD).encode()
            self._send(200, b"", length=len(body))
            for byte in body:
                if self.stop.wait(1.0):
                    return
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
        elif mode == "silent":
            self.stop.wait(60)
        elif mode == "late":  # headers after 1.5 s, then nothing
            if not self.stop.wait(1.5):
                self._send(200, b"", length=100)
                self.stop.wait(60)
        elif mode == "http500":
            self._json({"error": "engine dead"}, status=500)
        elif mode == "flaky":  # one 503, then a good reply
            self._json({"error": "busy"}, status=503) if calls == 1 else self._json(GOOD)
        elif mode == "http400":
            self._json({"object": "error", "message": "This model's maximum context length is 4096 tokens"}, 400)
        elif mode == "badjson":
            self._send(200, b"<html>gateway</html>")
        elif mode == "nochoices":
            self._json(reply(choices=[]))
        elif mode == "nulltext":
            self._json(reply(choices=[{"index": 0, "text": None, "finish_reason": "stop"}]))
        elif mode == "nousage":
            self._json(reply(usage=None))

    def log_message(self, *args):
        pass


class QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        pass  # a client that gave up on a trickling reply: the broken pipe is the point


@pytest.fixture(scope="module")
def server():
    Handler.calls, Handler.stop = {}, threading.Event()
    httpd = QuietServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield lambda mode: f"http://127.0.0.1:{httpd.server_address[1]}/{mode}/v1"
    Handler.stop.set()
    httpd.shutdown()


def generator(url: str, **options) -> OpenAICompletionsGenerator:
    return OpenAICompletionsGenerator(url, "fake", TOKENIZER, options.pop("sampling", GREEDY), **options)


REQUEST = StepRequest("p7", "Start at 3.", ("1) 3 + 1 = 4",))


def test_a_good_reply_gives_the_step_and_its_tokens(server):
    step = generator(server("ok")).propose([REQUEST])[0]
    assert step.text == "1) 3 + 4 = 7" and step.tokens == 7 and not step.finished and not step.truncated
    assert step.mean_logprob == pytest.approx(-0.5)   # the mean of the sampled tokens' log-probabilities


def test_a_reply_without_logprobs_leaves_the_confidence_unknown():
    assert _mean_logprob(None) is None and _mean_logprob({"tokens": []}) is None
    assert _mean_logprob({"token_logprobs": [None, -1.0, -3.0]}) == pytest.approx(-2.0)  # a null entry is skipped


@pytest.mark.parametrize("mode", ["trickle", "silent", "late"])
def test_one_deadline_bounds_a_request_whose_reply_trickles_stalls_or_never_comes(server, mode):
    slow = generator(server(mode), timeout=2, retries=2)
    start = time.monotonic()
    with pytest.raises(ServerError, match=r"no complete reply within the 2 s allowed") as caught:
        slow.propose([REQUEST])
    assert time.monotonic() - start < 2.5  # a byte a second would take 200 s; a silent server, forever
    assert "127.0.0.1" in str(caught.value) and "problem 'p7', step 2" in str(caught.value)


def test_a_silent_server_fails_at_start_within_the_deadline(server):
    start = time.monotonic()
    with pytest.raises(ServerError, match="no OpenAI-compatible server answers"):
        generator(server("silent-all"), timeout=2)
    assert time.monotonic() - start < 5


def test_server_errors_are_retried_within_the_deadline_then_named(server):
    assert generator(server("flaky"), retries=1).propose([REQUEST])[0].tokens == 7
    assert Handler.calls["flaky"] == 2  # the 503, then the retry that succeeded
    before = Handler.calls.get("http500", 0)
    with pytest.raises(ServerError, match=r"problem 'p7', step 2 failed \(3 tries .*HTTP 500: .*engine dead"):
        generator(server("http500"), retries=2).propose([REQUEST])
    assert Handler.calls["http500"] - before == 3


@pytest.mark.parametrize("mode, message", [
    ("http400", r"refused with HTTP 400: .*maximum context length"),
    ("badjson", r"not JSON: '<html>gateway</html>'"),
    ("nochoices", r"without choices"),
    ("nulltext", r"with no text \(text=None\)"),
    ("nousage", r"without usage.completion_tokens .*cost would be unknown"),
])
def test_a_reply_the_engine_cannot_use_is_one_clear_error_naming_server_and_request(server, mode, message):
    before = Handler.calls.get(mode, 0)
    with pytest.raises(ServerError, match=message) as caught:
        generator(server(mode), retries=3).propose([REQUEST])
    assert f"127.0.0.1:{server(mode).split(':')[2].split('/')[0]}/{mode}/v1" in str(caught.value)
    assert "problem 'p7', step 2" in str(caught.value)
    assert Handler.calls[mode] - before == 1  # not retried: the same request would fail the same way


def test_a_server_that_ignores_seeds_is_refused(server):
    sampled = generator(server("seedless"), sampling=testbed.SAMPLING["weak"])
    with pytest.raises(ServerError, match="ignores per-request seeds"):
        sampled.propose([StepRequest("p", "question")])
    steps = generator(server("seedless")).propose([StepRequest(f"p{i}", "question") for i in range(3)])
    assert len(steps) == 3 and all(s.text.startswith("word") and s.tokens == 7 for s in steps)


def test_bad_settings_are_refused_before_any_request():
    with pytest.raises(ValueError, match="timeout must be positive"):
        OpenAICompletionsGenerator("http://127.0.0.1:9/v1", "m", TOKENIZER, timeout=0)
    with pytest.raises(ValueError, match="must start with http"):
        OpenAICompletionsGenerator("127.0.0.1:8000/v1", "m", TOKENIZER)


def test_a_wrong_path_or_key_is_named_as_such(server):
    with pytest.raises(ServerError, match=r"HTTP 404.*does the URL end in /v1\?"):
        generator(server("ok").replace("/v1", "/nowhere"))


def test_many_requests_run_concurrently_and_keep_their_order(server):
    requests = [StepRequest(f"p{i}", "Start at 3.") for i in range(40)]
    with generator(server("ok"), concurrency=8) as many:
        assert [s.tokens for s in many.propose(requests)] == [7] * 40
