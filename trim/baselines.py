"""Run the query-level baselines end to end on the testbed: label, train, tune, evaluate.

Labels come from weak-only and strong-only runs on the train split; routers that tune anything tune
on validation; every curve is measured on test, beside TRIM-Thr, in the engine's metrics."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
import torch

from trim.metrics import frontier_table
from trim.policies import StrongOnly, WeakOnly
from trim.routers import (
    AutoMixRouter,
    BertRouter,
    MatrixFactorizationRouter,
    Outcomes,
    QueryRouter,
    RandomRouter,
    SimilarityWeightedRouter,
)


@torch.inference_mode()
def weak_confidence(generator, questions: Sequence[str], solutions: Sequence[Sequence[str]],
                    batch_size: int = 128) -> np.ndarray:
    """Mean log-probability per token the weak model gives its own solution (AutoMix's 'self' verifier)."""
    from trim.protocols import STEP_DELIMITER, StepRequest

    tok, model = generator.tokenizer, generator.model
    out = []
    for start in range(0, len(questions), batch_size):
        prompts = [generator.prompt(StepRequest("", q)) for q in questions[start: start + batch_size]]
        bodies = [STEP_DELIMITER.join(s) for s in solutions[start: start + batch_size]]
        p_ids = tok(prompts, add_special_tokens=False).input_ids
        b_ids = tok(bodies, add_special_tokens=False).input_ids
        width = max(len(p) + len(b) for p, b in zip(p_ids, b_ids))
        ids = torch.full((len(prompts), width), tok.pad_token_id)
        mask = torch.zeros_like(ids)
        for row, (p, b) in enumerate(zip(p_ids, b_ids)):
            ids[row, : len(p) + len(b)] = torch.tensor(p + b)
            mask[row, : len(p) + len(b)] = 1
        logp = torch.log_softmax(model(input_ids=ids, attention_mask=mask).logits[:, :-1].float(), -1)
        token_logp = logp.gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
        for row, (p, b) in enumerate(zip(p_ids, b_ids)):
            out.append(float(token_logp[row, len(p) - 1: len(p) + len(b) - 1].mean()) if b else -99.0)
    return np.array(out)


def outcomes(harness, problems: Sequence, tag: str = "") -> Outcomes:
    """Router inputs and labels from weak-only and strong-only runs (`harness` is a `trim.experiment.Harness`)."""
    weak = harness.run(problems, WeakOnly(), tag)
    strong = harness.run(problems, StrongOnly(), tag)
    data = Outcomes.from_traces(weak, strong, {p.id: p.question for p in problems})
    steps = [[s["text"] for s in r["steps"]] for r in weak]
    data.weak_confidence = weak_confidence(harness.weak.generator, data.questions, steps)
    return data


def default_routers(seed: int = 0) -> list[QueryRouter]:
    return [RandomRouter(seed), BertRouter(seed=seed), MatrixFactorizationRouter(seed=seed), SimilarityWeightedRouter(),
            AutoMixRouter("self"), AutoMixRouter("self", meta="belief"),
            AutoMixRouter("prm"), AutoMixRouter("prm", meta="belief")]


def query_router_names() -> set[str]:
    """The names of every query-level router the library runs (one model per whole query)."""
    return {router.name for router in default_routers()}


def best_query_router(table: pd.DataFrame, metric: str = "dIBC") -> str:
    """The book's one definition of "the best query-level router": of the query-level routers in `table` (a
    `frontier_table` of policies run on the same problems), the one with the highest mean dIBC.

    Every chapter, the CLI and the results compare step-level routing against this router, so a ratio
    such as dIBC(TRIM-Thr) / dIBC(best query-level router) means the same thing everywhere."""
    names = [name for name in table.index if name in query_router_names()]
    if not names:
        raise ValueError(f"no query-level router in the table (rows: {', '.join(map(str, table.index))}); run them "
                         "with `baselines.compare`")
    return str(table.loc[names, metric].astype(float).idxmax())


def compare(harness, train: Sequence, validation: Sequence, test: Sequence, step_families: dict[str, pd.DataFrame],
            routers: Sequence[QueryRouter] | None = None) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    """Fit every router, trace its curve on test, and tabulate CPT/dIBC/APGR beside the step-level families.

    `step_families` maps a name to a sweep table (columns strong_tokens, accuracy) measured on `test`."""
    data = {name: outcomes(harness, problems, tag) for name, problems, tag in
            (("train", train, "-train"), ("validation", validation, "-validation"), ("test", test, ""))}
    ends, _, _ = harness.endpoints(test)
    questions = harness.question_tokens(test)
    # AutoMix-PRM's verifier reads every weak solution whole, once (the other routers read no PRM).
    whole_solution = (None if questions is None else
                      float(np.mean([questions[i] for i in data["test"].ids]) + data["test"].weak_tokens.mean()))
    curves = {}
    for router in routers or default_routers():
        router.fit(data["train"], data["validation"])
        curves[router.name] = router.curve(data["test"])
        if whole_solution is not None:
            curves[router.name]["prm_tokens"] = whole_solution if getattr(router, "verifier", None) == "prm" else 0.0
    return frontier_table({**step_families, **curves}, ends), curves
