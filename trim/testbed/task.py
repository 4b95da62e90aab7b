"""The testbed's synthetic multi-step task: modular arithmetic chains written as chain-of-thought.

A problem gives a start value and a numbered list of operations, all modulo 11::

    Start at 7 and work mod 11. 1) add 8 2) times 3 3) cube 4) minus 5. What is the result?

Its worked solution has one step per operation, separated by ``"\\n\\n"`` as real maths CoT is, and
the last step states the answer in ``\\boxed{}``::

    1) 7 + 8 = 4

    2) 4 * 3 = 1

    3) 1 ^ 3 = 1

    4) 1 - 5 = 7, so the answer is \\boxed{7}.

Why this task: every step is exactly checkable (so step labels are exact, not estimated), one wrong
step ruins the answer (the cascade TRIM exploits), and the step types differ in difficulty the way
routine and critical steps do in real maths. The modulus is prime and every operation is a bijection
(cubing too, as 3 is prime to 10), so a wrong value stays wrong: the only lucky recoveries are two
slips that cancel, as rare as they are in real maths. Small tables keep the
arithmetic learnable by CPU-sized models in minutes. The *demonstrations* a model is trained on contain
human-like slips (a dropped carry, an off-by-one digit, a misread operand) at a per-type rate; a model
trained on them reproduces that fallibility when sampled, which is how the weak/strong pair is
calibrated to the real Qwen2.5 pair (`trim testbed report` measures it).
"""

from __future__ import annotations

import dataclasses
import functools
import re
from typing import Iterator, Sequence

import numpy as np

from trim.protocols import STEP_DELIMITER

MODULUS = 11

# Step types, easiest first. `word` is how the question names the operation, `symbol` how a step writes it.
OP_TYPES = ("double", "add", "minus", "times", "cube")
_WORD = {"double": "double", "add": "add", "minus": "minus", "times": "times", "cube": "cube"}
_SYMBOL = {"double": "* 2", "add": "+", "minus": "-", "times": "*", "cube": "^ 3"}



@dataclasses.dataclass(frozen=True)
class Teacher:
    """How a demonstrator slips: the chance of a slip per step type, the offsets a miscalculated result
    takes, and the shifts a misread operand takes.

    The weak teacher's rates put a model that imitates it near the real weak model's next-step accuracy
    (0.866), the strong teacher's near the real strong model's (0.970). The rates sit above those
    targets because a trained model slips about a quarter less often than its teacher: after a slip
    the teacher makes no other, and a model that cannot always tell a slipped prefix from a clean one
    learns a blend of the two rates (measured: teacher 0.849 -> model 0.888 next-step accuracy). Both
    teachers *overshoot* (+1, +2): their slips compound instead of cancelling, so a solution with a
    wrong step almost never ends right, as in real maths (a symmetric +-1 would let a later slip undo an
    earlier one one time in four). For the same reason they slip at most once per solution
    (`max_slips`): with only 11 values, a second slip would land back on the right value one time in ten,
    far more often than real errors cancel, and TRIM is about the *first* error anyway."""

    slip_rates: dict
    offsets: tuple[int, ...]
    misread_shifts: tuple[int, ...]
    max_slips: int | None = None


WEAK_TEACHER = Teacher({"double": 0.06, "add": 0.135, "minus": 0.19, "times": 0.27, "cube": 0.36},
                       (1, 2), (1,), max_slips=1)
STRONG_TEACHER = Teacher({"double": 0.006, "add": 0.012, "minus": 0.018, "times": 0.024, "cube": 0.03},
                         (1, 2), (1,), max_slips=1)

SPLITS = {
    # name: (seed offset, number of problems, chain lengths, op-type weights)
    "train": (0, 20000, (2, 10), None),
    "validation": (1, 1000, (2, 10), None),
    "test": (2, 1000, (2, 10), None),
    # The AIME analogue: longer chains and mostly the hardest step types.
    "shifted": (3, 1000, (8, 10), (0.05, 0.1, 0.15, 0.35, 0.35)),
}


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
        return _WORD[self.kind] if self.operand is None else f"{_WORD[self.kind]} {self.operand}"

    def step_text(self, index: int, value: int, result: int) -> str:
        if self.operand is None:
            return f"{index}) {value} {_SYMBOL[self.kind]} = {result}"
        return f"{index}) {value} {_SYMBOL[self.kind]} {self.operand} = {result}"


@dataclasses.dataclass(frozen=True)
class ChainProblem:
    """One testbed problem; `id`, `question` and `answer` match `trim.data.Problem`."""

    id: str
    start: int
    operations: tuple[Operation, ...]

    @property
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
        return [
            render_step(self, i, values[i], values[i + 1]) for i in range(len(self.operations))
        ]

    def gold_solution(self) -> str:
        return STEP_DELIMITER.join(self.gold_steps())


