"""Tests for trim.grading: extraction, equivalence verdicts, time limits, concurrency, MATH-500."""

from __future__ import annotations

import concurrent.futures
import json
import multiprocessing
import os
import time
from pathlib import Path

import pytest

from trim import grading
from trim.grading import extract_answer, grade, grade_many, grading_stats, is_equivalent, reset_grading_stats


def data_dir() -> Path:
    """``$TRIM_DATA_DIR``, else ``<repo>/../shared/data``. Missing data fails loudly, never skips."""
    default = Path(__file__).resolve().parents[1].parent / "shared" / "data"
    path = Path(os.environ.get("TRIM_DATA_DIR", default))
    if not path.is_dir():
        pytest.fail(f"data directory {path} does not exist; set TRIM_DATA_DIR=/path/to/shared/data")
    return path


def math500_rows() -> list[dict]:
    path = data_dir() / "math500" / "test.jsonl"
    if not path.is_file():
        pytest.fail(f"{path} is missing; set TRIM_DATA_DIR to a directory holding math500/test.jsonl")
    with path.open() as f:
        return [json.loads(line) for line in f if line.strip()]


def test_math500_gold_answer_matches_boxed_solution():
    rows = math500_rows()
    assert len(rows) == 500
    grades = grade_many([r["answer"] for r in rows], [r["solution"] for r in rows], workers=2)
    bad = [(r["unique_id"], r["answer"], g.extracted, g.status) for r, g in zip(rows, grades) if not g.correct]
    for uid, gold, extracted, status in bad:
        print(f"DISAGREE {uid}: gold={gold!r} extracted={extracted!r} status={status}")
    rate = 1 - len(bad) / len(rows)
    print(f"MATH-500 gold vs extract_answer(solution) agreement: {rate:.1%} ({len(rows) - len(bad)}/{len(rows)})")
    assert rate >= 0.99


# (gold, prediction, mathematically correct verdict)
CASES = [
    # fractions
    (r"\frac{1}{2}", r"\dfrac{1}{2}", True),
    (r"\frac{1}{2}", "1/2", True),
    (r"\tfrac{3}{4}", "0.75", True),
    (r"\frac{14}{3}", r"\frac{28}{6}", True),
    (r"\frac{1}{2}", r"\frac{1}{3}", False),
    (r"\frac{1}{3}", "0.33", False),
    # mixed numbers
    (r"2\frac{1}{2}", "5/2", True),
    (r"2\frac{1}{2}", "1", False),  # not the product 2 * 1/2
    (r"-1\frac{1}{3}", r"-\frac{4}{3}", True),
    # decimals vs fractions
    (r"\frac12", "0.5", True),
    ("0.5", r"\frac{1}{2}", True),
    # intervals
    ("(0,1]", "(0,1)", False),
    ("(0,1]", "(0, 1]", True),
    (r"[2, \infty)", r"[2,\infty)", True),
    (r"(-\infty, 3) \cup (5, \infty)", r"(-\infty,3)\cup(5,\infty)", True),
    # tuples / coordinates
    ("(1,2)", "(2,1)", False),
    ("(1,2)", "(1, 2)", True),
    (r"\left( 3, \frac{\pi}{2} \right)", r"(3, \pi/2)", True),
    ("(1,2,3)", "(1,2)", False),
    # degrees
    (r"30^\circ", "30", True),
    ("30", r"30^{\circ}", True),
    (r"45^\circ", r"30^\circ", False),
    # units and \text{}
    (r"5\text{ cm}", "5", True),
    ("5", r"5 \text{ cm}", True),
    (r"12\text{ cm}^2", "12", True),  # the unit's exponent must not square the number
    (r"5\text{ cm}", "6", False),
    (r"\text{Evelyn}", "Evelyn", True),
    # several answers: a solution set, so order does not matter but membership does
    ("1, 2", "2, 1", True),
    ("-2, 3", "3, -2", True),
    ("1, 2", "1", False),
    # matrices / vectors
    (r"\begin{pmatrix}1\\2\end{pmatrix}", r"\begin{pmatrix} 1 \\ 2 \end{pmatrix}", True),
    (r"\begin{pmatrix}1\\2\end{pmatrix}", r"\begin{pmatrix}2\\1\end{pmatrix}", False),
    (r"\begin{pmatrix}1 & 0\\0 & 1\end{pmatrix}", r"\begin{bmatrix}1&0\\0&1\end{bmatrix}", True),
    # negatives
    ("-3", "3", False),
    ("-3", "-3", True),
    (r"-\frac{1}{2}", r"\frac{-1}{2}", True),
    # roots
    (r"3\sqrt{13}", r"\sqrt{117}", True),
    (r"2\sqrt{2}", r"\sqrt{8}", True),
    (r"\frac{\sqrt{3}}{2}", r"\frac{1}{2}\sqrt{3}", True),
    (r"\sqrt{2}", "1.41", False),
    # expressions in pi
    (r"2\pi", r"\pi*2", True),
    (r"2\pi", r"2 \pi", True),
    (r"\frac{\pi}{4}", r"\pi/4", True),
    (r"2\pi", "6.28", False),
    # percent: a "what percent" answer of 50 means 50% (math-verify's convention)
    (r"50\%", "50", True),
    (r"50\%", "50%", True),
    (r"50\%", r"40\%", False),
    # assignments
    ("x=3", "3", True),
    ("3", "x = 3", True),
    ("3", "x = 4", False),
    # thousands separators
    ("1000", "1,000", True),
    ("1000", "1{,}000", True),
    ("10", "1,0", False),
    # symbolic
    ("x^2+2x+1", "(x+1)^2", True),
    ("2x+1", "2y+1", False),
    # empty / garbage / None
    ("3", "", False),
    ("3", "   ", False),
    ("3", "asdf}{", False),
    ("3", "3}{", False),
    ("3", None, False),
]


