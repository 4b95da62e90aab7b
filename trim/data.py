"""Benchmark loaders: every evaluation set becomes a list of :class:`Problem`.

Routing experiments compare the weak and strong model on the same questions,
so each set is reduced to one shape (id, question, gold answer as a string)
and the gold answer is normalised here, once, instead of in every grader.

Data comes from a local folder laid out like ``../shared/data``
(``<name>/<split>.jsonl``) or, when online, from the public Hugging Face copies.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from trim.grading import last_boxed

ENV_VAR = "TRIM_DATA_DIR"


@dataclass(frozen=True)
class Problem:
    """One question; ``answer`` is the normalised gold string graders compare against."""

    id: str
    question: str
    answer: str
    solution: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict, hash=False)


def _int_str(value: Any) -> str:
    """AIME/AMC answers are integers; files hold '025', 27.0 or 204 -> '25', '27', '204'."""
    s = str(value).strip()
    if not re.fullmatch(r"[-+]?\d+(\.0*)?", s):
        raise ValueError(f"expected an integer answer, got {value!r}")
    return str(int(s.split(".")[0]))


# OlympiadBench golds no LaTeX parser reads as meant; the raw list stays in metadata.
_OLYMPIAD_FIXES = {
    "1782": "n^{2}-n-1",  # 'm_{\max }=n^{2}-n-1': the label breaks parsing; the value is asked for
    "1965": "f(x)=a x+b",  # prose conditions on a and b follow the formula
    "2045": "(0,4]",  # 't(0,4]': a '\in' lost upstream
}


def _olympiad_answer(parts: list[str]) -> str:
    """One string from the final_answer list: '$69$,$84$' -> '69, 84', '$x$.' -> 'x'."""
    s = ", ".join(p.strip() for p in parts)
    s = re.sub(r"\$\s*,\s*\$|,\s*\$|\$\s*,", ", ", s)  # '$' beside a comma separates parts
    s = re.sub(r"\$\s*\.$", "$", s)  # a full stop after the closing '$'
    while len(s) >= 2 and s[0] == "$" and s[-1] == "$":
        s = s[1:-1].strip()
    return re.sub(r"^(\\q?quad\b|\\[,;!])\s*", "", s)  # leading LaTeX spacing


# --- row parsers: (row, 0-based row index, dataset name) -> Problem -------------------

def _math500(r: dict, i: int, ds: str) -> Problem:
    return Problem(r["unique_id"], r["problem"], str(r["answer"]).strip(), r["solution"],
                   {"dataset": ds, "level": int(r["level"]), "subject": r["subject"]})


_AOPS_URL = re.compile(r"(\d{4})_(AIME|AMC)_(\w+?)_Problems/Problem_(\d+)")


def _contest(year: int) -> Callable[[dict, int, str], Problem]:
    """Parser for AIME 2024/2025 and AMC 2023: integer answers; round and number from the AoPS url."""
    def parse(r: dict, i: int, ds: str) -> Problem:
        meta: dict[str, Any] = {"dataset": ds, "year": year}
        if m := _AOPS_URL.search(r.get("url") or ""):
            meta.update(contest=m[2], part=m[3], problem_number=int(m[4]), url=r["url"])
        return Problem(str(r.get("id", i)), r.get("problem") or r["question"],
                       _int_str(r["answer"]), r.get("solution"), meta)
    return parse


def _aime_split(year: int, part: str | None) -> str:
    """TRIM's split: before 2000 odd years are test; from 2000 part I train, part II test."""
    if year < 2000:
        return "test" if year % 2 else "train"
    return "train" if part == "I" else "test"


