"""The testbed's synthetic multi-step task: modular arithmetic chains written out as chain-of-thought.

A problem gives a start value and a numbered list of operations, all modulo 11::

    Start at 7 and work mod 11. 1) add 8 2) times 3 3) cube 4) minus 5. What is the result?

Its worked solution has one step per operation, separated by ``"\\n\\n"`` as real maths CoT is. A step
writes its working out, the way a person (or a language model) does: a sum or product past 10 is reduced
by subtracting the multiple of 11, a subtraction that would go negative borrows 11, and a cube is two
products. The last step states the answer in ``\\boxed{}``::

    1) 7 + 8 = 15 - 11 = 4

    2) 4 * 3 = 12 - 11 = 1

    3) 1 ^ 3 = 1 * 1 * 1: 1 * 1 = 1, 1 * 1 = 1

    4) 1 - 5 = 12 - 5 = 7, so the answer is \\boxed{7}.

Why this task: every step is exactly checkable (so step labels are exact, not estimated), one wrong
step ruins the answer (the cascade TRIM exploits), and steps differ in length and risk the way routine
and critical steps do in real maths: a doubling is one short fact, a cube is four facts and four times
as long, and every written fact is a chance to slip, so long steps fail more often (real chain-of-thought:
the first wrong step is 1.44x the mean step). The modulus is prime and every operation is a bijection
(cubing too, as 3 is prime to 10), so a wrong value stays wrong: a solution with a wrong step ends right
only when a second error cancels the first, or when the step is wrong only in its working (a model can
write a wrong intermediate and still land on the right value, as real models do).

The *demonstrations* a model is trained on contain two kinds of error, as real models make both:

- random slips (a sum off by one, a misread operand), at a rate per written fact; a model trained on
  them reproduces them as low-probability samples, which its own likelihood can flag;
- misconceptions (the weak teacher only): a few times-table facts it always gets wrong, such as
  7 * 8 = 54. A model trained on them is *confidently* wrong there, as real models often are, and only a
  judge that knows the arithmetic (the PRM, or the strong model) catches them.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from trim.protocols import STEP_DELIMITER

MODULUS = 11

# Step types, easiest first. `word` is how the question names the operation, `symbol` how a step writes it.
OP_TYPES = ("double", "add", "minus", "times", "cube")
_SYMBOL = {"double": "* 2", "add": "+", "minus": "-", "times": "*", "cube": "^ 3"}
# The facts a step's working is made of; a demonstrator slips per fact.
FACT_KINDS = ("double", "add", "sub", "mul", "reduce")

# Times-table facts the weak teacher always gets wrong (unordered operands -> the product it writes):
# each is a neighbouring fact's product, the confusion people make. Sized so that they cause about a third
# of the weak model's wrong steps: enough for its own likelihood to be a poor judge of its steps.
WEAK_MISCONCEPTIONS = {(7, 8): 54, (6, 9): 56, (8, 8): 63, (7, 9): 64, (6, 8): 42, (8, 9): 81, (7, 7): 42,
                       (9, 9): 72}


@dataclasses.dataclass(frozen=True)
class Teacher:
    """How a demonstrator errs: a slip rate per written fact, the offsets a slipped result takes, how
    often it misreads an operand (and by how much), the products it always gets wrong, and at most how
    many random slips it makes per solution.

    Slipped results *overshoot* (+1, +2), so errors compound instead of cancelling, and random slips
    stop after the first error (`max_slips`): with only 11 values a second slip would land back on the
    right value one time in ten, far more often than real errors cancel, and TRIM is about the *first*
    error anyway. Misconceptions are not slips: they fire every time their fact comes up.

    The rates sit above the real models' error rates because a trained model slips less often than
    its teacher (it cannot always tell a slipped prefix from a clean one and learns a blend);
    `trim testbed report` measures the trained models against the real ones."""

    slip_rates: dict
    offsets: tuple[int, ...] = (1, 2)
    misread_rate: float = 0.0
    misread_shifts: tuple[int, ...] = (1,)
    misconceptions: dict = dataclasses.field(default_factory=dict)
    max_slips: int | None = 1

    def record(self) -> dict:
        """As `training.json` keeps it (JSON has no tuple keys)."""
        return {**dataclasses.asdict(self),
                "misconceptions": {f"{a} * {b}": wrong for (a, b), wrong in self.misconceptions.items()}}


WEAK_TEACHER = Teacher({"double": 0.036, "add": 0.048, "sub": 0.06, "mul": 0.072, "reduce": 0.06},
                       misread_rate=0.024, misconceptions=WEAK_MISCONCEPTIONS)
STRONG_TEACHER = Teacher({"double": 0.008, "add": 0.011, "sub": 0.013, "mul": 0.016, "reduce": 0.013},
                         misread_rate=0.005)

SPLITS = {
    # name: (seed offset, number of problems, chain lengths, op-type weights)
    "train": (0, 20000, (2, 10), None),
    "validation": (1, 1000, (2, 10), None),
    "test": (2, 1000, (2, 10), None),
    # The AIME analogue: longer chains and mostly the hardest step types.
    "shifted": (3, 1000, (8, 10), (0.05, 0.1, 0.15, 0.35, 0.35)),
}

# fact(kind, a, b, exact) -> the result a writer puts down for one fact (exact unless it errs).
Fact = Callable[[str, int, int, int], int]


def _exact(kind: str, a: int, b: int, exact: int) -> int:
    return exact


@dataclasses.dataclass(frozen=True)
class Operation:
    kind: str
    operand: int | None = None

    def apply(self, value: int) -> int:
        if self.kind == "double":
            return (2 * value) % MODULUS
        if self.kind == "add":
            return (value + self.operand) % MODULUS
        if self.kind == "minus":
            return (value - self.operand) % MODULUS
        if self.kind == "times":
            return (value * self.operand) % MODULUS
        if self.kind == "cube":
            return (value ** 3) % MODULUS
        raise ValueError(f"unknown operation {self.kind!r}")

    def question_text(self) -> str:
        return self.kind if self.operand is None else f"{self.kind} {self.operand}"

    def work(self, value: int, fact: Fact = _exact) -> tuple[str, int]:
        """The written working of this operation on `value` (after the step's "i) "), and the value it
        reaches. `fact` puts down each fact's result; the default writes them all exactly."""

        def reduce(x: int) -> tuple[str, int]:  # "x - 11q = r" once x is 11 or more
            if x < MODULUS:
                return "", x
            multiple = x // MODULUS * MODULUS
            r = fact("reduce", x, multiple, x - multiple) % MODULUS
            return f" - {multiple} = {r}", r

        k = self.operand
        if self.kind == "double":
            r = fact("double", value, 2, 2 * value % MODULUS) % MODULUS
            return f"{value} * 2 = {r}", r
        if self.kind == "add":
            total = fact("add", value, k, value + k)
            tail, r = reduce(total)
            return f"{value} + {k} = {total}{tail}", r
        if self.kind == "minus":
            if value >= k:
                r = fact("sub", value, k, value - k) % MODULUS
                return f"{value} - {k} = {r}", r
            borrowed = fact("add", value, MODULUS, value + MODULUS)
            r = fact("sub", borrowed, k, borrowed - k) % MODULUS
            return f"{value} - {k} = {borrowed} - {k} = {r}", r
        if self.kind == "times":
            product = fact("mul", value, k, value * k)
            tail, r = reduce(product)
            return f"{value} * {k} = {product}{tail}", r
        if self.kind == "cube":
            square = fact("mul", value, value, value * value)
            tail, s = reduce(square)
            product = fact("mul", s, value, s * value)
            tail2, r = reduce(product)
            return (f"{value} ^ 3 = {value} * {value} * {value}: {value} * {value} = {square}{tail}, "
                    f"{s} * {value} = {product}{tail2}", r)
        raise ValueError(f"unknown operation {self.kind!r}")


@dataclasses.dataclass(frozen=True)
class ChainProblem:
    """One testbed problem; `id`, `question` and `answer` match `trim.data.Problem`."""

    id: str
    start: int
    operations: tuple[Operation, ...]

    @functools.cached_property
    def question(self) -> str:
        ops = " ".join(f"{i}) {op.question_text()}" for i, op in enumerate(self.operations, 1))
        return f"Start at {self.start} and work mod {MODULUS}. {ops}. What is the result?"

    @property
    def values(self) -> list[int]:
        values = [self.start]
        for op in self.operations:
            values.append(op.apply(values[-1]))
        return values

    @property
    def answer(self) -> str:
        return str(self.values[-1])

    @property
    def step_types(self) -> list[str]:
        return [op.kind for op in self.operations]

    def step_type(self, index: int) -> str:
        """The type of step `index` (0-based); "extra" past the last operation, as a model can write
        more steps than the chain has."""
        return self.operations[index].kind if index < len(self.operations) else "extra"

    def gold_steps(self) -> list[str]:
        values = self.values
        return [write_step(self, i, values[i])[0] for i in range(len(self.operations))]

    def gold_solution(self) -> str:
        return STEP_DELIMITER.join(self.gold_steps())


def write_step(problem: ChainProblem, index: int, value: int, fact: Fact = _exact,
               operand: int | None = None) -> tuple[str, int]:
    """Step `index` (0-based) worked from `value` (with `operand` if it was misread), and the value it
    reaches; the last step boxes the answer."""
    op = problem.operations[index]
    if operand is not None:
        op = dataclasses.replace(op, operand=operand)
    working, result = op.work(value, fact)
    text = f"{index + 1}) {working}"
    if index == len(problem.operations) - 1:
        text += f", so the answer is \\boxed{{{result}}}."
    return text, result


def _sample_operation(rng: np.random.Generator, weights: Sequence[float] | None) -> Operation:
    # Unweighted, `integers` draws what `choice` would from the same stream, about seven times faster:
    # splits are generated on first use, and the train split's 20,000 problems are drawn for every split.
    kind = OP_TYPES[rng.integers(0, len(OP_TYPES)) if weights is None else rng.choice(len(OP_TYPES), p=weights)]
    if kind == "add" or kind == "minus":
        return Operation(kind, int(rng.integers(1, 10)))
    if kind == "times":
        return Operation(kind, int(rng.integers(2, 10)))
    return Operation(kind)


def sample_problem(rng: np.random.Generator, lengths=(2, 10), weights=None, id: str = "") -> ChainProblem:
    length = int(rng.integers(lengths[0], lengths[1] + 1))
    ops = tuple(_sample_operation(rng, weights) for _ in range(length))
    return ChainProblem(id=id, start=int(rng.integers(0, MODULUS)), operations=ops)


def make_split(name: str, seed: int = 0, size: int | None = None) -> list[ChainProblem]:
    """The fixed problems of a split; same seed, same problems. `size` takes a prefix of the split.

    Short chains live in a small space (a two-step problem is one of about 8,600), so evaluation splits
    reject any question already in an earlier split: test is disjoint from train and validation."""
    if name not in SPLITS:
        raise ValueError(f"unknown split {name!r}; choose one of {sorted(SPLITS)}")
    problems = _split(name, seed)
    return list(problems if size is None else problems[:size])


# The evaluation splits of seed 0, as `write_shipped_splits` wrote them from the generator below: the test
# split alone needs the 21,000 problems before it generated (about 2 s), and every chapter uses it.
SHIPPED_SPLITS = Path(__file__).resolve().parents[2] / "data" / "testbed" / "splits.json"


def _encode(problem: ChainProblem) -> str:
    return " ".join([str(problem.start)] + [op.question_text().replace(" ", "") for op in problem.operations])


def _decode(text: str, id: str) -> ChainProblem:
    start, *ops = text.split()
    parts = [re.fullmatch(r"([a-z]+)(\d*)", op).groups() for op in ops]
    return ChainProblem(id=id, start=int(start),
                        operations=tuple(Operation(kind, int(operand) if operand else None) for kind, operand in parts))


def write_shipped_splits(path: Path = SHIPPED_SPLITS) -> None:
    """Write the evaluation splits of seed 0 (`python -c "from trim.testbed import task;
    task.write_shipped_splits()"`); `tests/test_testbed.py` checks the file against the generator."""
    splits = {name: [_encode(p) for p in _generate_split(name, 0)] for name in SPLITS if name != "train"}
    path.write_text(json.dumps({"seed": 0, "written_by": "trim.testbed.task.write_shipped_splits",
                                "format": "start value, then each operation with its operand", "splits": splits},
                               indent=0) + "\n")


@functools.lru_cache(maxsize=8)
def _split(name: str, seed: int) -> tuple[ChainProblem, ...]:
    if seed == 0 and name != "train" and SHIPPED_SPLITS.exists():
        encoded = json.loads(SHIPPED_SPLITS.read_text())["splits"][name]
        return tuple(_decode(text, id=f"{name}-{i}") for i, text in enumerate(encoded))
    return _generate_split(name, seed)


@functools.lru_cache(maxsize=8)
def _generate_split(name: str, seed: int) -> tuple[ChainProblem, ...]:
    offset, size, lengths, weights = SPLITS[name]
    rng = np.random.default_rng([seed, offset])
    taken = set(_earlier_questions(name, seed))
    problems: list[ChainProblem] = []
    while len(problems) < size:
        problem = sample_problem(rng, lengths, weights, id=f"{name}-{len(problems)}")
        if problem.question not in taken:
            problems.append(problem)
            if name != "train":  # no repeats inside an evaluation split either
                taken.add(problem.question)
    return tuple(problems)


@functools.lru_cache(maxsize=8)
def _earlier_questions(name: str, seed: int) -> frozenset:
    # Cached: every evaluation split needs the questions of all the splits before it.
    earlier = list(SPLITS)[: list(SPLITS).index(name)]
    return frozenset(p.question for split in earlier for p in _generate_split(split, seed))


def demonstration(problem: ChainProblem, rng: np.random.Generator, teacher: Teacher) -> tuple[list[str], list[bool]]:
    """A worked solution with the teacher's errors; later steps build on the values it wrote.

    Returns the steps and, per step, whether that step itself is correct given its prefix."""
    errors = 0

    def fact(kind: str, a: int, b: int, exact: int) -> int:
        nonlocal errors
        if kind == "mul" and (min(a, b), max(a, b)) in teacher.misconceptions:
            errors += 1
            return teacher.misconceptions[(min(a, b), max(a, b))]
        if (teacher.max_slips is None or errors < teacher.max_slips) and rng.random() < teacher.slip_rates[kind]:
            errors += 1
            return exact + int(rng.choice(teacher.offsets))
        return exact

    steps, correct = [], []
    value = problem.start
    for i, op in enumerate(problem.operations):
        operand = None
        if (op.operand is not None and (teacher.max_slips is None or errors < teacher.max_slips)
                and rng.random() < teacher.misread_rate):
            misread = op.operand + int(rng.choice(teacher.misread_shifts))
            if 1 <= misread <= 9 and (op.kind != "times" or misread >= 2):
                operand, errors = misread, errors + 1
        text, result = write_step(problem, i, value, fact, operand)
        steps.append(text)
        correct.append(text == write_step(problem, i, value)[0])
        value = result
    return steps, correct


_STEP_RE = re.compile(r"^(\d+)\) .* = (\d+)(, so the answer is \\boxed\{(\d+)\}\.)?$")


def check_step(problem: ChainProblem, previous_steps: Sequence[str], step: str) -> bool:
    """Whether `step` is a correct next step after `previous_steps` (which may themselves be wrong).

    Correct means: exactly the working a careful writer puts down for this index, starting from the
    value the previous step reached and applying the question's operation, boxing the result iff last."""
    index = len(previous_steps)
    if index >= len(problem.operations):
        return False
    value = problem.start if index == 0 else step_result(previous_steps[-1])
    if value is None or not 0 <= value < MODULUS:
        return False
    return step.strip() == write_step(problem, index, value)[0]


def step_result(step: str) -> int | None:
    """The value a step reaches (its last written result), or None if the step is malformed."""
    match = _STEP_RE.match(step.strip())
    return int(match.group(2)) if match else None


def step_labels(problem: ChainProblem, steps: Sequence[str]) -> list[bool]:
    """Per-step correctness given each step's own prefix."""
    return [check_step(problem, steps[:i], s) for i, s in enumerate(steps)]


def iter_problems(seed: int, lengths=(2, 10), weights=None) -> Iterator[ChainProblem]:
    """An endless stream of training problems (disjoint in seed space from the fixed splits)."""
    rng = np.random.default_rng([seed, 1000])
    while True:
        yield sample_problem(rng, lengths, weights)


def step_states(step_correct: Sequence[bool]) -> list[str]:
    """The hidden state of every step (TRIM-POMDP's): "S0" all steps so far correct, "S2" this step is the
    first error, "S1" an earlier step was wrong."""
    states, wrong = [], False
    for ok in step_correct:
        states.append("S1" if wrong else ("S0" if ok else "S2"))
        wrong = wrong or not ok
    return states
