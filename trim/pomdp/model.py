"""The routing POMDP (DESIGN section 1): hidden step states, how they move, and what the PRM shows of them.

Hidden states of the solution so far, candidate included: S0 every step correct; S1 an earlier step was
wrong and the solution built on it (nothing can save it); S2 only the candidate is wrong (a rewrite can
save it). Actions: continue (keep the weak candidate) or regenerate (the strong model rewrites it).

- Transitions from the models' next-step accuracies p_w and p_s: continue takes S0 to S0 (p_w) or S2,
  and S1, S2 to S1; regenerate takes S0 and S2 to S0 (p_s p_w), S2 (p_s (1 - p_w)) or S1 (1 - p_s).
- Termination: after step t the solution ends with the hazard h(t), fit on the weak model's solution lengths.
- Reward: 1 if the solution ends right (in S0, or regenerated from S0 / S2 and the strong step is right),
  minus lambda per strong token: the candidate's own length now, a step length drawn from the weak
  model's step lengths for every later rewrite.
- Observation: o = (lowest earlier score, r_t) on a 20 x 20 grid of cells, one distribution per state,
  from a reflected 2-D kernel density estimate of labelled steps (the release's model); or r_t alone, its
  marginal, which is what a recursive belief filter reads.

A `RoutingModel` is a small JSON file (`data/pomdp/`): the testbed's, fit here on labelled train steps, and
the real PRM's, converted from the official release's tables.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Sequence

import numpy as np

from trim.hashing import stable_digest
from trim.pomdp.solver import Stage

STATES = ("S0", "S1", "S2")
BINS = 20                   # observation cells per axis (the release's bin size 0.05)
MODEL_DIR = Path(__file__).resolve().parents[2] / "data" / "pomdp"
OBSERVATIONS = ("joint", "score")   # (lowest earlier score, r_t) as the release; r_t alone for the filter


def score_bin(score: float) -> int:
    """The observation cell of a score in [0, 1]."""
    return min(int(score * BINS), BINS - 1)


@dataclasses.dataclass(frozen=True)
class RoutingModel:
    """Everything the routing POMDP needs, for one weak/strong pair and one PRM."""

    name: str
    p_weak: float                      # P(next step right | all steps so far right), the weak model
    p_strong: float                    # the same for the strong model
    hazard: tuple[float, ...]          # hazard[t - 1] = P(the solution ends after step t | it reached t)
    observations: np.ndarray           # (3, BINS, BINS): P(lowest-earlier-score cell, r_t cell | S0, S1, S2)
    step_tokens: tuple[float, ...]     # a step's length, as values ...
    step_token_weights: tuple[float, ...]   # ... and their probabilities (the cost of a later rewrite)
    source: dict = dataclasses.field(default_factory=dict)   # how each part was measured

    def __post_init__(self):
        problems = []
        if not (0 < self.p_weak < 1 and 0 < self.p_strong <= 1):
            problems.append(f"step accuracies must be p_weak in (0, 1) and p_strong in (0, 1] (got {self.p_weak}, "
                            f"{self.p_strong})")
        hazard = np.asarray(self.hazard, dtype=float)
        if hazard.ndim != 1 or not len(hazard) or np.any((hazard < 0) | (hazard > 1)) or hazard[-1] != 1:
            problems.append("hazard must be probabilities, one per step, the last 1 (every solution ends)")
        obs = np.asarray(self.observations, dtype=float)
        if obs.shape != (3, BINS, BINS) or np.any(obs < 0) or not np.allclose(obs.sum((1, 2)), 1, atol=1e-6):
            problems.append(f"observations must be 3 distributions over {BINS} x {BINS} cells "
                            f"(got shape {obs.shape})")
        weights = np.asarray(self.step_token_weights, dtype=float)
        if len(self.step_tokens) != len(weights) or not len(weights) or not np.isclose(weights.sum(), 1):
            problems.append("step_tokens and step_token_weights must be equally long, the weights summing to 1")
        if problems:
            raise ValueError(f"routing model {self.name!r}: " + "; ".join(problems))
        object.__setattr__(self, "observations", obs)

    @property
    def max_steps(self) -> int:
        return len(self.hazard)

    def observation_table(self, observation: str = "joint") -> np.ndarray:
        """(3, cells): P(observation cell | state), the joint (lowest earlier, r_t) cells or r_t's alone."""
        if observation == "joint":
            return self.observations.reshape(3, BINS * BINS)
        if observation == "score":
            return self.observations.sum(1)
        raise ValueError(f"observation must be one of {', '.join(OBSERVATIONS)} (got {observation!r})")

    def transitions(self) -> np.ndarray:
        """(2, 3, 3): P(next candidate's state | state, action) given that the solution goes on."""
        pw, ps = self.p_weak, self.p_strong
        carry_on = [pw, 0.0, 1 - pw]                    # the next weak candidate after a right prefix
        rewritten = [ps * pw, 1 - ps, ps * (1 - pw)]    # after a strong rewrite of the candidate
        lost = [0.0, 1.0, 0.0]
        return np.array([[carry_on, lost, lost], [rewritten, lost, rewritten]])

    def stages(self, lam: float, observation: str = "joint") -> list[Stage]:
        """The POMDP's epochs t = 1..max_steps at a price `lam` per strong token (in right answers)."""
        if not lam >= 0:
            raise ValueError(f"lambda must be >= 0 (got {lam})")
        table = self.observation_table(observation)
        observations = np.stack([table.T, table.T]).transpose(0, 2, 1)     # (A, S', O): the same for both actions
        move = self.transitions()
        tokens = np.asarray(self.step_tokens, dtype=float)
        costs = np.stack([np.zeros_like(tokens), lam * tokens])
        weights = np.asarray(self.step_token_weights, dtype=float)
        right = np.array([[1.0, 0.0, 0.0], [self.p_strong, 0.0, self.p_strong]])   # P(right | ends now)
        return [Stage(move * (1 - h), observations, h * right, costs, weights) for h in self.hazard]

    def with_observations(self, other: "RoutingModel") -> "RoutingModel":
        """These models' dynamics with `other`'s PRM (e.g. the testbed's models read by the real PRM's noise)."""
        return dataclasses.replace(self, name=f"{self.name}, {other.name} PRM",
                                   observations=other.observations,
                                   source={**self.source, "observations": other.source.get("observations", other.name)})

    def digest(self) -> str:
        return stable_digest(json.dumps(self.to_json(), sort_keys=True))

    def to_json(self) -> dict:
        return {"name": self.name, "p_weak": self.p_weak, "p_strong": self.p_strong, "hazard": list(self.hazard),
                "observations": np.round(self.observations, 10).tolist(), "step_tokens": list(self.step_tokens),
                "step_token_weights": list(self.step_token_weights), "source": self.source,
                "states": list(STATES), "observation_axes": ["lowest earlier score cell", "r_t cell"]}

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_json(), indent=1) + "\n")
        return path


