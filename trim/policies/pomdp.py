"""TRIM-POMDP: look up the solved routing POMDP at the current belief.

Two ways to form the belief over (S0, S1, S2) from what the policy sees:

- "release", the official release's: the likelihood of this step's observation (lowest earlier score, r_t)
  under each state, with a uniform prior and nothing carried from earlier steps; when the belief's largest
  state leads S2 by at least `gate` (0.4) the step is kept without consulting the table.
- "filter", a recursive Bayes filter: from the prior of a first step, every accepted step moves the belief
  through the transition model of the action taken (keep or rewrite) and every weak score updates it, so a
  doubt early in the solution is remembered. It reads r_t alone, because the lowest earlier score only
  repeats scores the filter has already read.

Either way the action is the solved table's at that belief and step index: rewrite iff the value of
rewriting, minus lambda times the candidate's tokens, beats keeping it.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from trim.policies.base import Observation, Policy
from trim.pomdp.model import BINS, RoutingModel, score_bin
from trim.pomdp.solver import SimplexGrid, solve_finite

BELIEFS = ("filter", "release")


def solve(model: RoutingModel, lam: float, observation: str, resolution: int = 40,
          cache_dir: str | Path | None = None) -> np.ndarray:
    """Action values (steps, grid points, 2) of the routing POMDP at price `lam`, without the current
    candidate's own cost. Cached under `cache_dir` (default runs/pomdp) by model digest, lambda, observation
    and grid, so a policy is solved once."""
    from trim.traces import runs_dir

    folder = runs_dir("pomdp") if cache_dir is None else Path(cache_dir)
    path = folder / f"{model.digest()[:16]}-lambda-{float(lam)!r}-{observation}-grid{resolution}.npy"
    grid = SimplexGrid(3, resolution)
    if path.is_file():
        try:
            q = np.load(path)
            if q.shape == (model.max_steps, len(grid), 2):
                return q
        except (ValueError, OSError, EOFError):
            pass   # a torn or foreign file: solve again (seconds) and replace it
    q = solve_finite(grid, model.stages(lam, observation))
    folder.mkdir(parents=True, exist_ok=True)
    # A file of its own, renamed into place: two processes solving the same table never see half of one.
    handle, partial = tempfile.mkstemp(dir=folder, prefix=path.stem, suffix=".partial.npy")
    with os.fdopen(handle, "wb") as out:
        np.save(out, q)
    os.replace(partial, path)
    return q


class TrimPOMDP(Policy):
    """TRIM-POMDP at one price of a strong token, with the release's one-shot belief or a Bayes filter."""

    label = "TRIM-POMDP"

    def __init__(self, model: RoutingModel, lam: float, belief: str = "filter", gate: float = 0.4,
                 resolution: int = 40, cache_dir: str | Path | None = None):
        if belief not in BELIEFS:
            raise ValueError(f"belief must be one of {', '.join(BELIEFS)} (got {belief!r})")
        self.model, self.lam, self.belief, self.gate, self.resolution = model, float(lam), belief, gate, resolution
        self.observation = "joint" if belief == "release" else "score"
        self.likelihoods = model.observation_table(self.observation)          # (3, cells)
        self.grid = SimplexGrid(3, resolution)
        self.q = solve(model, self.lam, self.observation, resolution, cache_dir)
        self.name = f"{self.label}(lambda={self.lam!r}, {belief}, {model.name})"

    def params(self) -> dict:
        return {"lambda": self.lam, "belief": self.belief, "gate": self.gate if self.belief == "release" else None,
                "resolution": self.resolution, "model": self.model.digest()}

    # --- beliefs -----------------------------------------------------------------------------------------
    def _cell(self, score: float, earlier: float) -> int:
        cell = score_bin(score)
        return score_bin(earlier) * BINS + cell if self.observation == "joint" else cell

    def belief_after(self, observation: Observation) -> np.ndarray:
        """The belief over (S0, S1, S2) once the candidate's score is read."""
        if self.belief == "release":
            earlier = min(observation.previous_scores, default=1.0)
            if observation.score is None or not np.isfinite(observation.score) or not np.isfinite(earlier):
                return np.full(3, 1 / 3)
            likelihood = self.likelihoods[:, self._cell(observation.score, earlier)]
            return likelihood / likelihood.sum() if likelihood.sum() > 0 else np.full(3, 1 / 3)
        return self.filter(observation)[-1]

    def filter(self, observation: Observation) -> list[np.ndarray]:
        """The filter's belief after each step up to the candidate (one array per step). A rewritten step's
        weak candidate is not in the observation, so its score is not read: the belief moves through the
        rewrite alone."""
        move = self.model.transitions()
        prior = move[0, 0]                              # a first step: right with p_w, else the first error
        beliefs = []
        history = list(zip(observation.previous_scores, observation.previous_models))
        for i, (score, model) in enumerate([*history, (observation.score, "weak")]):
            if i:
                prior = beliefs[-1] @ move[1 if history[i - 1][1] == "strong" else 0]
            belief = prior
            if model == "weak" and score is not None and np.isfinite(score):
                belief = prior * self.likelihoods[:, self._cell(score, 1.0)]
            total = belief.sum()
            beliefs.append(belief / total if total > 0 else prior)
        return beliefs

    # --- decisions ---------------------------------------------------------------------------------------
    def table(self, step_index: int) -> np.ndarray:
        """The solved (keep, rewrite) values at every grid belief for a 1-based step. Past the model's last
        step (the engine's --max-steps above it) the last one's: a solution that must end now."""
        return self.q[min(step_index, len(self.q)) - 1]

    def action_values(self, belief: np.ndarray, step_index: int) -> np.ndarray:
        """(keep, rewrite) values at a belief and 1-based step, before the candidate's own cost."""
        return self.grid.interpolate(self.table(step_index), np.asarray(belief, dtype=float))

    def regenerate(self, observation: Observation) -> bool:
        belief = self.belief_after(observation)
        if self.belief == "release" and belief.max() - belief[2] >= self.gate:
            return False     # the release keeps a step unless S2 is within the gate of the likeliest state
        keep, rewrite = self.action_values(belief, observation.step_index)
        return bool(rewrite - self.lam * observation.tokens > keep)


def decision_table(policy: TrimPOMDP, step_index: int, tokens: int) -> pd.DataFrame:
    """The solved policy at every belief of its grid for one step index and candidate length: the belief,
    the advantage of rewriting (value of rewriting - lambda x tokens - value of keeping) and the action."""
    keep, rewrite = policy.table(step_index).T
    advantage = rewrite - policy.lam * tokens - keep
    return pd.DataFrame({"S0": policy.grid.points[:, 0], "S1": policy.grid.points[:, 1], "S2": policy.grid.points[:, 2],
                         "advantage": advantage, "regenerate": advantage > 0})
