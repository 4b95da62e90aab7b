"""Reliability, second round: what a resume trusts, and no traceback anywhere a user can reach.

Each test injects the fault a user (or a crash) would: a hand-edited trace, a nested or misshapen line,
Ctrl-C in the middle of a run, a missing folder, a value that cannot work."""

import json
import signal
import subprocess
import sys
import time

import pytest

from trim import testbed
from trim.cli import main

RUN = ["run", "--policy", "thr", "--k", "0.5", "--problems", "3", "--quiet"]


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


@pytest.fixture(scope="module")
def finished_trace(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    assert main([*RUN, "--out", str(out)]) == 0
    (trace,) = out.glob("*.jsonl")
    return trace


def edit(record: dict, how: str) -> dict | str:
    if how == "correct as text":
        record["correct"] = "yes"
    elif how == "a field missing":
        del record["strong_tokens"]
    elif how == "negative tokens":
        record["weak_tokens"] = -5
    elif how == "an unknown problem":
        record["problem_id"] = "test-999999"
    elif how == "a list as problem_id":
        record["problem_id"] = ["test-1"]
    elif how == "nested too deeply":
        return "[" * 100_000 + "]" * 100_000
    return record


EDITS = {"correct as text": "has correct = \"yes\", not true or false",
         "a field missing": "has strong_tokens = nothing",
         "negative tokens": "has weak_tokens = -5, not a number >= 0",
         "an unknown problem": "'test-999999', which is not among this run's problems",
         "a list as problem_id": "has problem_id = [\"test-1\"], not a problem's id",
         "nested too deeply": "nested too deeply"}


@pytest.mark.parametrize("how", EDITS)
def test_a_hand_edited_record_is_refused_with_its_line_before_any_model_loads(finished_trace, tmp_path, capsys,
                                                                             monkeypatch, how):
    lines = finished_trace.read_text().splitlines()
    changed = edit(json.loads(lines[1]), how)
    lines[1] = changed if isinstance(changed, str) else json.dumps(changed)
    out = tmp_path / "runs"
    out.mkdir()
    (out / finished_trace.name).write_text("\n".join(lines) + "\n")

    def no_models(*args, **kwargs):
        raise AssertionError("the models were loaded before the trace was checked")

    monkeypatch.setattr(testbed, "load", no_models)
    assert main([*RUN, "--out", str(out)]) == 2
    err = one_line_error(capsys)
    assert f"{out / finished_trace.name}:2" in err and EDITS[how] in err
    assert (out / finished_trace.name).read_text().splitlines()[1] == lines[1]   # refused, left as it was


@pytest.mark.parametrize("how", ["a list as problem_id", "nested too deeply", "correct as text"])
def test_metrics_names_the_bad_line_of_a_trace(finished_trace, tmp_path, capsys, how):
    lines = finished_trace.read_text().splitlines()
    changed = edit(json.loads(lines[0]), how)
    lines[0] = changed if isinstance(changed, str) else json.dumps(changed)
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join(lines) + "\n")
    assert main(["metrics", str(bad)]) == 2
    assert f"{bad}:1" in one_line_error(capsys)


@pytest.mark.parametrize("argv, message", [
    (["metrics", "/dev/zero"], "/dev/zero: is not a regular file"),
    (["data", "--data-dir", "/nonexistent-folder"], "--data-dir /nonexistent-folder: no such folder"),
    (["run", "--policy", "agg", "--lam", "0.123", "--problems", "1"], "no trained agg policy for lambda 0.123"),
])
def test_bad_inputs_are_one_line_errors_with_a_non_zero_exit(capsys, argv, message):
    assert main(argv) == 2
    assert message in one_line_error(capsys)


