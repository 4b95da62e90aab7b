"""TRIM-Agg and TRIM-Seq: routing policies trained with PPO (their training lives in `trim.ppo`).

Both are actor-critics over what an `Observation` holds. TRIM-Agg reads five aggregate features, as the
official release builds them; TRIM-Seq reads the whole prefix, one feature vector per step, through a small
transformer encoder (the paper's design; the release has no TRIM-Seq). A policy decides by argmax at test
time; during training (`sampling=True`) it draws its action and records the action's log-probability and
the critic's value in the trace, which is all PPO needs from a rollout.

A saved policy is a folder: `policy.safetensors` (the weights) and `policy.json` (kind, lambda and
architecture), beside the `training.json` that `trim.ppo` writes."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch
from torch import nn

from trim.policies.base import Decision, LearnedPolicy, Observation

if TYPE_CHECKING:
    import pandas as pd

# The release's scales: step tokens / 300 and the 0-based step index / 30 (its max_steps).
TOKEN_SCALE, STEP_SCALE = 300.0, 30.0
AGG_FEATURES = ("min earlier score", "product of earlier scores", "r_t", "step tokens / 300", "t / 30")
SEQ_FEATURES = ("score", "step tokens / 300", "written by the strong model", "is the candidate", "t / 30")
MAX_STEPS = 31   # positions TRIM-Seq embeds: 30 accepted steps at most, plus the candidate


def _score(observation: Observation) -> float:
    if observation.score is None:
        raise ValueError(f"a learned policy reads PRM scores, but problem {observation.problem_id!r} step "
                         f"{observation.step_index} has none: run it with a PRM")
    return float(observation.score)


def agg_features(observation: Observation) -> list[float]:
    """The release's five features; min and product of earlier scores are 1 at the first step."""
    earlier = observation.previous_scores
    return [min(earlier) if earlier else 1.0, math.prod(earlier) if earlier else 1.0, _score(observation),
            observation.tokens / TOKEN_SCALE, (observation.step_index - 1) / STEP_SCALE]


def seq_features(observation: Observation) -> list[list[float]]:
    """One row per accepted step, then the candidate: score, tokens, who wrote it, candidate flag, index."""
    earlier = observation.previous_scores
    tokens = observation.previous_tokens or (0,) * len(earlier)
    models = observation.previous_models or ("weak",) * len(earlier)
    rows = [[score, n / TOKEN_SCALE, float(model == "strong"), 0.0, j / STEP_SCALE]
            for j, (score, n, model) in enumerate(zip(earlier, tokens, models))]
    rows.append([_score(observation), observation.tokens / TOKEN_SCALE, 0.0, 1.0, len(earlier) / STEP_SCALE])
    return rows[-MAX_STEPS:]


def _orthogonal(module: nn.Module, gain: float) -> None:
    for layer in module.modules():
        if isinstance(layer, nn.Linear):
            nn.init.orthogonal_(layer.weight, gain=gain)
            nn.init.zeros_(layer.bias)


def _head(width: int, out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(width, width), nn.LayerNorm(width), nn.Tanh(), nn.Linear(width, out))


class ActorCritic(nn.Module):
    """An encoder shared by an actor (2 logits: continue, regenerate) and a critic (the value).

    Orthogonal initialisation as in the release (and CleanRL): gain sqrt(2) in the encoder, 0.01 for the
    actor, so the first policy is close to uniform, and 1 for the critic."""

    def __init__(self, encoder: nn.Module, width: int):
        super().__init__()
        self.encoder, self.actor, self.critic = encoder, _head(width, 2), _head(width, 1)
        _orthogonal(self.encoder, math.sqrt(2))
        _orthogonal(self.actor, 0.01)
        _orthogonal(self.critic, 1.0)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.encoder(x) if mask is None else self.encoder(x, mask)
        return self.actor(h), self.critic(h).squeeze(-1)


