"""Answer extraction and equivalence grading for maths benchmarks.

The judge is math-verify (``parse`` + ``verify``) behind three guarantees that
the library itself does not give:

* **It never hangs.** sympy can spin for minutes on adversarial input. math-verify
  guards against that with ``signal.alarm``, but signals only work on the main
  thread of the main interpreter (it raises ``ValueError`` anywhere else, e.g. in
  a thread pool or a notebook callback), so its timeouts are switched off here
  (``parsing_timeout=None``, ``timeout_seconds=None``) and every call instead
  runs in a daemon worker thread that we stop waiting for after ``timeout``.
* **It never raises.** Unparseable or missing answers are judged wrong and get a
  status ("no_answer", "parse_error", "timeout") that is counted in
  :func:`grading_stats`, so a run can report "unparseable: N" instead of crashing.
* **It is safe in threads and worker processes.** No signals; the only module
  state is the stats counter, whose lock is recreated after ``fork``.
"""

from __future__ import annotations

import concurrent.futures
import logging
import multiprocessing
import os
import re
import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from math_verify import LatexExtractionConfig, parse, verify

from trim.progress import progress_bar

__all__ = ["Grade", "GradingStats", "extract_answer", "is_equivalent", "grade", "grade_many",
           "grading_stats", "reset_grading_stats"]

Status = Literal["correct", "wrong", "no_answer", "parse_error", "timeout"]

# math-verify logs "Timeout is disabled ..." once per process; that is deliberate here.
if logging.getLogger("math_verify").level == logging.NOTSET:
    logging.getLogger("math_verify").setLevel(logging.ERROR)


@dataclass(frozen=True)
class Grade:
    extracted: str | None
    correct: bool
    status: Status


