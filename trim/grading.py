"""Answer extraction and equivalence grading for maths benchmarks.

The judge is math-verify (``parse`` + ``verify``). Around it this module adds what a
grader needs and the library does not give:

* **No false positives.** The one shortcut in the caller only ever *accepts*, and only
  two answers identical token for token after rewrites TeX itself makes (``\\dfrac``
  for ``\\frac``, ``\\left(`` for ``(``, ``x^2`` for ``x^{2}``; see :func:`_canonical`);
  braces, case and token order are never touched, so ``2^{n+1}`` and ``2^n+1`` stay
  apart. Everything else goes to math-verify, with its own false positives removed:
  its trailing-unit stripper (``2t`` read as ``2``) is off, decimals it compares after
  rounding to 6 places are compared again, and numbers in another base keep their
  base (see :func:`_verify_pair`).
* **A hard time limit.** sympy evaluates ``9^{9^{9}}`` in C while holding the GIL, so
  neither a watchdog thread nor ``signal.alarm`` can interrupt it, and every other
  thread of the process freezes with it. math-verify therefore runs only in a small
  pool of worker *processes* (:class:`_Pool`); a call that overruns ``timeout`` gets
  its worker killed and replaced, is judged wrong with status "timeout", and the other
  workers carry on. The caller's process never imports math-verify or sympy.
* **The answer formats real benchmarks use.** ``10,\\!080`` thousands separators,
  ``\\$`` and unit words, ``1.24e-8`` scientific notation (math-verify reads the ``e``
  as Euler's number), GSM8K's ``#### 42``, "the answer is ..." sentences; see
  :func:`extract_answer` and :func:`_normalise`.
* **It never raises on bad input.** Missing, unparseable or runaway answers are judged
  wrong with a status ("no_answer", "parse_error", "timeout") counted in
  :func:`grading_stats`. Only a broken installation (a worker that cannot start)
  raises, because silently marking every answer wrong would be worse.

Workers are started with ``subprocess`` running this very file (not ``multiprocessing``):
nothing is forked from a parent that may run torch threads, the caller's ``__main__``
is never re-imported (so scripts need no ``if __name__ == "__main__"`` guard), and it
works the same in notebooks, pytest and the engine. This file imports only the
standard library at module level so that a worker starts in about a second.
"""

from __future__ import annotations

import atexit
import collections
import concurrent.futures
import json
import logging
import math
import os
import queue
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

__all__ = ["Grade", "GradingStats", "extract_answer", "is_equivalent", "grade", "grade_many",
           "grading_stats", "last_boxed", "reset_grading_stats"]

Status = Literal["correct", "wrong", "no_answer", "parse_error", "timeout"]


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
if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(after_in_child=STATS._after_fork)


def grading_stats() -> Counter[str]:
    """A copy of the status counts of every :func:`grade` / :func:`grade_many` verdict in this process."""
    return STATS.snapshot()


def reset_grading_stats() -> None:
    STATS.reset()


# --------------------------------------------------------------------------- extraction
# Runs in the caller's process on whole model outputs, so everything here is linear in
# the length of the text: a 1 MB solution must not stall the threads that share the GIL.

_BOX_RE = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")


_BRACE_TOKEN_RE = re.compile(r"\\.|[{}]", re.S)  # a backslash takes the next character: \{ \} are set braces
_MAX_BOXES = 20  # only the last boxes can hold the final answer; a solution has a few
_MAX_BOX_LEN = 20_000  # no answer is longer; bounds the work on a runaway text


def _box_content(text: str, start: int) -> str | None:
    """What a ``\\boxed`` ending at ``start`` holds: ``{...}`` (nested braces matched) or TeX's
    next token (``\\boxed 5``); None if the brace never closes."""
    i = start
    while i < len(text) and text[i] == " ":
        i += 1
    if i < len(text) and text[i] == "{":
        depth = 0
        for m in _BRACE_TOKEN_RE.finditer(text, i, i + _MAX_BOX_LEN):
            depth += {"{": 1, "}": -1}.get(m.group(), 0)
            if depth == 0:
                return text[i + 1 : m.start()]
        return None
    m = re.match(r"[^\s$]+", text[i : i + 200])  # "\boxed 5": TeX takes the next token
    return m.group(0).rstrip(".,") if m else None


def _boxes(text: str) -> list[tuple[int, str]]:
    """(start, content) of the last well-formed, non-empty ``\\boxed{}``/``\\fbox{}``s, in order."""
    found = [(m.start(), _box_content(text, m.end())) for m in list(_BOX_RE.finditer(text))[-_MAX_BOXES:]]
    return [(start, content.strip()) for start, content in found if content and content.strip()]


def last_boxed(text: str | None) -> str | None:
    """Content of the last well-formed, non-empty ``\\boxed{}``/``\\fbox{}`` (nested braces matched).

    An empty ``\\boxed{}`` written after the real one (a model closing with a
    template) is skipped rather than erasing the answer.
    """
    boxes = _boxes(text or "")
    return boxes[-1][1] if boxes else None


# "answer is", "answer:", "**Answer:**", "final answer is", "answer should be" ...
_ANSWER_RE = re.compile(
    r"(?i)\b(final\s+)?answers?\b\s*(?:\*\*\s*)?(?:is\b|are\b|:|=|(?:should|would|will)\s+be\b)\s*(?:\*\*)?\s*:?")
# A qualifier just before "answer" that means the sentence is not the model's own answer:
# "a common wrong answer is 15", "the tempting (but incorrect) answer is ...".
_QUALIFIER = (r"(?i)\b(?:wrong|incorrect|common|tempting|naive|na\u00efve|mistaken|erroneous|false|bad|invalid|"
              r"previous|earlier|initial|typical|not\s+the)\b\)?(?:\s+\(?[\w-]+\)?){0,2}\s*")
_NOT_OURS_RE = re.compile(_QUALIFIER + "$")
_NOT_OURS_BOX_RE = re.compile(_QUALIFIER + r"answers?\b[^.\n]{0,24}$")  # "... wrong answer is $\boxed{15}"
# GSM8K's "#### 42" (or "#### $1,200", "#### 18 dollars."), not a markdown heading "#### Step 1"
# or "#### 1. Setting up".
_GSM_RE = re.compile(r"####(?![ \t]*\d+\.\s)[ \t]*(\$[^$\n]+\$|[-+]?\\?\$?[ \t]*[\d.,/]*\d[\d.,/]*[ \t]*(?:\\?%)?"
                     r"(?:[ \t]+[A-Za-z]+){0,3})[ \t]*\.?[ \t]*$", re.M)
_MATH_SEGMENT_RE = re.compile(  # a maths segment opening the text; \$ inside $...$ is a dollar sign
    r"\$\$(?P<dd>.+?)\$\$|\\\[(?P<br>.+?)\\\]|\\\((?P<pa>.+?)\\\)|\$(?P<d>(?:\\.|[^$\\\n])+)\$", re.S)
# Where a plain-text answer ends: a full stop (not a decimal point), ;!?, a clause or a remark.
_SENTENCE_END_RE = re.compile(
    r"(?<!\\)\.(?=\s|$)|[;!?](?=\s|$)|,\s+(?=[A-Za-z]{2,}\b)|\s+\((?=[A-Za-z]{2,})|"
    r"\s+(?:because|since|as|which|so|but|and\s+(?:the|this|that|it|we|so))\b")
