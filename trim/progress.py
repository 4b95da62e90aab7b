"""Progress bars that stay quiet in tests, nbval and CI (TRIM_QUIET=1) and off a terminal."""

from __future__ import annotations

import os

from tqdm.auto import tqdm


def progress_bar(*, progress: bool | None = None, **kwargs) -> tqdm:
    """`progress=None` decides from the environment: off under TRIM_QUIET=1, else off when not a tty."""
    if progress is None:
        disable = True if os.environ.get("TRIM_QUIET") == "1" else None
    else:
        disable = not progress
    return tqdm(disable=disable, leave=False, **kwargs)
