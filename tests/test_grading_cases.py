"""Hand-written grading cases for the answer formats real benchmarks use, with a report.

Each row is a judgement a careful person would make without hesitation. Rows come in
near-miss groups: for every format rule there are answers it must accept and answers
that look almost the same and must be rejected, because a grader that calls a wrong
answer right is worse than useless. The report (printed into the normal test output)
gives the agreement per category and lists every disagreement; the test fails on any.
"""

from __future__ import annotations

from collections import Counter
from typing import NamedTuple

import pytest

from trim import grading
from trim.grading import grade_many


class Case(NamedTuple):
    category: str
    gold: str
    prediction: str  # an answer, boxed at the end of a one-line solution; or a whole solution
    expected: bool
    whole_solution: bool = False  # True: `prediction` is the model's full output, graded as is


def S(category: str, gold: str, solution: str, expected: bool) -> Case:
    return Case(category, gold, solution, expected, whole_solution=True)


CASES: list[Case] = [
    # --- near misses that a brace- and space-dropping shortcut used to accept ----------------
    Case("near-miss", "2^{n+1}", "2^n+1", False),
    Case("near-miss", "2^{n+1}", "2^{n} \\cdot 2", True),
    Case("near-miss", "\\frac{1}{2x}", "\\frac{1}{2}x", False),
    Case("near-miss", "\\frac{1}{2x}", "\\frac{1}{2 x}", True),
    Case("near-miss", "\\sqrt{3}+1", "\\sqrt{3+1}", False),
    Case("near-miss", "\\sqrt{3}+1", "1+\\sqrt3", True),
    Case("near-miss", "\\frac{2}{15}", "\\frac{21}{5}", False),
    Case("near-miss", "\\frac{2}{15}", "\\dfrac{2}{15}", True),
    Case("near-miss", "x^{2}y", "x^{2y}", False),
    Case("near-miss", "\\frac{1}{2}+x", "\\frac{1}{2+x}", False),
    Case("near-miss", "2\\sqrt{2}", "\\sqrt{22}", False),
    Case("near-miss", "a_{12}", "a_1 2", False),
    Case("near-miss", "(1,2)", "(12)", False),
    Case("near-miss", "12", "1 2", False),
    Case("near-miss", "\\frac{\\pi}{3}", "\\frac{\\pi3}{}", False),
    Case("near-miss", "e^{x+1}", "e^x+1", False),
    Case("near-miss", "\\left(\\frac{1}{2}, 3\\right)", "(\\tfrac12,3)", True),
    Case("near-miss", "x^2", "x^{2}", True),
    # math-verify's own unit stripper drops a trailing t, c, ab, ... (it is switched off)
    Case("near-miss", "2", "2t", False),
    Case("near-miss", "\\frac{1}{2}", "\\frac{1}{2}c", False),
    Case("near-miss", "2", "2 ab", False),
    Case("near-miss", "5", "5 more", False),
    # --- thousands separators (MATH-500 writes 10,\!080) ---------------------------------
    Case("separators", "10,\\!080", "10080", True),
    Case("separators", "10,\\!080", "10,080", True),
    Case("separators", "10,\\!080", "10{,}080", True),
    Case("separators", "10,\\!080", "10\\,080", True),
    Case("separators", "10,\\!080", "10,\\!081", False),
    Case("separators", "10,\\!080", "1008", False),
    Case("separators", "10,\\!080", "10, 80", False),
    Case("separators", "10,\\!080", "\\{10, 80\\}", False),
    Case("separators", "11,\\! 111,\\! 111,\\! 100", "11111111100", True),
    Case("separators", "11,\\! 111,\\! 111,\\! 100", "1111111110", False),
    Case("separators", "1{,}000", "1000", True),
    Case("separators", "10080", "10,\\!080", True),
    # --- currency ------------------------------------------------------------------------
    Case("currency", "\\$32,\\!348", "32348", True),
    Case("currency", "\\$32,\\!348", "\\$32,348", True),
    Case("currency", "\\$32,\\!348", "32,\\!384", False),
    Case("currency", "\\$18.90", "18.9", True),
    Case("currency", "\\$18.90", "\\$19.80", False),
    Case("currency", "\\$36", "36 dollars", True),
    Case("currency", "36", "\\$3.6", False),
    Case("currency", "260", "\\$260.00", True),
    # --- units and trailing words ------------------------------------------------------------
    Case("units", "1200", "1200 dollars", True),
    Case("units", "1200", "1300 dollars", False),
    Case("units", "864 \\mbox{ inches}^2", "864", True),
    Case("units", "864 \\mbox{ inches}^2", "864 \\text{ in}^2", True),
    Case("units", "864 \\mbox{ inches}^2", "864 \\text{ ft}^2", False),  # a different unit is not the same answer
    Case("units", "15\\mbox{ cm}^2", "15 \\text{ cm}^2", True),
    Case("units", "15\\mbox{ cm}^2", "16\\text{ cm}^2", False),
    Case("units", "5\\text{ cm}", "5\\text{ m}", False),
    Case("units", "5\\text{ cm}", "5\\,\\mathrm{cm}", True),
    Case("units", "5.4 \\text{ cents}", "5.4", True),
    Case("units", "12", "12 square units", True),
    Case("units", "5", "5 or 6", False),
    Case("units", "3", "3 apples", True),
    Case("units", "\\frac{270}7\\text{ degrees}", "\\frac{270}{7}^\\circ", True),
    Case("units", "\\frac{270}7\\text{ degrees}", "\\frac{270}{7}", True),
    Case("units", "\\frac{270}7\\text{ degrees}", "\\frac{207}{7}", False),
    Case("units", "30^\\circ", "30\u00b0", True),
    Case("units", "2e", "2\\mathrm{e}", True),  # \mathrm{e} is Euler's number, not a unit
    Case("units", "2", "2\\mathrm{e}", False),
    Case("units", "5\\text{ cm}", "5 centimeters", True),
    Case("units", "5\\text{ cm}", "5\\text{ cm}^2", False),
    Case("units", "864 \\mbox{ inches}^2", "864 square inches", True),
    Case("units", "\\$5", "5 cents", False),
    Case("units", "5.4 \\text{ cents}", "\\$5.40", False),
    Case("units", "3.83e35", "3.83 \\times 10^{35} erg/s", True),
    Case("units", "x+2", "x + 2 ab", False),
    # --- scientific notation (58 of Minerva Math's golds) -------------------------------------
    Case("e-notation", "1.24e-8", "1.24\\times 10^{-8}", True),
    Case("e-notation", "1.24e-8", "1.24 \\cdot 10^{-8}", True),
    Case("e-notation", "1.24e-8", "1.24E-8", True),
    Case("e-notation", "1.24e-8", "0.0000000124", True),
    Case("e-notation", "1.24e-8", "1.25\\times 10^{-8}", False),
    Case("e-notation", "1.24e-8", "1.24\\times 10^{-9}", False),
    Case("e-notation", "1.24e-8", "0.0000000125", False),
    Case("e-notation", "1.24e-8", "1.24", False),
    Case("e-notation", "3e8", "3\\times 10^{8}", True),
    Case("e-notation", "3e8", "300000000", True),
    Case("e-notation", "3e8", "3\\times 10^{9}", False),
    Case("e-notation", "4.5e33", "4.5 \\times 10^{33}", True),
    Case("e-notation", "4.5e33", "4.6\\times 10^{33}", False),
    Case("e-notation", "1e-5", "10^{-5}", True),
    Case("e-notation", "1e-5", "0.00001", True),
    Case("e-notation", "1e-5", "0.00002", False),
    Case("e-notation", "6.5e-2", "0.065", True),
    Case("e-notation", "7.4e-12", "7.4 x 10^-12", True),
    Case("e-notation", "2.7778e-6", "2.7778\\times10^{-6}\\text{ s}", True),
    Case("e-notation", "3.89e-10", "3.98\\times 10^{-10}", False),
    Case("e-notation", "1.24\\times 10^{-8}", "1.24e-8", True),
    Case("e-notation", "e^{2}-1", "e^2 - 1", True),  # Euler's e stays Euler's e
    Case("e-notation", "3e^{-2t}", "3 e^{-2 t}", True),
    Case("e-notation", "2e-1", "2e - 1", False),  # a lone 2e-1 is 0.2; "2e - 1" is about 4.44
    Case("e-notation", "6.02e23", "602000000000000000000000", True),
    Case("e-notation", "6.02e23", "6.03\\times 10^{23}", False),
    Case("e-notation", "1.24e-8", "1.24\u00d710\u207b\u2078", True),  # 1.24×10⁻⁸
    Case("e-notation", "1.24e-8", "1.24\u00d710\u207b\u2079", False),
    # --- GSM8K-style "#### N" endings ------------------------------------------------------
    S("gsm8k", "42", "She has 6 * 7 = 42 apples.\n#### 42", True),
    S("gsm8k", "42", "She has 6 * 7 = 42 apples.\n#### 43", False),
    S("gsm8k", "1200", "Total: 1,200 dollars.\n#### 1,200", True),
    S("gsm8k", "1200", "#### $1,200", True),
    S("gsm8k", "18", "Janet sells 16 - 3 - 4 = 9 eggs.\n9 * 2 = 18\n#### 18", True),
    S("gsm8k", "18", "9 * 2 = 18 so she makes 18 dollars", False),  # no final-answer marker at all
    S("gsm8k", "7", "#### Step 1\nAdd them.\n#### 1. Check\nThe answer is 7.", True),  # headings, not answers
    S("gsm8k", "1", "#### Step 1\nAdd them.\n#### 1. Check\nThe answer is 7.", False),
    # --- "the answer is ..." sentences -----------------------------------------------------
    S("sentences", "260", "The answer is $\\$260$.", True),
    S("sentences", "260", "The answer is $\\$270$.", False),
    S("sentences", "18.90", "So the answer is \\$18.90.", True),
    S("sentences", "260", "The answer is $260.", True),
    S("sentences", "1200", "The answer is 1200 dollars.", True),
    S("sentences", "1200", "The answer is 1300 dollars.", False),
    S("sentences", "12", "Answer: 12 apples", True),
    S("sentences", "\\frac{3}{4}", "Final Answer: The final answer is $\\frac{3}{4}$. I hope it is correct.", True),
    S("sentences", "7", "**Final Answer:** 7", True),
    S("sentences", "3.5", "The answer is **3.5**.", True),
    S("sentences", "16", "The answer is 16. Note: a common wrong answer is 15.", True),
    S("sentences", "15", "The answer is 16. Note: a common wrong answer is 15.", False),
    S("sentences", "16", "The answer is 16, which is even.", True),
    S("sentences", "16", "The answer is not 15. The answer is 16.", True),
    S("sentences", "5", "So the answer is 5 or 6.", False),
    S("sentences", "4", "The answer is 3. Wait, no: the answer is 4.", True),
    S("sentences", "12", "The answer is 12 (since 3 * 4 = 12).", True),
    S("sentences", "3, 5", "The answers are 3 and 5.", True),
    S("sentences", "3, 5", "The answers are 3 and 6.", False),
    # --- boxes ---------------------------------------------------------------------------
    S("boxes", "5", "So $\\boxed{5}$.\n\nFinal answer: $\\boxed{}$", True),
    S("boxes", "5", "\\boxed{}", False),
    S("boxes", "4", "First \\boxed{3}, then on reflection \\boxed{4}.", True),
    S("boxes", "3", "First \\boxed{3}, then on reflection \\boxed{4}.", False),
    S("boxes", "\\{1,2\\}", "\\boxed{\\{1, 2\\}}", True),
    S("boxes", "5", "\\boxed{5} and a broken \\boxed{6", True),
    S("boxes", "\\frac{1}{2}", "$\\boxed{\\dfrac{1}{2}}$", True),
    S("boxes", "16", "So $\\boxed{16}$. Note: a common wrong answer is $\\boxed{15}$.", True),
    S("boxes", "15", "So $\\boxed{16}$. Note: a common wrong answer is $\\boxed{15}$.", False),
    # --- multiple choice, names, percentages -------------------------------------------------
    Case("misc", "\\text{(C)}", "C", True),
    Case("misc", "\\text{(C)}", "(C)", True),
    Case("misc", "\\text{(C)}", "\\text{(D)}", False),
    Case("misc", "\\text{Evelyn}", "Evelyn", True),
    Case("misc", "\\text{Evelyn}", "\\text{Evelin}", False),
    Case("misc", "62.5%", "62.5\\%", True),
    Case("misc", "62.5%", "0.625", True),
    Case("misc", "62.5%", "6.25\\%", False),
    Case("misc", "0.5", "50 percent", True),
    Case("misc", "-\\frac{1}{3}", "-1./3", True),
    Case("misc", "x=3", "3", True),
    Case("misc", "\\frac{1}{3}", "0.\\overline{3}", True),
    Case("misc", "\\frac{1}{6}", "0.1\\overline{6}", True),
    Case("misc", "\\frac{1}{3}", "0.\\overline{6}", False),
    Case("misc", "\\frac{1}{3}", "0.3", False),
    Case("misc", "\\text{ellipse}", "Ellipse", True),
    Case("misc", "\\text{ellipse}", "an ellipse", True),
    Case("misc", "\\text{ellipse}", "\\text{hyperbola}", False),
    Case("misc", "\\text{even}", "odd", False),
    Case("misc", "3", "y = 4", False),
]


