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


def counted_forwards(*backends) -> dict:
    """From now on, the forward passes of the backends' models: {"seconds": s, "calls": n} (each forward of a
    causal or token-classification model counts once, whoever calls it)."""
    spent = {"seconds": 0.0, "calls": 0}
    for backend in backends:
        forward = backend.model.forward

        def wrapper(*args, _forward=forward, **kwargs):
            with Timer() as t:
                result = _forward(*args, **kwargs)
            spent["seconds"] += t.seconds
            spent["calls"] += 1
            return result

        backend.model.forward = wrapper
    return spent


def timed_roles(weak, strong, prm) -> dict:
    """From now on, the seconds each model's calls take, by role: {"weak": s, "PRM": s, "strong": s}."""
    spent = dict.fromkeys(("weak", "PRM", "strong"), 0.0)
    for model, method, role in ((weak, "propose", "weak"), (prm, "score", "PRM"), (strong, "propose", "strong")):
        timed(model, method, spent, role)
    return spent


def split_line(spent: dict, total: float, rest: str = "the rest") -> str:
    """`total` seconds split by role, what no role took named `rest`."""
    return ("  of which " + ", ".join(f"{role} {seconds:.1f} s" for role, seconds in spent.items())
            + f", {rest} {total - sum(spent.values()):.1f} s")
