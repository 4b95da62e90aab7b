"""The testbed: a weak and a strong language model and a PRM, trained by the project, that run on CPU.

    from trim import testbed
    tb = testbed.load()            # weak and strong generators, the PRM, the problem splits
    tb.weak.propose(...)           # the same Generator protocol the real Qwen2.5 models fill

See `trim.testbed.task` for the problems, `trim.testbed.train` for how the models were made and
`trim testbed report` for their calibration against the real Qwen2.5 pair.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

from trim.protocols import SamplingParams

if TYPE_CHECKING:  # the backends import torch; `trim.testbed.task` alone must not
    from trim.backends.transformers import StepTagPRM, TransformersGenerator

DATA_DIR = Path(__file__).resolve().parents[2] / "data" / "testbed"

# Untruncated sampling (no top-p or top-k): the models were trained to reproduce their teachers' errors,
# and truncation would hide the very mistakes the book studies. The temperatures are the calibration knob:
# 0.8 puts the weak model's next-step accuracy on the real weak model's (0.866; 0.827 at 1.0), 0.95 the
# strong model's on the real strong one's (0.970; 0.965 at 1.0), both measured on validation problems with
# `trim.testbed.train.expected_step_accuracy`. (The real release samples both at 0.7.) A step holds at most
# 64 tokens; the longest correct step, a cube that boxes the answer, has about 45.
WEAK_SAMPLING = SamplingParams(temperature=0.8, top_p=1.0, top_k=0, max_step_tokens=64)
STRONG_SAMPLING = SamplingParams(temperature=0.95, top_p=1.0, top_k=0, max_step_tokens=64)
SAMPLING = {"weak": WEAK_SAMPLING, "strong": STRONG_SAMPLING}


class Splits(dict):
    """The fixed problem splits, each made on first use: read from `data/testbed/splits.json` for seed 0
    (the evaluation splits), otherwise generated (about 2 s for all of them)."""

    def __init__(self, seed: int = 0):
        super().__init__()
        self.seed = seed

    def __missing__(self, name: str):
        from trim.testbed import task

        self[name] = task.make_split(name, seed=self.seed)
        return self[name]

    def keys(self):
        from trim.testbed import task

        return task.SPLITS.keys()


@dataclasses.dataclass
class Testbed:
    weak: "TransformersGenerator"
    strong: "TransformersGenerator"
    prm: "StepTagPRM"
    splits: Splits
    seed: int


def load(seed: int = 0, data_dir: str | Path = DATA_DIR, split_seed: int = 0,
         weak_sampling: SamplingParams = WEAK_SAMPLING, strong_sampling: SamplingParams = STRONG_SAMPLING) -> Testbed:
    """Ready weak and strong generators, the PRM and the fixed problem splits (a few seconds on CPU)."""
    import torch

    from trim.backends.transformers import StepTagPRM, TransformersGenerator

    torch.set_num_threads(min(2, torch.get_num_threads()))
    data_dir = Path(data_dir)
    weak = TransformersGenerator(data_dir / "weak", sampling=weak_sampling, name="testbed-weak", seed=seed,
                                 device="cpu")
    strong = TransformersGenerator(data_dir / "strong", sampling=strong_sampling, name="testbed-strong", seed=seed,
                                   device="cpu")
    prm = StepTagPRM(data_dir / "prm", name="testbed-prm", device="cpu")
    return Testbed(weak=weak, strong=strong, prm=prm, splits=Splits(split_seed), seed=seed)
