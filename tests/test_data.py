"""Benchmark loaders against the local copies in ../shared/data (or $TRIM_DATA_DIR).

These tests never skip: without the data they fail and say where it was looked for.
"""
from __future__ import annotations

import json
import logging
import os
import re
import sys
import types
from pathlib import Path

import pytest

from trim import data
from trim.data import DATASETS, Problem, load_dataset
from trim.grading import last_boxed

DEFAULT_DATA_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data"

EXPECTED = [  # (name, split, rows)
    ("math500", "test", 500),
    ("aime24", "test", 30),
    ("aime25", "test", 30),
    ("aime_1983_2024", "train", 451),
    ("aime_1983_2024", "test", 482),
    ("amc23", "test", 40),
    ("minerva_math", "test", 272),
    ("olympiadbench", "test", 675),
    ("gsm8k", "test", 1319),
]


@pytest.fixture(scope="session")
def data_dir() -> Path:
    path = Path(os.environ.get("TRIM_DATA_DIR") or DEFAULT_DATA_DIR)
    if not path.is_dir():
        pytest.fail(f"benchmark data folder {path} does not exist; set TRIM_DATA_DIR to a folder "
                    f"laid out like ../shared/data (e.g. export TRIM_DATA_DIR=/path/to/shared/data)")
    return path


_cache: dict[tuple[str, str], list[Problem]] = {}


def _load(data_dir: Path, name: str, split: str) -> list[Problem]:
    if (name, split) not in _cache:
        _cache[name, split] = load_dataset(name, split, data_dir=data_dir, source="local")
    return _cache[name, split]


def test_every_dataset_has_an_expected_count():
    assert sorted({name for name, _, _ in EXPECTED}) == sorted(DATASETS)


@pytest.mark.parametrize("name,split,rows", EXPECTED)
def test_rows_ids_and_fields(data_dir, name, split, rows):
    problems = _load(data_dir, name, split)
    assert len(problems) == rows
    assert len({p.id for p in problems}) == rows, "ids are not unique"
    for p in problems:
        assert isinstance(p.id, str) and p.id
        assert isinstance(p.question, str) and p.question.strip(), p.id
        assert isinstance(p.answer, str) and p.answer.strip(), p.id
        assert p.answer == p.answer.strip(), p.id
        assert p.metadata["dataset"] == name


@pytest.mark.parametrize("name,split,rows", EXPECTED)
def test_every_gold_answer_parses(data_dir, name, split, rows):
    from math_verify import parse

    # parsing_timeout=None: math_verify's timeout uses SIGALRM, main thread only; it warns each call.
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    unparsed = [(p.id, p.answer) for p in _load(data_dir, name, split)
                if not parse(f"${p.answer}$", parsing_timeout=None)]
    assert unparsed == []


def test_integer_answers_are_canonical(data_dir):
    for name, split in [("aime24", "test"), ("aime25", "test"), ("aime_1983_2024", "train"),
                        ("aime_1983_2024", "test"), ("amc23", "test"), ("gsm8k", "test")]:
        for p in _load(data_dir, name, split):
            assert re.fullmatch(r"-?(0|[1-9]\d*)(\.\d+)?", p.answer), (name, p.id, p.answer)
    assert "-1" in {p.answer for p in _load(data_dir, "amc23", "test")}  # stored as -1.0
    aime24 = {p.answer for p in _load(data_dir, "aime24", "test")}
    assert "25" in aime24 and "025" not in aime24


def test_gsm8k_answer_is_the_number_after_hashes(data_dir):
    gsm = {p.id: p for p in _load(data_dir, "gsm8k", "test")}
    with_commas = [p for p in gsm.values() if re.search(r"####\s*\d{1,3},\d{3}", p.solution or "")]
    assert with_commas == []  # the '#### N' line is cut off the solution
    raw = [json.loads(line) for line in (data_dir / "gsm8k/test.jsonl").open()]
    for row in raw:
        assert gsm[str(row["idx"])].answer == row["answer"].split("####")[-1].strip().replace(",", "")
    assert any("," in row["answer"].split("####")[-1] for row in raw)


def test_aime_1983_2024_split_and_accepted_answers(data_dir):
    for split in ("train", "test"):
        for p in _load(data_dir, "aime_1983_2024", split):
            assert p.metadata["split"] == split
            assert data._aime_split(p.metadata["year"], p.metadata["part"]) == split
    p = {p.id: p for p in _load(data_dir, "aime_1983_2024", "test")}["2022-II-8"]
    assert p.answer == "80" and p.metadata["accepted_answers"] == ("80", "81")


def test_olympiadbench_answers_are_flattened(data_dir):
    ob = {p.id: p for p in _load(data_dir, "olympiadbench", "test")}
    assert ob["1664"].answer == "69, 84"  # ['$69$,$84$']
    assert ob["2349"].answer == "221, 8"  # ['$221,$8$']
    assert ob["1970"].answer == r"(-\infty, 0) \cup\{1\}"  # trailing full stop
    assert ob["2045"].answer == "(0,4]"
    assert all("$" not in p.answer for p in ob.values())
    assert all(isinstance(p.metadata["final_answer"], list) for p in ob.values())
    assert {p.metadata["answer_type"] for p in ob.values()} <= {"Numerical", "Expression", "Tuple", "Interval"}