def agg_network(width: int = 64) -> ActorCritic:
    """The release's network: a shared 5-64-64 MLP (LayerNorm, Tanh), actor 64-64-2, critic 64-64-1.
    (The release also puts dropout 0.1 after each Tanh while it trains; it is left out here, so that PPO's
    ratio compares the same function the rollout sampled from.)"""
    encoder = nn.Sequential(nn.Linear(len(AGG_FEATURES), width), nn.LayerNorm(width), nn.Tanh(),
                            nn.Linear(width, width), nn.LayerNorm(width), nn.Tanh())
    return ActorCritic(encoder, width)


class PrefixEncoder(nn.Module):
    """A transformer encoder over the prefix's step rows, beside the candidate's five aggregate features.

    Every step attends to every other (the whole prefix is known when the decision is made); padding is
    masked; learned position embeddings, as the steps are few (at most 31). The state is the candidate
    row's output joined with a linear map of TRIM-Agg's features: the aggregates are a shortcut the encoder
    would otherwise have to learn first (without it, 100 PPO batches left TRIM-Seq regenerating every step),
    and the sequence adds what they throw away."""

    def __init__(self, width: int = 32, layers: int = 2, heads: int = 4):
        super().__init__()
        self.embed = nn.Linear(len(SEQ_FEATURES), width)
        self.position = nn.Embedding(MAX_STEPS, width)
        # Small position embeddings (GPT-2's 0.02), so that the steps' features, not their positions, dominate
        # the first layer (nn.Embedding's default is N(0, 1)).
        nn.init.normal_(self.position.weight, std=0.02)
        layer = nn.TransformerEncoderLayer(width, heads, dim_feedforward=2 * width, dropout=0.0,
                                           batch_first=True, norm_first=True)
        self.layers = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.aggregates = nn.Linear(len(AGG_FEATURES), width)
        self.out = nn.Sequential(nn.LayerNorm(2 * width), nn.Tanh())

    def forward(self, x: tuple[torch.Tensor, torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
        """x: step rows (batch, steps, features), left-aligned, and aggregates (batch, 5); mask: (batch, steps),
        True where a step is."""
        rows, aggregates = x
        positions = torch.arange(rows.shape[1], device=rows.device)
        h = self.layers(self.embed(rows) + self.position(positions), src_key_padding_mask=~mask)
        candidate = h[torch.arange(len(rows)), mask.sum(1) - 1]
        return self.out(torch.cat([candidate, self.aggregates(aggregates)], -1))


def seq_network(width: int = 32, layers: int = 2, heads: int = 4) -> ActorCritic:
    return ActorCritic(PrefixEncoder(width, layers, heads), 2 * width)


class ActorCriticPolicy(LearnedPolicy):
    """A learned routing policy: features from observations, one batched forward pass per round.

    `sampling=True` draws actions from the policy (PPO rollouts) with its own seeded generator, so a
    rollout is reproducible; otherwise the action is the argmax (evaluation)."""

    kind = "policy"
    label = "policy"

    def __init__(self, model: ActorCritic, lam: float, architecture: dict | None = None, sampling: bool = False,
                 seed: int = 0):
        self.model, self.lam = model.eval(), float(lam)
        self.architecture = dict(architecture or {})
        self.sampling, self.seed = sampling, seed
        self._rng = torch.Generator().manual_seed(seed)
        self.name = f"{self.label}(lambda={self.lam!r})" + (f"[sampling, seed {seed}]" if sampling else "")

    def features(self, observation: Observation):
        """What the network reads of one observation."""
        raise NotImplementedError

    def collate(self, inputs: Sequence) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Features of several observations -> the network's input (and a padding mask, if it needs one)."""
        raise NotImplementedError

    def sampler(self, seed: int) -> "ActorCriticPolicy":
        """The same network, drawing its actions (for a PPO rollout), with its own seed."""
        return type(self)(self.model, self.lam, self.architecture, sampling=True, seed=seed)

    def _forward(self, observations: Sequence[Observation]) -> tuple[torch.Tensor, torch.Tensor]:
        """Actor logits and critic values for a batch of observations (no gradients)."""
        x, mask = self.collate([self.features(o) for o in observations])
        with torch.no_grad():
            return self.model(x, mask)

    def decide(self, observations: Sequence[Observation]) -> list[Decision]:
        logits, values = self._forward(observations)
        logp = torch.log_softmax(logits, -1)
        if self.sampling:
            actions = torch.multinomial(logp.exp(), 1, generator=self._rng).squeeze(-1)
        else:
            actions = logits.argmax(-1)
        chosen = logp.gather(-1, actions[:, None]).squeeze(-1)
        return [Decision(bool(a), {"logprob": float(lp), "value": float(v)})
                for a, lp, v in zip(actions.tolist(), chosen, values)]

    def params(self) -> dict:
        return {"lambda": self.lam, **super().params(), **({"sampling_seed": self.seed} if self.sampling else {})}

    def save(self, folder: str | Path) -> Path:
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in self.model.state_dict().items()}, folder / "policy.safetensors")
        (folder / "policy.json").write_text(json.dumps(
            {"kind": self.kind, "lambda": self.lam, "architecture": self.architecture,
             "features": list(AGG_FEATURES if self.kind == "agg" else SEQ_FEATURES)}, indent=1) + "\n")
        return folder


    def regenerate_probability(self, observations: Sequence[Observation]) -> np.ndarray:
        """The actor's probability of regenerating, per observation (the greedy policy regenerates above 0.5)."""
        logits, _ = self._forward(observations)
        return torch.softmax(logits, -1)[:, 1].numpy()


