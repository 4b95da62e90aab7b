"""Tests for trim.grading: extraction, equivalence verdicts, statuses, concurrency, MATH-500.

The hand-written format cases and their report are in test_grading_cases.py, the hard
time limit and the worker processes in test_grading_limits.py, and every benchmark
gold against itself in test_grading_benchmarks.py.
"""

from __future__ import annotations

import concurrent.futures
import json
import multiprocessing

import pytest

from trim import grading
from trim.data import SHIPPED_DIR
from trim.grading import extract_answer, grade, grade_many, grading_stats, is_equivalent, reset_grading_stats


def math500_rows() -> list[dict]:
    """The raw MATH-500 rows (gold solution and answer), from the copy shipped in data/benchmarks."""
    path = SHIPPED_DIR / "math500" / "test.jsonl"
    with path.open() as f:
        return [json.loads(line) for line in f if line.strip()]


def test_math500_gold_answer_matches_boxed_solution():
    rows = math500_rows()
    assert len(rows) == 500
    grades = grade_many([r["answer"] for r in rows], [r["solution"] for r in rows], workers=2, timeout=60)
    bad = [(r["unique_id"], r["answer"], g.extracted, g.status) for r, g in zip(rows, grades) if not g.correct]
    for uid, gold, extracted, status in bad:
        print(f"DISAGREE {uid}: gold={gold!r} extracted={extracted!r} status={status}")
    print(f"MATH-500 gold vs extract_answer(solution): {len(rows) - len(bad)}/{len(rows)}")
    assert bad == []


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
    assert is_equivalent(gold, prediction, timeout=60) is expected  # the verdict, not the speed


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
        (r"so \boxed{5}. Final answer: \boxed{}", "5"),  # an empty box after the real one
        (r"\boxed{\{1,2\}}", r"\{1,2\}"),  # \{ \} are set braces, not groups
        ("Work.\n#### 42", "42"),
        ("#### $1,200", "1,200"),
        ("The answer is $\\$260$.", "\\$260"),
        ("The answer is $260.", "260"),
        ("The answer is 1200 dollars.", "1200"),
        ("The answer is 12, which is even.", "12"),
        ("The answer is 12 (since 3 * 4 = 12).", "12"),
        ("The answer is 16. Note: a common wrong answer is 15.", "16"),
        ("The answer is not 15. The answer is 16.", "16"),
        ("Final Answer: The final answer is $\\frac{1}{2}$. I hope it is correct.", "\\frac{1}{2}"),
        ("The final answer is 7. Check: the answer is 7.", "7"),
        ("The answers are 3 and 5.", "3 and 5"),
        ("The answer is 5 or 6.", "5 or 6"),  # a hedge stays a hedge (and is judged wrong)
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
    assert grade("5", r"so \boxed{6}", timeout=60).status == "wrong"
    assert grade("5", "I give up").status == "no_answer"
    assert grade("5", r"\boxed{\text{cannot tell}}", timeout=60).status in {"wrong", "parse_error"}
    stats = grading_stats()
    assert stats["correct"] == 1 and stats["wrong"] + stats["parse_error"] == 2 and stats["no_answer"] == 1
    stats["correct"] += 100  # a copy: mutating it leaves the module counter alone
    assert grading_stats()["correct"] == 1
    reset_grading_stats()
    assert sum(grading_stats().values()) == 0


def test_judge_never_raises_on_odd_input():
    """The worker-side judge, run here in-process: odd but short answers get a status, never an exception."""
    for gold, pred in [("1", "\\frac{1}{0}"), ("1", "zoo"), ("1", "\\infty - \\infty"), ("\\infty", "oo"),
                       ("1", "\\sqrt{-1}"), ("x", "\\frac{x}{x}"), ("1", "\\begin{pmatrix}"), ("1", "}{"),
                       ("1", "\\"), ("1", "^"), ("1", "\\text{}"), ("\\$", "$")]:
        assert grading._verify_pair(gold, pred) in {"correct", "wrong", "parse_error"}, (gold, pred)


def test_statuses_without_a_worker():
    assert grading._judge_pairs(["1", None, "", "2"], [None, "1", "1", "  "], timeout=1) == [
        "no_answer", "parse_error", "parse_error", "no_answer"]
    with pytest.raises(ValueError, match="timeout"):
        grade("1", "\\boxed{1}", timeout=0)


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
        assert list(ex.map(is_equivalent, golds, preds, [60] * 3)) == [True, False, True]
        assert [g.status for g in ex.map(grade, golds, [rf"\boxed{{{p}}}" for p in preds])] == [
            "correct", "wrong", "correct"]


def test_grade_many_preserves_order_and_counts():
    reset_grading_stats()
    golds = ["1", "2", "3", "4"]
    sols = [r"\boxed{1}", r"\boxed{5}", "nothing", r"\boxed{4}"]
    for kwargs in ({"workers": 1}, {"workers": 4, "use_threads": True}):  # use_threads: accepted, ignored
        assert [g.status for g in grade_many(golds, sols, timeout=60, **kwargs)] == [
            "correct", "wrong", "no_answer", "correct"]
    assert grading_stats() == {"correct": 4, "wrong": 2, "no_answer": 2}
