"""Colab setup: the one source of every chapter's first cell, and what that cell runs.

Each chapter opens with the same cell (`cell_source`), written into the notebooks by
`python -m trim.colab --write book/*.ipynb` (`make colab-cells`); a test keeps them equal, so the
copies cannot drift. Outside Colab the cell does nothing. On Colab it clones the repository named in
`_config.yml` (`repository.url`, the one place the address is written) and calls `setup`, which

- for the GPU extra, checks for an NVIDIA GPU and its driver's CUDA version *before* installing vLLM,
  whose PyPI wheels need CUDA 13 (a driver that is older gets the exact alternative instead; a runtime
  without a GPU gets the library without vLLM, so the chapter's CPU cells still run);
- installs the library (`install_command`, the very command CI dry-runs with `.ci/install_check.py`);
- says when the session must restart (pip replaced a package this session had already imported);
- keeps traces on a mounted Google Drive if asked, since a recycled runtime loses `/content`.

Every failure stops the notebook with one line (`SetupError`, a `SystemExit`: IPython shows its message
without a traceback, and "Run all" stops there rather than failing cells later, far from the cause).

Standard library only: this module runs before anything is installed."""

from __future__ import annotations

import importlib.metadata as metadata
import json
import os
import re
import subprocess
import sys
from pathlib import Path

from trim.backends.vllm import SUPPORTED_VLLM

REPO_ROOT = Path(__file__).resolve().parents[1]
CLONE_DIR = "/content/trim"
DRIVE_RUNS = "/content/drive/MyDrive/trim/runs"
# vLLM 0.32's wheels on PyPI link CUDA 13 (libcudart.so.13) and pin torch 2.13.0, itself built for CUDA 13:
# they need an NVIDIA driver that supports CUDA 13.0 (driver 580 or newer).
VLLM_CUDA = (13, 0)
# vLLM also publishes each release built for CUDA 12.9 on GitHub (not on PyPI, so CI cannot check it).
VLLM_CU129 = ("pip install -e '{source}' https://github.com/vllm-project/vllm/releases/download/v{version}/"
              "vllm-{version}+cu129-cp38-abi3-manylinux_2_28_x86_64.whl "
              "--extra-index-url https://download.pytorch.org/whl/cu129")
VLLM_VERSION = SUPPORTED_VLLM[0] + ".0"
# The Python of Colab's runtimes, for which CI dry-runs the install (`.ci/install_check.py`).
COLAB_PYTHON = "3.12"


class SetupError(SystemExit):
    """Colab setup cannot go on; the message says why and what to do, in one line."""


def _repository(key: str, config: Path = REPO_ROOT / "_config.yml") -> str:
    """`repository.<key>` from the book's `_config.yml` (read without a YAML library: none is installed yet)."""
    block = re.search(r"^repository:[ \t]*\n((?:[ \t]+.*\n?|[ \t]*\n)+)", config.read_text(), re.MULTILINE)
    value = block and re.search(rf"^[ \t]+{key}:[ \t]*(\S+)", block.group(1), re.MULTILINE)
    if not value:
        raise ValueError(f"{config}: no repository.{key}; the Colab cells clone the book from repository.url "
                         "and repository.branch")
    return value.group(1).strip("'\"")


def repository_url() -> str:
    return _repository("url")


def repository_branch() -> str:
    return _repository("branch")


def install_command(source: str = CLONE_DIR, extra: str | None = None) -> list[str]:
    """The pip command that installs the library from a checkout at `source` (CI dry-runs exactly this)."""
    target = f"{source}[{extra}]" if extra else source
    return ["pip", "install", "-q", "-e", target]


