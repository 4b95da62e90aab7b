"""A step generator for any OpenAI-compatible server (vLLM serve, SGLang, llama.cpp's server).

The prompt is rendered here, with the model's own chat template (`trim.backends.prompts`), and sent to
the *completions* endpoint, as the official release does: the server continues the assistant turn
instead of opening a new one. By default the prompt travels as token ids, so the server runs exactly
the tokens the transformers and vLLM backends would; `prompt_format="text"` sends the text for servers
that only take strings. Requests run concurrently, each with its own seed (`request_seed`, as every
backend derives it).

**One deadline per request.** `timeout` bounds a request from its first byte sent to its last byte
read, retries included. HTTP clients time each socket operation separately (the `openai` client too,
whose retries then multiply that), so a server that trickles a byte a second, or never answers, would
hang a run. Here each request is a coroutine on the generator's own event loop (a daemon thread, so it
works under Jupyter's running loop too) and runs under `asyncio.wait_for` with what is left of its
deadline: it is cancelled wherever it waits. Connection failures, 408, 429 and 5xx are retried with
exponential backoff (or the server's `Retry-After`) while time is left. Every other failure is one
`ServerError` that names the server and the request: an HTTP error with the server's message, a body
that is not JSON, a reply with no choices, no text or no `usage` (a reply without token counts would
silently cost nothing).

At start the server is asked which models it serves, so a server that is down or serves another model
fails at once with a message that says so; the first batch checks that the server honours seeds
(two identical seeded requests must agree), because a server that ignores them makes traces
irreproducible and breaks the caches' promise that a prefix always gets the same next step."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path
from typing import Sequence

from trim.backends.prompts import chat_prompt, load_tokenizer
from trim.protocols import STEP_DELIMITER, SamplingParams, StepProposal, StepRequest, request_seed

RETRY_STATUS = {408, 429, 500, 502, 503, 504}


def _mean_logprob(logprobs) -> float | None:
    """The mean of a completion's `logprobs.token_logprobs` (OpenAI's completions format); None when the server
    sent none, so a policy that needs confidence says so rather than reading a made-up value."""
    values = logprobs.get("token_logprobs") if isinstance(logprobs, dict) else None
    if not isinstance(values, list):
        return None
    values = [float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return sum(values) / len(values) if values else None


class ServerError(ConnectionError):
    """The server is unreachable, too slow, serves another model, or answers what the engine cannot use."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status  # the HTTP status, when the server answered with an error


class _Retry(Exception):
    """A failure worth another try while the deadline allows (connection lost, 408, 429, 5xx)."""

    def __init__(self, message: str, after: float = 0.0):
        super().__init__(message)
        self.after = after  # the server's Retry-After, in seconds


