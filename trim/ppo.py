"""PPO for TRIM-Agg and TRIM-Seq: episodes from the engine, the official release's update, and the
checkpoint chosen on validation.

The decision problem. An episode is one problem solved step by step; at each step the policy sees the
engine's `Observation` of the weak candidate and chooses continue (0) or regenerate (1). A regeneration
earns -lambda x (the strong step's tokens); the last step also earns +1 if the final answer is right.
Episodes are never produced by a loop of their own: `EngineEnvironment` runs a batch of training problems
through the engine (`Harness.run`, the lockstep rounds and shared caches of every other run) with a
sampling copy of the policy, and rebuilds each episode from its trace, where the engine wrote every
observation, decision, log-probability and value.

Why our own PPO rather than stable-baselines3. SB3 steps a vectorised environment from its own loop, one
action per sub-environment per call; the engine is the loop here (a round proposes, scores and decides for
every active problem at once, and problems finish at different rounds), so SB3 would need the engine
inverted into a coroutine or a thread per round. The update itself is short and is written to match the
release's (`TRIM_Agg.py`): whole-episode batches of 64 problems, 3 epochs, clipped objective (0.2), GAE
(gamma 1, lambda 0.95) with advantages normalised over the batch, value clipping, entropy bonus annealed
linearly from 0.01 to 0.001, Adam (eps 1e-5, weight decay 1e-5) with the learning rate decayed linearly
from 3e-4 to 0, gradient norm clipped at 0.5. `tests/test_ppo.py` checks it reaches the known optimum of
a small routing problem (`trim.toy_routing`) and that a seed fixes the trained weights.

Long runs keep their work: after every validation the whole training state is written to `state.pt`, and
a rerun with the same settings resumes from it (the batches drawn and each rollout's seed depend only on
the seed and the batch index, so a resumed run trains exactly as an uninterrupted one).

    trim train-policy --kind agg seq --lam 0.001 0.003 0.01   # -> data/policies/<kind>/lambda-<lam>
"""

from __future__ import annotations

import copy
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np
import torch

from trim.policies.base import Observation
from trim.policies.learned import KINDS, ActorCriticPolicy, load_policy, policy_dir, policy_root


@dataclasses.dataclass(frozen=True)
class PPOConfig:
    """One training run. Defaults are the release's, except the number of batches (sized for the testbed)."""

    lam: float                    # lambda: the price of one strong token, in units of a right answer
    batches: int = 100            # PPO updates, each on `batch_problems` fresh episodes
    batch_problems: int = 64
    epochs: int = 3
    minibatches: int = 1          # per epoch; the release: batch 64, minibatch 64
    lr: float = 3e-4
    gamma: float = 1.0
    gae_lambda: float = 0.95
    clip: float = 0.2
    value_coef: float = 0.5
    entropy_start: float = 0.01
    entropy_end: float = 0.001
    max_grad_norm: float = 0.5
    adam_eps: float = 1e-5
    weight_decay: float = 1e-5
    task_reward: float = 1.0
    validate_every: int = 20      # batches between validations (and saved training states)
    seed: int = 0

    def __post_init__(self):
        if not self.lam >= 0:
            raise ValueError(f"lambda must be >= 0 (the price of a strong token), got {self.lam}")
        if self.batches < 1 or self.batch_problems < 1 or self.validate_every < 1:
            raise ValueError("batches, batch_problems and validate_every must be at least 1")


@dataclasses.dataclass
class Episode:
    inputs: list                  # per decision: the policy's features of the observation
    actions: list[int]
    logprobs: list[float]
    values: list[float]
    rewards: list[float]


class Environment(Protocol):
    def collect(self, policy: ActorCriticPolicy, batch: int) -> list[Episode]:
        """Episodes of the sampling `policy` on the problems of training batch `batch`."""

    def validate(self, policy: ActorCriticPolicy) -> dict:
        """The greedy policy's result on validation: at least `objective` (higher is better)."""


def observation_of(problem_id: str, fields: dict) -> Observation:
    """The `Observation` a trace step recorded (`Observation.record`), rebuilt."""
    return Observation(problem_id=problem_id, **{k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()})