def decision_map(policy: ActorCriticPolicy, step_index: int, tokens: int, grid: int = 21,
                 prefix_tokens: int = 16) -> "pd.DataFrame":
    """P(regenerate) over (r_t, lowest earlier score) at one step index and candidate length: what a
    learned policy does that a threshold (a vertical line at r_t = k) cannot.

    The prefix is `step_index - 1` weak steps of `prefix_tokens` tokens, all scored 1 except the last,
    which carries the lowest earlier score (so min = product = that score)."""
    import pandas as pd

    if step_index < 2:
        raise ValueError("a decision map needs an earlier step: step_index >= 2")
    values = np.round(np.linspace(0.0, 1.0, grid), 6)
    observations = [Observation("map", step_index, float(r), (1.0,) * (step_index - 2) + (float(m),), tokens, 0, 0,
                                previous_tokens=(prefix_tokens,) * (step_index - 1),
                                previous_models=("weak",) * (step_index - 1))
                    for m in values for r in values]
    p = policy.regenerate_probability(observations).reshape(grid, grid)   # rows: lowest earlier score
    return pd.DataFrame(p.T, index=pd.Index(values, name="r_t"), columns=pd.Index(values, name="lowest earlier score"))


class TrimAgg(ActorCriticPolicy):
    """TRIM-Agg: the release's five aggregate features through `agg_network`."""

    kind, label = "agg", "TRIM-Agg"
    minibatches = 1    # PPO minibatches per epoch: the release's (one batch of 64 problems)

    @classmethod
    def new(cls, lam: float, seed: int = 0, **architecture) -> "TrimAgg":
        torch.manual_seed(seed)
        return cls(agg_network(**architecture), lam, architecture)

    def features(self, observation):
        return agg_features(observation)

    def collate(self, inputs):
        return torch.tensor(inputs, dtype=torch.float32), None


