"""Shared set-up for the benchmark scripts: the testbed, quiet, on this machine's cores."""

import os
import time

os.environ.setdefault("TRIM_QUIET", "1")


def load(problems: int, split: str = "test"):
    from trim import testbed

    tb = testbed.load(seed=0)
    return tb, tb.splits[split][:problems]


class Timer:
    def __enter__(self):
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.start