def load_model(path: str | Path) -> RoutingModel:
    """A routing model from its JSON file; a missing or malformed file is one clear error."""
    path = Path(path)
    if not path.is_file():
        shipped = ", ".join(sorted(p.stem for p in MODEL_DIR.glob("*.json"))) or "none"
        raise FileNotFoundError(f"no routing POMDP model at {path} (shipped in {MODEL_DIR}: {shipped}; fit one with "
                                "`trim.pomdp.model.fit_testbed`)")
    try:
        data = json.loads(path.read_text())
        if not isinstance(data, dict):
            raise ValueError(f"it holds a JSON {type(data).__name__}, not an object")
        fields = {f.name for f in dataclasses.fields(RoutingModel)}
        missing = sorted(fields - {"source"} - set(data))
        if missing:
            raise ValueError(f"missing fields: {', '.join(missing)}")
        return RoutingModel(**{k: (tuple(v) if isinstance(v, list) and k != "observations" else v)
                               for k, v in data.items() if k in fields})
    except (ValueError, TypeError) as error:
        raise ValueError(f"{path} is not a routing POMDP model ({error}); regenerate it (data/pomdp/README.md)") \
            from None


def shipped(name: str) -> RoutingModel:
    """A model in data/pomdp by name: "testbed" (fit on the testbed) or "real" (Qwen2.5-Math-PRM-7B's)."""
    return load_model(MODEL_DIR / f"{name}.json")