def cell_source(extra: str | None = None, url: str | None = None) -> str:
    """The first code cell of a chapter; `extra="gpu"` for chapters whose cells run vLLM."""
    url, branch = url or repository_url(), repository_branch()
    what = "install the library with its GPU extra (vLLM)" if extra else "install the library"
    call = f'setup(extra="{extra}", keep_traces_on_drive=False)' if extra else "setup(keep_traces_on_drive=False)"
    return f'''# On Colab: fetch the book's code and testbed models, {what}.
# Elsewhere this cell does nothing. (Written by `make colab-cells` from trim/colab.py: edit it there.)
import sys

if "google.colab" in sys.modules:
    import os, subprocess
    REPO, BRANCH = "{url}", "{branch}"  # _config.yml: repository.url, .branch
    if not os.path.isdir("{CLONE_DIR}/trim"):
        clone = subprocess.run(["git", "clone", "-q", "--depth", "1", "--branch", BRANCH, REPO, "{CLONE_DIR}"],
                               capture_output=True, text=True, env={{**os.environ, "GIT_TERMINAL_PROMPT": "0"}})
        if clone.returncode:
            raise SystemExit(f"could not clone {{REPO}} ({{(clone.stderr.strip() or 'git failed').splitlines()[-1]}}): "
                             "set REPO in this cell to a copy of the book you can reach, then run it again")
    sys.path.insert(0, "{CLONE_DIR}")
    from trim.colab import setup

    # keep_traces_on_drive=True mounts your Google Drive and writes traces there: a recycled runtime loses
    # /content, and every trace in it.
    {call}'''


GPU_PRESET_CALL = re.compile(r"""presets\.load\(\s*["']([\w-]+)["']""")


def notebook_extra(cells: list[dict]) -> str | None:
    """"gpu" if a code cell loads a preset that runs on vLLM, else None."""
    from trim.presets import PRESETS

    for cell in cells:
        if cell["cell_type"] != "code":
            continue
        for name in GPU_PRESET_CALL.findall("".join(cell["source"])):
            if name in PRESETS and PRESETS[name].uses_vllm:
                return "gpu"
    return None


def colab_badge(notebook: Path, url: str | None = None) -> str:
    owner_repo = re.sub(r"^https://github\.com/|\.git$", "", url or repository_url())
    path = notebook.resolve().relative_to(REPO_ROOT).as_posix()
    return f"https://colab.research.google.com/github/{owner_repo}/blob/{repository_branch()}/{path}"


BADGE = re.compile(r"https://colab\.research\.google\.com/github/[^)\s]+\.ipynb")


def write_cells(notebook: Path) -> bool:
    """Put `cell_source` in the notebook's first code cell and its Colab badge's address; True if it changed."""
    book = json.loads(notebook.read_text())
    first = next(cell for cell in book["cells"] if cell["cell_type"] == "code")
    source = cell_source(notebook_extra(book["cells"]))
    changed = "".join(first["source"]) != source
    first["source"] = source.splitlines(keepends=True)
    badge = colab_badge(notebook)
    for cell in book["cells"]:
        if cell["cell_type"] == "markdown":
            text = "".join(cell["source"])
            if BADGE.search(text) and BADGE.sub(badge, text) != text:
                cell["source"] = BADGE.sub(badge, text).splitlines(keepends=True)
                changed = True
    if changed:
        notebook.write_text(json.dumps(book, indent=1, ensure_ascii=False) + "\n")
    return changed


# ---- what the cell runs on Colab ----

def driver_cuda(run=subprocess.run) -> tuple[int, int] | None:
    """The CUDA version the NVIDIA driver supports (nvidia-smi's header), or None without a GPU."""
    try:
        smi = run(["nvidia-smi"], capture_output=True, text=True, timeout=60)
    except (FileNotFoundError, subprocess.TimeoutExpired):
        return None
    found = re.search(r"CUDA Version:\s*(\d+)\.(\d+)", smi.stdout or "")
    return (int(found.group(1)), int(found.group(2))) if smi.returncode == 0 and found else None