def test_minerva_and_math500_fields(data_dir):
    minerva = {p.id: p for p in _load(data_dir, "minerva_math", "test")}
    assert minerva["5"].answer == r"\arcsin(10/13)"
    assert all("$" not in p.answer for p in minerva.values())
    for p in _load(data_dir, "math500", "test"):
        assert p.metadata["level"] in range(1, 6) and p.metadata["subject"]
        assert p.solution


def test_last_boxed_matches_nested_braces():
    assert last_boxed(r"so \boxed{1} or $\boxed{\frac{1}{2}}$.") == r"\frac{1}{2}"
    assert last_boxed("no box") is None
    assert last_boxed(r"\boxed{\frac{1}{2}") is None


def test_missing_file_names_path_and_both_remedies(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        load_dataset("math500", data_dir=tmp_path, source="local")
    message = str(err.value)
    assert str(tmp_path / "math500" / "test.jsonl") in message
    assert "TRIM_DATA_DIR" in message and "data_dir" in message
    assert "datasets" in message and "source='hub'" in message


def test_local_without_any_folder_fails(monkeypatch):
    monkeypatch.delenv("TRIM_DATA_DIR", raising=False)
    with pytest.raises(FileNotFoundError, match="TRIM_DATA_DIR"):
        load_dataset("gsm8k", source="local")


def test_unknown_names_list_the_choices():
    with pytest.raises(ValueError, match="math500.*gsm8k"):
        load_dataset("mmlu")
    with pytest.raises(ValueError, match="train, test"):
        load_dataset("aime_1983_2024", split="validation")
    with pytest.raises(ValueError, match="test"):
        load_dataset("math500", split="train")
    with pytest.raises(ValueError, match="local"):
        load_dataset("math500", source="web")


def test_data_dir_argument_beats_env(monkeypatch, tmp_path, data_dir):
    monkeypatch.setenv("TRIM_DATA_DIR", str(tmp_path))  # empty folder
    assert len(load_dataset("aime25", data_dir=data_dir, source="local")) == 30
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path))):
        load_dataset("aime25", source="local")
    monkeypatch.setenv("TRIM_DATA_DIR", str(data_dir))
    assert data.data_dir_from_env() == data_dir
    assert len(load_dataset("aime25")) == 30  # source="auto" takes the env folder, not the hub


def test_local_never_imports_datasets(monkeypatch, data_dir):
    monkeypatch.setitem(sys.modules, "datasets", None)  # any `import datasets` now fails
    assert len(load_dataset("amc23", data_dir=data_dir, source="local")) == 40
    with pytest.raises(ImportError, match="TRIM_DATA_DIR"):
        load_dataset("amc23", source="hub")


def test_hub_path_with_a_stand_in_datasets_module(monkeypatch, tmp_path):
    """No network in tests: a fake `datasets` returns rows shaped like the hub copies."""
    calls = []

    def fake_load_dataset(repo, config, split):
        calls.append((repo, config, split))
        return [{"ID": "1983-1", "Year": 1983, "Problem Number": 1, "Question": "q1", "Answer": "060",
                 "Part": None},
                {"ID": "2000-I-1", "Year": 2000, "Problem Number": 1, "Question": "q2", "Answer": "7",
                 "Part": "I"}]

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=fake_load_dataset))
    monkeypatch.setenv("TRIM_DATA_DIR", str(tmp_path))  # source="hub" ignores local folders
    test = load_dataset("aime_1983_2024", "test", source="hub")
    assert [(p.id, p.question, p.answer) for p in test] == [("1983-1", "q1", "60")]
    monkeypatch.delenv("TRIM_DATA_DIR")
    train = load_dataset("aime_1983_2024", "train")  # auto, no folder: the hub
    assert [p.id for p in train] == ["2000-I-1"]
    assert calls == [("gneubig/aime-1983-2024", None, "train")] * 2


def test_malformed_rows_name_file_and_line(tmp_path):
    path = tmp_path / "gsm8k" / "test.jsonl"
    path.parent.mkdir()
    good = json.dumps({"question": "1+1?", "answer": "#### 2", "idx": 0})
    path.write_text(good + "\n{not json\n")
    with pytest.raises(ValueError, match=rf"{re.escape(str(path))}.*line 2"):
        load_dataset("gsm8k", data_dir=tmp_path)
    path.write_text(good + "\n\n" + json.dumps({"question": "no hashes", "answer": "2", "idx": 1}) + "\n")
    with pytest.raises(ValueError, match=rf"{re.escape(str(path))}.*line 3"):  # blank lines count
        load_dataset("gsm8k", data_dir=tmp_path)
