"""Query-level routers on small data: they train, decide sensibly, and survive save/load."""

import numpy as np
import pytest

from trim.metrics import Endpoints, cpt
from trim.prm_quality import auroc
from trim.routers import (
    AutoMixRouter,
    BertRouter,
    MatrixFactorizationRouter,
    Outcomes,
    QueryRouter,
    RandomRouter,
    SimilarityWeightedRouter,
    route_curve,
)
from trim.testbed import task


def make_outcomes(problems, seed=0):
    """Long chains defeat the weak model (a learnable signal in the question); the strong model is right."""
    rng = np.random.default_rng(seed)
    long = np.array([len(p.operations) >= 7 for p in problems])
    weak_correct = ~long ^ (rng.random(len(problems)) < 0.1)
    scores = [list(np.clip(rng.normal(0.8 if ok else 0.3, 0.15, len(p.operations)), 0, 1))
              for p, ok in zip(problems, weak_correct)]
    return Outcomes(ids=[p.id for p in problems], questions=[p.question for p in problems],
                    weak_correct=weak_correct, strong_correct=np.ones(len(problems), bool),
                    strong_tokens=np.array([9.0 * len(p.operations) for p in problems]),
                    weak_tokens=np.array([9.0 * len(p.operations) for p in problems]),
                    weak_step_scores=scores,
                    weak_confidence=np.where(weak_correct, -0.1, -0.5) + rng.normal(0, 0.1, len(problems)))


@pytest.fixture(scope="module")
def data():
    train = make_outcomes(task.make_split("train", size=240))
    return train, make_outcomes(task.make_split("validation", size=120), seed=1)


def test_route_curve_spans_weak_only_to_strong_only(data):
    _, val = data
    curve = route_curve(np.arange(len(val.ids), dtype=float), val)
    assert curve["strong_tokens"].min() == 0 and curve["accuracy"].iloc[-1] == pytest.approx(val.weak_correct.mean())
    assert curve["strong_tokens"].max() == pytest.approx(val.strong_tokens.mean())
    assert curve["accuracy"].max() == pytest.approx(1.0)


@pytest.mark.parametrize("router", [MatrixFactorizationRouter(steps=200), SimilarityWeightedRouter(),
                                    AutoMixRouter("prm"), AutoMixRouter("prm", meta="belief"),
                                    AutoMixRouter("self"), AutoMixRouter("self", meta="belief")], ids=lambda r: r.name)
def test_learned_routers_find_the_queries_that_need_the_strong_model(router, data, tmp_path):
    train, val = data
    router.fit(train, val)
    scores = router.score(val)
    assert auroc(scores, val.strong_needed) > 0.75, router.name
    ends = Endpoints(val.weak_correct.mean(), 1.0, val.strong_tokens.mean())
    curve = router.curve(val)
    random_curve = RandomRouter().curve(val)
    assert cpt(list(zip(curve.strong_tokens, curve.accuracy)), ends, 80) < cpt(
        list(zip(random_curve.strong_tokens, random_curve.accuracy)), ends, 80)
    router.save(tmp_path / "r")
    assert np.allclose(QueryRouter.load(tmp_path / "r").score(val), scores)


def test_automix_prm_chooses_an_aggregation_on_validation(data):
    train, val = data
    router = AutoMixRouter("prm").fit(train, val)
    assert router.aggregation in ("min", "last", "product")


def test_bert_router_fine_tunes_saves_and_loads(data, tmp_path):
    train, val = data
    router = BertRouter(epochs=1, batch_size=32).fit(train, val)
    scores = router.score(val)
    assert scores.shape == (len(val.ids),) and ((0 <= scores) & (scores <= 1)).all()
    router.save(tmp_path / "bert")
    assert np.allclose(QueryRouter.load(tmp_path / "bert").score(val), scores, atol=1e-5)


def test_random_router_is_deterministic_and_uniform(data):
    _, val = data
    a, b = RandomRouter(3).score(val), RandomRouter(3).score(val)
    assert (a == b).all() and 0.35 < a.mean() < 0.65


def test_bad_router_settings_and_missing_dirs_are_explained(tmp_path):
    with pytest.raises(ValueError, match="verifier"):
        AutoMixRouter("oracle")
    with pytest.raises(FileNotFoundError, match="router.json"):
        QueryRouter.load(tmp_path)


def test_the_best_query_level_router_is_chosen_among_every_query_level_router_only():
    import pandas as pd

    from trim import baselines

    table = pd.DataFrame({"dIBC": [2.8, 0.34, 0.45, 0.36, -0.05, 3.0]},
                         index=["TRIM-Thr", "AutoMix", "AutoMix (belief)", "AutoMix-PRM", "BERT classifier", "RSD"])
    assert baselines.best_query_router(table) == "AutoMix (belief)"  # step-level rows never count
    with pytest.raises(ValueError, match="no query-level router"):
        baselines.best_query_router(table.loc[["TRIM-Thr", "RSD"]])


def test_the_shipped_results_name_the_best_query_level_router_they_contain():
    import re
    from pathlib import Path

    import pandas as pd

    from trim import baselines

    results = Path(__file__).resolve().parents[1] / "data" / "results"
    table = pd.read_csv(results / "testbed_test_baselines.csv", index_col=0)
    best = baselines.best_query_router(table)
    said = re.search(r"is\s+(.+?): dIBC\(TRIM-Thr\) / dIBC\((.+?)\) = (\d+\.\d+) / (\d+\.\d+) = (\d+\.\d+)",
                     " ".join((results / "README.md").read_text().split()))
    assert said and said.group(1) == said.group(2) == best
    thr, query = table.loc["TRIM-Thr", "dIBC"], table.loc[best, "dIBC"]
    assert (float(said.group(3)), float(said.group(4)), float(said.group(5))) == (
        round(thr, 2), round(query, 3), round(thr / query, 1))
