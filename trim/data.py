"""Benchmark loaders: every evaluation set becomes a list of :class:`Problem`.

Routing experiments compare the weak and strong model on the same questions,
so each set is reduced to one shape (id, question, gold answer as a string)
and the gold answer is normalised here, once, instead of in every grader.

The freely licensed sets (MATH-500, GSM8K, OlympiadBench, and ProcessBench through
:func:`load_processbench`) ship with the repository in ``data/benchmarks``, so they load on a
fresh clone with nothing set. AIME, AMC and Minerva Math are not freely licensed and are not
shipped: they come from a folder named by ``$TRIM_DATA_DIR`` (laid out ``<name>/<split>.jsonl``,
like ``../shared/data``) or, when online, from the public Hugging Face copies.
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
# The freely licensed sets, inside the repository (see its README for origin, licence and sha256).
SHIPPED_DIR = Path(__file__).resolve().parents[1] / "data" / "benchmarks"


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
    licence: str  # of the data; decides whether the set may ship with the repository
    split_by_metadata: bool = False  # the hub copy holds every split; keep rows whose metadata matches
    shipped: bool = False  # a copy is in SHIPPED_DIR (freely licensed sets only)


def _test(name: str) -> dict[str, str]:
    return {"test": f"{name}/test.jsonl"}


_MAA = "problems (c) Mathematical Association of America"
# Hub ids are public copies of each benchmark, used only when no local file is found.
_REGISTRY: dict[str, _Spec] = {
    "math500": _Spec(_test("math500"), ("HuggingFaceH4/MATH-500", None, "test"), _math500,
                     "MIT", shipped=True),
    "aime24": _Spec(_test("aime24"), ("HuggingFaceH4/aime_2024", None, "train"), _contest(2024), _MAA),
    "aime25": _Spec(_test("aime25"), ("math-ai/aime25", None, "test"), _contest(2025), _MAA),
    "aime_1983_2024": _Spec({s: f"aime_1983_2024/{s}.jsonl" for s in ("train", "test")},
                            ("gneubig/aime-1983-2024", None, "train"), _aime_1983_2024, _MAA,
                            split_by_metadata=True),
    "amc23": _Spec(_test("amc23"), ("math-ai/amc23", None, "test"), _contest(2023), _MAA),
    "minerva_math": _Spec(_test("minerva_math"), ("math-ai/minervamath", None, "test"), _minerva,
                          "MIT OpenCourseWare problems, CC BY-NC-SA 4.0"),
    "olympiadbench": _Spec(_test("olympiadbench"),
                           ("Hothan/OlympiadBench", "OE_TO_maths_en_COMP", "train"), _olympiadbench,
                           "Apache-2.0", shipped=True),
    "gsm8k": _Spec(_test("gsm8k"), ("openai/gsm8k", "main", "test"), _gsm8k, "MIT", shipped=True),
}
DATASETS: tuple[str, ...] = tuple(_REGISTRY)
SHIPPED: tuple[str, ...] = tuple(n for n, spec in _REGISTRY.items() if spec.shipped)
NOT_SHIPPED: tuple[str, ...] = tuple(n for n, spec in _REGISTRY.items() if not spec.shipped)


def splits_of(name: str) -> tuple[str, ...]:
    """The splits a benchmark set has locally (most have only "test")."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    return tuple(_REGISTRY[name].files)


def data_dir_from_env() -> Path | None:
    """The folder named by ``$TRIM_DATA_DIR``, or None when it is unset or empty."""
    value = os.environ.get(ENV_VAR, "").strip()
    return Path(value).expanduser() if value else None


def _how_to_provide(name: str, split: str = "test") -> str:
    spec = _REGISTRY[name]
    if spec.shipped:
        why = (f"{name!r} ships with trim in {SHIPPED_DIR}, but that copy is missing (a trim "
               f"installed without its repository?). ")
    else:
        why = f"{name!r} is not shipped with trim, for licence reasons ({spec.licence}). "
    return (f"{why}Either set {ENV_VAR} to a folder holding {spec.files[split]} (such as "
            f"../shared/data) or pass data_dir=..., or install `datasets` and load it online "
            f"with load_dataset({name!r}, source='hub') (hub copy {spec.hub[0]}).")


