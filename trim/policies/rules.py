"""Fixed routing rules: the endpoints, TRIM-Thr, RSD, the random control and confidence routing."""

from __future__ import annotations

from trim.hashing import join_key, stable_uniform
from trim.policies.base import Observation, Policy


class WeakOnly(Policy):
    name = "weak-only"
    uses_prm = False
    records_scores = True   # its trace keeps the PRM's scores of its steps, when a PRM is given

    def regenerate(self, observation: Observation) -> bool:
        return False


class StrongOnly(Policy):
    """The strong model writes every step; nothing is proposed by the weak model."""

    name = "strong-only"
    uses_weak = False
    uses_prm = False

    def regenerate(self, observation: Observation) -> bool:
        return True


class Threshold(Policy):
    """TRIM-Thr: regenerate iff r_t < k. k = 0 is weak-only, k = 1 regenerates every step."""

    def __init__(self, k: float, name: str | None = None):
        if not 0.0 <= k <= 1.0:
            raise ValueError(f"threshold k must be in [0, 1], got {k}")
        self.k = float(k)
        # The name is the trace file's name: it keeps k whole, so that two thresholds are two traces.
        self.name = name or f"TRIM-Thr(k={self.k!r})"

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

    uses_prm = False

    def __init__(self, rate: float, seed: int = 0):
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"rate must be in [0, 1], got {rate}")
        self.rate, self.seed = float(rate), seed
        self.name = f"random(rate={self.rate!r}, seed={self.seed})"   # whole, as Threshold's

    def regenerate(self, observation: Observation) -> bool:
        return stable_uniform(join_key(self.seed, observation.problem_id, observation.step_index)) < self.rate

    def params(self) -> dict:
        return {"rate": self.rate, "seed": self.seed}


class ConfidenceThreshold(Policy):
    """Step-level routing with no PRM (in the spirit of STEER): regenerate iff the weak model's own confidence
    in its step, the geometric-mean probability of its tokens (exp of the mean token log-probability), is
    below c. It reads what the generator reports with each step, so it needs a backend with logprobs (the
    transformers, vLLM and OpenAI-compatible backends all report them)."""

    uses_prm = False

    def __init__(self, c: float):
        if not 0.0 <= c <= 1.0:
            raise ValueError(f"confidence threshold c must be in [0, 1], got {c}")
        self.c = float(c)
        self.name = f"confidence(c={self.c!r})"

    def regenerate(self, observation: Observation) -> bool:
        if observation.confidence is None:
            raise ValueError(f"step {observation.step_index} of problem {observation.problem_id!r} came without the "
                             "weak model's confidence: its backend reports no token log-probabilities (an "
                             "OpenAI-compatible server must honour `logprobs`); use a policy that reads the PRM")
        return observation.confidence < self.c

    def params(self) -> dict:
        return {"c": self.c}