# Words that are arithmetic or logic, never units: "5 or 6" is a hedge, not 5.
_NOT_UNITS = frozenset("""and or to through minus plus times over divided by pi sqrt root roots e i not no nor
    than but squared cubed less more of is are if when for with without percent mod choose log ln sin cos tan
    exp factorial""".split())
# Units of one or two letters, written as plain words after a number ("5 cm", "10 sq m").
_SHORT_UNITS = frozenset("mm cm m km in ft yd mi mg g kg lb oz ml l s ms h hr min yr sq cu mph ev".split())
# A value, then nothing but unit words: "1200 dollars", "3.83\\times 10^{35} erg/s", "864 square inches".
_UNIT_WORD = r"[A-Za-z][A-Za-z/-]*(?:\^\{?-?\d\}?)?"  # "dollars", "erg/s", "cm^2"
_VALUE_WORDS_RE = re.compile(rf"(?P<value>.*?[\d}}%])\s+(?P<words>{_UNIT_WORD}(?:\s+{_UNIT_WORD})*)", re.S)


def _strip_unit_words(s: str) -> str:
    """``1200 dollars`` -> ``1200``; ``5 or 6``, ``2 pi`` and ``x + 2 ab`` are left alone."""
    m = _VALUE_WORDS_RE.fullmatch(s.strip())
    if not m or any(w.lower() in _NOT_UNITS for w in re.findall(r"[A-Za-z]+", m.group("words"))):
        return s
    if not all(len(w) >= 3 or w.lower() in _SHORT_UNITS for w in re.findall(r"[A-Za-z]+", m.group("words"))):
        return s  # "3 x" and "2 ab" are products; a word of one or two letters must be a known unit
    value = m.group("value")
    if re.search(r"[A-Za-z]", re.sub(r"\\[A-Za-z]+", "", value.split("=")[-1])):
        return s  # words after an expression in letters are part of it
    return value.strip()


def _answer_after(rest: str) -> str | None:
    """The answer that opens ``rest`` (the text after "answer is" or "####")."""
    rest = rest.lstrip(" \t*:\n")[:2000]  # an answer is short; the bound keeps every regex cheap
    if m := _MATH_SEGMENT_RE.match(rest):
        return next(g for g in m.groups() if g is not None).strip() or None
    line = rest.split("\n", 1)[0]
    if line.startswith("$"):  # "is $260." : an unpaired dollar sign is currency
        line = line[1:]
    if m := _SENTENCE_END_RE.search(line):
        line = line[: m.start()]
    line = line.strip().strip("*\"'`").strip()
    return _strip_unit_words(line) or None


def extract_answer(solution: str | None) -> str | None:
    """The model's final answer in ``solution``, or None.

    In order of trust: the last non-empty ``\\boxed{}``/``\\fbox{}`` (passing over a box
    that is "a common wrong answer"); a GSM8K-style ``#### 42`` line; the last "final
    answer is/:" sentence; the last "answer is/:" sentence that is not about someone
    else's answer ("a common wrong answer is 15").
    For sentences, a maths segment right after the anchor is taken whole
    (``$\\$260$`` gives ``\\$260``); plain text runs to the end of the sentence, and
    unit words after a number are dropped (``1200 dollars`` gives ``1200``).
    """
    if not solution:
        return None
    text = str(solution)
    if boxes := _boxes(text):
        # The last box, unless it is a remark about a wrong answer and the model boxed its own.
        ours = [content for start, content in boxes
                if not _NOT_OURS_BOX_RE.search(text[max(0, start - 80) : start])]
        return ours[-1] if ours else boxes[-1][1]
    for m in reversed(list(_GSM_RE.finditer(text))):
        if answer := _answer_after(m.group(1)):
            return answer
    anchors = list(_ANSWER_RE.finditer(text))
    for finals_only in (True, False):  # from the end; validated lazily, as a text may hold 100k of them
        for m in reversed(anchors):
            if (finals_only and not m.group(1)) or _NOT_OURS_RE.search(text[max(0, m.start() - 60) : m.start()]) \
                    or re.match(r"\s*not\b", text[m.end() : m.end() + 8]):
                continue
            if answer := _answer_after(text[m.end() : m.end() + 4000]):
                return answer
    return None


# --------------------------------------------------------------------------- fast path
# Runs in the caller: two answers that read the same token for token are equal without
# asking a worker. This may only ever ACCEPT, and only through rewrites that TeX itself
# treats as identical; anything else (units, "x =", separators, e-notation) is a grading
# convention and is left to the workers. A near miss simply falls through to them.

_FAST_MAX_LEN = 1000  # longer answers go to a worker; keeps this path cheap on any input
_TOKEN_RE = re.compile(r"\\[A-Za-z]+|\\.|\s+|.", re.S)
# Spacing: cosmetic in TeX, but "2e-1" / "2e - 1" and "1,000" / "1, 000" are read differently
# by the grading conventions, so a run of it is kept (as written) unless it touches a brace,
# a bracket, ^ _ = & or a command, where no convention looks.
_SPACING = frozenset({"\\,", "\\;", "\\:", "\\!", "\\ ", "\\quad", "\\qquad", "~"})
_SPACE_FREE = frozenset("{}()[]^_=&")
_DROPPED = frozenset({"\\left", "\\right", "\\displaystyle", "\\textstyle", "\\big", "\\Big", "\\bigg",
                      "\\Bigg", "\\bigl", "\\bigr", "\\Bigl", "\\Bigr", "\\biggl", "\\biggr"})
_SYNONYMS = {"\\dfrac": "\\frac", "\\tfrac": "\\frac", "\\le": "\\leq", "\\ge": "\\geq",
             "\\leqslant": "\\leq", "\\geqslant": "\\geq", "\\ne": "\\neq"}
_TEXT_MODE = frozenset({"\\text", "\\textrm", "\\textnormal", "\\mbox", "\\textbf", "\\mathrm",
                        "\\operatorname"})
_ARITY = {"^": 1, "_": 1, "\\frac": 2, "\\binom": 2, "\\sqrt": 1}


class _Ambiguous(Exception):
    """An answer whose TeX reading and whose likely intended reading differ (``2^10``)."""


def _strip_delimiters(s: str) -> str:
    """``$x$``, ``\\(x\\)``, ``\\[x\\]`` and a closing full stop around a whole answer."""
    s = s.strip()
    while True:
        s2 = s.rstrip(".").strip().strip("*").strip()
        for left, right in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
            if s2.startswith(left) and s2.endswith(right) and len(s2) >= len(left) + len(right):
                s2 = s2[len(left) : len(s2) - len(right)].strip()
                break
        if s2 == s:
            return s
        s = s2


def _is_command(t: str) -> bool:
    return t.startswith("\\") and t not in _SPACING


