"""trim: targeted step-level routing between a weak and a strong language model (TRIM, ICLR 2026).

The chapters of the book import from here; see `trim.testbed` for the CPU models the book runs on.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("trim-routing")
except PackageNotFoundError:  # running from a source tree that was not pip-installed
    __version__ = "0.0.0+source"
