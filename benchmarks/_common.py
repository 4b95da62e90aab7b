"""Shared set-up for the benchmark scripts: the testbed, quiet, on this machine's cores."""

import os
import time

os.environ.setdefault("TRIM_QUIET", "1")


def load(problems: int, split: str = "test"):
    from trim import testbed

    tb = testbed.load(seed=0)
    return tb, tb.splits[split][:problems]


def cold(tb) -> None:
    """Forget every cached key/value prefix, so the next run pays for all it reads."""
    for model in (tb.weak, tb.strong, tb.prm):
        model.prefixes = type(model.prefixes)(model.prefixes.max_bytes)


def parse_args(doc: str, problems: int, k: bool = True, **extra):
    """The options every benchmark shares: how many test problems, and TRIM-Thr's threshold."""
    import argparse

    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--problems", type=int, default=problems, help="test problems to run")
    if k:
        parser.add_argument("--k", type=float, default=0.5, help="TRIM-Thr threshold")
    for name, default in extra.items():
        parser.add_argument(f"--{name}", type=type(default), default=default)
    return parser.parse_args()


class Timer:
    def __enter__(self):
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.start


def timed(obj, method: str, spent: dict, role: str) -> None:
    """Count the seconds `obj.method` takes into spent[role] (on this instance only)."""
    call = getattr(obj, method)

    def wrapper(*args, **kwargs):
        with Timer() as t:
            result = call(*args, **kwargs)
        spent[role] += t.seconds
        return result

    setattr(obj, method, wrapper)