def routing_model(observations: str = "testbed", dynamics: str = "testbed") -> RoutingModel:
    """The model for a run: the models' `dynamics` ("testbed", or "real": the release's Qwen pair) with a
    PRM's observation model ("testbed", "real": Qwen2.5-Math-PRM-7B's, or the path of a model file)."""
    model = shipped(dynamics)
    if observations == dynamics:
        return model
    other = shipped(observations) if observations in ("testbed", "real") else load_model(observations)
    return model.with_observations(other)


# --- fitting ---------------------------------------------------------------------------------------------

def hazard_from_lengths(lengths: Sequence[int], max_steps: int) -> tuple[float, ...]:
    """h(t) = P(a solution ends after step t | it has at least t steps), from observed solution lengths; 1 at
    max_steps and wherever no solution was that long."""
    lengths = np.minimum(np.asarray(lengths, dtype=int), max_steps)
    hazard = []
    for t in range(1, max_steps + 1):
        reached = np.sum(lengths >= t)
        hazard.append(1.0 if t == max_steps or reached == 0 else float(np.sum(lengths == t) / reached))
    return tuple(hazard)


def reflected_kde_table(points: np.ndarray, max_points: int = 3000, subcells: int = 4, seed: int = 0) -> np.ndarray:
    """A (BINS, BINS) distribution over cells of [0, 1]^2 from 2-D points (lowest earlier score, r_t): a
    Gaussian KDE (Scott's bandwidth, as the release) with every point mirrored across the four edges so
    that no mass leaks out of the square, integrated over each cell on a subcells x subcells midpoint grid."""
    from scipy.stats import gaussian_kde

    points = np.asarray(points, dtype=float)
    if len(points) > max_points:    # a KDE's cost grows with its points; 3,000 fix the shape well enough
        points = points[np.random.default_rng(seed).choice(len(points), max_points, replace=False)]
    if len(points) < 3:
        raise ValueError(f"a KDE needs at least 3 points (got {len(points)}); fit on more problems")
    jitter = np.random.default_rng(seed).normal(0, 1e-4, points.shape)   # scores tied at 0 or 1 are singular
    kde = gaussian_kde(np.clip(points + jitter, 0, 1).T, bw_method="scott")
    n = BINS * subcells
    centres = (np.arange(n) + 0.5) / n
    x, y = np.meshgrid(centres, centres, indexing="ij")
    density = np.zeros_like(x)
    for mx in (x, -x, 2 - x):
        for my in (y, -y, 2 - y):
            density += kde(np.vstack([mx.ravel(), my.ravel()])).reshape(x.shape)
    table = density.reshape(BINS, subcells, BINS, subcells).sum((1, 3))
    return table / table.sum()


def observation_points(table) -> dict[str, np.ndarray]:
    """Per hidden state, the (lowest earlier score, r_t) of every labelled step in a `prm_step_table`
    (the lowest earlier score is 1 at a first step, as the release has it)."""
    points = {state: [] for state in STATES}
    for _, steps in table.sort_values(["problem_id", "step"]).groupby("problem_id", sort=False):
        scores = steps["score"].to_numpy(dtype=float)
        earlier = np.fmin.accumulate(np.concatenate([[1.0], scores[:-1]]))   # an unscored (NaN) step is skipped
        for low, r, state in zip(earlier, scores, steps["state"]):
            if np.isfinite(r) and np.isfinite(low):
                points[state].append((low, r))
    return {state: np.array(p).reshape(-1, 2) for state, p in points.items()}


