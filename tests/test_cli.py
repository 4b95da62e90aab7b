"""The `trim` command end to end on a few testbed problems, and the one-line errors for bad input."""

import json
import subprocess
import sys

import pytest

from trim.cli import main

FEW = ["--problems", "6", "--quiet"]


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return tmp_path_factory.mktemp("runs")


def test_run_writes_resumable_traces_and_metrics_reads_them(capsys, runs):
    for policy in ("weak-only", "strong-only"):
        assert run_cli(capsys, "run", "--policy", policy, *FEW, "--out", runs)[0] == 0
    code, out, _ = run_cli(capsys, "run", "--policy", "thr", "--k", "0.6", *FEW, "--out", runs)
    summary = json.loads(out)
    assert code == 0 and summary["problems"] == 6 and summary["policy"] == "TRIM-Thr(k=0.6)"
    lines = open(summary["traces"]).read().splitlines()
    assert len(lines) == 6
    # A rerun resumes: nothing is appended, the same summary comes back.
    assert json.loads(run_cli(capsys, "run", "--policy", "thr", "--k", "0.6", *FEW, "--out", runs)[1]) == summary
    assert len(open(summary["traces"]).read().splitlines()) == 6
    traces = sorted(str(p) for p in runs.glob("*.jsonl"))
    code, out, _ = run_cli(capsys, "metrics", *traces)
    assert code == 0 and "TRIM-Thr(k=0.6)" in out and "CPT(95%)" in out


def test_sweep_and_calibrate(capsys, tmp_path):
    code, out, _ = run_cli(capsys, "sweep", *FEW, "--points", "3", "--random-matched", "1", "--out", tmp_path)
    assert code == 0 and (tmp_path / "sweep.png").stat().st_size > 0
    assert "TRIM-Thr(k=0.5)" in out and "cache:" in out
    code, out, _ = run_cli(capsys, "calibrate", *FEW, "--points", "3", "--target-share", "0.3", "--out", tmp_path)
    result = json.loads(out)
    assert code == 0 and 0 <= result["k"] <= 1 and 0 <= result["share_on_test"] <= 1.0


def test_baselines(capsys, tmp_path):
    code, out, _ = run_cli(capsys, "baselines", "--problems", "12", "--quiet", "--train-problems", "40",
                           "--validation-problems", "16", "--points", "3", "--out", tmp_path)
    assert code == 0 and "AutoMix-PRM" in out and "dIBC(TRIM-Thr)" in out
    assert (tmp_path / "baselines.csv").is_file()


@pytest.mark.parametrize("argv, message", [
    (["run", "--policy", "nope"], "invalid choice: 'nope'"),
    (["run", "--k", "1.5"], "must be between 0 and 1"),
    (["run", "--k", "abc"], "must be a number between 0 and 1"),
    (["run", "--problems", "0"], "must be a positive integer"),
    (["testbed", "report", "--problems", "-3"], "must be a positive integer"),
])
def test_bad_values_are_usage_errors(capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_bad_files_are_one_line_errors(capsys, tmp_path):
    missing = tmp_path / "nowhere"
    code, _, err = run_cli(capsys, "run", *FEW, "--models", missing, "--out", tmp_path)
    assert code == 2 and f"--models {missing}" in err and "config.json" in err
    a_file = tmp_path / "file"
    a_file.write_text("x")
    code, _, err = run_cli(capsys, "run", *FEW, "--out", a_file)
    assert code == 2 and "is a file" in err
    code, _, err = run_cli(capsys, "run", *FEW, "--out", a_file / "below")
    assert code == 2 and "cannot be written" in err
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"problem_id": "a", "settings": {}}\nnot json\n')
    code, _, err = run_cli(capsys, "metrics", broken)
    assert code == 2 and f"{broken}:2 is not valid JSON" in err
    code, _, err = run_cli(capsys, "metrics", tmp_path)
    assert code == 2 and "is a directory" in err
    other = tmp_path / "other.jsonl"
    other.write_text('{"some": "json"}\n')
    code, _, err = run_cli(capsys, "metrics", other)
    assert code == 2 and "not a trace file" in err
    for text in (err,):
        assert "Traceback" not in text and len(text.strip().splitlines()) == 1


def test_empty_problem_list_is_refused(capsys, tmp_path, monkeypatch):
    from trim import testbed

    monkeypatch.setitem(testbed.task.SPLITS, "test", (2, 0, (2, 10), None))
    code, _, err = run_cli(capsys, "run", "--quiet", "--out", tmp_path)
    assert code == 2 and "gave no problems" in err


def test_console_script_prints_no_traceback(tmp_path):
    result = subprocess.run([sys.executable, "-m", "trim.cli", "metrics", str(tmp_path)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith("trim metrics: error:")