def _aime_1983_2024(r: dict, i: int, ds: str) -> Problem:
    raw = str(r.get("solution", r.get("Answer"))).strip()  # local copy: 'solution'; hub: 'Answer'
    # One gold answer (2022-II-8) reads '080 or 081 (both were accepted)': keep the first
    # as the answer and record every accepted one.
    accepted = [_int_str(a) for a in re.findall(r"\d+", raw)] if " or " in raw else [_int_str(raw)]
    year, part = int(r["Year"]), r.get("Part") or None
    meta = {"dataset": ds, "year": year, "part": part, "problem_number": int(r["Problem Number"]),
            "split": r.get("split") or _aime_split(year, part)}
    if len(accepted) > 1:
        meta["accepted_answers"] = tuple(accepted)
    return Problem(str(r["ID"]), r.get("problem") or r["Question"], accepted[0], None, meta)


def _minerva(r: dict, i: int, ds: str) -> Problem:
    sol = r.get("solution")
    answer = r.get("answer") or (last_boxed(sol) if sol else None)
    if not answer:
        raise ValueError("no \\boxed{} answer in solution")
    # A box is already math mode, so a '$' inside is stray (idx 72: '...+$ $\dot{x}_0...');
    # idx 5 boxes numpy code, 'np.arcsin(10/13)'.
    answer = re.sub(r"\bnp\.(\w+)", r"\\\1", str(answer).replace("$", "")).strip()
    return Problem(str(r.get("idx", i)), r.get("problem") or r["question"], answer, sol,
                   {"dataset": ds, "type": r.get("type")})


def _olympiadbench(r: dict, i: int, ds: str) -> Problem:
    answers = r["final_answer"]
    answers = [answers] if isinstance(answers, str) else answers
    question = r["question"] if not r.get("context") else f"{r['context']}\n\n{r['question']}"
    sol = r.get("solution")
    keys = ("answer_type", "subfield", "unit", "is_multiple_answer", "error")
    meta = {"dataset": ds, "final_answer": list(answers),
            **{k: r[k] for k in keys if r.get(k) is not None}}
    answer = _OLYMPIAD_FIXES.get(str(r["id"])) or _olympiad_answer(answers)
    return Problem(str(r["id"]), question, answer,
                   "\n\n".join(sol) if isinstance(sol, list) else sol, meta)


def _gsm8k(r: dict, i: int, ds: str) -> Problem:
    reasoning, sep, final = r["answer"].rpartition("####")
    if not sep:
        raise ValueError("answer has no '#### N' line")
    return Problem(str(r.get("idx", i)), r["question"], final.strip().replace(",", ""),
                   reasoning.strip(), {"dataset": ds, "idx": int(r.get("idx", i))})


@dataclass(frozen=True)
class _Spec:
    files: dict[str, str]  # split -> file, relative to the data folder
    hub: tuple[str, str | None, str]  # (hub id, config, hub split) of a public copy of the set
    parse: Callable[[dict, int, str], Problem]
    split_by_metadata: bool = False  # the hub copy holds every split; keep rows whose metadata matches


def _test(name: str) -> dict[str, str]:
    return {"test": f"{name}/test.jsonl"}


# Hub ids are public copies of each benchmark, used only when no local folder is given.
_REGISTRY: dict[str, _Spec] = {
    "math500": _Spec(_test("math500"), ("HuggingFaceH4/MATH-500", None, "test"), _math500),
    "aime24": _Spec(_test("aime24"), ("HuggingFaceH4/aime_2024", None, "train"), _contest(2024)),
    "aime25": _Spec(_test("aime25"), ("math-ai/aime25", None, "test"), _contest(2025)),
    "aime_1983_2024": _Spec({s: f"aime_1983_2024/{s}.jsonl" for s in ("train", "test")},
                            ("gneubig/aime-1983-2024", None, "train"), _aime_1983_2024, True),
    "amc23": _Spec(_test("amc23"), ("math-ai/amc23", None, "test"), _contest(2023)),
    "minerva_math": _Spec(_test("minerva_math"), ("math-ai/minervamath", None, "test"), _minerva),
    "olympiadbench": _Spec(_test("olympiadbench"),
                           ("Hothan/OlympiadBench", "OE_TO_maths_en_COMP", "train"), _olympiadbench),
    "gsm8k": _Spec(_test("gsm8k"), ("openai/gsm8k", "main", "test"), _gsm8k),
}
DATASETS: tuple[str, ...] = tuple(_REGISTRY)