def _canonical(s: str) -> tuple[str, ...] | None:
    """Token sequence of ``s`` after rewrites TeX itself makes, or None (too long, unbalanced, ambiguous).

    ``\\left``/``\\right`` go, ``\\dfrac`` is ``\\frac``, a one-token argument gets braces
    (``x^2`` is ``x^{2}``, ``\\frac12`` is ``\\frac{1}{2}``), and spacing is dropped only
    next to braces, brackets, ``^ _ = &`` and commands. Braces, case and token order are
    never touched, so ``2^{n+1}`` and ``2^n+1`` stay apart.
    """
    if len(s) > _FAST_MAX_LEN:
        return None  # checked first: even stripping "$...$" from a huge string costs
    s = _strip_delimiters(s)
    s = re.sub(r"\\(?:left|right)\s*\.", "", s)  # an invisible delimiter: nothing at all
    raw = [t for t in _TOKEN_RE.findall(s) if t not in _DROPPED]
    toks: list[str] = []
    run: list[str] = []  # pending spacing tokens
    text_depths: list[int] = []  # brace depths at which a text-mode argument opened
    depth = 0
    for t in raw + [""]:
        if t.isspace() or t in _SPACING:
            run.append(" " if t.isspace() else t)
            continue
        if run:
            prev = toks[-1] if toks else ""
            if text_depths:  # inside \text{...} spaces separate words
                toks.append("".join(run))
            elif prev and t and not (prev in _SPACE_FREE or t in _SPACE_FREE
                                     or _is_command(prev) or _is_command(t)):
                toks.append("".join(dict.fromkeys(run)))  # "1  2" is "1 2"; "1\\,2" stays itself
            run = []
        if t == "{":
            depth += 1
            if toks and toks[-1] in _TEXT_MODE:
                text_depths.append(depth)
        elif t == "}":
            if text_depths and text_depths[-1] == depth:
                text_depths.pop()
            depth -= 1
            if depth < 0:
                return None
        if t:
            toks.append(_SYNONYMS.get(t, t))
    if depth != 0:
        return None  # unbalanced: no reading of it is safe to call identical to anything
    try:
        return tuple(_braced(toks, 0, len(toks)))
    except (RecursionError, _Ambiguous):
        return None


def _braced(toks: list[str], i: int, end: int) -> list[str]:
    """Copy ``toks[i:end]`` giving every argument of ``^ _ \\frac \\binom \\sqrt`` braces."""
    out: list[str] = []
    while i < end:
        t = toks[i]
        out.append(t)
        i += 1
        if t == "\\sqrt" and i < end and toks[i] == "[":  # optional index: \sqrt[3]{x}
            while i < end and toks[i] != "]":
                out.append(toks[i])
                i += 1
            if i < end:
                out.append("]")
                i += 1
        arity = _ARITY.get(t, 0)
        for k in range(arity):
            if i >= end:
                break
            if toks[i] == "{":
                close, level = i, 0
                for close in range(i, end):
                    level += {"{": 1, "}": -1}.get(toks[close], 0)
                    if level == 0:
                        break
                out += ["{", *_braced(toks, i + 1, close), "}"]
                i = close + 1
            else:
                if k == arity - 1 and toks[i].isdigit() and i + 1 < end and toks[i + 1][:1].isdigit():
                    raise _Ambiguous  # TeX reads 2^10 as 2^{1}0; its writer meant 2^{10}
                out += ["{", toks[i], "}"]
                i += 1
    return out


_INTEGER_RE = re.compile(r"-?\d{1,18}")


def _fast_accept(gold: str, prediction: str) -> bool:
    a, b = _canonical(gold), _canonical(prediction)
    return a is not None and a == b and len(a) > 0


# --------------------------------------------------------------------------- normalisation
# Runs in the workers (under the time limit), on both answers, before math-verify.
# These are grading conventions (units are ignored, "x = 3" is 3, "1,000" is 1000), so
# each rule is written narrowly and tested with near misses in tests/test_grading_*.py.

_UNICODE = {"\u2212": "-", "\u2013": "-", "\u00d7": "\\times ", "\u22c5": "\\cdot ", "\u00b7": "\\cdot ",
            "\u00f7": "\\div ", "\u03c0": "\\pi ", "\u221e": "\\infty ", "\u2264": "\\leq ", "\u2265": "\\geq ",
            "\u2260": "\\neq ", "\u00b0": "^\\circ", "\u00a0": " ", "\u2009": " ", "\u202f": " "}
_TEXT_CMD = r"\\(?:text|textrm|textnormal|mbox|mathrm|rm|textbf|textit|mathit)"
# A unit in text mode, optionally squared: "\text{ cm}^2", "\mbox{ inches}^2", "\mathrm{~m/s}".
_UNIT_BODY = (r"\s*\{\s*(?:~|\\[,;: ]|\s)*(?P<unit>[A-Za-z][A-Za-z0-9 .~/\\,^{}*-]*?)\s*\}"
              r"(?P<power>\s*\^\s*\{?\s*-?\d\s*\}?)?")
_TEXT_UNIT_RE = re.compile(rf"(?P<before>[\d}})\].%!]|\\pi)\s*(?:\\[ ,;:!]\s*)*{_TEXT_CMD}{_UNIT_BODY}"
                           r"\s*(?=$|,|;|\)|\\quad)")
# Spellings of one unit; a unit is compared by its canonical name and power ("square inches" is in^2).
_UNIT_NAMES = {name: names.split()[0] for names in (
    "mm millimeter millimetre", "cm centimeter centimetre", "m meter metre", "km kilometer kilometre",
    "in inch", "ft foot feet", "yd yard", "mi mile", "mg milligram", "g gram", "kg kilogram", "lb pound lbs",
    "oz ounce", "ml milliliter millilitre", "l liter litre", "s sec second", "ms millisecond", "min minute",
    "h hr hour", "day", "week", "month", "yr year", "$ dollar usd", "cent cents", "deg degree", "rad radian",
    "unit", "mph", "n newton", "j joule", "w watt", "v volt", "a ampere amp", "k kelvin", "pa pascal",
    "hz hertz", "ev") for name in names.split()}


def _unit_key(unit: str) -> tuple[str, str]:
    """(name, power) of a unit as written: ``\\,cm^2``, ``square centimeters`` -> (cm, ^2)."""
    u = re.sub(r"\s+", " ", re.sub(r"\\[,;: !]|[~.]", " ", unit)).strip().lower()
    u = re.sub(r"\^\s*\{?\s*(-?\d)\s*\}?", r"^\1", u)
    power = ""
    if m := re.fullmatch(r"(square|sq|cubic|cu) (.+)", u):
        power, u = ("^2" if m.group(1) in ("square", "sq") else "^3"), m.group(2)
    if m := re.fullmatch(r"(.+?) ?(\^-?\d)", u):
        u, power = m.group(1), m.group(2)
    for word in (u, u[:-2] if u.endswith("es") else u, u[:-1] if u.endswith("s") else u):
        if word in _UNIT_NAMES:
            return _UNIT_NAMES[word], power
    return u, power


def _units_conflict(a: str | None, b: str | None) -> bool:
    """Both answers name a unit we know, and not the same one (5 cm against 5 m)."""
    if not a or not b:
        return False  # a unit on one side only is ignored, like every unit
    (name_a, pow_a), (name_b, pow_b) = _unit_key(a), _unit_key(b)
    known = name_a in _UNIT_NAMES.values() and name_b in _UNIT_NAMES.values()
    return known and (name_a, pow_a) != (name_b, pow_b)