def check_gpu(cuda: tuple[int, int], source: str = CLONE_DIR) -> None:
    """Refuse, with what to do, a driver on which vLLM's PyPI build cannot run."""
    if cuda < VLLM_CUDA:
        have, need = ".".join(map(str, cuda)), ".".join(map(str, VLLM_CUDA))
        raise SetupError(f"this runtime's NVIDIA driver supports CUDA {have}, and vLLM {VLLM_VERSION} from PyPI "
                         f"needs CUDA {need} (driver 580 or newer). Install its CUDA 12.9 build instead, in a "
                         f"new cell: !{VLLM_CU129.format(source=f'{source}[gpu]', version=VLLM_VERSION)}; "
                         "then run this cell again")


def installed(extra: str | None) -> bool:
    """True if the library (and for the GPU extra, a supported vLLM) is already installed."""
    if _version("trim-routing") is None:
        return False
    return extra != "gpu" or (_version("vllm") or "").startswith(SUPPORTED_VLLM)


def _loaded_versions() -> dict[str, str]:
    """Installed versions of the distributions whose modules this process has imported."""
    top = {name.split(".")[0] for name in sys.modules}
    owners = metadata.packages_distributions()
    versions = {dist: _version(dist) for module in top & set(owners) for dist in owners[module]}
    return {dist: version for dist, version in versions.items() if version is not None}


def install(source: str, extra: str | None, run=subprocess.run) -> list[str]:
    """Run `install_command`; returns the already-imported distributions it changed (they need a restart)."""
    before = _loaded_versions()
    log = Path(source) / "pip-install.log"
    done = run([sys.executable, "-m", *install_command(source, extra)], capture_output=True, text=True)
    log.write_text((done.stdout or "") + (done.stderr or ""))
    if done.returncode:
        lines = [line for line in (done.stderr or "").splitlines() if line.strip()]
        errors = [line for line in lines if line.startswith("ERROR")] or lines or ["no output"]
        raise SetupError(f"installing the library failed: {errors[-1].strip()} (pip's whole output: {log})")
    return sorted(dist for dist, version in before.items() if _version(dist) not in (version, None))


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def runs_on_drive(mount=None) -> str:
    """Mount Google Drive and send traces there (`TRIM_RUNS_DIR`, read by `trim.traces.runs_dir`)."""
    if mount is None:
        from google.colab import drive

        mount = drive.mount
    mount("/content/drive")
    Path(DRIVE_RUNS).mkdir(parents=True, exist_ok=True)
    os.environ["TRIM_RUNS_DIR"] = DRIVE_RUNS
    return DRIVE_RUNS


def setup(extra: str | None = None, keep_traces_on_drive: bool = False, source: str = CLONE_DIR,
          run=subprocess.run, mount=None) -> None:
    """Check the runtime, install the library from `source`, and say what happens next (see the module doc)."""
    if extra == "gpu" and not installed(extra):
        cuda = driver_cuda(run)
        if cuda is None:
            print("no NVIDIA GPU in this runtime: installing the library without vLLM, so the cells that load a "
                  "GPU preset will not run (for those: Runtime > Change runtime type > T4 GPU, then run this cell "
                  "again)")
            extra = None
        else:
            check_gpu(cuda, source)
    if installed(extra):
        print(f"trim is installed{' with vLLM' if extra else ''}; nothing to install")
    else:
        changed = install(source, extra, run)
        if changed:
            raise SetupError(f"installed; pip replaced {', '.join(changed)}, which this session had already "
                             "imported: restart the session (Runtime > Restart session), then run this cell "
                             "again (it will not install twice)")
        print(f"trim installed from {source}{' with vLLM' if extra else ''}")
    if keep_traces_on_drive:
        print(f"traces go to {runs_on_drive(mount)} on your Google Drive")
    else:
        print(f"traces go to {os.path.abspath('runs')}, which a recycled runtime loses; "
              "setup(..., keep_traces_on_drive=True) keeps them on your Google Drive")


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description="Write the Colab setup cell and badge into chapters.")
    parser.add_argument("--write", nargs="+", type=Path, required=True, metavar="NOTEBOOK")
    args = parser.parse_args(argv)
    for notebook in args.write:
        if write_cells(notebook):
            print(f"updated {notebook}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
