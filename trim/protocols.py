"""The three roles of step-level routing, as protocols any backend can fill.

A `Generator` proposes the next step for a batch of prefixes, a `PRM` scores the steps of a batch of
prefixes, a `Policy` turns one observation into continue/regenerate. The transformers backends live in
`trim.backends.transformers`; a vLLM engine or an OpenAI-compatible server fits the same shapes because
a request carries plain text (question, accepted steps) and a seed, nothing framework-specific.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Protocol, Sequence, runtime_checkable

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
    """Propose step number len(steps)+1 of `question` after the accepted `steps`."""

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


def request_seed(base_seed: int, model: str, request: StepRequest) -> int:
    """A seed per (problem, prefix, model): the same prefix always gets the same continuation, so two
    policies that share a prefix share what follows it, and a cache keyed the same way is exact."""
    key = "\x1f".join([str(base_seed), model, request.problem_id, request.question, *request.steps])
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little")


@runtime_checkable
class Generator(Protocol):
    name: str
    sampling: SamplingParams

    def propose(self, requests: Sequence[StepRequest]) -> list[StepProposal]:
        """The next step for every request, sampled with its own seed."""


@runtime_checkable
class PRM(Protocol):
    name: str

    def score(self, questions: Sequence[str], steps: Sequence[Sequence[str]]) -> list[list[float]]:
        """P(step is correct) for every step of every prefix, in [0, 1]."""
