"""A step generator for any OpenAI-compatible server (vLLM serve, SGLang, llama.cpp's server).

The prompt is rendered here, with the model's own chat template (`trim.backends.prompts`), and sent to
the *completions* endpoint, as the official release does: the server continues the assistant turn
instead of opening a new one. By default the prompt travels as token ids, so the server runs exactly
the tokens the transformers and vLLM backends would; `prompt_format="text"` sends the text for servers
that only take strings. Requests run concurrently, each with its own seed (`request_seed`, as every
backend derives it), a timeout, and retries with exponential backoff (the `openai` client's own).

At start the server is asked which models it serves, so a server that is down or serves another model
fails at once with a message that says so; the first batch checks that the server honours seeds
(two identical seeded requests must agree), because a server that ignores them makes traces
irreproducible and breaks the caches' promise that a prefix always gets the same next step."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

from trim.backends.prompts import chat_prompt, load_tokenizer
from trim.protocols import STEP_DELIMITER, SamplingParams, StepProposal, StepRequest, request_seed


class ServerError(ConnectionError):
    """The server is unreachable, serves another model, or breaks a promise the engine relies on."""


def _client(base_url: str, api_key: str, timeout: float, retries: int):
    try:
        import openai
    except ImportError:
        raise ImportError("the OpenAI-compatible backend needs the `openai` package: pip install openai") from None
    return openai, openai.OpenAI(base_url=base_url, api_key=api_key, timeout=timeout, max_retries=retries)


class OpenAICompletionsGenerator:
    """Next steps from an OpenAI-compatible completions endpoint, one request per prefix."""

    def __init__(self, base_url: str, model: str, tokenizer, sampling: SamplingParams = SamplingParams(),
                 name: str | None = None, seed: int = 0, system_prompt: str | None = None, concurrency: int = 16,
                 timeout: float = 120.0, retries: int = 3, api_key: str = "EMPTY", prompt_format: str = "tokens",
                 check_seeds: bool = True):
        if prompt_format not in ("tokens", "text"):
            raise ValueError(f"prompt_format must be 'tokens' or 'text', got {prompt_format!r}")
        self.base_url, self.model = base_url.rstrip("/"), model
        self.name = name or model.rstrip("/").split("/")[-1]
        self.sampling, self.seed, self.system_prompt = sampling, seed, system_prompt
        self.concurrency, self.prompt_format = concurrency, prompt_format
        self.tokenizer = load_tokenizer(tokenizer) if isinstance(tokenizer, (str, Path)) else tokenizer
        self._openai, self.client = _client(self.base_url, api_key, timeout, retries)
        self._seeds_checked = not check_seeds or sampling.temperature == 0  # greedy needs no seed
        served = self._served_models()
        if model not in served:
            raise ServerError(f"the server at {self.base_url} serves {', '.join(served) or 'no model'}, not "
                              f"{model!r}; pass one of those names (vLLM: the --served-model-name or model path)")

    def _served_models(self) -> list[str]:
        try:
            return [m.id for m in self.client.models.list().data]
        except self._openai.APIConnectionError as error:
            raise ServerError(f"no OpenAI-compatible server answers at {self.base_url} ({error.__cause__ or error}); "
                              "start one (e.g. `vllm serve <model dir> --port 8000`) or fix the URL") from None

    def prompt(self, request: StepRequest) -> str:
        return chat_prompt(self.tokenizer, request.question, request.steps, self.system_prompt)

    cache_key = prompt

    def _complete(self, request: StepRequest, seed: int | None = None, max_tokens: int | None = None) -> StepProposal:
        s = self.sampling
        text = self.prompt(request)
        prompt = self.tokenizer(text, add_special_tokens=False).input_ids if self.prompt_format == "tokens" else text
        extra = {"skip_special_tokens": True}
        if s.top_k > 0:
            extra["top_k"] = s.top_k
        try:
            response = self.client.completions.create(
                model=self.model, prompt=prompt, max_tokens=max_tokens or s.max_step_tokens,
                temperature=s.temperature, top_p=s.top_p, stop=[STEP_DELIMITER],
                seed=request_seed(self.seed, self.name, request) % 2**63 if seed is None else seed,
                extra_body=extra)
        except self._openai.APIConnectionError as error:
            raise ServerError(f"lost the server at {self.base_url} ({error.__cause__ or error})") from None
        except self._openai.NotFoundError as error:
            raise ServerError(f"the server at {self.base_url} does not know model {self.model!r}: {error}") from None
        choice = response.choices[0]
        # vLLM reports the matched stop string in `stop_reason`; None with "stop" is the model's end of text.
        stop_reason = getattr(choice, "stop_reason", STEP_DELIMITER)
        return StepProposal(text=choice.text.split(STEP_DELIMITER)[0].strip(),
                            tokens=response.usage.completion_tokens if response.usage else 0,
                            finished=choice.finish_reason == "stop" and stop_reason is None,
                            truncated=choice.finish_reason == "length")

    def check_seeds(self, request: StepRequest) -> None:
        """Two requests with one seed must agree; otherwise the server ignores seeds (refused)."""
        first, second = (self._complete(request, seed=12345, max_tokens=32) for _ in range(2))
        if first.text != second.text:
            raise ServerError(f"the server at {self.base_url} ignores per-request seeds (one seed gave "
                              f"{first.text!r} and {second.text!r}); traces would not be reproducible. Use a "
                              "server that honours `seed` (vLLM does), or greedy decoding (temperature 0)")
        self._seeds_checked = True

    def propose(self, requests: Sequence[StepRequest]) -> list[StepProposal]:
        if not requests:
            return []
        if not self._seeds_checked:
            self.check_seeds(requests[0])
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(requests))) as pool:
            return list(pool.map(self._complete, requests))