def splits_of(name: str) -> tuple[str, ...]:
    """The splits a benchmark set has locally (most have only "test")."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    return tuple(_REGISTRY[name].files)


def data_dir_from_env() -> Path | None:
    """The folder named by ``$TRIM_DATA_DIR``, or None when it is unset or empty."""
    value = os.environ.get(ENV_VAR, "").strip()
    return Path(value).expanduser() if value else None


def _how_to_provide(name: str) -> str:
    return (f"Either pass data_dir=... or set {ENV_VAR} to a folder laid out like ../shared/data "
            f"(<name>/<split>.jsonl), or install `datasets` and load online with "
            f"load_dataset({name!r}, source='hub').")


def _parse_rows(rows, spec: _Spec, name: str, where: str, lines=None) -> list[Problem]:
    """Parse every row; a bad one is reported by file (or hub id) and line (or row) number."""
    problems = []
    for i, row in enumerate(rows):
        try:
            problems.append(spec.parse(row, i, name))
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            at = f"line {lines[i]}" if lines else f"row {i + 1}"
            raise ValueError(f"{where}: malformed row at {at}: {e!r}") from e
    return problems


def _load_local(path: Path, spec: _Spec, name: str) -> list[Problem]:
    if not path.is_file():
        raise FileNotFoundError(f"missing data file {path}. {_how_to_provide(name)}")
    rows, lines = [], []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}: line {lineno} is not valid JSON: {e}") from e
                lines.append(lineno)
    return _parse_rows(rows, spec, name, str(path), lines)


def _load_hub(spec: _Spec, name: str, split: str) -> list[Problem]:
    try:
        import datasets as hf  # lazy: optional, and slow to import
    except ImportError as e:
        raise ImportError(f"`datasets` is not installed, so {name!r} cannot be fetched. "
                          f"{_how_to_provide(name)}") from e
    repo, config, hub_split = spec.hub
    try:
        rows = hf.load_dataset(repo, config, split=hub_split)
    except (ConnectionError, OSError) as e:  # offline: say how to work without the hub
        raise ConnectionError(f"could not fetch {repo} from the hub ({e}). "
                              f"{_how_to_provide(name)}") from e
    problems = _parse_rows(rows, spec, name, f"hub:{repo}")
    if spec.split_by_metadata:
        problems = [p for p in problems if p.metadata.get("split") == split]
    return problems


def load_dataset(name: str, split: str = "test", data_dir: str | Path | None = None,
                 source: str = "auto") -> list[Problem]:
    """Load one benchmark as a list of :class:`Problem`.

    Where the rows come from: ``data_dir`` if given, else ``$TRIM_DATA_DIR``, else (with
    source "auto") the Hugging Face hub. ``source="local"`` never touches the network;
    ``source="hub"`` always fetches, ignoring local folders.
    """
    if name not in _REGISTRY:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    spec = _REGISTRY[name]
    if split not in spec.files:
        raise ValueError(f"unknown split {split!r} for {name!r}; choose one of {', '.join(spec.files)}")
    if source not in ("auto", "local", "hub"):
        raise ValueError(f"unknown source {source!r}; choose one of auto, local, hub")
    if source == "hub":
        return _load_hub(spec, name, split)
    root = Path(data_dir).expanduser() if data_dir is not None else data_dir_from_env()
    if root is not None:
        return _load_local(root / spec.files[split], spec, name)
    if source == "local":
        raise FileNotFoundError(f"no data folder given for {name!r} (file {spec.files[split]}). "
                                f"{_how_to_provide(name)}")
    return _load_hub(spec, name, split)
