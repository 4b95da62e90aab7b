"""Value iteration for small POMDPs over a grid on the belief simplex.

A POMDP with a handful of hidden states has a belief that lives on a low-dimensional simplex (three
states: a triangle). Lovejoy's Freudenthal triangulation puts a regular grid on it and interpolates a
function linearly inside each small simplex, so one backup of the value function is a few array
operations over (grid points x actions x observations): a routing POMDP solves in seconds with numpy,
where the official release runs SARSOP in Julia once per belief point, step and token bin.

The value function of a POMDP is convex in the belief, so linear interpolation between grid points
bounds it from above, and the computed values are upper bounds that tighten as the grid gets finer
(Lovejoy 1991).
`tests/test_pomdp.py` checks the solver against exact values on the Tiger problem.
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Sequence

import numpy as np


class SimplexGrid:
    """All beliefs over `states` states whose probabilities are multiples of 1 / `resolution`, and linear
    interpolation between them (Freudenthal triangulation)."""

    def __init__(self, states: int, resolution: int):
        if states < 2 or resolution < 1:
            raise ValueError(f"a belief grid needs at least 2 states and resolution >= 1 (got {states}, {resolution})")
        self.states, self.resolution = states, resolution
        n = resolution
        # Lovejoy's coordinates: x_0 = N >= x_1 >= ... >= x_{S-1} >= 0, integers, x_i = N * sum_{j >= i} b_j.
        coords = [c for c in itertools.combinations_with_replacement(range(n, -1, -1), states - 1)]
        self._coords = np.array([(n, *c) for c in coords], dtype=np.int64)
        self.points = self._to_belief(self._coords)
        # A dense index over (x_1, ..., x_{S-1}) in 0..N+1, so that a vertex is found by arithmetic. Cells
        # that are not grid points map to 0; they only ever carry zero weight.
        self._stride = (n + 2) ** np.arange(states - 1)
        self._lookup = np.zeros((n + 2) ** (states - 1), dtype=np.int64)
        self._lookup[self._coords[:, 1:] @ self._stride] = np.arange(len(self._coords))

    def __len__(self) -> int:
        return len(self.points)

    def _to_belief(self, x: np.ndarray) -> np.ndarray:
        following = np.concatenate([x[..., 1:], np.zeros_like(x[..., :1])], axis=-1)
        return (x - following) / self.resolution

    def weights(self, beliefs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For beliefs (..., S): the indices (..., S) of the grid points around each and the interpolation
        weights (..., S) that reproduce it."""
        b = np.asarray(beliefs, dtype=float)
        x = self.resolution * np.cumsum(b[..., ::-1], axis=-1)[..., ::-1]
        x = np.clip(x, 0.0, self.resolution)
        base = np.minimum(np.floor(x + 1e-12), self.resolution)
        frac = np.clip(x - base, 0.0, 1.0)
        frac[..., 0] = 0.0
        order = np.argsort(-frac[..., 1:], axis=-1, kind="stable") + 1        # coordinates, largest fraction first
        sorted_frac = np.take_along_axis(frac, order, axis=-1)
        nxt = np.concatenate([sorted_frac[..., 1:], np.zeros_like(sorted_frac[..., :1])], axis=-1)
        weights = np.concatenate([1.0 - sorted_frac[..., :1], sorted_frac - nxt], axis=-1)
        vertex = base.astype(np.int64)
        vertices = [vertex[..., 1:] @ self._stride]
        for k in range(self.states - 1):
            step = np.zeros_like(vertex)
            np.put_along_axis(step, order[..., k: k + 1], 1, axis=-1)
            vertex = vertex + step
            vertices.append(np.minimum(vertex[..., 1:], self.resolution + 1) @ self._stride)
        return self._lookup[np.stack(vertices, axis=-1)], weights

    def interpolate(self, values: np.ndarray, beliefs: np.ndarray) -> np.ndarray:
        """Values given at the grid points ((P,) or (P, K)), read at beliefs (..., S): (...) or (..., K)."""
        index, weights = self.weights(beliefs)
        values = np.asarray(values)
        if values.ndim == 1:
            return (values[index] * weights).sum(-1)
        return (values[index] * weights[..., None]).sum(-2)