def _solution(case: Case) -> str:
    return case.prediction if case.whole_solution else f"So the answer is $\\boxed{{{case.prediction}}}$."


def test_there_are_at_least_60_cases_over_the_new_formats():
    per_category = Counter(c.category for c in CASES)
    assert sum(per_category.values()) >= 60, per_category
    assert {"separators", "currency", "units", "e-notation", "gsm8k", "sentences", "boxes"} <= set(per_category)
    assert len({(c.gold, c.prediction) for c in CASES}) == len(CASES), "duplicate rows"


def test_hand_written_cases_report(capsys):
    grades = grade_many([c.gold for c in CASES], [_solution(c) for c in CASES], timeout=30)
    rows = [(c, g) for c, g in zip(CASES, grades)]
    false_pos = [(c, g) for c, g in rows if g.correct and not c.expected]
    false_neg = [(c, g) for c, g in rows if not g.correct and c.expected]

    lines = ["", "grading report: hand-written cases (tests/test_grading_cases.py)",
             f"{'category':<12} {'cases':>5} {'agree':>5} {'false +':>7} {'false -':>7}"]
    for category in dict.fromkeys(c.category for c in CASES):
        mine = [(c, g) for c, g in rows if c.category == category]
        lines.append(f"{category:<12} {len(mine):>5} {sum(g.correct == c.expected for c, g in mine):>5} "
                     f"{sum(g.correct and not c.expected for c, g in mine):>7} "
                     f"{sum(c.expected and not g.correct for c, g in mine):>7}")
    agree = len(rows) - len(false_pos) - len(false_neg)
    lines.append(f"{'all':<12} {len(rows):>5} {agree:>5} {len(false_pos):>7} {len(false_neg):>7}"
                 f"   agreement {agree / len(rows):.1%}")
    for kind, bad in (("FALSE POSITIVE", false_pos), ("false negative", false_neg)):
        for c, g in bad:
            lines.append(f"{kind} [{c.category}] gold={c.gold!r} prediction={c.prediction!r} "
                         f"extracted={g.extracted!r} status={g.status}")
    report = "\n".join(lines)
    with capsys.disabled():
        print(report)
    assert not false_pos, report
    assert not false_neg, report


