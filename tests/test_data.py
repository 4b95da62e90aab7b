"""Benchmark loaders, against the sets shipped in data/benchmarks and the non-free local copies.

The freely licensed sets (MATH-500, GSM8K, OlympiadBench, ProcessBench) ship with the repository:
their tests need nothing outside it, no environment variable and no network, and they check every
shipped file against the sha256 in data/benchmarks/README.md.

The sets that are not freely licensed (AIME 2024, AIME 2025, AIME 1983-2024, AMC 2023, Minerva
Math) are not shipped. The tests that read them take the folder from $TRIM_DATA_DIR, else
<repo>/../shared/data. Without it, each says which set is missing and how to provide it: in CI
(`.ci/run` sets TRIM_REQUIRE_NONFREE_DATA=1) the test FAILS; on a machine that never had the data
(`make test` on a fresh clone) it is reported as not run, by name, in the short summary and in a
closing notice (tests/conftest.py), never silently. These are the tests:

* test_rows_ids_and_fields and test_every_gold_answer_parses for aime24, aime25,
  aime_1983_2024 (train and test), amc23 and minerva_math (12 cases);
* test_contest_integer_answers_are_canonical, test_aime_1983_2024_split_and_accepted_answers
  and test_minerva_fields.

Everything else (the loaders' resolution order, their error messages, the hub path through a
stand-in `datasets`) uses the shipped sets or files written to a temporary folder.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import sys
import types
from pathlib import Path

import pytest

from trim import cli, data
from trim.data import (
    DATASETS,
    NOT_SHIPPED,
    PROCESSBENCH_SPLITS,
    SHIPPED,
    SHIPPED_DIR,
    Problem,
    ProcessBenchItem,
    load_dataset,
    load_processbench,
)
from trim.grading import last_boxed

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA_DIR = REPO.parent / "shared" / "data"

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
PROCESSBENCH_ROWS = {"gsm8k": 400, "math": 1000, "olympiadbench": 1000, "omnimath": 1000}
NONFREE_DATA_MISSING = "NOT RUN, non-free benchmark data missing"  # tests/conftest.py counts these


def nonfree_data_dir(name: str, split: str) -> Path:
    """The folder holding a set that is not shipped; a missing one fails the test, loudly."""
    path = Path(os.environ.get("TRIM_DATA_DIR") or DEFAULT_DATA_DIR)
    rel = data._REGISTRY[name].files[split]
    if not (path / rel).is_file():
        message = (f"{NONFREE_DATA_MISSING}: {name} {split} is not shipped (not freely licensed) and "
                   f"{path / rel} does not exist: set TRIM_DATA_DIR to a folder holding {rel} "
                   f"(such as ../shared/data); see the docstring of tests/test_data.py.")
        if os.environ.get("TRIM_REQUIRE_NONFREE_DATA") == "1":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return path


_cache: dict[tuple[str, str], list[Problem]] = {}


def _load(name: str, split: str) -> list[Problem]:
    """Free sets from the shipped copy (whatever $TRIM_DATA_DIR says), the others from the local folder."""
    if (name, split) not in _cache:
        folder = SHIPPED_DIR if name in SHIPPED else nonfree_data_dir(name, split)
        _cache[name, split] = load_dataset(name, split, data_dir=folder, source="local")
    return _cache[name, split]


def _readme_table() -> dict[str, tuple[int, str]]:
    """file -> (rows, sha256) from the table in data/benchmarks/README.md."""
    row = re.compile(r"^\|\s*`([^`]+)`\s*\|\s*(\d+)\s*\|.*\|\s*`([0-9a-f]{64})`\s*\|\s*$")
    table = {}
    for line in (SHIPPED_DIR / "README.md").read_text(encoding="utf-8").splitlines():
        if m := row.match(line):
            table[m[1]] = (int(m[2]), m[3])
    return table


def test_every_dataset_has_an_expected_count():
    assert sorted({name for name, _, _ in EXPECTED}) == sorted(DATASETS)


# --- the shipped copies ---------------------------------------------------------------------

def test_shipped_are_exactly_the_freely_licensed_sets():
    assert set(SHIPPED) == {"math500", "gsm8k", "olympiadbench"}
    assert set(NOT_SHIPPED) == {"aime24", "aime25", "aime_1983_2024", "amc23", "minerva_math"}
    assert SHIPPED_DIR == REPO / "data" / "benchmarks"
    for name in DATASETS:
        for rel in data._REGISTRY[name].files.values():
            # a non-free file in the repository would be a licence breach, not a convenience
            assert (SHIPPED_DIR / rel).is_file() == (name in SHIPPED), rel
            assert not (SHIPPED_DIR / name).exists() or name in SHIPPED, name


def test_shipped_files_match_the_readme_checksums_and_row_counts():
    table = _readme_table()
    on_disk = {p.relative_to(SHIPPED_DIR).as_posix() for p in SHIPPED_DIR.rglob("*") if p.is_file()}
    on_disk -= {"README.md"} | {f"LICENSES/{p.name}" for p in (SHIPPED_DIR / "LICENSES").iterdir()}
    assert on_disk == set(table), "each shipped file, and only those, has a row in data/benchmarks/README.md"
    for rel, (rows, sha256) in table.items():
        path = SHIPPED_DIR / rel
        assert hashlib.sha256(path.read_bytes()).hexdigest() == sha256, f"{rel} differs from the README"
        text = path.read_text(encoding="utf-8")
        lines = [line for line in text.splitlines() if line.strip()]
        assert (len(json.loads(text)) if rel.endswith(".json") else len(lines)) == rows, rel
    readme = (SHIPPED_DIR / "README.md").read_text(encoding="utf-8")
    for licence, words in [("Apache-2.0.txt", "Apache License"), ("MIT-PRM800K.txt", "2023 OpenAI"),
                           ("MIT-MATH.txt", "2021 Dan Hendrycks"), ("MIT-GSM8K.txt", "2021 OpenAI")]:
        assert words in (SHIPPED_DIR / "LICENSES" / licence).read_text(encoding="utf-8")
        assert f"](LICENSES/{licence})" in readme


def test_free_sets_load_with_no_env_var_and_no_network(monkeypatch):
    monkeypatch.delenv("TRIM_DATA_DIR", raising=False)
    monkeypatch.setitem(sys.modules, "datasets", None)  # any `import datasets` now fails
    for name, split, rows in EXPECTED:
        if name in SHIPPED:
            assert data.locate(name, split) == ("shipped", SHIPPED_DIR / name / f"{split}.jsonl")
            assert len(load_dataset(name, split)) == rows  # source="auto": the shipped copy, not the hub
            assert len(load_dataset(name, split, source="local")) == rows


def test_env_folder_comes_before_the_shipped_copy_and_is_passed_over_when_it_lacks_a_file(
        monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "datasets", None)
    (tmp_path / "gsm8k").mkdir()
    (tmp_path / "gsm8k" / "test.jsonl").write_text(
        json.dumps({"question": "1+1?", "answer": "#### 2", "idx": 0}) + "\n")
    monkeypatch.setenv("TRIM_DATA_DIR", str(tmp_path))
    assert data.locate("gsm8k") == ("$TRIM_DATA_DIR", tmp_path / "gsm8k" / "test.jsonl")
    assert [p.answer for p in load_dataset("gsm8k")] == ["2"]  # the env folder wins
    assert data.locate("math500") == ("shipped", SHIPPED_DIR / "math500" / "test.jsonl")
    assert len(load_dataset("math500", source="local")) == 500  # not in the env folder: shipped copy
    monkeypatch.setenv("TRIM_DATA_DIR", str(tmp_path / "does-not-exist"))
    assert len(load_dataset("gsm8k", source="local")) == 1319


def test_data_dir_argument_beats_env_and_is_the_only_place_looked_at(monkeypatch, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    for folder, answer in ((one, "1"), (two, "2")):
        (folder / "gsm8k").mkdir(parents=True)
        (folder / "gsm8k" / "test.jsonl").write_text(
            json.dumps({"question": "q", "answer": f"#### {answer}", "idx": 0}) + "\n")
    monkeypatch.setenv("TRIM_DATA_DIR", str(one))
    assert data.data_dir_from_env() == one
    assert load_dataset("gsm8k", data_dir=two)[0].answer == "2"
    assert load_dataset("gsm8k")[0].answer == "1"
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "empty" / "math500"))):
        load_dataset("math500", data_dir=tmp_path / "empty")  # no fallback to the shipped copy or the hub


# --- errors for the sets that are not shipped -------------------------------------------------

@pytest.mark.parametrize("name", ["aime24", "aime25", "amc23", "minerva_math"])
def test_missing_nonfree_set_says_not_shipped_and_how_to_provide_it(monkeypatch, name):
    monkeypatch.delenv("TRIM_DATA_DIR", raising=False)
    assert data.locate(name) is None
    with pytest.raises(FileNotFoundError) as err:
        load_dataset(name, source="local")
    message = str(err.value)
    assert "not shipped" in message and "licence" in message
    assert "TRIM_DATA_DIR is unset" in message and f"{name}/test.jsonl" in message
    assert "data_dir" in message and f"load_dataset({name!r}, source='hub')" in message
    monkeypatch.setitem(sys.modules, "datasets", None)  # source="auto" then tries the hub
    with pytest.raises(ImportError, match="not shipped.*TRIM_DATA_DIR.*source='hub'"):
        load_dataset(name)


def test_missing_file_names_every_place_looked_at(monkeypatch, tmp_path):
    monkeypatch.setenv("TRIM_DATA_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError) as err:
        load_dataset("aime_1983_2024", "train", source="local")
    message = str(err.value)
    assert str(tmp_path / "aime_1983_2024" / "train.jsonl") in message
    assert "$TRIM_DATA_DIR" in message and "not shipped" in message
    assert "Mathematical Association of America" in message
    with pytest.raises(FileNotFoundError) as err:
        load_dataset("math500", data_dir=tmp_path, source="local")
    message = str(err.value)
    assert str(tmp_path / "math500" / "test.jsonl") in message
    assert "TRIM_DATA_DIR" in message and "data_dir" in message
    assert "datasets" in message and "source='hub'" in message


def test_cli_lists_where_each_set_is_found(monkeypatch, capsys, tmp_path):
    monkeypatch.delenv("TRIM_DATA_DIR", raising=False)
    assert cli.main(["data"]) == 0
    lines = {tuple(line.split()[:2]): line for line in capsys.readouterr().out.splitlines()[1:]}
    assert len(lines) == len(EXPECTED) + len(PROCESSBENCH_SPLITS)
    for name, split, rows in EXPECTED:
        line = lines[name, split]
        if name in SHIPPED:
            assert line.split()[2:4] == [str(rows), "shipped"], line
        else:
            assert "not available (set TRIM_DATA_DIR" in line and "licence" in line, line
    for split, rows in PROCESSBENCH_ROWS.items():
        assert lines["processbench", split].split()[2:4] == [str(rows), "shipped"]
    assert cli.main(["data", "--data-dir", str(tmp_path)]) == 0
    assert all("not in --data-dir" in line for line in capsys.readouterr().out.splitlines()[1:])


# --- contents of every set ----------------------------------------------------------------

@pytest.mark.parametrize("name,split,rows", EXPECTED)
def test_rows_ids_and_fields(name, split, rows):
    problems = _load(name, split)
    assert len(problems) == rows
    assert len({p.id for p in problems}) == rows, "ids are not unique"
    for p in problems:
        assert isinstance(p.id, str) and p.id
        assert isinstance(p.question, str) and p.question.strip(), p.id
        assert isinstance(p.answer, str) and p.answer.strip(), p.id
        assert p.answer == p.answer.strip(), p.id
        assert p.metadata["dataset"] == name


@pytest.mark.parametrize("name,split,rows", EXPECTED)
def test_every_gold_answer_parses(name, split, rows):
    from math_verify import parse

    # parsing_timeout=None: math_verify's timeout uses SIGALRM, main thread only; it warns each call.
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    unparsed = [(p.id, p.answer) for p in _load(name, split)
                if not parse(f"${p.answer}$", parsing_timeout=None)]
    assert unparsed == []


def test_contest_integer_answers_are_canonical():
    for name, split in [("aime24", "test"), ("aime25", "test"), ("aime_1983_2024", "train"),
                        ("aime_1983_2024", "test"), ("amc23", "test")]:
        for p in _load(name, split):
            assert re.fullmatch(r"-?(0|[1-9]\d*)(\.\d+)?", p.answer), (name, p.id, p.answer)
    assert "-1" in {p.answer for p in _load("amc23", "test")}  # stored as -1.0
    aime24 = {p.answer for p in _load("aime24", "test")}
    assert "25" in aime24 and "025" not in aime24


def test_gsm8k_answer_is_the_number_after_hashes():
    gsm = {p.id: p for p in _load("gsm8k", "test")}
    for p in gsm.values():
        assert re.fullmatch(r"-?(0|[1-9]\d*)(\.\d+)?", p.answer), p
    with_commas = [p for p in gsm.values() if re.search(r"####\s*\d{1,3},\d{3}", p.solution or "")]
    assert with_commas == []  # the '#### N' line is cut off the solution
    raw = [json.loads(line) for line in (SHIPPED_DIR / "gsm8k/test.jsonl").open()]
    for row in raw:
        assert gsm[str(row["idx"])].answer == row["answer"].split("####")[-1].strip().replace(",", "")
    assert any("," in row["answer"].split("####")[-1] for row in raw)


def test_aime_1983_2024_split_and_accepted_answers():
    for split in ("train", "test"):
        for p in _load("aime_1983_2024", split):
            assert p.metadata["split"] == split
            assert data._aime_split(p.metadata["year"], p.metadata["part"]) == split
    p = {p.id: p for p in _load("aime_1983_2024", "test")}["2022-II-8"]
    assert p.answer == "80" and p.metadata["accepted_answers"] == ("80", "81")


def test_olympiadbench_answers_are_flattened():
    ob = {p.id: p for p in _load("olympiadbench", "test")}
    assert ob["1664"].answer == "69, 84"  # ['$69$,$84$']
    assert ob["2349"].answer == "221, 8"  # ['$221,$8$']
    assert ob["1970"].answer == r"(-\infty, 0) \cup\{1\}"  # trailing full stop
    assert ob["2045"].answer == "(0,4]"
    assert all("$" not in p.answer for p in ob.values())
    assert all(isinstance(p.metadata["final_answer"], list) for p in ob.values())
    assert ({p.metadata["answer_type"] for p in ob.values()}
            <= {"Numerical", "Expression", "Tuple", "Interval"})


def test_math500_fields():
    for p in _load("math500", "test"):
        assert p.metadata["level"] in range(1, 6) and p.metadata["subject"]
        assert p.solution


def test_minerva_fields():
    minerva = {p.id: p for p in _load("minerva_math", "test")}
    assert minerva["5"].answer == r"\arcsin(10/13)"
    assert all("$" not in p.answer for p in minerva.values())


# --- ProcessBench ---------------------------------------------------------------------------

@pytest.mark.parametrize("split,rows", PROCESSBENCH_ROWS.items())
def test_processbench_splits(monkeypatch, split, rows):
    monkeypatch.delenv("TRIM_DATA_DIR", raising=False)
    assert data.locate_processbench(split) == ("shipped", SHIPPED_DIR / f"processbench/{split}.json")
    items = load_processbench(split)
    assert len(items) == rows and len({i.id for i in items}) == rows
    assert all(i.id.startswith(f"{split}-") for i in items)
    for item in items:
        assert isinstance(item, ProcessBenchItem) and isinstance(item.steps, tuple)
        assert len(item.steps) >= 2 and all(isinstance(s, str) and s for s in item.steps)
        assert -1 <= item.label < len(item.steps) and item.generator and item.problem
        if item.label == -1:  # every step right, so the final answer is too
            assert item.final_answer_correct and item.first_error is None
        else:
            assert item.first_error == item.label
    # half the items end in a wrong answer, and each of those has a wrong step
    wrong = [i for i in items if not i.final_answer_correct]
    assert len(wrong) == rows // 2 and all(i.label >= 0 for i in wrong)


def test_processbench_items_and_errors(tmp_path):
    first = load_processbench("math")[0]
    assert first == ProcessBenchItem("math-0", "Meta-Llama-3-8B-Instruct",
                                     "Determine the remainder of 194 (mod 11).", first.steps, 0, False)
    with pytest.raises(ValueError, match="gsm8k, math, olympiadbench, omnimath"):
        load_processbench("aime")
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "processbench" / "math.json"))):
        load_processbench("math", data_dir=tmp_path)
    path = tmp_path / "processbench" / "math.json"
    path.parent.mkdir()
    item = {"id": "x", "generator": "g", "problem": "p", "steps": ["a", "b"], "final_answer_correct": True}
    path.write_text(json.dumps([{**item, "label": -1}, {**item, "label": 2}]))
    with pytest.raises(ValueError, match=rf"{re.escape(str(path))}.*item 2 of 2.*label 2"):
        load_processbench("math", data_dir=tmp_path)


# --- loader mechanics -------------------------------------------------------------------------

def test_last_boxed_matches_nested_braces():
    assert last_boxed(r"so \boxed{1} or $\boxed{\frac{1}{2}}$.") == r"\frac{1}{2}"
    assert last_boxed("no box") is None
    assert last_boxed(r"\boxed{\frac{1}{2}") is None


def test_unknown_names_list_the_choices():
    with pytest.raises(ValueError, match="math500.*gsm8k"):
        load_dataset("mmlu")
    with pytest.raises(ValueError, match="train, test"):
        load_dataset("aime_1983_2024", split="validation")
    with pytest.raises(ValueError, match="test"):
        load_dataset("math500", split="train")
    with pytest.raises(ValueError, match="local"):
        load_dataset("math500", source="web")


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
    train = load_dataset("aime_1983_2024", "train")  # auto, the env folder lacks it: the hub
    assert [p.id for p in train] == ["2000-I-1"]
    monkeypatch.delenv("TRIM_DATA_DIR")
    assert [p.id for p in load_dataset("aime_1983_2024", "train")] == ["2000-I-1"]  # auto, no folder
    assert calls == [("gneubig/aime-1983-2024", None, "train")] * 3
    assert len(load_dataset("math500")) == 500 and len(calls) == 3  # shipped: the hub is not asked


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
