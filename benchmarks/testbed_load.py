"""Wall time of `trim.testbed.load()` (target: at most 5 s), cold imports included.

    python benchmarks/testbed_load.py
"""

import time

start = time.perf_counter()
from trim import testbed  # noqa: E402

tb = testbed.load()
loaded = time.perf_counter() - start
test = tb.splits["test"]
print(f"testbed.load(): {loaded:.2f} s (imports included; target <= 5 s); "
      f"first use of the test split +{time.perf_counter() - start - loaded:.2f} s")