_ASSIGN_RE = re.compile(r"\s*(?:[A-Za-z]|\\[A-Za-z]+)(?:_\{?\w+\}?)?\s*(?:=|\\approx)\s*([^=]+)")
_THOUSANDS_RE = re.compile(r"-?\d{1,3}(?:(?:,|\{,\})\d{3})+(?:\.\d+)?")
_MIXED_RE = re.compile(r"(-?)(\d+)\s*\\frac\s*(?:\{(\d+)\}|(\d))\s*(?:\{(\d+)\}|(\d))")
# Scientific notation: 1.24e-8, 3E8, 6.02e+23. Never after a letter, a backslash or inside a word.
_E_NOTATION_RE = re.compile(r"(?<![\w.\\])(\d+\.?\d*|\.\d+)([eE])([+-]?)(\d+)(?![\w.])")
_TIMES_TEN_RE = re.compile(r"(?<=[\d.])\s*(?:x|\*|\\times|\\cdot)\s*10\s*\^\s*\(?\s*\{?\s*([+-]?\d+)\s*\}?\s*\)?")
_E_STANDALONE_RE = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)[eE][+-]?\d+")


def _e_notation(s: str) -> str:
    """``1.24e-8`` -> ``1.24\\times 10^{-8}``, which math-verify reads as a number, not ``1.24 e - 8``.

    ``2e-1`` inside a longer expression may well be ``2e - 1`` (Euler's number), so a
    lower-case ``e`` with a signed exponent after a whole number other than 1 is only
    rewritten when it is the entire answer; ``1.5e-3``, ``1e-5``, ``3e8``, ``4E-2`` always are.
    """
    whole = bool(_E_STANDALONE_RE.fullmatch(s.strip()))

    def repl(m: re.Match) -> str:
        mant, e, sign, exp = m.groups()
        if not whole and e == "e" and sign and "." not in mant and mant != "1":
            return m.group(0)
        return f"{mant.rstrip('.')}\\times 10^{{{'-' if sign == '-' else ''}{exp}}}"

    return _E_NOTATION_RE.sub(repl, s)


def _split_unit(s: str) -> tuple[str, str | None]:
    """Remove units after numbers; returns the rest and the last unit (for the conflict check)."""
    unit = None

    def repl(m: re.Match) -> str:
        nonlocal unit
        u = m.group("unit").strip()
        if u.lower() in ("and", "or"):
            return m.group(0)
        unit = u + (m.group("power") or "")
        return m.group("before")

    s = _TEXT_UNIT_RE.sub(repl, s)
    stripped = _strip_unit_words(s)
    if stripped != s:
        unit = s.strip()[len(stripped.strip()) :].strip()
        s = stripped
    return s, unit


def _repeating_decimal(m: re.Match) -> str:
    """``0.1\\overline{6}`` -> ``\\frac{1}{6}``, exactly: I.A(R) = (IAR - IA) / (10^|A| (10^|R| - 1))."""
    sign, whole, fixed, repeat = m.group(1), m.group(2) or "0", m.group(3), m.group(4)
    num = int(whole + fixed + repeat) - int(whole + fixed)
    den = 10 ** len(fixed) * (10 ** len(repeat) - 1)
    return f"{sign}\\frac{{{num}}}{{{den}}}"


# dx/dt written as a fraction: sympy takes the derivative of the plain symbol x, which is 0, so
# "dx/dt = kx - a" would equal "dq/dt = kx - a". It becomes one opaque symbol instead.
_LEIBNIZ_RE = re.compile(r"\\frac\s*\{\s*d\s*(?:\^\s*\{?\s*(\d)\s*\}?)?"  # \frac{d^2 ...
                         r"\s*((?:[A-Za-z]|\\[A-Za-z]+)(?:\s*_\s*\{?\s*\w+\s*\}?)?)\s*\}"  # ... v_o}
                         r"\s*\{\s*d\s*([A-Za-z]|\\[A-Za-z]+)\s*(?:\^\s*\{?\s*\d\s*\}?)?\s*\}")  # {d t^2}


def _leibniz(m: re.Match) -> str:
    order, function, variable = m.group(1) or "", m.group(2), m.group(3)
    return "\\mathit{d" + order + re.sub(r"[^A-Za-z0-9]", "", function + "d" + variable) + order + "}"


_SUPERSCRIPTS = str.maketrans("\u2070\u00b9\u00b2\u00b3\u2074\u2075\u2076\u2077\u2078\u2079\u207b\u207a",
                              "0123456789-+")


def _normalise_with_unit(s: str) -> tuple[str, str | None]:
    s = re.sub("[\u207a\u207b]?[\u2070\u00b9\u00b2\u00b3\u2074-\u2079]+",
               lambda m: "^{" + m.group().translate(_SUPERSCRIPTS) + "}", s)  # 10\u207b\u2078 is 10^{-8}
    for k, v in _UNICODE.items():
        s = s.replace(k, v)
    s = _strip_delimiters(s)
    if (m := re.match(r"\\(?:boxed|fbox)\s*(?=\{)", s)) and (content := _box_content(s, m.end())) is not None \
            and m.end() + len(content) + 2 == len(s):
        s = content.strip()  # the whole answer is one box
    s = re.sub(r"\\(?:displaystyle|textstyle)(?![A-Za-z])", "", s)
    s = re.sub(r"\\(?:mathrm|rm|text|mathit|operatorname)\s*\{\s*([ei])\s*\}", r"\1", s)  # upright e, i
    s = re.sub(r"(\\[A-Za-z]+)(?=[\d.])", r"\1 ", s)  # "\cdot1.5e-3" is "\cdot 1.5e-3" to TeX
    # v_i is v_{i} to TeX, but math-verify makes the symbols complex for one spelling and not the other.
    s = re.sub(r"_\s*(\d+|[A-Za-z](?![A-Za-z])|\\[A-Za-z]+(?![A-Za-z])(?!\s*[{\[]))", r"_{\1}", s)
    # Symbols the parser rejects, renamed the same way on both sides: E_1 is a variable, not
    # Euler's number; L_\odot is the Sun's luminosity.
    s = re.sub(r"(?<![\\A-Za-z])([Ee])(?=\s*_)", r"\\mathit{\1}", s)
    s = re.sub(r"\\odot(?![A-Za-z])", "sun", s)
    s = re.sub(r"\\[dt]frac(?![A-Za-z])", r"\\frac", s)
    s = _LEIBNIZ_RE.sub(_leibniz, s)
    s = re.sub(r"\\(?:left|right)\s*\.", "", s)  # invisible delimiter
    s = re.sub(r"\\(?:left|right|bigl|bigr|Bigl|Bigr|big|Big)(?![A-Za-z])", "", s)
    # Thousands separators before the spacing commands go, or "10,\!080" becomes "10, 080".
    s = re.sub(r"(?<=\d)(?:,\\!|\{,\}|\\,|,\\,)\s*(?=\d{3}(?!\d))", "", s)
    currency = "$" if "$" in s else None
    s = re.sub(r"(?:US)?\\\$|\$", "", s)  # currency; maths delimiters are gone already
    s = re.sub(r"(?<!\\)\\(?:[!,;:> ]|quad(?![A-Za-z])|qquad(?![A-Za-z]))", " ", s)
    s = re.sub(r"(?<!\\)~", " ", s)
    s = re.sub(r"\^\s*\{?\s*\\circ\s*\}?|(?<=[\d}])\s*(?:\\circ|\\degree|degrees?)(?![A-Za-z])", "", s)
    s = re.sub(rf"{_TEXT_CMD}\s*\{{\s*(?:and|or)\s*\}}", ",", s)
    s = re.sub(r"\s*\b(?:per\s*cent|percent)\b", r"\\%", s)
    s = re.sub(r"(?<!\\)%", r"\\%", s)  # bare % starts a LaTeX comment
    s, unit = _split_unit(s.strip())
    unit = unit or currency
    if (m := _ASSIGN_RE.fullmatch(s)) and not re.search(r"[A-Za-z]", re.sub(r"\\[A-Za-z]+", "", m.group(1))):
        s = m.group(1)  # "x = 3" -> "3", but "y = 2x + 1" stays an equation
    s = s.strip()
    if m := re.fullmatch(rf"{_TEXT_CMD}\s*\{{([^{{}}]*)\}}", s):
        s = m.group(1).strip()
    if m := re.fullmatch(r"\(\s*([A-E])\s*\)", s):  # multiple choice "(C)" is "C"
        s = m.group(1)
    s = re.sub(r"(?<![\d.])(-?)(\d*)\.(\d*)\\(?:overline|bar)\s*\{(\d+)\}", _repeating_decimal, s)
    s = re.sub(r"\s+and\s+", ", ", s)  # "3 and 5" lists two answers
    s = _e_notation(s)
    s = _TIMES_TEN_RE.sub(lambda m: f"\\times 10^{{{m.group(1)}}}", s)
    s = re.sub(r"(?<=\d)\.(?![\d\\])", "", s)  # "-1./3" and "5." : a bare decimal point
    if _THOUSANDS_RE.fullmatch(s):  # "1,000" -> 1000; "1, 000" or "1,00" stay lists
        s = s.replace("{,}", "").replace(",", "")
    if m := _MIXED_RE.fullmatch(s):  # "2\frac12" is 5/2, not 2 * 1/2
        sign, whole = m.group(1), int(m.group(2))
        num, den = int(m.group(3) or m.group(4)), int(m.group(5) or m.group(6))
        s = f"{sign}\\frac{{{whole * den + num}}}{{{den}}}"
    return s.strip(), unit