def episodes_from_records(records: Sequence[dict], policy: ActorCriticPolicy, lam: float,
                          task_reward: float = 1.0) -> list[Episode]:
    """PPO episodes from engine traces of a sampling policy: every decided step with its reward."""
    out = []
    for r in records:
        steps = [s for s in r["steps"] if "observation" in s]
        if not steps:
            continue
        if any("policy_info" not in s for s in steps):
            raise ValueError(f"problem {r['problem_id']}: a step has no policy_info; episodes come from runs of "
                             "an ActorCriticPolicy (its decisions record their log-probability and value)")
        regenerated = [s["decision"] == "regenerate" for s in steps]
        rewards = [-lam * s["tokens"] if regen else 0.0 for s, regen in zip(steps, regenerated)]
        rewards[-1] += task_reward * bool(r["correct"])
        out.append(Episode(inputs=[policy.features(observation_of(r["problem_id"], s["observation"]))
                                   for s in steps],
                           actions=[int(x) for x in regenerated],
                           logprobs=[s["policy_info"]["logprob"] for s in steps],
                           values=[s["policy_info"]["value"] for s in steps], rewards=rewards))
    return out


def advantages(episode: Episode, gamma: float, gae_lambda: float) -> tuple[np.ndarray, np.ndarray]:
    """GAE advantages and returns of one episode; the value after the last step is 0 (it ends)."""
    values = np.append(np.asarray(episode.values, dtype=np.float64), 0.0)
    adv, running = np.zeros(len(episode.rewards)), 0.0
    for t in reversed(range(len(episode.rewards))):
        delta = episode.rewards[t] + gamma * values[t + 1] - values[t]
        running = delta + gamma * gae_lambda * running
        adv[t] = running
    return adv, adv + values[:-1]


def update(policy: ActorCriticPolicy, optimizer: torch.optim.Optimizer, episodes: Sequence[Episode],
           config: PPOConfig, entropy_coef: float, rng: np.random.Generator) -> dict:
    """One PPO update on a batch of episodes (the release's loss, term for term)."""
    model = policy.model.train()
    inputs = [x for e in episodes for x in e.inputs]
    actions = torch.tensor([a for e in episodes for a in e.actions])
    old_logp = torch.tensor([p for e in episodes for p in e.logprobs], dtype=torch.float32)
    old_values = torch.tensor([v for e in episodes for v in e.values], dtype=torch.float32)
    adv, returns = zip(*(advantages(e, config.gamma, config.gae_lambda) for e in episodes))
    adv = torch.tensor(np.concatenate(adv), dtype=torch.float32)
    returns = torch.tensor(np.concatenate(returns), dtype=torch.float32)
    if len(adv) > 1:
        adv = (adv - adv.mean()) / (adv.std() + 1e-8)
    stats = {"policy_loss": [], "value_loss": [], "entropy": []}
    for _ in range(config.epochs):
        for part in np.array_split(rng.permutation(len(inputs)), config.minibatches):
            x, mask = policy.collate([inputs[i] for i in part])
            logits, values = model(x, mask)
            logp_all = torch.log_softmax(logits, -1)
            logp = logp_all.gather(-1, actions[part, None]).squeeze(-1)
            entropy = -(logp_all.exp() * logp_all).sum(-1).mean()
            ratio = torch.exp(logp - old_logp[part])
            policy_loss = torch.max(-adv[part] * ratio,
                                    -adv[part] * ratio.clamp(1 - config.clip, 1 + config.clip)).mean()
            clipped = old_values[part] + (values - old_values[part]).clamp(-config.clip * config.task_reward,
                                                                           config.clip * config.task_reward)
            value_loss = 0.5 * torch.max((values - returns[part]) ** 2, (clipped - returns[part]) ** 2).mean()
            loss = policy_loss + config.value_coef * value_loss - entropy_coef * entropy
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
            optimizer.step()
            for key, value in (("policy_loss", policy_loss), ("value_loss", value_loss), ("entropy", entropy)):
                stats[key].append(value.item())
    model.eval()
    return {key: float(np.mean(v)) for key, v in stats.items()}


def _config_key(config: PPOConfig, policy: ActorCriticPolicy, environment) -> dict:
    return {"config": dataclasses.asdict(config), "kind": policy.kind, "architecture": policy.architecture,
            "environment": getattr(environment, "description", type(environment).__name__)}