def fit_observations(prm, samples: Sequence, seed: int = 0) -> tuple[np.ndarray, str]:
    """The observation model (3, BINS, BINS) of `prm` from labelled solutions (`evaluate.sample_solutions`),
    and a line saying what it was fit on."""
    from trim.testbed import evaluate

    points = observation_points(evaluate.prm_step_table(prm, samples))
    missing = [state for state, p in points.items() if len(p) < 3]
    if missing:
        raise ValueError(f"too few labelled steps in state {', '.join(missing)} to fit an observation model; "
                         "fit on more problems")
    table = np.stack([reflected_kde_table(points[state], seed=seed) for state in STATES])
    return table, (f"{prm.name}: reflected Gaussian KDE (Scott) of labelled weak steps ("
                   + ", ".join(f"{s} {len(points[s])}" for s in STATES) + "), over 20 x 20 cells")


def refit_observations(model: RoutingModel, prm, samples: Sequence, seed: int = 0) -> RoutingModel:
    """`model` with its observation model refit on `prm`'s scores of `samples`: what a user does when the
    PRM changes (a new PRM, or the same one under noise)."""
    table, description = fit_observations(prm, samples, seed)
    return dataclasses.replace(model, name=f"{model.name}, refit on {prm.name}", observations=table,
                               source={**model.source, "observations": description})


def fit_testbed(testbed, problems: Sequence, prm=None, seed: int = 0, name: str = "testbed",
                max_steps: int = 30) -> RoutingModel:
    """Fit every part on labelled steps of `problems` (train problems): p_w and p_s as the models' next-step
    accuracies after right prefixes, the hazard and step lengths from weak solutions, and the observation
    model from `prm`'s scores of those solutions (default the testbed PRM)."""
    from trim.testbed import evaluate

    prm = testbed.prm if prm is None else prm
    accuracy = {role: float(evaluate.next_step_samples(getattr(testbed, role), problems, seed)["correct"].mean())
                for role in ("weak", "strong")}
    samples = evaluate.sample_solutions(testbed.weak, problems, seed=seed)
    observations, description = fit_observations(prm, samples, seed)
    tokens, counts = np.unique([t for s in samples for t in s.tokens], return_counts=True)
    return RoutingModel(
        name=name, p_weak=accuracy["weak"], p_strong=accuracy["strong"],
        hazard=hazard_from_lengths([len(s.steps) for s in samples], max_steps),
        observations=observations,
        step_tokens=tuple(float(t) for t in tokens), step_token_weights=tuple(counts / counts.sum()),
        source={"problems": f"{len(problems)} from {problems[0].id}", "seed": seed,
                "weak": testbed.weak.name, "strong": testbed.strong.name, "observations": description,
                "accuracies": "next-step accuracy after every right prefix (one sample each)",
                "hazard": "weak solution lengths", "step_tokens": "weak step lengths"})


class _ReleasePickle:
    """The release pickled its length model as a class of its notebook (`__main__.TerminalPredictor`): read
    its fields into this stand-in rather than needing that class."""


