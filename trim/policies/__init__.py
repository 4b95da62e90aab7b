"""Routing policies and their registry.

`base` holds what every policy shares (`Observation`, `Decision`, `Policy`, `LearnedPolicy`), `rules`
the fixed rules. Learned policies (TRIM-Agg, TRIM-Seq) and the POMDP policy get modules of their own
beside these, and one `register` line each: the CLI's choices and `make_policy` both read `POLICIES`."""

from __future__ import annotations

import dataclasses
from typing import Callable

from trim.policies.base import Decision, LearnedPolicy, Observation, Policy
from trim.policies.rules import RSD, RandomRegeneration, StrongOnly, Threshold, WeakOnly


@dataclasses.dataclass(frozen=True)
class PolicySpec:
    """How to build a policy from the command line: its knob (a value in [0, 1]), if it has one."""

    build: Callable[[float | None, int], Policy]   # (knob value, seed) -> policy
    help: str
    knob: str | None = None          # the CLI option that sets the value, e.g. "k" for --k
    default: float | None = None     # the knob's default on the command line


POLICIES: dict[str, PolicySpec] = {}


def register(name: str, spec: PolicySpec) -> None:
    if name in POLICIES:
        raise ValueError(f"policy {name!r} is already registered")
    POLICIES[name] = spec


register("weak-only", PolicySpec(lambda value, seed: WeakOnly(), "the weak model writes every step"))
register("strong-only", PolicySpec(lambda value, seed: StrongOnly(), "the strong model writes every step"))
register("thr", PolicySpec(lambda k, seed: Threshold(k), "TRIM-Thr: regenerate iff the PRM score < k",
                           knob="k", default=0.5))
register("rsd", PolicySpec(lambda value, seed: RSD(), "reward-guided speculative decoding (TRIM-Thr, k = 0.7)"))
register("random", PolicySpec(lambda rate, seed: RandomRegeneration(rate, seed),
                              "regenerate a random share of steps (the control)", knob="rate", default=0.2))



def _trained(kind: str):
    def build(lam: float | None, seed: int) -> Policy:
        from trim.policies.learned import trained  # torch is imported only when a learned policy is asked for

        return trained(kind, lam)
    return build


register("agg", PolicySpec(_trained("agg"), "TRIM-Agg: PPO policy on five aggregate features, trained for lambda "
                           "(data/policies/agg)", knob="lam"))
register("seq", PolicySpec(_trained("seq"), "TRIM-Seq: PPO policy reading the whole prefix (transformer encoder), "
                           "trained for lambda (data/policies/seq)", knob="lam"))


def make_policy(name: str, value: float | None = None, seed: int = 0) -> Policy:
    """A policy from its registered name; `value` sets its knob (k for thr, rate for random)."""
    if name not in POLICIES:
        raise ValueError(f"unknown policy {name!r}; choose one of {', '.join(POLICIES)}")
    spec = POLICIES[name]
    if spec.knob is not None and value is None:
        raise ValueError(f"policy {name!r} needs a value: --{spec.knob}")
    return spec.build(value, seed)


__all__ = ["POLICIES", "Decision", "LearnedPolicy", "Observation", "Policy", "PolicySpec", "RSD",
           "RandomRegeneration", "StrongOnly", "Threshold", "WeakOnly", "make_policy", "register"]