def _normalise(s: str) -> str:
    """The form of an answer that math-verify sees (see the section comment)."""
    return _normalise_with_unit(s)[0]


def _balanced(s: str) -> bool:
    depth = 0
    for m in re.finditer(r"\\.|[{}]", s, re.S):
        depth += {"{": 1, "}": -1}.get(m.group(), 0)
        if depth < 0:
            return False
    return depth == 0


# --------------------------------------------------------------------------- judging (worker side)

def _parse_uncached(s: str) -> tuple:
    """math-verify's reading of one normalised answer.

    Wrapping in ``\\boxed{}`` makes the extractor take the whole answer rather than a
    fragment of it. Its own timeouts use ``signal.alarm``; they are off, the pool's
    kill is the time limit. Its unit stripping is off too: it removes any trailing
    ``t``, ``c``, ``m``, ``ab`` or ``more`` after a digit or a brace, so ``2t`` would equal
    ``2`` and ``\\frac{1}{2}c`` equal ``\\frac{1}{2}``; units are handled in :func:`_split_unit`.
    """
    from latex2sympy2_extended import NormalizationConfig
    from math_verify import LatexExtractionConfig, parse

    normalisation = NormalizationConfig(basic_latex=True, units=False, malformed_operators=True, nits=True,
                                        boxed="all", equations=False)
    config = (LatexExtractionConfig(boxed_match_priority=0, normalization_config=normalisation),)
    return tuple(parse("\\boxed{" + s + "}", extraction_config=config, fallback_mode="no_fallback",
                       parsing_timeout=None, raise_on_error=False))


_parse_cached = lru_cache(maxsize=8192)(_parse_uncached)  # golds repeat across calls


def _parse(s: str) -> tuple:
    # A huge answer is parsed once and not kept: the cache holds ordinary answers only.
    return _parse_cached(s) if len(s) <= 2000 else _parse_uncached(s)


def _real_number(expr) -> float | None:
    """The value of a real constant expression, else None."""
    try:
        value = complex(expr.evalf(30))
    except (TypeError, ValueError, OverflowError, AttributeError):  # zoo, nan, too big for a float
        return None
    return value.real if not value.imag and math.isfinite(value.real) else None


def _close(a: float, b: float, rel: float = 1e-5) -> bool:
    return abs(a - b) <= rel * max(abs(a), abs(b))


def _numeric_verdict(gold, pred) -> bool | None:
    """A check of math-verify's verdict on answers written with decimals; None where it has nothing to add.

    ``verify`` compares decimals after rounding them to 6 decimal places, also inside
    tuples and equations, so ``1.24e-8`` equals ``1.25e-8`` and ``(10^{-7}, 1)`` equals
    ``(2\\cdot 10^{-7}, 1)``. Rounding at 6 places moves a number of magnitude >= 0.1 by
    under 5e-6 of itself, so a relative gap above 1e-5 is such a collapse: False. The
    other way, two numbers within 1e-12 of each other are equal even when float
    arithmetic made sympy doubt it (``6.02\\times 10^{23}`` against
    ``602000000000000000000000``): True. ``1/3`` against ``0.333333`` (a gap of 1e-6)
    keeps math-verify's verdict, and so does everything exact.
    """
    from sympy import Expr, Float, Interval, Tuple, UnevaluatedExpr
    from sympy.core.relational import Relational

    if not (hasattr(gold, "has") and hasattr(pred, "has")):
        return None
    if not (gold.has(Float) or pred.has(Float)) or gold.has(UnevaluatedExpr) or pred.has(UnevaluatedExpr):
        return None  # exact numbers, which sympy compares exactly; or percentages, judged by their own rule
    if isinstance(gold, (Tuple, Interval)) and type(gold) is type(pred) and len(gold.args) == len(pred.args):
        parts = [_numeric_verdict(g, p) for g, p in zip(gold.args, pred.args)]
        return False if False in parts else None
    if isinstance(gold, Relational) and type(gold) is type(pred):
        return _relation_verdict(gold, pred)
    if isinstance(gold, Expr) and isinstance(pred, Expr) and not isinstance(pred, Relational):
        return _expr_verdict(gold, pred)
    return None


def _expr_verdict(gold, pred) -> bool | None:
    """Two numbers by value; two expressions by their values at three fixed points (False if apart)."""
    from sympy import Derivative, Dummy, Function, Rational

    if not gold.free_symbols and not pred.free_symbols:
        a, b = _real_number(gold), _real_number(pred)
        if a is None or b is None:
            return None
        return True if _close(a, b, 1e-12) else False if not _close(a, b) else None
    # Derivatives and unknown functions become plain unknowns, then every unknown a number.
    opaque = {x: Dummy() for x in (gold.atoms(Derivative) | pred.atoms(Derivative)
                                   | gold.atoms(Function) | pred.atoms(Function)) if not x.is_number}
    gold, pred = gold.xreplace(opaque), pred.xreplace(opaque)
    symbols = sorted(gold.free_symbols | pred.free_symbols, key=str)
    for k in range(3):
        point = {x: Rational(37 + 23 * k + 11 * i, 29 + 7 * i) for i, x in enumerate(symbols)}
        a, b = _real_number(gold.subs(point)), _real_number(pred.subs(point))
        if a is not None and b is not None and not _close(a, b):
            return False
    return None


def _relation_verdict(gold, pred) -> bool | None:
    """False if solving both for some shared unknown gives values apart, once their sides'
    differences (up to sign) did not already agree; None otherwise."""
    from sympy import solve

    diff_gold, diff_pred = gold.lhs - gold.rhs, pred.lhs - pred.rhs
    if _expr_verdict(diff_gold, diff_pred) is not False or _expr_verdict(diff_gold, -diff_pred) is not False:
        return None
    for x in sorted(gold.free_symbols & pred.free_symbols, key=str):
        try:
            solved_gold, solved_pred = solve(gold, x), solve(pred, x)
        except Exception:  # noqa: BLE001 - sympy cannot solve for this one; try the next
            continue
        if len(solved_gold) == len(solved_pred) and any(
                _expr_verdict(a, b) is False for a, b in zip(solved_gold, solved_pred)):
            return False
    return None