@pytest.mark.parametrize("argv, message", [
    (["calibrate", "--target-share", "0"], "must be above 0"),
    (["baselines", "--train-problems", "3"], "must be at least 20"),
    (["baselines", "--validation-problems", "2"], "must be at least 10"),
])
def test_values_that_cannot_work_are_refused_before_any_model_loads(capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:   # argparse: a usage error, long before any model
        main(argv)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_ctrl_c_says_what_was_kept_and_a_rerun_resumes(tmp_path):
    out = tmp_path / "runs"
    args = ["run", "--policy", "thr", "--problems", "120", "--quiet", "--out", str(out)]
    # A shell without job control starts background jobs with SIGINT ignored, and Python then keeps ignoring
    # it: the child reinstates Ctrl-C's KeyboardInterrupt, as in a terminal, before running `trim`.
    argv = [sys.executable, "-c", "import runpy, signal, sys; "
            "signal.signal(signal.SIGINT, signal.default_int_handler); "
            f"sys.argv = ['trim', *{args!r}]; runpy.run_module('trim', run_name='__main__')"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not any(p.stat().st_size for p in out.glob("*.jsonl")):
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    lines = [line for line in err.strip().splitlines() if line]
    assert len(lines) == 1 and "interrupted; kept every finished problem" in lines[0] and str(out) in lines[0], err
    (trace,) = out.glob("*.jsonl")
    kept = len(trace.read_text().splitlines())
    assert 0 < kept < 120
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert len(trace.read_text().splitlines()) == 120


def test_policy_names_keep_the_knobs_whole_value(tmp_path, capsys):
    from trim.policies import RandomRegeneration, Threshold
    from trim.sweep import threshold_grid

    assert Threshold(0.1234567).name != Threshold(0.1234568).name
    assert RandomRegeneration(0.2, seed=1).name != RandomRegeneration(0.2, seed=2).name
    assert [t.name for t in threshold_grid(21)][3] == "TRIM-Thr(k=0.15)"     # a grid point as a reader types it
    for k in ("0.1234567", "0.1234568"):
        assert main(["run", "--policy", "thr", "--k", k, "--problems", "2", "--quiet", "--out", str(tmp_path)]) == 0
    capsys.readouterr()
    assert sorted(p.name for p in tmp_path.glob("*.jsonl")) == ["TRIM-Thr_k=0.1234567_.jsonl",
                                                               "TRIM-Thr_k=0.1234568_.jsonl"]


SCORE_FIELDS = {"score", "previous_scores", "confidence"}


def differences(a, b, path="", tolerance=1e-5) -> list[str]:
    """Where two records differ: exactly, except PRM scores and step confidences, which may differ by
    `tolerance`."""
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            return [f"{path}: keys {sorted(a.keys() ^ b.keys())}"]
        return [d for key in a for d in differences(a[key], b[key], f"{path}.{key}", tolerance)]
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{path}: {len(a)} != {len(b)} items"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in differences(x, y, f"{path}[{i}]", tolerance)]
    if path.rsplit(".", 1)[-1].split("[")[0] in SCORE_FIELDS and isinstance(a, float) and isinstance(b, float):
        return [] if abs(a - b) <= tolerance else [f"{path}: {a} != {b}"]
    return [] if a == b else [f"{path}: {a!r} != {b!r}"]


def test_a_killed_and_resumed_run_equals_an_uninterrupted_one_field_by_field(tmp_path):
    # What "same seed, same traces" guarantees (README): every field equal, PRM scores and step confidences to
    # float rounding.
    argv = [sys.executable, "-m", "trim", "run", "--policy", "thr", "--k", "0.5", "--problems", "40", "--quiet"]
    whole = subprocess.run([*argv, "--out", str(tmp_path / "whole")], capture_output=True, text=True, timeout=600)
    assert whole.returncode == 0, whole.stderr
    out = tmp_path / "resumed"
    proc = subprocess.Popen([*argv, "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and sum(len(p.read_bytes().splitlines()) for p in out.glob("*.jsonl")) < 5:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    (trace,) = out.glob("*.jsonl")
    kept = len(trace.read_bytes().splitlines())
    assert 5 <= kept < 40
    again = subprocess.run([*argv, "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    from trim.traces import read_traces

    by_id = {r["problem_id"]: r for r in read_traces(trace)}
    reference = {r["problem_id"]: r for r in read_traces(next((tmp_path / "whole").glob("*.jsonl")))}
    assert by_id.keys() == reference.keys()
    assert [d for pid in reference for d in differences(reference[pid], by_id[pid], pid)] == []


def test_a_split_seed_draws_fresh_problems_and_keeps_their_traces_apart(tmp_path, capsys):
    argv = ["run", "--policy", "thr", "--problems", "3", "--quiet", "--out", str(tmp_path)]
    assert main(argv) == 0
    first = json.loads(capsys.readouterr().out)
    assert main([*argv, "--split-seed", "7"]) == 2      # the same trace file, other problems: refused, named
    assert "problems.digest" in one_line_error(capsys)
    assert main([*argv[:-1], str(tmp_path / "fresh"), "--split-seed", "7"]) == 0
    fresh = json.loads(capsys.readouterr().out)
    assert fresh["problems"] == first["problems"] == 3
    from trim.testbed import Splits

    assert Splits(7)["test"][0].question != Splits(0)["test"][0].question