class _Loop:
    """An asyncio event loop on a daemon thread, so requests can be cancelled at their deadline from any
    caller, Jupyter's running loop included."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, name="trim-openai", daemon=True).start()

    def run(self, coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result()

    def close(self):
        self.loop.call_soon_threadsafe(self.loop.stop)


def _httpx():
    try:
        import httpx
    except ImportError:
        raise ImportError("the OpenAI-compatible backend needs `httpx`: pip install httpx") from None
    return httpx


class OpenAICompletionsGenerator:
    """Next steps from an OpenAI-compatible completions endpoint, one request per prefix."""

    def __init__(self, base_url: str, model: str, tokenizer, sampling: SamplingParams = SamplingParams(),
                 name: str | None = None, seed: int = 0, system_prompt: str | None = None, concurrency: int = 16,
                 timeout: float = 120.0, retries: int = 3, api_key: str = "EMPTY", prompt_format: str = "tokens",
                 check_seeds: bool = True):
        if prompt_format not in ("tokens", "text"):
            raise ValueError(f"prompt_format must be 'tokens' or 'text', got {prompt_format!r}")
        if not timeout > 0 or retries < 0 or concurrency < 1:
            raise ValueError(f"timeout must be positive, retries at least 0 and concurrency at least 1, got "
                             f"{timeout}, {retries} and {concurrency}")
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must start with http:// or https://, got {base_url!r} (e.g. "
                             "http://127.0.0.1:8000/v1)")
        self.base_url, self.model = base_url.rstrip("/"), model
        self.name = name or model.rstrip("/").split("/")[-1]
        self.fingerprint = f"served:{self.base_url}:{model}"   # the server's weights are out of sight
        self.sampling, self.seed, self.system_prompt = sampling, seed, system_prompt
        self.concurrency, self.prompt_format = concurrency, prompt_format
        self.timeout, self.retries, self.api_key = timeout, retries, api_key
        self.tokenizer = load_tokenizer(tokenizer) if isinstance(tokenizer, (str, Path)) else tokenizer
        self._http, self._loop, self._client = _httpx(), _Loop(), None
        self._seeds_checked = not check_seeds or sampling.temperature == 0  # greedy needs no seed
        try:
            served = self._served_models()
        except BaseException:
            self.close()
            raise
        if model not in served:
            self.close()
            raise ServerError(f"the server at {self.base_url} serves {', '.join(served) or 'no model'}, not "
                              f"{model!r}; pass one of those names (vLLM: the --served-model-name or model path)")

    def close(self) -> None:
        """Close the connections and stop the event loop (also done when the generator is collected)."""
        if self._loop is None:
            return
        if self._client is not None:
            self._loop.run(self._client.aclose())
        self._loop.close()
        self._loop = self._client = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        # Only stop the loop: waiting for it here could deadlock if the collector runs on the loop's thread.
        if getattr(self, "_loop", None) is not None:
            self._loop.close()

    # ---- HTTP: one deadline per request, retries inside it ----

    async def _request(self, method: str, path: str, what: str, payload: dict | None = None) -> dict:
        """The JSON reply to one request, within `timeout` seconds in all; `ServerError` naming `what` if not."""
        start = time.monotonic()
        deadline, attempt = start + self.timeout, 0
        while True:
            try:
                return await asyncio.wait_for(self._attempt(method, path, what, payload),
                                              max(0.0, deadline - time.monotonic()))
            except asyncio.TimeoutError:
                raise ServerError(f"{self.base_url}: {what} got no complete reply within the {self.timeout:g} s "
                                  "allowed (the server is stuck, overloaded or trickling its reply; raise "
                                  "`timeout` if it is merely slow)") from None
            except _Retry as error:
                attempt += 1
                pause = max(min(0.5 * 2 ** (attempt - 1), 8.0), error.after)
                if attempt > self.retries or time.monotonic() + pause >= deadline:
                    tries = f"{attempt} {'try' if attempt == 1 else 'tries'}"
                    raise ServerError(f"{self.base_url}: {what} failed ({tries} in {time.monotonic() - start:.1f} s"
                                      f" of the {self.timeout:g} s allowed): {error}") from None
                await asyncio.sleep(pause)

    async def _attempt(self, method: str, path: str, what: str, payload: dict | None) -> dict:
        http = self._http
        if self._client is None:  # made here, on the loop that uses it
            self._client = http.AsyncClient(headers={"Authorization": f"Bearer {self.api_key}"}, timeout=None,
                                            follow_redirects=True,
                                            limits=http.Limits(max_connections=self.concurrency))
        try:
            response = await self._client.request(method, f"{self.base_url}{path}", json=payload)
        except http.TransportError as error:  # refused, reset, DNS: the server may be restarting
            raise _Retry(f"{type(error).__name__}: {error or 'connection failed'}") from None
        except http.HTTPError as error:  # a reply httpx cannot decode, too many redirects, ...
            raise ServerError(f"{self.base_url}: {what} failed: {type(error).__name__}: {error}") from None
        text = response.text
        if response.status_code in RETRY_STATUS:
            after = response.headers.get("Retry-After", "")
            raise _Retry(f"HTTP {response.status_code}: {text[:300]}", float(after) if after.isdigit() else 0.0)
        if response.status_code >= 400:
            raise ServerError(f"{self.base_url}: {what} was refused with HTTP {response.status_code}: {text[:500]}",
                              status=response.status_code)
        try:
            reply = json.loads(text)
        except ValueError:
            raise ServerError(f"{self.base_url}: {what} got a reply that is not JSON: {text[:200]!r}") from None
        if not isinstance(reply, dict):
            raise ServerError(f"{self.base_url}: {what} got JSON that is not an object: {text[:200]!r}")
        return reply

    def _served_models(self) -> list[str]:
        try:
            reply = self._loop.run(self._request("GET", "/models", "listing the served models"))
        except ServerError as error:
            if error.status is None:
                raise ServerError(f"no OpenAI-compatible server answers at {self.base_url} ({error}); start one "
                                  "(e.g. `vllm serve <model dir> --port 8000`) or fix the URL") from None
            hint = {401: "check api_key", 403: "check api_key", 404: "does the URL end in /v1?"}
            raise ServerError(f"{error}; {hint.get(error.status, 'is this an OpenAI-compatible server?')}",
                              status=error.status) from None
        data = reply.get("data")
        if not isinstance(data, list) or not all(isinstance(m, dict) and "id" in m for m in data):
            raise ServerError(f"{self.base_url}/models did not list models as an OpenAI-compatible server does: "
                              f"{json.dumps(reply)[:200]}")
        return [m["id"] for m in data]

    # ---- completions ----

    def prompt(self, request: StepRequest) -> str:
        return chat_prompt(self.tokenizer, request.question, request.steps, self.system_prompt)

    cache_key = prompt

    def _payload(self, request: StepRequest, seed: int | None = None, max_tokens: int | None = None) -> dict:
        s = self.sampling
        text = self.prompt(request)
        prompt = self.tokenizer(text, add_special_tokens=False).input_ids if self.prompt_format == "tokens" else text
        payload = {"model": self.model, "prompt": prompt, "max_tokens": max_tokens or s.max_step_tokens,
                   "temperature": s.temperature, "top_p": s.top_p, "stop": [STEP_DELIMITER],
                   "seed": request_seed(self.seed, self.name, request) % 2**63 if seed is None else seed,
                   "skip_special_tokens": True, "logprobs": 0}   # 0: only the sampled tokens' log-probabilities
        if s.top_k > 0:
            payload["top_k"] = s.top_k
        return payload

    async def _complete(self, request: StepRequest, payload: dict, slots: asyncio.Semaphore) -> StepProposal:
        what = f"the completion of problem {request.problem_id!r}, step {len(request.steps) + 1}"
        async with slots:
            reply = await self._request("POST", "/completions", what, payload)
        choices = reply.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            raise ServerError(f"{self.base_url}: {what} came back without choices: {json.dumps(reply)[:300]}")
        choice = choices[0]
        if not isinstance(choice.get("text"), str):
            raise ServerError(f"{self.base_url}: {what} came back with no text (text={choice.get('text')!r})")
        usage = reply.get("usage")
        tokens = usage.get("completion_tokens") if isinstance(usage, dict) else None
        if not isinstance(tokens, int) or tokens < 0:
            raise ServerError(f"{self.base_url}: {what} came back without usage.completion_tokens (usage={usage!r}):"
                              " the step's cost would be unknown; use a server that reports usage (vLLM does)")
        # vLLM reports the matched stop string in `stop_reason`; None with "stop" is the model's end of text.
        stop_reason = choice.get("stop_reason", STEP_DELIMITER)
        finish = choice.get("finish_reason")
        return StepProposal(text=choice["text"].split(STEP_DELIMITER)[0].strip(), tokens=tokens,
                            finished=finish == "stop" and stop_reason is None, truncated=finish == "length",
                            mean_logprob=_mean_logprob(choice.get("logprobs")))

    async def _all(self, jobs: list[tuple[StepRequest, dict]]) -> list[StepProposal]:
        """Every request concurrently (at most `concurrency` at once); the first failure cancels the rest."""
        slots = asyncio.Semaphore(self.concurrency)
        tasks = [asyncio.ensure_future(self._complete(request, payload, slots)) for request, payload in jobs]
        done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for task in pending:
            task.cancel()
        failed = [task for task in tasks if task in done and task.exception() is not None]
        if failed:
            await asyncio.gather(*pending, return_exceptions=True)
            raise failed[0].exception()
        return [task.result() for task in tasks]

    def check_seeds(self, request: StepRequest) -> None:
        """Two requests with one seed must agree; otherwise the server ignores seeds (refused)."""
        payload = self._payload(request, seed=12345, max_tokens=32)
        first, second = (self._loop.run(self._all([(request, payload)]))[0] for _ in range(2))
        if first.text != second.text:
            raise ServerError(f"the server at {self.base_url} ignores per-request seeds (one seed gave "
                              f"{first.text!r} and {second.text!r}); traces would not be reproducible. Use a "
                              "server that honours `seed` (vLLM does), or greedy decoding (temperature 0)")
        self._seeds_checked = True

    def propose(self, requests: Sequence[StepRequest]) -> list[StepProposal]:
        if not requests:
            return []
        if self._loop is None:
            raise RuntimeError(f"{self.name}: this generator was closed")
        if not self._seeds_checked:
            self.check_seeds(requests[0])
        return self._loop.run(self._all([(request, self._payload(request)) for request in requests]))