_BASED_RE = re.compile(r"([0-9A-Z]+)\s*_\s*\{?\s*(\d+)\s*\}?")


def _based(s: str) -> tuple[str, int] | None:
    """``2516_8`` -> ("2516", 8): digits and base of a number written in base 2..36, else None."""
    m = _BASED_RE.fullmatch(s.strip())
    if not m or not re.search(r"\d", m.group(1)):
        return None  # E_1, A_{12}: a variable with an index
    digits, base = m.group(1), int(m.group(2))
    return (digits, base) if 2 <= base <= 36 and all(int(c, 36) < base for c in digits) else None


def _base_verdict(gold: str, pred: str) -> bool | None:
    """Numbers in another base, which math-verify reads with the subscript dropped (``52_8`` as 52).

    Against a gold in base b, the same digits are right with the subscript or without
    it (MATH golds carry it, models often drop it); other digits or another base are
    wrong, the decimal value included, since the question asked for base b. A
    prediction in base b against a decimal gold is right if its value is the gold.
    """
    if g := _based(gold):
        if m := _BASED_RE.fullmatch(pred.strip()):  # any subscript, even an impossible base like 2516_1
            return (m.group(1), int(m.group(2))) == g
        return pred.strip().upper() == g[0] if re.fullmatch(r"\s*[0-9A-Za-z]+\s*", pred) else None
    if (p := _based(pred)) and re.fullmatch(r"\s*\d+\s*", gold):
        return int(p[0], p[1]) == int(gold)
    return None


def _text_word(gold: str) -> str | None:
    """The word(s) of a gold answer written as text, ``\\text{Evelyn}`` -> ``evelyn``."""
    m = re.fullmatch(rf"{_TEXT_CMD}\s*\{{\s*([A-Za-z][A-Za-z '-]*[A-Za-z])\s*\}}", _strip_delimiters(gold))
    return m.group(1).lower() if m else None


# Far beyond any benchmark gold (at most 210 characters and 4 levels deep) and any honest
# answer; inputs past them are unjudgeable, so they are refused before parsing.
_MAX_ANSWER_LEN = 5000
_MAX_NESTING = 16


def _nesting(s: str) -> int:
    depth = deepest = 0
    for ch in re.sub(r"\\.", "", s):
        if ch in "([{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in ")]}":
            depth -= 1
    return deepest


def _verify_pair(gold: str, pred: str) -> Status:
    """Judge a gold answer against a predicted one; runs in a worker under the time limit.

    Both are normalised (:func:`_normalise`), then a few narrow rules settle what
    math-verify cannot see or gets wrong: absurd sizes and nesting (unjudgeable), a
    number in another base, two different units, a word answer in another case; the
    rest is math-verify's ``verify``, re-checked on decimals (:func:`_numeric_verdict`).

    ``verify(gold, pred)`` is asymmetric: the gold's form decides the comparison (a gold
    assignment "x = 3" is reduced to 3 unless the prediction is itself an equation; a
    gold inequality becomes an interval only if the prediction is a set), so the
    reference is always passed first.
    """
    from math_verify import verify

    if len(gold) > _MAX_ANSWER_LEN or len(pred) > _MAX_ANSWER_LEN:
        return "parse_error"  # no final answer is this long; not worth a parse (the limit would end it)
    (g, g_unit), (p, p_unit) = _normalise_with_unit(gold), _normalise_with_unit(pred)
    if not g or not p or not (_balanced(g) and _balanced(p)):
        return "parse_error"  # "3}{" would otherwise close our \boxed{} early and read as 3
    if _nesting(g) > _MAX_NESTING or _nesting(p) > _MAX_NESTING:
        return "parse_error"  # parse time grows steeply with nesting: 10 parentheses deep take 1 s
    if (based := _base_verdict(_strip_delimiters(gold), _strip_delimiters(pred))) is not None:
        return "correct" if based else "wrong"
    if _units_conflict(g_unit, p_unit):
        return "wrong"  # 5 cm is not 5 m, though either alone is graded as its number
    if (word := _text_word(gold)) and re.sub(r"^(?:an?|the)\s+", "", p.lower()) == word:
        return "correct"  # a name or a word: "Ellipse" and "an ellipse" for \text{ellipse}
    gold_parsed, pred_parsed = _parse(g), _parse(p)
    if not gold_parsed or not pred_parsed:
        # Three Minerva golds defeat the parser; the same answer, token for token, is still right.
        return "correct" if _fast_accept(g, p) else "parse_error"
    ok = verify(list(gold_parsed), list(pred_parsed), timeout_seconds=None, raise_on_error=False)
    numeric = _numeric_verdict(gold_parsed[0], pred_parsed[0])
    return "correct" if (ok if numeric is None else numeric) else "wrong"


def _parent_alive(worker: int, parent: int) -> bool:
    try:  # Linux: is the worker still the parent's child? (a dead parent's pid may linger as a zombie)
        with open(f"/proc/{worker}/stat") as stat:
            return int(stat.read().rsplit(")", 1)[1].split()[1]) == parent
    except (OSError, ValueError, IndexError):
        try:
            os.kill(parent, 0)
            return True
        except ProcessLookupError:
            return False
        except OSError:
            return True


def _start_watchdog() -> None:
    """Fork a watchdog that SIGKILLs this worker as soon as its parent is gone.

    A SIGKILLed parent closes the worker's stdin, but the worker reads it only between pairs: in the middle
    of a runaway judgment (until its alarm, 2 x limit + 10 s) it would live on, and a thread could not help,
    because the judgment may hold the GIL. The watchdog is a process of its own and holds no pipe, so the
    parent still sees the worker's end of file at once. It ends when the worker does."""
    if not hasattr(os, "fork"):
        return
    worker, parent = os.getpid(), os.getppid()
    if os.fork():
        return
    try:
        import signal

        signal.signal(signal.SIGINT, signal.SIG_IGN)   # Ctrl-C in the terminal is for the parent
        fds = [int(fd) for fd in os.listdir("/proc/self/fd")] if os.path.isdir("/proc/self/fd") else range(256)
        for fd in fds:
            try:
                os.close(fd)
            except OSError:
                pass
        while os.getppid() == worker:
            if not _parent_alive(worker, parent):
                os.kill(worker, 9)  # SIGKILL
                break
            time.sleep(0.2)
    finally:
        os._exit(0)