class GradingStats:
    """Thread-safe status counter (a ``Counter`` behind a lock)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()

    def add(self, status: str, n: int = 1) -> None:
        with self._lock:
            self._counts[status] += n

    def snapshot(self) -> Counter[str]:
        with self._lock:
            return Counter(self._counts)

    def reset(self) -> None:
        with self._lock:
            self._counts.clear()

    def _after_fork(self) -> None:
        # A lock held by another thread at fork time would stay locked forever in the child.
        self._lock = threading.Lock()


STATS = GradingStats()
os.register_at_fork(after_in_child=STATS._after_fork)


def grading_stats() -> Counter[str]:
    """A copy of the status counts of every :func:`grade` call in this process."""
    return STATS.snapshot()


def reset_grading_stats() -> None:
    STATS.reset()


# --------------------------------------------------------------------------- extraction

_BOX_RE = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")
_ANSWER_RE = re.compile(r"(?i)\banswer\s*(?:is\b\s*:?|:)")


def _box_content(text: str, start: int) -> str | None:
    """Content after a ``\\boxed`` ending at ``start``: ``{...}`` with nesting, or ``\\boxed 5``."""
    i = start
    while i < len(text) and text[i] == " ":
        i += 1
    if i < len(text) and text[i] == "{":
        depth = 0
        for j in range(i, len(text)):
            depth += {"{": 1, "}": -1}.get(text[j], 0)
            if depth == 0:
                return text[i + 1 : j]
        return None  # unbalanced
    m = re.match(r"[^\s$]+", text[i:])  # "\boxed 5": TeX takes the next token
    return m.group(0).rstrip(".,") if m else None


def _strip_math(s: str) -> str:
    s = s.strip().strip("*").strip()
    while True:
        s2 = s.rstrip(".").strip()
        for left, right in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
            if s2.startswith(left) and s2.endswith(right) and len(s2) >= len(left) + len(right):
                s2 = s2[len(left) : len(s2) - len(right)].strip()
                break
        if s2 == s:
            return s
        s = s2


def last_boxed(text: str | None) -> str | None:
    """Content of the last well-formed ``\\boxed{}``/``\\fbox{}`` (nested braces matched), or None."""
    for m in reversed(list(_BOX_RE.finditer(text or ""))):
        content = _box_content(text, m.end())
        if content is not None:
            return content.strip() or None
    return None


def extract_answer(solution: str | None) -> str | None:
    """The last ``\\boxed{}``/``\\fbox{}`` content, else the last "answer is X" / "answer: X"."""
    if not solution:
        return None
    if _BOX_RE.search(solution):
        boxed = last_boxed(solution)
        if boxed is not None:
            return boxed
    anchors = list(_ANSWER_RE.finditer(solution))
    if not anchors:
        return None
    rest = solution[anchors[-1].end() :].split("\n", 1)[0].strip().strip("*").strip()
    if m := re.match(r"\$+([^$]+)\$", rest):  # "is $\frac{1}{2}$, so ..."
        rest = m.group(1)
    else:  # up to the end of the sentence; "3.5" keeps its decimal point
        rest = re.split(r"\.(?:\s|$)", rest, maxsplit=1)[0]
    return _strip_math(rest) or None


# --------------------------------------------------------------------------- normalisation

_UNIT_RE = re.compile(r"(?<=[\w}).\]])\s*\\(?:text|mbox|mathrm)\s*\{\s*[A-Za-z][A-Za-z .]*\}(?:\^\{?\d\}?)?")
_ASSIGN_RE = re.compile(r"\s*(?:[A-Za-z]|\\[A-Za-z]+)(?:_\{?\w+\}?)?\s*=\s*([^=]+)")
_THOUSANDS_RE = re.compile(r"-?\d{1,3}(?:(?:,|\{,\})\d{3})+(?:\.\d+)?")
_MIXED_RE = re.compile(r"(-?)(\d+)\s*\\frac\s*(?:\{(\d+)\}|(\d))\s*(?:\{(\d+)\}|(\d))")


def _normalise(s: str) -> str:
    """Light, conservative LaTeX clean-up applied to both sides before math-verify."""
    s = _strip_math(s)
    s = re.sub(r"\\[dt]frac(?![A-Za-z])", r"\\frac", s)
    s = re.sub(r"(?<!\\)\\(?:[!,;:](?![A-Za-z])| )", " ", s)  # spacing, but not the "\\\\ " of a row break
    s = re.sub(r"\\(?:left|right)(?![A-Za-z])", "", s)
    s = re.sub(r"\^\s*\{?\s*\\circ\s*\}?|(?<=[\d}])\s*(?:\\circ|\\degree|degrees?)(?![A-Za-z])", "", s)
    s = re.sub(r"\\text\s*\{\s*(?:and|or)\s*\}", ",", s)
    s = _UNIT_RE.sub("", s)
    s = re.sub(r"(?<!\\)%", r"\\%", s)  # bare % starts a LaTeX comment
    if m := re.fullmatch(r"\\(?:text|textbf|mathrm|mbox)\s*\{([^{}]*)\}", s.strip()):
        s = m.group(1)
    if (m := _ASSIGN_RE.fullmatch(s)) and not re.search(r"[A-Za-z]", re.sub(r"\\[A-Za-z]+", "", m.group(1))):
        s = m.group(1)  # "x = 3" -> "3", but "y = 2x + 1" stays an equation
    s = s.strip()
    if _THOUSANDS_RE.fullmatch(s):  # "1,000" -> 1000; "1, 000" or "1,00" stay lists
        s = s.replace("{,}", "").replace(",", "")
    if m := _MIXED_RE.fullmatch(s):  # "2\frac12" is 5/2, not 2 * 1/2
        sign, whole = m.group(1), int(m.group(2))
        num, den = int(m.group(3) or m.group(4)), int(m.group(5) or m.group(6))
        s = f"{sign}\\frac{{{whole * den + num}}}{{{den}}}"
    return s.strip()


def _balanced(s: str) -> bool:
    depth = 0
    for ch in s:
        depth += {"{": 1, "}": -1}.get(ch, 0)
        if depth < 0:
            return False
    return depth == 0


def _canon(s: str) -> str:
    return re.sub(r"\s+|\\text\s*|[{}]", "", s).lower()


# --------------------------------------------------------------------------- judging

_LATEX = (LatexExtractionConfig(boxed_match_priority=0),)


def _parse(s: str) -> list:
    # Wrapping in \boxed{} makes the extractor take the whole answer rather than a fragment of it.
    return parse("\\boxed{" + s + "}", extraction_config=_LATEX, fallback_mode="no_fallback",
                 parsing_timeout=None, raise_on_error=False)


def _verify_pair(gold: str, pred: str) -> Status:
    """Judge two normalised answers; runs inside the time-limited worker thread.

    ``verify(gold, pred)`` is asymmetric: the gold's form decides the comparison
    (a gold assignment "x = 3" is reduced to 3 unless the prediction is itself an
    equation; a gold inequality becomes an interval only if the prediction is a
    set; in strict mode variables are matched as the gold names them), so the
    reference must always be passed first.
    """
    if not (_balanced(gold) and _balanced(pred)):
        return "parse_error"  # "3}{" would otherwise close our \boxed{} early and read as 3
    if _canon(gold) == _canon(pred):
        return "correct"
    gold_p, pred_p = _parse(gold), _parse(pred)
    if not gold_p or not pred_p:
        return "parse_error"
    ok = verify(gold_p, pred_p, timeout_seconds=None, raise_on_error=False)
    return "correct" if ok else "wrong"


def _run_with_timeout(fn, args: tuple, timeout: float):
    """Run ``fn(*args)`` in a fresh daemon thread and wait at most ``timeout`` seconds.

    A daemon ``threading.Thread`` feeding a ``concurrent.futures.Future`` rather than
    a ``ThreadPoolExecutor``: executor workers are joined at interpreter exit, so one
    runaway sympy call would hang shutdown; a shared pool would also not survive fork.
    A timed-out thread cannot be killed and keeps burning CPU until sympy returns.
    """
    fut: concurrent.futures.Future = concurrent.futures.Future()

    def target() -> None:
        if fut.set_running_or_notify_cancel():
            try:
                fut.set_result(fn(*args))
            except BaseException as e:  # noqa: BLE001 - reported through the future
                fut.set_exception(e)

    threading.Thread(target=target, daemon=True, name="trim-grading").start()
    return fut.result(timeout=timeout)


def _judge(gold: str | None, prediction: str | None, timeout: float) -> Status:
    if prediction is None or not str(prediction).strip():
        return "no_answer"
    if gold is None or not str(gold).strip():
        return "parse_error"
    try:
        return _run_with_timeout(_verify_pair, (_normalise(str(gold)), _normalise(str(prediction))), timeout)
    except concurrent.futures.TimeoutError:
        return "timeout"
    except Exception:  # noqa: BLE001 - a grader must never take a run down
        return "parse_error"


def is_equivalent(gold: str | None, prediction: str | None, timeout: float = 5.0) -> bool:
    """True iff ``prediction`` is mathematically equivalent to ``gold`` (not counted in stats)."""
    return _judge(gold, prediction, timeout) == "correct"


def _grade_uncounted(gold: str | None, solution: str | None, timeout: float = 5.0) -> Grade:
    try:
        extracted = extract_answer(solution)
    except Exception:  # noqa: BLE001
        extracted = None
    status = _judge(gold, extracted, timeout)
    return Grade(extracted=extracted, correct=status == "correct", status=status)


def grade(gold: str | None, solution: str | None, timeout: float = 5.0) -> Grade:
    """Extract the answer from a full ``solution`` and judge it against ``gold``."""
    result = _grade_uncounted(gold, solution, timeout)
    STATS.add(result.status)
    return result


def _grade_star(args: tuple) -> Grade:
    return _grade_uncounted(*args)


def grade_many(golds: Sequence[str | None], solutions: Sequence[str | None], workers: int | None = None,
               timeout: float = 5.0, use_threads: bool = False, desc: str = "grading") -> list[Grade]:
    """Grade pairs in parallel, preserving order. ``workers <= 1`` grades in-process.

    Worker processes use the "spawn" context (forking a parent that runs threads
    can deadlock), so a calling *script* needs the ``if __name__ == "__main__":``
    guard. Workers' own stats die with them, so counts are added here, in the caller.
    ``use_threads=True`` avoids the start-up cost but shares one GIL.
    """
    if len(golds) != len(solutions):
        raise ValueError(f"{len(golds)} golds but {len(solutions)} solutions")
    jobs = [(g, s, timeout) for g, s in zip(golds, solutions)]
    workers = min(8, os.cpu_count() or 1) if workers is None else workers
    bar = progress_bar(total=len(jobs), desc=desc)
    results: list[Grade] = []
    ex: concurrent.futures.Executor | None = None
    try:
        if workers <= 1 or len(jobs) <= 1:
            it = map(_grade_star, jobs)
        elif use_threads:
            ex = concurrent.futures.ThreadPoolExecutor(workers)
            it = ex.map(_grade_star, jobs)
        else:
            ex = concurrent.futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
            it = ex.map(_grade_star, jobs, chunksize=max(1, len(jobs) // (workers * 8)))
        for result in it:
            STATS.add(result.status)
            results.append(result)
            bar.update()
    finally:
        bar.close()
        if ex is not None:
            ex.shutdown(wait=True, cancel_futures=True)
    return results
