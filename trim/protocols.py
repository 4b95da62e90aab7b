"""The roles of step-level routing, as protocols any backend can fill.

A `Generator` proposes the next step for a batch of prefixes, a `PRM` scores the steps of a batch of
prefixes; the third role, the `Policy`, lives in `trim.policies`. The transformers backends live in
`trim.backends.transformers`; a vLLM engine or an OpenAI-compatible server fits the same shapes because
a request carries plain text (question, accepted steps) and a seed, nothing framework-specific.
"""

from __future__ import annotations

import dataclasses
from typing import Protocol, Sequence, runtime_checkable

from trim.hashing import join_key, stable_int

# Steps end at a blank line, as real chain-of-thought does (vLLM `stop=["\n\n"]`).
STEP_DELIMITER = "\n\n"


@dataclasses.dataclass(frozen=True)
class SamplingParams:
    """How a generator samples. Recorded with every result.

    The defaults are the official release's (temperature 0.7, top-p 0.8, top-k 20); the testbed uses
    untruncated sampling (see `trim.testbed.SAMPLING`) because its models were trained to be calibrated."""

    temperature: float = 0.7
    top_p: float = 0.8
    top_k: int = 20
    max_step_tokens: int = 512

    def __post_init__(self):
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0 (0 means greedy), got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0 (0 disables it), got {self.top_k}")
        if self.max_step_tokens < 1:
            raise ValueError(f"max_step_tokens must be >= 1, got {self.max_step_tokens}")


@dataclasses.dataclass(frozen=True)
class StepRequest:
    """Propose step number len(steps)+1 of `question` after the accepted `steps`; `seed` is the run's."""

    problem_id: str
    question: str
    steps: tuple[str, ...] = ()
    seed: int = 0


@dataclasses.dataclass(frozen=True)
class StepProposal:
    text: str          # the step without its delimiter
    tokens: int        # tokens the model decoded for it (the cost unit)
    finished: bool     # the model ended the solution (EOS) rather than the step
    truncated: bool    # hit max_step_tokens before a delimiter
    # The model's confidence in its step: the mean log-probability of the decoded tokens under its own raw
    # distribution (temperature 1, no top-p/top-k), as vLLM reports logprobs. None: the backend cannot say.
    mean_logprob: float | None = None


def request_seed(generator_seed: int, model: str, request: StepRequest) -> int:
    """A seed per (run seed, generator seed, model, problem, prefix).

    The same prefix always gets the same continuation, so two policies that share a prefix share what
    follows it, and a cache keyed the same way is exact. The two seeds are kept apart in the key, so
    (run 1, generator 0) and (run 0, generator 1) sample differently; generator seed 0 adds nothing, so
    every trace written with it stays reproducible."""
    seeds = str(request.seed) if generator_seed == 0 else f"{request.seed}/{generator_seed}"
    return stable_int(join_key(seeds, model, request.problem_id, request.question, *request.steps))


@runtime_checkable
class Generator(Protocol):
    """Everything the engine and the caches use: a name, sampling settings, a seed, a cache key, steps."""

    name: str
    sampling: SamplingParams
    seed: int

    def cache_key(self, request: StepRequest) -> str:
        """What, besides name, sampling and seeds, determines the step: usually the rendered prompt."""

    def propose(self, requests: Sequence[StepRequest]) -> list[StepProposal]:
        """The next step for every request, sampled with `request_seed(self.seed, self.name, request)`."""


@runtime_checkable
class PRM(Protocol):
    name: str

    def score(self, questions: Sequence[str], steps: Sequence[Sequence[str]]) -> list[list[float]]:
        """P(step is correct) for every step of every prefix, in [0, 1]."""
