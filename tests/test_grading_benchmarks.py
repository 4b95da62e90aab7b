"""Every gold answer of every benchmark the project loads is graded right against itself.

tests/test_data.py checks that each gold parses; here each gold goes through the
grader the way a model's answer does: boxed at the end of a solution, extracted, and
judged by math-verify in a worker (the in-process shortcut for identical answers is
switched off, or the check would be empty). The free sets ship with the repository; the others
follow tests/test_data.py's rule (fail in CI, reported as not run elsewhere).
"""

from __future__ import annotations

import pytest
from test_data import nonfree_data_dir

from trim import grading
from trim.data import SHIPPED, load_dataset

DATASETS = [("math500", "test"), ("aime24", "test"), ("aime25", "test"), ("aime_1983_2024", "train"),
            ("aime_1983_2024", "test"), ("amc23", "test"), ("minerva_math", "test"), ("olympiadbench", "test"),
            ("gsm8k", "test")]


@pytest.mark.parametrize(("name", "split"), DATASETS)
def test_every_gold_is_extracted_and_verified_against_itself(name, split):
    folder = None if name in SHIPPED else nonfree_data_dir(name, split)
    golds = sorted({p.answer for p in load_dataset(name, split, data_dir=folder, source="local")})
    assert golds
    solutions = [f"Putting it together, the answer is $\\boxed{{{gold}}}$." for gold in golds]
    extracted = [grading.extract_answer(s) for s in solutions]
    assert [(g, e) for g, e in zip(golds, extracted) if g != e] == []
    verdicts = grading._judge_pairs(golds, extracted, timeout=60, workers=2, fast_path=False)
    assert [(g, v) for g, v in zip(golds, verdicts) if v != "correct"] == []
    # And through the public call, shortcut included, as the engine grades.
    assert all(grading.grade(g, s, timeout=60).correct for g, s in zip(golds[:50], solutions[:50]))