def _worker_main() -> None:
    """Serve judging requests on stdin/stdout: one JSON request per line, one JSON verdict per pair.

    A request is ``{"limit": seconds, "pairs": [[gold, pred], ...]}``. Each verdict is
    written as soon as it is known, so the parent can time every pair on its own.
    """
    import signal
    import warnings

    _start_watchdog()
    out = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)  # a stray print from a library must not corrupt the protocol
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the parent, which kills us
    if hasattr(signal, "setitimer"):
        # Last resort if the parent died while we spin in C: SIGALRM's default action ends
        # the process at the OS level, GIL or not. The parent kills us long before.
        signal.signal(signal.SIGALRM, signal.SIG_DFL)
    try:  # a runaway answer should fail with MemoryError, not push the machine into swap
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        cap = 4 << 30
        if soft == resource.RLIM_INFINITY or soft > cap:
            resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    except (ImportError, ValueError, OSError):
        pass
    warnings.simplefilter("ignore")
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    for gold, pred in (("\\frac{1}{2}", "0.5"), ("x^2+2x+1", "(x+1)^2"), ("(1,2]", "\\{1,2\\}")):
        _verify_pair(gold, pred)  # the imports and the parser's first tables, before any call is timed
    out.write(b'"ready"\n')
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    for line in sys.stdin.buffer:
        request = json.loads(line)
        for gold, pred in request["pairs"]:
            if hasattr(signal, "setitimer"):
                signal.setitimer(signal.ITIMER_REAL, 2 * request["limit"] + 10)
            try:
                status = _verify_pair(gold, pred)
            except Exception:  # noqa: BLE001 - RecursionError, MemoryError, sympy bugs: unjudgeable
                status = "parse_error"
            if hasattr(signal, "setitimer"):
                signal.setitimer(signal.ITIMER_REAL, 0)
            out.write(json.dumps(status).encode() + b"\n")


# --------------------------------------------------------------------------- worker pool (caller side)

_STARTUP_TIMEOUT = 120.0  # importing sympy on a loaded machine; not counted in any call's limit
_BOOT = ("import importlib.util, sys\n"
         "spec = importlib.util.spec_from_file_location('_trim_grading_worker', sys.argv[1])\n"
         "module = importlib.util.module_from_spec(spec)\n"
         "sys.modules[spec.name] = module\n"
         "spec.loader.exec_module(module)\n"
         "module._worker_main()\n")


class WorkerStartError(RuntimeError):
    """A grading worker process could not start (a broken installation, not a bad answer)."""


class _Worker:
    """One judging process, its pipes, and a thread that turns its replies into a queue."""

    def __init__(self) -> None:
        # This file, run by path, so the worker imports neither the trim package nor torch.
        # The parent's import path travels along: a notebook may have added math-verify's folder.
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
        self._stderr = tempfile.TemporaryFile()
        self.proc = subprocess.Popen([sys.executable, "-c", _BOOT, os.path.abspath(__file__)], env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr)
        self._replies: queue.SimpleQueue = queue.SimpleQueue()
        threading.Thread(target=self._read, name="trim-grading-reader", daemon=True).start()

    def _read(self) -> None:
        try:
            for line in self.proc.stdout:
                self._replies.put(line)
        except (OSError, ValueError):
            pass
        self._replies.put(None)  # end of file: the process exited or was killed
        self.proc.stdout.close()
        self.proc.wait()  # reap it, off the caller's path

    def wait_ready(self) -> None:
        try:
            line = self._replies.get(timeout=_STARTUP_TIMEOUT)
        except queue.Empty:
            line = None
        if line is None or json.loads(line) != "ready":
            self.kill()
            self.proc.wait()
            self._stderr.seek(0)
            detail = self._stderr.read().decode(errors="replace")[-2000:]
            raise WorkerStartError(f"a grading worker ({sys.executable}) did not start:\n{detail}")
        self._stderr.close()

    def send(self, request: dict) -> None:
        self.proc.stdin.write(json.dumps(request).encode() + b"\n")
        self.proc.stdin.flush()

    def recv(self, timeout: float) -> Status | None:
        """The next verdict; None if the process died; raises ``queue.Empty`` after ``timeout``."""
        line = self._replies.get(timeout=timeout)
        return None if line is None else json.loads(line)

    def kill(self) -> None:
        for step in (self.proc.kill, self.proc.stdin.close):  # the reader thread reaps it at end of file
            try:
                step()
            except OSError:  # already gone; a pipe broken by its death
                pass


class _Slot:
    """A caller waiting for a worker: handed one directly, in arrival order."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.worker: _Worker | None = None
        self.error: BaseException | None = None


class _Pool:
    """Up to ``size`` worker processes shared by every thread of this process.

    Callers queue first come, first served (a freed worker is handed to the longest
    waiter, so a loop of fast calls cannot starve another thread). A worker that
    overruns is killed and a replacement starts in the background at once, so the
    call that timed out returns without waiting for it.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._lock = threading.Lock()
        self._idle: list[_Worker] = []
        self._waiting: collections.deque[_Slot] = collections.deque()
        self._live: set[_Worker] = set()  # started and ready, idle or busy
        self._starting = 0
        self._closed = False

    def grow(self, size: int) -> None:
        with self._lock:
            self.size = max(self.size, size)

    def _spawn(self) -> None:  # with the lock held
        self._starting += 1
        threading.Thread(target=self._start_one, name="trim-grading-start", daemon=True).start()

    def _start_one(self) -> None:
        try:
            worker = _Worker()
            worker.wait_ready()
        except BaseException as e:  # noqa: BLE001 - handed to the callers that wait
            with self._lock:
                self._starting -= 1
                if not self._live and not self._starting:  # nobody else can serve them
                    while self._waiting:
                        slot = self._waiting.popleft()
                        slot.error = e
                        slot.event.set()
            return
        with self._lock:
            self._starting -= 1
            if self._closed:
                worker.kill()
                return
            self._live.add(worker)
            self._hand_over(worker)

    def _hand_over(self, worker: _Worker) -> None:  # with the lock held
        if self._waiting:
            slot = self._waiting.popleft()
            slot.worker = worker
            slot.event.set()
        else:
            self._idle.append(worker)

    def acquire(self) -> _Worker:
        with self._lock:
            if self._closed:
                raise RuntimeError("the grading pool was shut down (interpreter exit)")
            for worker in [w for w in self._idle if w.proc.poll() is not None]:  # died idle (OOM killer...)
                self._idle.remove(worker)
                self._live.discard(worker)
            # Keep the whole pool running, not just one worker: a spare that is already up is
            # what keeps a call's wait short after another call's worker was killed.
            while len(self._live) + self._starting < self.size:
                self._spawn()
            if self._idle and not self._waiting:
                return self._idle.pop()
            slot = _Slot()
            self._waiting.append(slot)
        try:
            slot.event.wait()
        except BaseException:  # interrupted while queueing: give back what we may have been handed
            with self._lock:
                if slot in self._waiting:
                    self._waiting.remove(slot)
            if slot.worker is not None:
                self.release(slot.worker, healthy=True)
            raise
        if slot.error is not None:
            raise WorkerStartError(str(slot.error)) from slot.error
        return slot.worker

    def release(self, worker: _Worker, healthy: bool) -> None:
        with self._lock:
            if healthy and not self._closed:
                self._hand_over(worker)
                return
            self._live.discard(worker)
            if not self._closed and len(self._live) + self._starting < self.size:
                self._spawn()  # replace it now, in the background
        worker.kill()

    def run(self, pairs: list[tuple[str, str]], timeout: float) -> list[Status]:
        """Judge ``pairs`` in order on one worker at a time, each within ``timeout`` seconds.

        The pairs go as one request and the verdicts stream back; each pair's clock starts
        when the previous verdict arrives. On an overrun the worker is killed, that pair
        is a "timeout", and the rest are sent again to another worker. A worker that
        exits unasked (killed from outside, or crashed by the pair) gets the pair retried
        once elsewhere; a pair that takes down two workers is a "parse_error".
        """
        results: list[Status] = []
        retries = 0
        crashed: set[int] = set()
        while len(results) < len(pairs):
            pending = pairs[len(results) :]
            worker = self.acquire()
            healthy = False
            try:
                try:
                    worker.send({"limit": timeout, "pairs": pending})
                except OSError:  # it died just now, before reading a thing; try another
                    retries += 1
                    if retries > 2 * self.size + 2:  # workers that die on arrival: a broken installation
                        raise WorkerStartError("grading workers keep exiting as soon as they start") from None
                    continue
                for _ in pending:
                    try:
                        verdict = worker.recv(timeout)
                    except queue.Empty:
                        results.append("timeout")
                        break
                    if verdict is None:  # the process is gone: a crash (stack overflow, OOM kill) or a kill
                        if len(results) in crashed:
                            results.append("parse_error")
                        else:
                            crashed.add(len(results))
                        break
                    results.append(verdict)
                else:
                    healthy = True
            finally:  # also on KeyboardInterrupt: a worker in an unknown state is replaced
                self.release(worker, healthy)
        return results

    def close(self) -> None:
        with self._lock:
            self._closed = True
            workers = list(self._live)
            self._live.clear()
            self._idle.clear()
        for worker in workers:
            worker.kill()