def _candidates(name: str, split: str, data_dir: str | Path | None) -> list[tuple[str, Path]]:
    """Where a local copy is looked for, in order: (label, file).

    An explicit ``data_dir`` is the only place looked at. Otherwise ``$TRIM_DATA_DIR`` comes
    first (a folder that lacks the file is passed over) and then, for freely licensed sets,
    the copy shipped in ``data/benchmarks``.
    """
    rel = _REGISTRY[name].files[split]
    if data_dir is not None:
        return [("data_dir", Path(data_dir).expanduser() / rel)]
    found = []
    if (env := data_dir_from_env()) is not None:
        found.append((f"${ENV_VAR}", env / rel))
    if _REGISTRY[name].shipped:
        found.append(("shipped", SHIPPED_DIR / rel))
    return found


def _check(name: str, split: str) -> _Spec:
    if name not in _REGISTRY:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    spec = _REGISTRY[name]
    if split not in spec.files:
        raise ValueError(f"unknown split {split!r} for {name!r}; choose one of {', '.join(spec.files)}")
    return spec


def locate(name: str, split: str = "test",
           data_dir: str | Path | None = None) -> tuple[str, Path] | None:
    """The local file :func:`load_dataset` reads for this set, as (where, path), or None.

    ``where`` is "data_dir", "$TRIM_DATA_DIR" or "shipped". None means no local copy: the
    default ``source="auto"`` then fetches from the hub, ``source="local"`` raises.
    """
    _check(name, split)
    return next(((where, path) for where, path in _candidates(name, split, data_dir)
                 if path.is_file()), None)


def _not_found(name: str, split: str, data_dir: str | Path | None) -> FileNotFoundError:
    looked = _candidates(name, split, data_dir)
    if looked:
        where = "; ".join(f"{path} ({label})" for label, path in looked)
        head = f"missing data file for {name!r} {split}: looked at {where}"
    else:
        head = (f"no local copy of {name!r} {split} ({_REGISTRY[name].files[split]}): "
                f"{ENV_VAR} is unset")
    return FileNotFoundError(f"{head}. {_how_to_provide(name, split)}")


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


def _load_hub(spec: _Spec, name: str, split: str, looked: str = "") -> list[Problem]:
    try:
        import datasets as hf  # lazy: optional, and slow to import
    except ImportError as e:
        raise ImportError(f"`datasets` is not installed, so {name!r} cannot be fetched{looked}. "
                          f"{_how_to_provide(name, split)}") from e
    repo, config, hub_split = spec.hub
    try:
        rows = hf.load_dataset(repo, config, split=hub_split)
    except (ConnectionError, OSError) as e:  # offline: say how to work without the hub
        raise ConnectionError(f"could not fetch {repo} from the hub ({e}){looked}. "
                              f"{_how_to_provide(name, split)}") from e
    problems = _parse_rows(rows, spec, name, f"hub:{repo}")
    if spec.split_by_metadata:
        problems = [p for p in problems if p.metadata.get("split") == split]
    return problems


def load_dataset(name: str, split: str = "test", data_dir: str | Path | None = None,
                 source: str = "auto") -> list[Problem]:
    """Load one benchmark as a list of :class:`Problem`.

    Where the rows come from, first match wins:

    1. ``data_dir``, if given (the only place looked at: a missing file there is an error);
    2. ``$TRIM_DATA_DIR``, if that folder holds the file;
    3. the copy shipped in ``data/benchmarks`` (MATH-500, GSM8K, OlympiadBench only);
    4. the Hugging Face hub, with ``source="auto"`` (needs ``datasets`` and a network).

    ``source="local"`` stops before the hub and raises :class:`FileNotFoundError` naming every
    place looked at; ``source="hub"`` always fetches, ignoring local folders. :func:`locate`
    says which local file would be read.
    """
    spec = _check(name, split)
    if source not in ("auto", "local", "hub"):
        raise ValueError(f"unknown source {source!r}; choose one of auto, local, hub")
    if source == "hub":
        return _load_hub(spec, name, split)
    if (found := locate(name, split, data_dir)) is not None:
        return _load_local(found[1], spec, name)
    if source == "local" or data_dir is not None:
        raise _not_found(name, split, data_dir)
    looked = _candidates(name, split, None)
    return _load_hub(spec, name, split,
                     f" (no local copy: looked at {', '.join(str(p) for _, p in looked)})" if looked
                     else f" (no local copy: {ENV_VAR} is unset)")