def _load_release_pickle(path: Path):
    """A release pickle, read with only the classes its tables use (numpy arrays and scalars, the length
    model's stand-in): a pickle can run code, and this one comes from a folder the user names."""
    import pickle

    allowed = {("numpy", "dtype"), ("numpy", "ndarray"), ("numpy.core.multiarray", "_reconstruct"),
               ("numpy._core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "scalar"),
               ("numpy._core.multiarray", "scalar"), ("builtins", "set"), ("builtins", "frozenset")}

    class Unpickler(pickle.Unpickler):
        def find_class(self, module, name):
            if (module, name) == ("__main__", "TerminalPredictor"):
                return _ReleasePickle
            if (module, name) in allowed:
                return super().find_class(module, name)
            raise pickle.UnpicklingError(f"it asks for {module}.{name}, which the release's tables do not use")

    try:
        with open(path, "rb") as handle:
            return Unpickler(handle).load()
    except (pickle.UnpicklingError, EOFError, AttributeError, ImportError, IndexError, TypeError) as error:
        raise ValueError(f"{path} is not one of the release's tables ({error})") from None


def release_hazard(predictor_pickle: str | Path, max_steps: int = 30) -> tuple[float, ...]:
    """hazard[t - 1] = P(a weak solution has t steps | it has at least t) from the release's
    `math_train_terminal_predictor_slm.pkl` (its `probs_dict` maps a step count to that hazard)."""
    predictor = _load_release_pickle(Path(predictor_pickle))
    probs = getattr(predictor, "probs_dict", None)
    if not isinstance(probs, dict):
        raise ValueError(f"{predictor_pickle} has no probs_dict (step count -> hazard); is it the release's "
                         "terminal predictor?")
    hazard = [float(probs.get(t, 0.0)) for t in range(1, max_steps + 1)]
    hazard[-1] = 1.0
    return tuple(hazard)


def from_release(release_dir: str | Path, p_weak: float = 0.866, p_strong: float = 0.9704,
                 step_tokens: float = 60.0, name: str = "real") -> RoutingModel:
    """The real PRM's model from a checkout of the official release: its 20 x 20 observation table of
    Qwen2.5-Math-PRM-7B (`pomdp_data/math-train_obs_distributions_bin_size_0.05.pkl`, a dict state ->
    (cell centres, masses) ordered lowest-earlier-score first), its step accuracies (Qwen2.5-1.5B / 7B-Instruct,
    `pomdp_data/transition_params`) and the hazard of its weak solutions; later rewrites cost its fixed 60
    tokens. The hazard is read as P(a solution has t steps | at least t) at step t; the release's solver
    applies it one step later."""
    release_dir = Path(release_dir)
    tables = release_dir / "pomdp_data" / "math-train_obs_distributions_bin_size_0.05.pkl"
    raw = _load_release_pickle(tables)
    try:
        table = np.stack([np.asarray(raw[s][1], dtype=float).reshape(BINS, BINS) for s in (0, 1, 2)])
        centres = np.array([[float(a), float(b)] for a, b in raw[0][0]]).reshape(BINS, BINS, 2)
    except (KeyError, IndexError, TypeError, ValueError) as error:
        raise ValueError(f"{tables}: not 3 states x {BINS} x {BINS} cells of (centre, mass) ({error})") from None
    middles = (np.arange(BINS) + 0.5) / BINS
    if not (np.allclose(centres[:, 0, 0], middles) and np.allclose(centres[0, :, 1], middles)):
        raise ValueError(f"{tables}: observation cells are not ordered lowest-earlier-score first, then r_t")
    return RoutingModel(
        name=name, p_weak=p_weak, p_strong=p_strong,
        hazard=release_hazard(release_dir / "pomdp_data" / "math_train_terminal_predictor_slm.pkl"),
        observations=table / table.sum((1, 2), keepdims=True), step_tokens=(step_tokens,), step_token_weights=(1.0,),
        source={"release": "github.com/Vansh28Kapoor/TRIM, commit 5ec6323 (Kapoor et al., ICLR 2026); derived "
                           "tables only, with attribution (its README says MIT; it ships no LICENSE file)",
                "observations": "Qwen2.5-Math-PRM-7B on ProcessBench's MATH split: the release's "
                                "pomdp_data/math-train_obs_distributions_bin_size_0.05.pkl (reflected KDE, 20 x 20)",
                "accuracies": "pomdp_data/transition_params: Qwen2.5-1.5B-Instruct 0.866, Qwen2.5-7B-Instruct 0.9704",
                "hazard": "pomdp_data/math_train_terminal_predictor_slm.pkl (KDE of weak solution lengths)",
                "step_tokens": "the release's fixed 60 tokens per later step"})