@dataclasses.dataclass(frozen=True)
class Stage:
    """The POMDP at one decision epoch.

    transitions (A, S, S'): P(next state | state, action); rows may sum to less than 1, the rest being the
        probability that the episode ends after this decision.
    observations (A, S', O): P(observation | next state, action).
    rewards (A, S): expected immediate reward of an action in a state (terminal rewards included).
    action_costs (A, K) and cost_weights (K,): optionally, a cost of each action that varies from one
        epoch to the next and is known when the agent decides (a routing step's length): the value of a
        belief is then the expectation over the K costs of the best action given the cost.
    """

    transitions: np.ndarray
    observations: np.ndarray
    rewards: np.ndarray
    action_costs: np.ndarray | None = None
    cost_weights: np.ndarray | None = None

    def __post_init__(self):
        a, s, s2 = np.shape(self.transitions)
        if s != s2 or np.shape(self.rewards) != (a, s) or np.shape(self.observations)[:2] != (a, s):
            raise ValueError(f"stage shapes disagree: transitions {np.shape(self.transitions)}, observations "
                             f"{np.shape(self.observations)}, rewards {np.shape(self.rewards)}")
        if np.any(self.transitions < 0) or np.any(self.transitions.sum(-1) > 1 + 1e-9):
            raise ValueError("transition rows must be probabilities summing to at most 1")
        if not np.allclose(self.observations.sum(-1), 1.0, atol=1e-6):
            raise ValueError("observation rows P(o | s', a) must sum to 1")
        if (self.action_costs is None) != (self.cost_weights is None):
            raise ValueError("give action_costs and cost_weights together")

    def values(self, q: np.ndarray) -> np.ndarray:
        """The value of each belief from its action values q (P, A): the best action, in expectation over
        the epoch's action costs."""
        if self.action_costs is None:
            return q.max(-1)
        return (q[:, :, None] - self.action_costs[None]).max(1) @ self.cost_weights


def backup(grid: SimplexGrid, stage: Stage, next_values: np.ndarray, discount: float = 1.0) -> np.ndarray:
    """Action values (P, A) at the grid's points: immediate reward plus the discounted value of the belief
    after each observation (next_values at the grid's points)."""
    points = grid.points
    q = points @ stage.rewards.T
    for a in range(stage.rewards.shape[0]):
        predicted = points @ stage.transitions[a]                               # (P, S')
        joint = predicted[:, :, None] * stage.observations[a][None]             # (P, S', O)
        probability = joint.sum(1)                                              # (P, O)
        seen = probability > 1e-15
        posterior = np.where(seen[:, None, :], joint / np.where(seen, probability, 1.0)[:, None, :], 0.0)
        future = grid.interpolate(next_values, np.moveaxis(posterior, 1, -1))   # (P, O)
        q[:, a] += discount * (probability * np.where(seen, future, 0.0)).sum(-1)
    return q


def solve_finite(grid: SimplexGrid, stages: Sequence[Stage], discount: float = 1.0,
                 final_values: np.ndarray | None = None) -> np.ndarray:
    """Backward induction over the epochs: action values (T, P, A) for epochs 0..T-1."""
    values = np.zeros(len(grid)) if final_values is None else np.asarray(final_values, dtype=float)
    tables = []
    for stage in reversed(stages):
        q = backup(grid, stage, values, discount)
        tables.append(q)
        values = stage.values(q)
    return np.stack(tables[::-1])


def solve_discounted(grid: SimplexGrid, stage: Stage, discount: float, tolerance: float = 1e-6,
                     max_iterations: int = 10_000) -> np.ndarray:
    """Value iteration for an infinite-horizon discounted POMDP until the values move less than
    `tolerance`: action values (P, A)."""
    if not 0 <= discount < 1:
        raise ValueError(f"an infinite horizon needs a discount in [0, 1) (got {discount})")
    values = np.zeros(len(grid))
    for _ in range(max_iterations):
        q = backup(grid, stage, values, discount)
        new = stage.values(q)
        if np.max(np.abs(new - values)) < tolerance:
            return q
        values = new
    raise RuntimeError(f"value iteration did not converge to {tolerance} in {max_iterations} iterations")