# --- ProcessBench: step-labelled solutions for judging process reward models ----------

PROCESSBENCH_SPLITS: tuple[str, ...] = ("gsm8k", "math", "olympiadbench", "omnimath")


@dataclass(frozen=True)
class ProcessBenchItem:
    """One model-written solution, cut into steps, with the first wrong step marked.

    ``label`` is the 0-based index of the earliest wrong step, or -1 when every step is
    correct; ``final_answer_correct`` can be true even when a step is wrong.
    """

    id: str
    generator: str
    problem: str
    steps: tuple[str, ...]
    label: int
    final_answer_correct: bool

    @property
    def first_error(self) -> int | None:
        """The 0-based index of the first wrong step; None when the process is all correct."""
        return None if self.label < 0 else self.label


def _processbench_item(r: dict) -> ProcessBenchItem:
    steps = r["steps"]
    if not isinstance(steps, list) or not steps or not all(isinstance(x, str) for x in steps):
        raise ValueError("steps is not a non-empty list of strings")
    label = r["label"]
    if isinstance(label, bool) or not isinstance(label, int) or not -1 <= label < len(steps):
        raise ValueError(f"label {label!r} is not -1 or a step index below {len(steps)}")
    if not isinstance(r["final_answer_correct"], bool):
        raise ValueError(f"final_answer_correct {r['final_answer_correct']!r} is not a boolean")
    return ProcessBenchItem(str(r["id"]), str(r["generator"]), r["problem"], tuple(steps), label,
                            r["final_answer_correct"])


def locate_processbench(split: str = "math",
                        data_dir: str | Path | None = None) -> tuple[str, Path] | None:
    """The ProcessBench file that :func:`load_processbench` reads, as (where, path), or None."""
    if split not in PROCESSBENCH_SPLITS:
        raise ValueError(f"unknown ProcessBench split {split!r}; choose one of "
                         f"{', '.join(PROCESSBENCH_SPLITS)}")
    rel = f"processbench/{split}.json"
    if data_dir is not None:
        places = [("data_dir", Path(data_dir).expanduser() / rel)]
    else:
        env = data_dir_from_env()
        places = [(f"${ENV_VAR}", env / rel)] if env is not None else []
        places.append(("shipped", SHIPPED_DIR / rel))
    return next(((w, p) for w, p in places if p.is_file()), None)


def load_processbench(split: str = "math", data_dir: str | Path | None = None) -> list[ProcessBenchItem]:
    """One ProcessBench split (gsm8k 400, math/olympiadbench/omnimath 1000 items each).

    Read from ``data_dir`` if given, else ``$TRIM_DATA_DIR/processbench/<split>.json`` if that
    exists, else the copy shipped in ``data/benchmarks`` (Apache-2.0). Never touches the network.
    """
    found = locate_processbench(split, data_dir)
    if found is None:
        rel = f"processbench/{split}.json"
        place = Path(data_dir).expanduser() / rel if data_dir is not None else SHIPPED_DIR / rel
        raise FileNotFoundError(f"missing ProcessBench file {place}; it ships with trim in "
                                f"{SHIPPED_DIR} (a trim installed without its repository?), or "
                                f"pass data_dir=... / set {ENV_VAR} to a folder holding {rel}")
    path = found[1]
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON: {e}") from e
    if not isinstance(rows, list):
        raise ValueError(f"{path}: expected a JSON list of items, got {type(rows).__name__}")
    items = []
    for i, row in enumerate(rows):
        try:
            items.append(_processbench_item(row))
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{path}: malformed item {i + 1} of {len(rows)}: {e!r}") from e
    return items