def _parallel_workers() -> int:
    """How many workers judge at once in :func:`grade_many`: one per core, 2 to 8."""
    return max(2, min(8, os.cpu_count() or 2))


def _default_pool_size() -> int:
    """One worker per core, plus a spare: replacing a killed worker takes a second or more,
    and the spare keeps the other calls served meanwhile. Idle workers cost no CPU and
    about 65 MB each. ``TRIM_GRADING_WORKERS`` overrides it."""
    if env := os.environ.get("TRIM_GRADING_WORKERS"):
        return max(1, int(env))
    return _parallel_workers() + 1


_POOL: _Pool | None = None
_POOL_LOCK = threading.Lock()


def _pool() -> _Pool:
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = _Pool(_default_pool_size())
        return _POOL


def _forget_pool_after_fork() -> None:
    # The parent's workers belong to the parent; a forked child starts its own on demand.
    global _POOL, _POOL_LOCK
    _POOL, _POOL_LOCK = None, threading.Lock()


def _shutdown() -> None:
    if _POOL is not None:
        _POOL.close()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool_after_fork)
atexit.register(_shutdown)


# --------------------------------------------------------------------------- public API

def _precheck(gold: str | None, prediction: str | None) -> Status | None:
    """The verdicts that need no worker: nothing to judge, or identical answers."""
    if prediction is None or not str(prediction).strip():
        return "no_answer"
    if gold is None or not str(gold).strip():
        return "parse_error"
    if _fast_accept(str(gold), str(prediction)):
        return "correct"
    if _INTEGER_RE.fullmatch(str(gold).strip()) and _INTEGER_RE.fullmatch(str(prediction).strip()):
        # Two plain integers that differ (equal ones were accepted above, or differ only in leading zeros):
        # no notation can make them equivalent, so no worker is woken for them.
        return "correct" if int(str(gold)) == int(str(prediction)) else "wrong"
    return None


def _judge_pairs(golds: Sequence[str | None], predictions: Sequence[str | None], timeout: float,
                 workers: int = 1, on_done: Callable[[int], object] | None = None,
                 fast_path: bool = True) -> list[Status]:
    """Verdicts for ``(gold, prediction)`` pairs, in order; the workhorse of the public calls.

    ``fast_path=False`` sends even identical answers to math-verify (used by the tests that
    check every benchmark gold against itself).
    """
    if not timeout or timeout <= 0:
        raise ValueError(f"timeout must be a positive number of seconds, not {timeout!r}")
    statuses: list[Status | None] = [None] * len(golds)
    todo = []
    for i, (gold, pred) in enumerate(zip(golds, predictions)):
        status = _precheck(gold, pred) if fast_path else (
            "no_answer" if pred is None or not str(pred).strip() else
            "parse_error" if gold is None or not str(gold).strip() else None)
        if status is None:
            todo.append(i)
        else:
            statuses[i] = status
    if on_done and len(todo) < len(golds):
        on_done(len(golds) - len(todo))
    if todo:
        pool = _pool()
        workers = max(1, workers)
        pool.grow(min(workers, 32))
        # Several pairs per request amortise the pipe round trip; a few chunks per worker
        # keep them all busy to the end.
        size = max(1, min(32, math.ceil(len(todo) / (workers * 4))))
        chunks = [todo[k : k + size] for k in range(0, len(todo), size)]

        def run(chunk: list[int]) -> None:
            verdicts = pool.run([(str(golds[i]), str(predictions[i])) for i in chunk], timeout)
            for i, verdict in zip(chunk, verdicts):
                statuses[i] = verdict
            if on_done:
                on_done(len(chunk))

        if workers == 1 or len(chunks) == 1:
            for chunk in chunks:
                run(chunk)
        else:
            with concurrent.futures.ThreadPoolExecutor(min(workers, len(chunks)),
                                                       thread_name_prefix="trim-grading") as ex:
                list(ex.map(run, chunks))
    return statuses  # type: ignore[return-value]


def is_equivalent(gold: str | None, prediction: str | None, timeout: float = 5.0) -> bool:
    """True iff the answer ``prediction`` is mathematically equivalent to ``gold`` (not counted in stats)."""
    return _judge_pairs([gold], [prediction], timeout)[0] == "correct"


def _extract(solution: str | None) -> str | None:
    try:
        return extract_answer(solution)
    except Exception:  # noqa: BLE001 - a grader must never take a run down
        return None


def grade(gold: str | None, solution: str | None, timeout: float = 5.0) -> Grade:
    """Extract the answer from a full ``solution`` and judge it against ``gold``.

    ``timeout`` bounds the judging of this answer, whatever it is; an answer that
    overruns is wrong with status "timeout". Waiting for a free worker when every one
    is busy with other threads' calls is not part of it, and neither is starting the
    first worker of the process (about a second).
    """
    extracted = _extract(solution)
    status = _judge_pairs([gold], [extracted], timeout)[0]
    STATS.add(status)
    return Grade(extracted=extracted, correct=status == "correct", status=status)


def grade_many(golds: Sequence[str | None], solutions: Sequence[str | None], workers: int | None = None,
               timeout: float = 5.0, use_threads: bool = False, desc: str = "grading") -> list[Grade]:
    """Grade pairs in parallel on ``workers`` worker processes (default: one per core), preserving order.

    Every pair gets the same hard ``timeout`` as :func:`grade`. ``use_threads`` is accepted
    for compatibility and ignored: judging always happens in the worker processes, so no
    ``if __name__ == "__main__"`` guard is needed in the calling script.
    """
    from trim.progress import progress_bar  # here, not at the top: workers load this file alone

    del use_threads
    if len(golds) != len(solutions):
        raise ValueError(f"{len(golds)} golds but {len(solutions)} solutions")
    extracted = [_extract(s) for s in solutions]
    workers = _parallel_workers() if workers is None else workers
    bar = progress_bar(total=len(golds), desc=desc)
    try:
        statuses = _judge_pairs(golds, extracted, timeout, workers=workers, on_done=bar.update)
    finally:
        bar.close()
    for status in statuses:
        STATS.add(status)
    return [Grade(extracted=e, correct=s == "correct", status=s) for e, s in zip(extracted, statuses)]
