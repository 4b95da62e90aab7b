"""Progress bars that stay quiet in tests, nbval and CI (TRIM_QUIET=1) and off a terminal."""

from __future__ import annotations

import contextlib
import os

from tqdm.auto import tqdm


def progress_bar(*, progress: bool | None = None, **kwargs) -> tqdm:
    """`progress=None` decides from the environment: off under TRIM_QUIET=1, else off when not a tty."""
    if progress is None:
        disable = True if quiet() else None
    else:
        disable = not progress
    return tqdm(disable=disable, leave=False, **kwargs)


def quiet() -> bool:
    """TRIM_QUIET=1: tests, nbval, CI and the book's build, whose outputs must not hold progress bars."""
    return os.environ.get("TRIM_QUIET") == "1"


@contextlib.contextmanager
def quiet_transformers():
    """Silence transformers while it loads a model: its warnings (the library's own checks turn those that
    matter into errors) and, under TRIM_QUIET=1, its "Loading weights" bar (transformers 5 draws one)."""
    from transformers.utils import logging as hf_logging

    level, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    if quiet():
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()
