"""Routing policies: one base class, one decision method (RouteLLM's shape).

A policy sees an `Observation` of the candidate step and decides whether the strong model should
rewrite it. Everything a policy may use is in the observation, so policies are pure and testable."""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Sequence


@dataclasses.dataclass(frozen=True)
class Observation:
    problem_id: str
    step_index: int                 # 1-based index of the candidate step
    score: float                    # PRM score r_t of the weak candidate
    previous_scores: tuple[float, ...]  # r_1..r_{t-1} of the accepted steps
    tokens: int                     # tokens of the weak candidate
    strong_tokens: int              # strong tokens spent on this problem so far
    weak_tokens: int                # weak tokens decoded for this problem so far


class Policy:
    """Decide continue (False) or regenerate (True) for one observation.

    `uses_weak = False` tells the engine that the policy never keeps a weak step, so it should not ask
    the weak model or the PRM at all (strong-only)."""

    name = "policy"
    uses_weak = True

    def regenerate(self, observation: Observation) -> bool:
        raise NotImplementedError

    def regenerate_batch(self, observations: Sequence[Observation]) -> list[bool]:
        """Batched decisions; learned policies override this to run one forward pass."""
        return [self.regenerate(o) for o in observations]

    def params(self) -> dict:
        return {}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in self.params().items())
        return f"{type(self).__name__}({args})"


class WeakOnly(Policy):
    name = "weak-only"

    def regenerate(self, observation: Observation) -> bool:
        return False


class StrongOnly(Policy):
    """The strong model writes every step; nothing is proposed by the weak model."""

    name = "strong-only"
    uses_weak = False

    def regenerate(self, observation: Observation) -> bool:
        return True


class Threshold(Policy):
    """TRIM-Thr: regenerate iff r_t < k. k = 0 is weak-only, k = 1 regenerates every step."""

    def __init__(self, k: float, name: str | None = None):
        if not 0.0 <= k <= 1.0:
            raise ValueError(f"threshold k must be in [0, 1], got {k}")
        self.k = float(k)
        self.name = name or f"TRIM-Thr(k={self.k:g})"

    def regenerate(self, observation: Observation) -> bool:
        return observation.score < self.k

    def params(self) -> dict:
        return {"k": self.k}


def RSD(k: float = 0.7) -> Threshold:
    """Reward-guided speculative decoding (Liao et al. 2025): TRIM-Thr with its fixed k = 0.7."""
    return Threshold(k, name="RSD")


class RandomRegeneration(Policy):
    """Regenerate each step with probability `rate`, ignoring the PRM: the control that shows what
    the PRM's targeting is worth at a matched regeneration rate. Deterministic per (seed, problem, step)."""

    def __init__(self, rate: float, seed: int = 0):
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"rate must be in [0, 1], got {rate}")
        self.rate, self.seed = float(rate), seed
        self.name = f"random(rate={self.rate:.3g})"

    def regenerate(self, observation: Observation) -> bool:
        key = f"{self.seed}\x1f{observation.problem_id}\x1f{observation.step_index}".encode()
        u = int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little") / 2**64
        return u < self.rate

    def params(self) -> dict:
        return {"rate": self.rate, "seed": self.seed}


def make_policy(name: str, value: float | None = None, seed: int = 0) -> Policy:
    """A policy from its CLI name: weak-only, strong-only, thr (k), rsd, random (rate)."""
    if name == "weak-only":
        return WeakOnly()
    if name == "strong-only":
        return StrongOnly()
    if name == "rsd":
        return RSD()
    if name in ("thr", "random"):
        if value is None:
            raise ValueError(f"policy {name!r} needs a value: --k for thr, --rate for random")
        return Threshold(value) if name == "thr" else RandomRegeneration(value, seed)
    raise ValueError(f"unknown policy {name!r}; choose weak-only, strong-only, thr, rsd or random")
