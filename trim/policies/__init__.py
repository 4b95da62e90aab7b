"""Routing policies and their registry.

`base` holds what every policy shares (`Observation`, `Decision`, `Policy`, `LearnedPolicy`), `rules`
the fixed rules. Learned policies (TRIM-Agg, TRIM-Seq) and the POMDP policy get modules of their own
beside these, and one `register` line each: the CLI's choices and `make_policy` both read `POLICIES`."""

from __future__ import annotations

import dataclasses
from typing import Callable

from trim.policies.base import Decision, LearnedPolicy, Observation, Policy
from trim.policies.rules import RSD, ConfidenceThreshold, RandomRegeneration, StrongOnly, Threshold, WeakOnly


@dataclasses.dataclass(frozen=True)
class PolicySpec:
    """How to build a policy from the command line: its knob (a value in [0, 1]), if it has one."""

    build: Callable[..., Policy]   # (knob value, seed, **options) -> policy; options: see make_policy
    help: str
    knob: str | None = None          # the CLI option that sets the value, e.g. "k" for --k
    default: float | None = None     # the knob's default on the command line


POLICIES: dict[str, PolicySpec] = {}


def register(name: str, spec: PolicySpec) -> None:
    if name in POLICIES:
        raise ValueError(f"policy {name!r} is already registered")
    POLICIES[name] = spec


register("weak-only", PolicySpec(lambda value, seed, **_: WeakOnly(), "the weak model writes every step"))
register("strong-only", PolicySpec(lambda value, seed, **_: StrongOnly(), "the strong model writes every step"))
register("thr", PolicySpec(lambda k, seed, **_: Threshold(k), "TRIM-Thr: regenerate iff the PRM score < k",
                           knob="k", default=0.5))
register("rsd", PolicySpec(lambda value, seed, **_: RSD(), "reward-guided speculative decoding (TRIM-Thr, k = 0.7)"))
register("random", PolicySpec(lambda rate, seed, **_: RandomRegeneration(rate, seed),
                              "regenerate a random share of steps (the control)", knob="rate", default=0.2))
register("confidence", PolicySpec(lambda c, seed, **_: ConfidenceThreshold(c),
                                  "regenerate iff the weak model's own confidence in its step (geometric-mean token "
                                  "probability) < c; no PRM", knob="c", default=0.99))


def _trained(kind: str):
    def build(lam: float | None, seed: int, root: str | None = None, **_) -> Policy:
        from trim.policies.learned import POLICY_DIR, trained  # torch is imported only when one is asked for

        return trained(kind, lam, POLICY_DIR if root is None else root)
    return build


register("agg", PolicySpec(_trained("agg"), "TRIM-Agg: PPO policy on five aggregate features, trained for lambda "
                           "(data/policies/agg)", knob="lam"))
register("seq", PolicySpec(_trained("seq"), "TRIM-Seq: PPO policy reading the whole prefix (transformer encoder), "
                           "trained for lambda (data/policies/seq)", knob="lam"))


def _pomdp(lam: float | None, seed: int, obs_model: str = "testbed", belief: str = "filter",
           dynamics: str = "testbed", **_) -> Policy:
    from trim.policies.pomdp import TrimPOMDP
    from trim.pomdp.model import routing_model

    return TrimPOMDP(routing_model(obs_model, dynamics), lam, belief)


register("pomdp", PolicySpec(_pomdp, "TRIM-POMDP: the routing POMDP solved for lambda in seconds (--belief filter or "
                             "release, --obs-model testbed or real: data/pomdp)", knob="lam"))


def make_policy(name: str, value: float | None = None, seed: int = 0, **options) -> Policy:
    """A policy from its registered name; `value` sets its knob (k for thr, rate for random, lambda for the
    learned and planned ones). Options a policy reads: `root`, the folder a learned policy comes from
    (default data/policies); `obs_model`, `belief` and `dynamics` for TRIM-POMDP (`trim.policies.pomdp`)."""
    if name not in POLICIES:
        raise ValueError(f"unknown policy {name!r}; choose one of {', '.join(POLICIES)}")
    spec = POLICIES[name]
    if spec.knob is not None and value is None:
        raise ValueError(f"policy {name!r} needs a value: --{spec.knob}")
    return spec.build(value, seed, **options)


__all__ = ["POLICIES", "ConfidenceThreshold", "Decision", "LearnedPolicy", "Observation", "Policy", "PolicySpec", "RSD",
           "RandomRegeneration", "StrongOnly", "Threshold", "WeakOnly", "make_policy", "register"]