@pytest.mark.parametrize(("gold", "prediction", "expected"), CASES)
def test_is_equivalent(gold, prediction, expected):
    assert is_equivalent(gold, prediction) is expected


@pytest.mark.parametrize(
    ("solution", "expected"),
    [
        (r"so the answer is $\boxed{\frac{1}{2}}$.", r"\frac{1}{2}"),
        (r"$\boxed{\left\{1, \frac{2}{3}\right\}}$", r"\left\{1, \frac{2}{3}\right\}"),
        (r"first \boxed{1}, then \boxed{2}", "2"),
        (r"\boxed{\boxed{7}}", "7"),
        (r"hence $\boxed 5$", "5"),
        (r"\fbox{7}", "7"),
        (r"\boxed{1} and a broken \boxed{2", "1"),
        ("The answer is 42.", "42"),
        (r"Thus the final answer is $\frac{3}{4}$.", r"\frac{3}{4}"),
        ("Answer: 12", "12"),
        ("**Answer:** 3.5", "3.5"),
        ("The answer is 3. Wait, no: the answer is 4. Done.", "4"),
        (r"\boxed{}", None),
        ("no conclusion here", None),
        ("", None),
        (None, None),
    ],
)
def test_extract_answer(solution, expected):
    assert extract_answer(solution) == expected


def test_grade_statuses_and_stats():
    reset_grading_stats()
    assert grade("5", r"so \boxed{5}") == grading.Grade("5", True, "correct")
    assert grade("5", r"so \boxed{6}").status == "wrong"
    assert grade("5", "I give up").status == "no_answer"
    assert grade("5", r"\boxed{\text{cannot tell}}").status in {"wrong", "parse_error"}
    stats = grading_stats()
    assert stats["correct"] == 1 and stats["wrong"] + stats["parse_error"] == 2 and stats["no_answer"] == 1
    stats["correct"] += 100  # a copy: mutating it leaves the module counter alone
    assert grading_stats()["correct"] == 1
    reset_grading_stats()
    assert sum(grading_stats().values()) == 0


def test_internal_error_is_parse_error_not_crash(monkeypatch):
    def boom(gold, pred):
        raise RuntimeError("sympy exploded")

    monkeypatch.setattr(grading, "_verify_pair", boom)
    assert grade("1", r"\boxed{1}").status == "parse_error"


def test_hard_time_limit(monkeypatch):
    monkeypatch.setattr(grading, "_verify_pair", lambda gold, pred: time.sleep(3) or "correct")
    limit = 0.25
    start = time.monotonic()
    result = grade("1", r"\boxed{1}", timeout=limit)
    elapsed = time.monotonic() - start
    assert result.status == "timeout" and not result.correct
    assert elapsed < 2 * limit, elapsed


def test_eight_threads_concurrently():
    # Thread safety, not speed: a generous limit so a loaded 2-core CI machine cannot time a case out.
    expected = [e for _, _, e in CASES]
    with concurrent.futures.ThreadPoolExecutor(8) as ex:
        futures = [ex.submit(lambda: [is_equivalent(g, p, timeout=120) for g, p, _ in CASES]) for _ in range(8)]
        for fut in futures:
            assert fut.result() == expected


def test_process_pool_spawn():
    golds, preds = ["1/2", "(1,2)", "3"], ["0.5", "(2,1)", r"\boxed{3}"]
    with concurrent.futures.ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as ex:
        assert list(ex.map(is_equivalent, golds, preds)) == [True, False, True]
        assert [g.status for g in ex.map(grade, golds, [rf"\boxed{{{p}}}" for p in preds])] == [
            "correct", "wrong", "correct"]


def test_grade_many_preserves_order_and_counts():
    reset_grading_stats()
    golds = ["1", "2", "3", "4"]
    sols = [r"\boxed{1}", r"\boxed{5}", "nothing", r"\boxed{4}"]
    for kwargs in ({"workers": 1}, {"workers": 4, "use_threads": True}):
        assert [g.status for g in grade_many(golds, sols, **kwargs)] == ["correct", "wrong", "no_answer", "correct"]
    assert grading_stats() == {"correct": 4, "wrong": 2, "no_answer": 2}
