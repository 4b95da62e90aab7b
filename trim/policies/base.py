"""What a routing policy sees and returns: one base class, one decision method (RouteLLM's shape).

A policy sees an `Observation` of the weak candidate step and decides whether the strong model should
rewrite it. Everything a policy may use is in the observation, so policies are pure and testable, and
the engine writes each observation and decision into the trace, so a learner (PPO) can rebuild its
rollouts from engine runs."""

from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence

from trim.hashing import bytes_digest


@dataclasses.dataclass(frozen=True)
class Observation:
    problem_id: str
    step_index: int                 # 1-based index of the candidate step
    score: float | None             # PRM score r_t of the weak candidate (None: no PRM was asked)
    previous_scores: tuple[float, ...]  # r_1..r_{t-1} of the accepted steps
    tokens: int                     # tokens of the weak candidate
    strong_tokens: int              # strong tokens spent on this problem so far
    weak_tokens: int                # weak tokens decoded for this problem so far
    # What a sequence policy (TRIM-Seq) reads of each accepted step besides its score: its tokens and
    # which model wrote it ("weak" or "strong"), in step order.
    previous_tokens: tuple[int, ...] = ()
    previous_models: tuple[str, ...] = ()
    # The weak model's confidence in the candidate: exp(mean token log-probability), in (0, 1] (0 for an
    # empty step); None when the generator reports no log-probabilities.
    confidence: float | None = None

    def record(self) -> dict:
        """The fields a trace keeps (the problem id is already on the record)."""
        fields = dataclasses.asdict(self)
        del fields["problem_id"]
        for name in ("previous_scores", "previous_tokens", "previous_models"):
            fields[name] = list(fields[name])
        return fields


@dataclasses.dataclass(frozen=True)
class Decision:
    """One decision, with what the policy wants recorded beside it (e.g. the log-probability and value
    estimate of a stochastic policy, which PPO needs from each rollout step)."""

    regenerate: bool
    info: Mapping[str, float] = dataclasses.field(default_factory=dict)


class Policy:
    """Decide continue (False) or regenerate (True) for one observation.

    Rules implement `regenerate`; a learned policy overrides `decide` to run one batched forward pass
    and return `Decision`s with extras. `uses_weak = False` tells the engine that the policy never
    keeps a weak step, so it should not ask the weak model or the PRM at all (strong-only);
    `uses_prm = False` that it never reads a score, so the PRM may be absent and is not asked (the
    confidence router), unless `records_scores` asks for the scores in the trace anyway (weak-only, whose
    traces AutoMix-PRM and the chapters read them from)."""

    name = "policy"
    uses_weak = True
    uses_prm = True
    records_scores = False

    def regenerate(self, observation: Observation) -> bool:
        raise NotImplementedError

    def decide(self, observations: Sequence[Observation]) -> list[Decision]:
        return [Decision(bool(self.regenerate(o))) for o in observations]

    def params(self) -> dict:
        """What, besides the class and name, determines the decisions: a trace resumes only on equal params."""
        return {}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in self.params().items())
        return f"{type(self).__name__}({args})"


class LearnedPolicy(Policy):
    """A policy with trained weights (a torch module in `self.model`).

    Its params carry a digest of the weights, so a trace written by other weights is never resumed."""

    model = None

    def weights_digest(self) -> str:
        state = sorted(self.model.state_dict().items())
        return bytes_digest(chunk for name, tensor in state
                            for chunk in (name.encode(), tensor.detach().cpu().contiguous().numpy().tobytes()))

    def params(self) -> dict:
        return {"weights": self.weights_digest()}