def test_fast_path_never_accepts_a_near_miss():
    """The in-process shortcut says yes only to token-identical answers; every 'no' row stays no."""
    for c in CASES:
        if not c.whole_solution and not c.expected:
            assert not grading._fast_accept(c.gold, c.prediction), c


@pytest.mark.parametrize(("a", "b"), [
    ("\\frac{1}{2}", "\\dfrac12"), ("x^2", "x^{2}"), ("\\left(1, 2\\right)", "( 1, 2 )"), ("$5$", "5"),
    ("10,\\!080", "10,\\!080"), ("\\sqrt{3}+1", "\\sqrt 3+1"), ("\\text{Evelyn}", "\\text {Evelyn}"),
    ("x \\le 3", "x\\leq3"), ("\\pi r^2", "\\pi r^{2}"),
])
def test_fast_path_accepts_what_tex_reads_the_same(a, b):
    assert grading._fast_accept(a, b)


@pytest.mark.parametrize(("a", "b"), [
    ("2^{n+1}", "2^n+1"), ("\\frac{1}{2x}", "\\frac{1}{2}x"), ("\\sqrt{3}+1", "\\sqrt{3+1}"),
    ("\\frac{2}{15}", "\\frac{21}{5}"), ("12", "1 2"), ("\\pi r", "\\pir"), ("X", "x"), ("\\text{a b}", "\\text{ab}"),
    ("\\frac{1}{2", "\\frac{1}{2}"), ("\\frac{1", "\\frac{}"), ("5\\text{ cm}", "5"), ("1,000", "1000"),
    ("2^{10}", "2^10"), ("", ""),
])
def test_fast_path_declines_anything_else(a, b):
    assert not grading._fast_accept(a, b)


def test_fast_path_agrees_with_math_verify():
    """Every pair the shortcut accepts, math-verify (given the same pair, no shortcut) accepts too."""
    pairs = [(c.gold, c.prediction) for c in CASES if not c.whole_solution]
    pairs += [(a, b) for a, b in [("\\frac{1}{2}", "\\dfrac12"), ("x^2", "x^{2}"), ("\\left(1,2\\right)", "(1, 2)"),
                                  ("10,\\!080", "10,080"), ("x \\le 3", "x\\leq3")]]
    accepted = [(g, p) for g, p in pairs if grading._fast_accept(g, p)]
    assert len(accepted) >= 5
    verdicts = grading._judge_pairs([g for g, _ in accepted], [p for _, p in accepted], timeout=30, fast_path=False)
    assert verdicts == ["correct"] * len(accepted), list(zip(accepted, verdicts))