class TrimSeq(ActorCriticPolicy):
    """TRIM-Seq: every step of the prefix and the candidate through `seq_network`'s transformer encoder,
    beside TRIM-Agg's features."""

    kind, label = "seq", "TRIM-Seq"
    # Four times the gradient steps per rollout (CleanRL's default): with one, 100 batches left the encoder
    # regenerating nearly every step at low lambdas, where TRIM-Agg had learned to target.
    minibatches = 4

    @classmethod
    def new(cls, lam: float, seed: int = 0, **architecture) -> "TrimSeq":
        torch.manual_seed(seed)
        return cls(seq_network(**architecture), lam, architecture)

    def features(self, observation):
        return seq_features(observation), agg_features(observation)

    def collate(self, inputs):
        rows, mask = pad_rows([r for r, _ in inputs])
        return (rows, torch.tensor([a for _, a in inputs], dtype=torch.float32)), mask


def pad_rows(sequences: Sequence[Sequence[Sequence[float]]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-aligned sequences of step rows -> (batch, longest, features) and its mask."""
    longest = max(len(s) for s in sequences)
    x = np.zeros((len(sequences), longest, len(SEQ_FEATURES)), dtype=np.float32)
    mask = np.zeros((len(sequences), longest), dtype=bool)
    for i, rows in enumerate(sequences):
        x[i, : len(rows)], mask[i, : len(rows)] = rows, True
    return torch.from_numpy(x), torch.from_numpy(mask)


KINDS = {"agg": TrimAgg, "seq": TrimSeq}
POLICY_DIR = Path(__file__).resolve().parents[2] / "data" / "policies"


def policy_root(testbed_prm: str = "model") -> Path:
    """Where the policies trained under a testbed PRM live: data/policies for the testbed's own PRM, and
    data/policies/<name> for another (`trim train-policy --testbed-prm real-noise`), because a policy learns
    the score distribution of the PRM it was trained with."""
    return POLICY_DIR if testbed_prm == "model" else POLICY_DIR / testbed_prm


def policy_dir(kind: str, lam: float, root: str | Path = POLICY_DIR) -> Path:
    """Where the policy of `kind` trained for `lam` lives: <root>/<kind>/lambda-<lam>."""
    return Path(root) / kind / f"lambda-{float(lam)!r}"


def shipped_lambdas(kind: str, root: str | Path = POLICY_DIR) -> list[float]:
    """The lambdas a trained policy of `kind` exists for under `root`, in increasing order."""
    return sorted(float(p.name.removeprefix("lambda-")) for p in (Path(root) / kind).glob("lambda-*")
                  if (p / "policy.json").is_file())


def trained(kind: str, lam: float, root: str | Path = POLICY_DIR) -> ActorCriticPolicy:
    """The shipped (or `root`'s) policy of `kind` for `lam`; the error lists the lambdas there are."""
    folder = policy_dir(kind, lam, root)
    if not (folder / "policy.json").is_file():
        have = shipped_lambdas(kind, root)
        raise FileNotFoundError(f"no trained {kind} policy for lambda {lam!r} in {Path(root) / kind}; trained: "
                                f"{', '.join(map(repr, have)) or 'none'} (train one with "
                                f"`python -m trim.ppo --kind {kind} --lam {lam!r}`)")
    return load_policy(folder)


def load_policy(folder: str | Path) -> ActorCriticPolicy:
    """A policy saved by `ActorCriticPolicy.save` (e.g. one of `data/policies/`)."""
    from safetensors.torch import load_file

    folder = Path(folder)
    config_path = folder / "policy.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"{folder} holds no trained policy (no policy.json); train one with "
                                "`python -m trim.ppo` or pick a folder under data/policies/")
    config = json.loads(config_path.read_text())
    if config.get("kind") not in KINDS:
        raise ValueError(f"{config_path}: kind {config.get('kind')!r} is not one of {', '.join(KINDS)}")
    cls = KINDS[config["kind"]]
    network = agg_network if cls is TrimAgg else seq_network
    model = network(**config.get("architecture", {}))
    model.load_state_dict(load_file(folder / "policy.safetensors"))
    policy = cls(model, config["lambda"], config.get("architecture", {}))
    record = folder / "training.json"
    policy.training = json.loads(record.read_text()) if record.is_file() else None  # curves, settings, time
    return policy