def render_step(problem: ChainProblem, index: int, value: int, result: int, operand: int | None = None) -> str:
    """Step `index` (0-based) applied to `value` giving `result`; the last step boxes the answer."""
    op = problem.operations[index]
    if operand is not None:
        op = dataclasses.replace(op, operand=operand)
    text = op.step_text(index + 1, value, result)
    if index == len(problem.operations) - 1:
        text += f", so the answer is \\boxed{{{result}}}."
    return text


def _sample_operation(rng: np.random.Generator, weights: Sequence[float] | None) -> Operation:
    kind = OP_TYPES[rng.choice(len(OP_TYPES), p=weights)]
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
    offset, default_size, lengths, weights = SPLITS[name]
    rng = np.random.default_rng([seed, offset])
    n = default_size if size is None else min(size, default_size)
    taken = set(_earlier_questions(name, seed))
    problems: list[ChainProblem] = []
    while len(problems) < n:
        problem = sample_problem(rng, lengths, weights, id=f"{name}-{len(problems)}")
        if problem.question not in taken:
            problems.append(problem)
            if name != "train":  # no repeats inside an evaluation split either
                taken.add(problem.question)
    return problems


@functools.lru_cache(maxsize=8)
def _earlier_questions(name: str, seed: int) -> frozenset:
    earlier = list(SPLITS)[: list(SPLITS).index(name)]
    return frozenset(p.question for split in earlier for p in make_split(split, seed))


def _slip(rng: np.random.Generator, problem: ChainProblem, index: int, value: int,
          teacher: Teacher) -> tuple[int, int | None]:
    """A human-like wrong step: a miscalculated result, or a misread operand (then computed right)."""
    op = problem.operations[index]
    correct = op.apply(value)
    if op.operand is not None and rng.random() < 0.3:
        wrong = op.operand + int(rng.choice(teacher.misread_shifts))
        if 1 <= wrong <= 9 and (op.kind != "times" or wrong >= 2):
            return dataclasses.replace(op, operand=wrong).apply(value), wrong
    return (correct + int(rng.choice(teacher.offsets))) % MODULUS, None


def demonstration(problem: ChainProblem, rng: np.random.Generator, teacher: Teacher) -> tuple[list[str], list[bool]]:
    """A worked solution with the teacher's slips; later steps build on the slipped values.

    Returns the steps and, per step, whether that step itself is correct given its prefix."""
    steps, correct = [], []
    value, slips = problem.start, 0
    for i, op in enumerate(problem.operations):
        result, operand = op.apply(value), None
        slip = rng.random() < teacher.slip_rates[op.kind]
        if slip and (teacher.max_slips is None or slips < teacher.max_slips):
            slips += 1
            result, operand = _slip(rng, problem, i, value, teacher)
        steps.append(render_step(problem, i, value, result, operand))
        correct.append(operand is None and result == op.apply(value))
        value = result
    return steps, correct


_STEP_RE = re.compile(r"^(\d+)\) (\d+) (\+|-|\*|\^) (\d+) = (\d+)(, so the answer is \\boxed\{(\d+)\}\.)?$")


def check_step(problem: ChainProblem, previous_steps: Sequence[str], step: str) -> bool:
    """Whether `step` is a correct next step after `previous_steps` (which may themselves be wrong).

    Correct means: well formed, the right index, it starts from the value the previous step reached,
    applies the question's operation for this index exactly, and boxes the result iff it is the last."""
    index = len(previous_steps)
    if index >= len(problem.operations):
        return False
    value = problem.start if index == 0 else step_result(previous_steps[-1])
    if value is None:
        return False
    expected = render_step(problem, index, value, problem.operations[index].apply(value))
    return step.strip() == expected


def step_result(step: str) -> int | None:
    """The value a step reaches, or None if the step is malformed."""
    match = _STEP_RE.match(step.strip())
    return int(match.group(5)) if match else None


def step_labels(problem: ChainProblem, steps: Sequence[str]) -> list[bool]:
    """Per-step correctness given each step's own prefix."""
    return [check_step(problem, steps[:i], s) for i, s in enumerate(steps)]


def iter_problems(seed: int, lengths=(2, 10), weights=None) -> Iterator[ChainProblem]:
    """An endless stream of training problems (disjoint in seed space from the fixed splits)."""
    rng = np.random.default_rng([seed, 1000])
    while True:
        yield sample_problem(rng, lengths, weights)