def train(policy: ActorCriticPolicy, environment: Environment, config: PPOConfig, out: str | Path | None = None,
          progress: bool | None = None, command: str | None = None) -> dict:
    """Train `policy` in place; keep the weights that did best on validation; return the training record.

    With `out`, the training state goes to `out/state.pt` after every validation (a rerun resumes from it)
    and, at the end, the chosen policy (`policy.safetensors`, `policy.json`) and `training.json`."""
    from trim.progress import progress_bar

    out = Path(out) if out is not None else None
    optimizer = torch.optim.Adam(policy.model.parameters(), lr=config.lr, eps=config.adam_eps,
                                 weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.LinearLR(optimizer, 1.0, 0.0, total_iters=config.batches)
    key = _config_key(config, policy, environment)
    state = {"batch": 0, "training": [], "validation": [], "best": None, "best_weights": None, "seconds": 0.0}
    state_path = out / "state.pt" if out is not None else None
    if state_path is not None and state_path.exists():
        saved = torch.load(state_path, weights_only=False)
        if saved["key"] != key:
            raise ValueError(f"{state_path} belongs to another training run ({saved['key']}); delete it or "
                             "train into another --out folder")
        policy.model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        schedule.load_state_dict(saved["schedule"])
        state = saved["state"]
    started = time.perf_counter() - state["seconds"]
    with progress_bar(progress=progress, total=config.batches, initial=state["batch"],
                      desc=f"{policy.label} lambda={config.lam:g}") as bars:
        for batch in range(state["batch"], config.batches):
            sampler = policy.sampler(seed=int(np.random.default_rng([config.seed, batch]).integers(2**31)))
            episodes = environment.collect(sampler, batch)
            fraction = batch / max(config.batches - 1, 1)
            entropy_coef = config.entropy_start + fraction * (config.entropy_end - config.entropy_start)
            stats = update(policy, optimizer, episodes, config, entropy_coef,
                           np.random.default_rng([config.seed, batch, 1]))
            schedule.step()
            steps = sum(len(e.actions) for e in episodes)
            state["training"].append({
                "batch": batch + 1, **stats, "entropy_coef": entropy_coef,
                "return": float(np.mean([sum(e.rewards) for e in episodes])),
                "regenerated_share": sum(sum(e.actions) for e in episodes) / max(steps, 1)})
            state["batch"] = batch + 1
            bars.update(1)
            if state["batch"] % config.validate_every == 0 or state["batch"] == config.batches:
                result = {"batch": state["batch"], **environment.validate(policy)}
                state["validation"].append(result)
                if state["best"] is None or result["objective"] > state["best"]["objective"]:
                    state["best"] = result
                    state["best_weights"] = copy.deepcopy(policy.model.state_dict())
                state["seconds"] = time.perf_counter() - started
                if state_path is not None:
                    out.mkdir(parents=True, exist_ok=True)
                    tmp = state_path.with_suffix(".tmp")
                    torch.save({"key": key, "model": policy.model.state_dict(), "optimizer": optimizer.state_dict(),
                                "schedule": schedule.state_dict(), "state": state}, tmp)
                    tmp.replace(state_path)
                bars.set_postfix(objective=f"{result['objective']:.3f}")
    policy.model.load_state_dict(state["best_weights"])
    record = {"command": command, "kind": policy.kind, "lambda": config.lam, "seed": config.seed,
              "config": dataclasses.asdict(config), "architecture": policy.architecture,
              "environment": key["environment"], "wall_seconds": round(time.perf_counter() - started, 1),
              "torch": torch.__version__, "chosen": state["best"],
              # The per-batch curve to 4 significant digits: it is for plotting, and it is most of the file.
              "training": [{k: float(f"{v:.4g}") if isinstance(v, float) else v for k, v in row.items()}
                           for row in state["training"]],
              "validation": state["validation"]}
    if out is not None:
        policy.save(out)
        (out / "training.json").write_text(training_json(record))
        state_path.unlink(missing_ok=True)
    return record


def training_json(record: dict) -> str:
    """`training.json`'s text: indented, but one line per PPO batch of the curve, which is most of the file."""
    rows = ",\n  ".join(json.dumps(row) for row in record["training"])
    return json.dumps({**record, "training": None}, indent=1).replace('"training": null',
                                                                       f'"training": [\n  {rows}\n ]') + "\n"


class EngineEnvironment:
    """Episodes from the engine on the testbed (or any trio behind a `Harness`).

    Batch b draws `batch_problems` training problems with a generator seeded by (seed, b); validation runs
    the greedy policy on fixed problems and scores accuracy - lambda x strong tokens per query, the
    release's checkpoint criterion."""

    def __init__(self, harness, train_problems: Sequence, validation_problems: Sequence, config: PPOConfig):
        self.harness, self.train_problems, self.validation_problems = harness, list(train_problems), \
            list(validation_problems)
        self.config = config
        self.description = (f"engine: weak {harness.weak.name}, strong {harness.strong.name}, PRM {harness.prm.name}; "
                            f"{len(self.train_problems)} training problems from {self.train_problems[0].id}, "
                            f"{len(self.validation_problems)} validation problems from "
                            f"{self.validation_problems[0].id}")

    def collect(self, policy: ActorCriticPolicy, batch: int) -> list[Episode]:
        rng = np.random.default_rng([self.config.seed, batch, 2])
        size = min(self.config.batch_problems, len(self.train_problems))
        problems = [self.train_problems[i] for i in sorted(rng.choice(len(self.train_problems), size, replace=False))]
        records = self.harness.run(problems, policy)
        return episodes_from_records(records, policy, self.config.lam, self.config.task_reward)

    def validate(self, policy: ActorCriticPolicy) -> dict:
        from trim.metrics import summarize

        summary = summarize(self.harness.run(self.validation_problems, policy))
        return {"accuracy": summary["accuracy"], "strong_tokens": summary["strong_tokens"],
                "objective": summary["accuracy"] - self.config.lam * summary["strong_tokens"]}


def cmd_train_policy(args) -> int:
    """`trim train-policy`: train TRIM-Agg and/or TRIM-Seq for each lambda, resumably."""
    from trim import testbed
    from trim.experiment import Harness
    from trim.testbed.oracle import KNOWING_PRMS

    def config_for(kind: str, lam: float) -> PPOConfig:
        return PPOConfig(lam=lam, batches=args.batches, validate_every=args.validate_every, seed=args.seed,
                         minibatches=KINDS[kind].minibatches)

    for kind in args.kind:
        for lam in args.lam:
            config_for(kind, lam)   # a bad lambda or count is refused before the models load
    tb = testbed.load()
    train_problems = tb.splits["train"][: args.train_problems]
    validation_problems = tb.splits["validation"][: args.validation_problems]
    prm = tb.prm
    if args.testbed_prm != "model":   # it must know every problem it scores
        prm = KNOWING_PRMS[args.testbed_prm](list(train_problems) + list(validation_problems))
    # One harness for every policy: the steps one training decodes are cached for the next.
    harness = Harness(tb.weak, tb.strong, prm, progress=False)
    command = "trim " + " ".join(args.argv)
    root = policy_root(args.testbed_prm) if args.out is None else args.out
    for kind in args.kind:
        previous = None
        for lam in args.lam:
            out = policy_dir(kind, lam, root)
            if (out / "training.json").exists() and not (out / "state.pt").exists():
                print(f"{out}: already trained (delete it to train again)")
                previous = out
                continue
            config = config_for(kind, lam)
            environment = EngineEnvironment(harness, train_problems, validation_problems, config)
            policy = KINDS[kind].new(lam, seed=args.seed)
            if args.warm_start and previous is not None:
                # Start from the previous lambda's policy: from a uniform start, PPO at a high price learns to
                # stop regenerating before it learns which steps are worth it.
                policy.model.load_state_dict(load_policy(previous).model.state_dict())
                environment.description += f"; initialised from {previous.name}"
            chosen = train(policy, environment, config, out=out, progress=False if args.quiet else None,
                           command=command)["chosen"]
            previous = out
            print(f"{policy.label} lambda={lam!r}: chosen at batch {chosen['batch']}: "
                  f"accuracy {chosen['accuracy']:.3f}, strong tokens {chosen['strong_tokens']:.1f}, "
                  f"objective {chosen['objective']:.3f}; -> {out}", flush=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m trim.ppo ...` is `trim train-policy ...`."""
    from trim.cli import main as cli_main

    return cli_main(["train-policy", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
