"""The Colab setup: one cell in every chapter, from one source, that fails loudly and in one line."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import types
from pathlib import Path

import pytest

from trim import colab

REPO = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((REPO / "book").glob("*.ipynb"))


def cells(notebook: Path) -> list[dict]:
    return json.loads(notebook.read_text())["cells"]


@pytest.mark.parametrize("notebook", CHAPTERS, ids=lambda p: p.stem)
def test_every_chapter_opens_with_the_one_setup_cell_and_a_badge_from_the_config(notebook):
    book = cells(notebook)
    first = next(c for c in book if c["cell_type"] == "code")
    assert "".join(first["source"]) == colab.cell_source(colab.notebook_extra(book)), \
        f"{notebook.name}: run `make colab-cells`"
    badges = colab.BADGE.findall("".join("".join(c["source"]) for c in book if c["cell_type"] == "markdown"))
    assert badges == [colab.colab_badge(notebook)]


def test_chapters_that_run_vllm_install_the_gpu_extra():
    extras = {p.stem: colab.notebook_extra(cells(p)) for p in CHAPTERS}
    assert extras["07_real_models"] == extras["02_steps_models_prms"] == "gpu"  # both load colab-t4
    assert extras["01_cascading_failures"] is None


def test_the_repository_address_is_written_once(tmp_path):
    config = tmp_path / "_config.yml"
    config.write_text("title: x\nrepository:\n  url: https://github.com/a/b\n\n  branch: dev\nhtml:\n  x: 1\n")
    assert (colab._repository("url", config), colab._repository("branch", config)) == ("https://github.com/a/b", "dev")
    url = colab.repository_url()
    assert url.startswith("https://github.com/")
    owner_repo = url.removeprefix("https://github.com/")
    readme = (REPO / "README.md").read_text()
    assert set(re.findall(r"colab\.research\.google\.com/github/([\w.-]+/[\w.-]+)/", readme)) == {owner_repo}


def test_the_cell_does_nothing_outside_colab_and_stops_in_one_line_when_the_clone_fails(monkeypatch):
    source = colab.cell_source(url="/nonexistent/trim-book")
    exec(compile(source, "cell", "exec"), {})  # not on Colab: nothing happens
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    with pytest.raises(SystemExit) as stop:
        exec(compile(source.replace("/content/trim", "/nonexistent/clone"), "cell", "exec"), {})
    message = str(stop.value)
    assert message.startswith("could not clone /nonexistent/trim-book (") and "set REPO in this cell" in message
    assert "\n" not in message


NVIDIA_SMI = """+-----------------------------------------------------------------------------------------+
| NVIDIA-SMI 550.54.15              Driver Version: 550.54.15      CUDA Version: 12.4     |
|-----------------------------------------+------------------------+----------------------+
"""


def fake_run(returncode=0, stdout="", stderr="", calls=None):
    def run(command, **kwargs):
        if calls is not None:
            calls.append(command)
        if command == ["nvidia-smi"] and stdout == "missing":
            raise FileNotFoundError("nvidia-smi")
        return subprocess.CompletedProcess(command, returncode, stdout, stderr)
    return run


def test_the_driver_cuda_version_is_read_from_nvidia_smi():
    assert colab.driver_cuda(fake_run(stdout=NVIDIA_SMI)) == (12, 4)
    assert colab.driver_cuda(fake_run(stdout="missing")) is None
    assert colab.driver_cuda(fake_run(returncode=9, stdout="NVIDIA-SMI has failed")) is None


def test_gpu_check_refuses_an_old_driver_with_what_to_do():
    with pytest.raises(colab.SetupError) as old:
        colab.check_gpu((12, 4))
    message = str(old.value)
    assert "CUDA 12.4" in message and "needs CUDA 13.0" in message and "\n" not in message
    assert f"vllm-{colab.VLLM_VERSION}+cu129" in message and "download.pytorch.org/whl/cu129" in message
    colab.check_gpu((13, 0))  # PyPI's build runs


def test_a_failed_install_is_one_line_with_pips_error_and_the_log(tmp_path):
    pip = fake_run(returncode=1, stderr="Collecting vllm\nERROR: ResolutionImpossible: conflicting dependencies\n")
    with pytest.raises(colab.SetupError) as failed:
        colab.install(str(tmp_path), "gpu", pip)
    assert str(failed.value) == ("installing the library failed: ERROR: ResolutionImpossible: conflicting "
                                 f"dependencies (pip's whole output: {tmp_path / 'pip-install.log'})")
    assert "Collecting vllm" in (tmp_path / "pip-install.log").read_text()


def test_setup_installs_with_the_command_ci_checks_and_asks_for_a_restart_when_pip_replaced_a_loaded_package(
        tmp_path, monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(colab, "installed", lambda extra: False)
    colab.setup(source=str(tmp_path), run=fake_run(calls=calls))
    assert calls == [[sys.executable, "-m", *colab.install_command(str(tmp_path), None)]]
    assert "trim installed" in capsys.readouterr().out
    # numpy was imported at 1.0 and pip left 2.0 on disk: this session must restart
    monkeypatch.setattr(colab, "_loaded_versions", lambda: {"numpy": "1.0", "pandas": "2.2"})
    monkeypatch.setattr(colab, "_version", lambda dist: {"numpy": "2.0", "pandas": "2.2"}[dist])
    with pytest.raises(colab.SetupError, match=r"pip replaced numpy, which .* \(Runtime > Restart session\)"):
        colab.setup(source=str(tmp_path), run=fake_run())


def test_setup_checks_the_gpu_before_installing_anything(tmp_path, monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(colab, "installed", lambda extra: False)
    with pytest.raises(colab.SetupError, match="CUDA 12.4"):
        colab.setup(extra="gpu", source=str(tmp_path), run=fake_run(stdout=NVIDIA_SMI, calls=calls))
    assert calls == [["nvidia-smi"]]
    # No GPU at all: the chapter's CPU cells still run, so the library goes in without vLLM, with a notice.
    calls.clear()
    colab.setup(extra="gpu", source=str(tmp_path), run=fake_run(stdout="missing", calls=calls))
    assert calls[1] == [sys.executable, "-m", *colab.install_command(str(tmp_path), None)]
    assert "installing the library without vLLM" in capsys.readouterr().out


def test_once_vllm_is_installed_the_cell_runs_again_on_any_driver(tmp_path, monkeypatch, capsys):
    """After the CUDA 12.9 build was installed by hand on an old driver, rerunning the cell must go on."""
    calls = []
    monkeypatch.setattr(colab, "installed", lambda extra: True)
    colab.setup(extra="gpu", source=str(tmp_path), run=fake_run(stdout=NVIDIA_SMI, calls=calls))
    assert calls == [] and "nothing to install" in capsys.readouterr().out


def test_traces_can_go_to_a_mounted_drive(tmp_path, monkeypatch, capsys):
    from trim.traces import runs_dir

    mounted = []
    monkeypatch.setattr(colab, "installed", lambda extra: True)
    monkeypatch.setattr(colab, "DRIVE_RUNS", str(tmp_path / "drive" / "runs"))
    monkeypatch.setenv("TRIM_RUNS_DIR", "")  # registers the variable for undoing: setup sets it for real
    assert runs_dir("colab-t4") == Path("runs/colab-t4")
    colab.setup(keep_traces_on_drive=True, mount=mounted.append)
    assert mounted == ["/content/drive"] and (tmp_path / "drive" / "runs").is_dir()
    assert runs_dir("colab-t4") == tmp_path / "drive" / "runs" / "colab-t4"
    assert "on your Google Drive" in capsys.readouterr().out
