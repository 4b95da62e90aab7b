"""Caches for generations and PRM scores, so that a sweep pays once for every shared prefix.

A step is keyed by the generator's name, sampling settings, seeds and its `cache_key` (for the
transformers backend the *rendered prompt*, which pins the prompt template, the problem and the
accepted prefix); PRM scores by the PRM's name and the (question, steps). Because sampling is seeded
per (problem, prefix, model), a cached step is exactly the step the model would produce again: the
cache changes cost, never results."""

from __future__ import annotations

import dataclasses
import json
from typing import Sequence

from trim.engine import check_proposals, check_rows, check_score_row
from trim.hashing import join_key, stable_digest
from trim.protocols import StepProposal, StepRequest


def _first_misses(keys: Sequence[str], store: dict) -> dict[str, int]:
    """Each uncached key with the position of its first request (duplicates in a batch are asked once)."""
    first: dict[str, int] = {}
    for i, key in enumerate(keys):
        if key not in store:
            first.setdefault(key, i)
    return first


class CachedGenerator:
    """A `Generator` in front of another: counts hits and misses and asks the model only for misses."""

    def __init__(self, generator, store: dict | None = None):
        self.generator = generator
        self.name, self.sampling, self.seed = generator.name, generator.sampling, generator.seed
        self.fingerprint = getattr(generator, "fingerprint", None)
        self.store = {} if store is None else store
        self.hits = self.misses = 0
        self.decoded_tokens = 0   # tokens the model actually decoded (misses only)
        self._sampling_key = json.dumps(dataclasses.asdict(self.sampling), sort_keys=True)

    def cache_key(self, request: StepRequest) -> str:
        return stable_digest(join_key(self.name, self.fingerprint, self._sampling_key, self.seed, request.seed,
                                      request.problem_id, self.generator.cache_key(request)))

    def propose(self, requests: Sequence[StepRequest]) -> list[StepProposal]:
        keys = [self.cache_key(r) for r in requests]
        first = _first_misses(keys, self.store)
        unique = list(first)
        asked = [requests[first[k]] for k in unique]
        # The engine's checks, here where a wrong row count would first do harm: a missing or extra proposal
        # would file every later step under another problem's key.
        for key, proposal in zip(unique, check_proposals(self.generator.propose(asked), asked, self.generator)):
            self.store[key] = proposal
            self.decoded_tokens += proposal.tokens
        self.misses += len(unique)
        self.hits += len(requests) - len(unique)
        return [self.store[k] for k in keys]


class CachedPRM:
    def __init__(self, prm, store: dict | None = None):
        self.prm, self.name = prm, prm.name
        self.fingerprint = getattr(prm, "fingerprint", None)
        self.store = {} if store is None else store
        self.hits = self.misses = 0

    def score(self, questions: Sequence[str], steps: Sequence[Sequence[str]]) -> list[list[float]]:
        keys = [stable_digest(join_key(self.name, self.fingerprint, q, *s)) for q, s in zip(questions, steps)]
        where = _first_misses(keys, self.store)
        todo = list(where)
        scored = self.prm.score([questions[where[k]] for k in todo], [steps[where[k]] for k in todo]) if todo else []
        scored = check_rows(scored, len(todo), self.prm, "score rows")
        for k, (key, scores) in enumerate(zip(todo, scored)):
            question = questions[where[key]]
            self.store[key] = check_score_row(scores, question[:40] + ("..." if len(question) > 40 else ""),
                                         len(steps[where[key]]), k, len(todo), self.prm)
        self.misses += len(todo)
        self.hits += len(keys) - len(todo)
        return [list(self.store[k]) for k in keys]
