"""Every documented install command resolves: `pip install --dry-run` of each, on this machine and for Colab.

    .venv/bin/python .ci/install_check.py        # make install-check; make test runs it first

The GPU path is never installed by CI (vLLM's CUDA wheels are gigabytes and there is no GPU here), so its
commands are resolved instead: metadata only (`--use-feature=fast-deps` reads a wheel's metadata with
HTTP range requests where the index serves none), nothing installed, no GPU wheel downloaded. Each
command is resolved for this machine and for a Colab runtime (Linux x86_64, Python `COLAB_PYTHON`, the
CUDA builds of torch from PyPI), so a pin that conflicts on either fails here with pip's own message.
The Colab commands are taken from `trim.colab.install_command`, which the chapters' first cell runs."""

from __future__ import annotations

import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from trim.colab import COLAB_PYTHON, install_command  # noqa: E402

# Colab's platform, as pip needs it spelt out: every manylinux tag a glibc-2.35 x86_64 system accepts.
COLAB = (["--python-version", COLAB_PYTHON, "--only-binary=:all:", "--platform", "linux_x86_64"]
         + [arg for tag in ["manylinux1_x86_64", "manylinux2010_x86_64", "manylinux2014_x86_64",
                            *(f"manylinux_2_{minor}_x86_64" for minor in range(5, 36))]
            for arg in ("--platform", tag)])


def documented() -> list[tuple[str, list[str], bool]]:
    """(where it is documented, pip arguments, resolve for Colab too)."""
    def colab_cell(extra):
        return [arg for arg in install_command(".", extra)[2:] if arg != "-q"]

    return [
        ("README / pyproject: pip install -e .[gpu]", ["-e", ".[gpu]"], True),
        ("README / requirements-gpu.txt: pip install -r requirements.txt -r requirements-gpu.txt",
         ["-r", "requirements.txt", "-r", "requirements-gpu.txt"], True),
        ("chapters' Colab cell, GPU chapters", colab_cell("gpu"), True),
        ("chapters' Colab cell, CPU chapters", colab_cell(None), True),
    ]


def dry_run(args: list[str], colab: bool) -> tuple[bool, str, float]:
    command = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--use-feature=fast-deps",
               "--progress-bar", "off", *(COLAB if colab else []), *args]
    start = time.time()
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    output = done.stdout + done.stderr
    if done.returncode == 0 and "Would install" not in output:
        return False, "pip resolved nothing (no 'Would install' line):\n" + output[-3000:], time.time() - start
    # A dry run must not fetch whole wheels: those are gigabytes on the GPU path.
    fetched = [line for line in output.splitlines() if line.strip().startswith("Downloading") and "MB" in line]
    if done.returncode == 0 and fetched:
        return False, "downloaded whole wheels instead of their metadata:\n" + "\n".join(fetched), time.time() - start
    lines = [line for line in output.splitlines() if not line.startswith("WARNING: Location")]
    return done.returncode == 0, "\n".join(lines[-40:]), time.time() - start


def main() -> int:
    # One dry run per distinct command and target; a command documented in several places is named once with all.
    names: dict[tuple, list[str]] = {}
    for name, args, colab in documented():
        for target in (["this machine", "Colab"] if colab else ["this machine"]):
            names.setdefault((tuple(args), target), []).append(name)
    jobs = [(" = ".join(where), list(args), target) for (args, target), where in names.items()]
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda job: dry_run(job[1], job[2] == "Colab"), jobs))
    failed = 0
    for (name, args, target), (ok, output, seconds) in zip(jobs, results):
        print(f"{'ok  ' if ok else 'FAIL'} {name} [{target}] ({seconds:.0f} s)")
        if not ok:
            failed += 1
            print("     pip install --dry-run " + " ".join(args))
            print("\n".join("     | " + line for line in output.splitlines()))
    print(f"install check: {len(jobs) - failed} of {len(jobs)} documented install commands resolve (the CUDA 12.9 "
          "build trim.colab offers on an older driver is on GitHub, which CI cannot reach: not checked)")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
