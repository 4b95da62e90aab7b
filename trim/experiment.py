"""The experiment object: one weak/strong/PRM trio behind shared caches, over any list of problems.

Every policy run through one `Harness` reuses every step and score another run already produced, and
writes its traces (resumable) under one folder; `endpoints` gives the weak-only and strong-only
results every metric is measured against."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import pandas as pd

from trim.cache import CachedGenerator, CachedPRM
from trim.engine import RunSettings, run_policies, run_policy
from trim.metrics import Endpoints, summarize
from trim.policies import Policy, StrongOnly, WeakOnly


def trace_name(policy: Policy, tag: str = "") -> str:
    """The file name of a policy's trace: its name with anything unsafe in a path replaced."""
    safe = "".join(c if c.isalnum() or c in "-_.=" else "_" for c in policy.name)
    return f"{safe}{tag}.jsonl"


class Harness:
    """The models of one experiment behind shared caches, plus the endpoints every metric needs."""

    def __init__(self, weak, strong, prm, run: RunSettings = RunSettings(), trace_dir: str | Path | None = None,
                 progress: bool | None = None):
        self.weak, self.strong, self.prm = CachedGenerator(weak), CachedGenerator(strong), CachedPRM(prm)
        self.run_settings, self.progress = run, progress
        self.trace_dir = Path(trace_dir) if trace_dir else None

    def with_prm(self, prm, trace_dir: str | Path | None = None) -> "Harness":
        """The same generators and the steps they have decoded, judged by another PRM (or, with `prm=None`,
        by this one and its cached scores), writing traces to `trace_dir`.

        Weak and strong steps depend on the prefix only, never on the PRM, so a PRM counterfactual decodes
        just the steps its own routing reaches for the first time. Traces go to `trace_dir`, not to this
        harness's folder: a trace records its PRM, and resuming under another one is refused; and runs of the
        same policies on other problems (another split) must not share a trace file either."""
        other = Harness(self.weak.generator, self.strong.generator, self.prm.prm if prm is None else prm,
                        self.run_settings, trace_dir, self.progress)
        other.weak, other.strong = self.weak, self.strong
        if prm is None:
            other.prm = self.prm
        return other

    def trace_path(self, policy: Policy, tag: str = "") -> Path | None:
        if self.trace_dir is None:
            return None
        return self.trace_dir / trace_name(policy, tag)

    def run(self, problems: Sequence, policy: Policy, tag: str = "") -> list[dict]:
        return run_policy(problems, policy, self.weak, self.strong, self.prm, self.run_settings,
                          trace_path=self.trace_path(policy, tag), progress=self.progress)

    def question_tokens(self, problems: Sequence) -> dict[str, int] | None:
        """Each question's length in the weak model's tokens (what the PRM's cost counts from); None when the
        weak generator has no tokenizer to count with."""
        tokenizer = getattr(self.weak.generator, "tokenizer", None)
        if tokenizer is None:
            return None
        lengths = tokenizer([p.question for p in problems], add_special_tokens=False).input_ids
        return {p.id: len(ids) for p, ids in zip(problems, lengths)}

    def endpoints(self, problems: Sequence) -> tuple[Endpoints, dict, dict]:
        weak = summarize(self.run(problems, WeakOnly()))
        strong = summarize(self.run(problems, StrongOnly()))
        return Endpoints(weak["accuracy"], strong["accuracy"], strong["strong_tokens"]), weak, strong

    def sweep(self, problems: Sequence, policies: Sequence[Policy]) -> pd.DataFrame:
        """One row per policy: its knob values and its summary (accuracy, tokens, ...).

        The policies run side by side in one lockstep batch (`run_policies`), so the steps they share are
        asked for together and the new ones are generated in batches of every policy's rows."""
        runs = run_policies(problems, policies, self.weak, self.strong, self.prm, self.run_settings,
                            trace_paths=[self.trace_path(policy) for policy in policies], progress=self.progress)
        questions = self.question_tokens(problems)
        return pd.DataFrame([{"policy": policy.name, **policy.params(),
                              **summarize(records, questions, reads_prm=policy.uses_prm)}
                             for policy, records in zip(policies, runs)])

    def cache_report(self) -> str:
        return (f"cache: weak {self.weak.hits} hits / {self.weak.misses} misses, strong {self.strong.hits} / "
                f"{self.strong.misses}, PRM {self.prm.hits} / {self.prm.misses}")
