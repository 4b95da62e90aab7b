"""The `trim` command end to end on a few testbed problems, and the one-line errors for bad input."""

import json
import os
import shutil
import subprocess
import sys

import pandas as pd
import pytest

from trim.cli import main

N_FEW = 10  # on fewer problems the weak model can out-score the strong one, and PGR is undefined
FEW = ["--problems", str(N_FEW), "--quiet"]


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
    assert code == 0 and summary["problems"] == N_FEW and summary["policy"] == "TRIM-Thr(k=0.6)"
    lines = open(summary["traces"]).read().splitlines()
    assert len(lines) == N_FEW
    # A rerun resumes: nothing is appended, the same summary comes back.
    assert json.loads(run_cli(capsys, "run", "--policy", "thr", "--k", "0.6", *FEW, "--out", runs)[1]) == summary
    assert len(open(summary["traces"]).read().splitlines()) == N_FEW
    traces = sorted(str(p) for p in runs.glob("*.jsonl"))
    code, out, _ = run_cli(capsys, "metrics", *traces)
    assert code == 0 and "TRIM-Thr(k=0.6)" in out and "CPT(95%)" in out


def test_run_takes_a_shipped_learned_policy_by_name_and_lambda(capsys, runs):
    from trim.policies.learned import shipped_lambdas

    for kind, label in (("agg", "TRIM-Agg"), ("seq", "TRIM-Seq")):
        lambdas = shipped_lambdas(kind)
        assert len(lambdas) >= 6, f"data/policies/{kind} should ship at least 6 lambdas"
        code, out, _ = run_cli(capsys, "run", "--policy", kind, "--lam", lambdas[2], *FEW, "--out", runs)
        summary = json.loads(out)
        assert code == 0 and summary["policy"] == f"{label}(lambda={lambdas[2]!r})"
        record = json.loads(open(summary["traces"]).readline())
        assert record["settings"]["policy_params"]["lambda"] == lambdas[2]
        assert "weights" in record["settings"]["policy_params"]
    code, _, err = run_cli(capsys, "run", "--policy", "agg", "--lam", "0.123", *FEW, "--out", runs)
    assert code == 2 and "no trained agg policy for lambda 0.123" in err and "python -m trim.ppo" in err
    code, _, err = run_cli(capsys, "run", "--policy", "seq", *FEW, "--out", runs)
    assert code == 2 and "--lam" in err


def test_train_policy_trains_resumes_and_skips_what_is_done(capsys, tmp_path):
    args = ["train-policy", "--kind", "agg", "--lam", "0.004", "--batches", "2", "--validate-every", "1",
            "--train-problems", "100", "--validation-problems", "10", "--out", tmp_path, "--quiet"]
    code, out, _ = run_cli(capsys, *args)
    folder = tmp_path / "agg" / "lambda-0.004"
    record = json.loads((folder / "training.json").read_text())
    assert code == 0 and "TRIM-Agg lambda=0.004: chosen at batch" in out
    assert record["command"].startswith("trim train-policy --kind agg") and len(record["validation"]) == 2
    assert (folder / "policy.safetensors").exists() and not (folder / "state.pt").exists()
    code, out, _ = run_cli(capsys, *args)
    assert code == 0 and "already trained" in out
    # --warm-start: the next lambda starts from the policy of the one before it (trained or already there).
    warm = [*args[:4], "0.004", "0.008", *args[5:], "--warm-start"]
    code, out, _ = run_cli(capsys, *warm)
    record = json.loads((tmp_path / "agg" / "lambda-0.008" / "training.json").read_text())
    assert code == 0 and record["environment"].endswith("initialised from lambda-0.004")
    with pytest.raises(SystemExit) as stop:
        main(["train-policy", "--kind", "agg", "--lam", "0", "--batches", "0"])
    assert stop.value.code == 2 and "--batches: must be a positive integer" in capsys.readouterr().err


def test_python_dash_m_trim_is_the_trim_command():
    done = subprocess.run([sys.executable, "-m", "trim", "grade", "7", "\\boxed{7}"], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.startswith("correct")


def test_testbed_prm_swaps_in_a_prm_that_knows_the_task(capsys, tmp_path):
    for prm, name in (("real-noise", "testbed-real-noise-prm-0"), ("oracle", "testbed-oracle-prm")):
        code, out, _ = run_cli(capsys, "run", "--policy", "thr", "--k", "0.5", *FEW, "--testbed-prm", prm,
                               "--out", tmp_path / prm)
        records = [json.loads(line) for line in open(json.loads(out)["traces"])]
        assert code == 0 and len(records) == N_FEW and {r["settings"]["prm"] for r in records} == {name}
        scores = [s["score"] for r in records for s in r["steps"] if s["score"] is not None]
        if prm == "oracle":
            assert set(scores) <= {0.0, 1.0}
        else:
            assert all(0.0 <= x <= 1.0 for x in scores) and len(set(scores)) == len(scores)


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
    assert "TRIM-Agg" in out and "TRIM-POMDP (release belief)" in out and "dIBC(TRIM-POMDP)" in out
    assert (tmp_path / "baselines.csv").is_file()
    points = pd.read_csv(tmp_path / "curves.csv")
    assert {"TRIM-Thr", "TRIM-POMDP", "oracle router", "weak-only", "strong-only", "confidence router (no PRM)",
            "TRIM-Thr (k calibrated on validation)"} <= set(points["family"])
    # The PRM's own cost: none for routers that never read it, some for every policy that scores steps.
    prm = points.groupby("family")["prm_tokens"].max()
    assert prm["confidence router (no PRM)"] == prm["BERT classifier"] == prm["weak-only"] == 0
    assert prm["TRIM-Thr"] > 0 and prm["TRIM-POMDP"] > 0 and prm["AutoMix-PRM"] > 0
    assert set(points.loc[points["family"] == "TRIM-Thr (k calibrated on validation)", "target_share"]) == {
        0.15, 0.3, 0.5}


def test_transfer_fits_on_validation_and_reports_each_split(capsys, tmp_path):
    code, out, _ = run_cli(capsys, "transfer", "--problems", "10", "--quiet", "--train-problems", "30",
                           "--validation-problems", "12", "--points", "3", "--out", tmp_path)
    assert code == 0 and "== test" in out and "== shifted" in out
    table = pd.read_csv(tmp_path / "transfer.csv")
    assert set(table["split"]) == {"test", "shifted"} and {"dIBC", "CPT(95%)", "APGR"} <= set(table.columns)
    shares = pd.read_csv(tmp_path / "calibration_transfer.csv")
    # One k per target share, the same on both splits: calibrated once, on validation.
    assert len(shares) == 6 and shares.groupby("target_share")["k"].nunique().eq(1).all()
    assert shares["reached_share"].between(0, 1.5).all()


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


@pytest.mark.parametrize("command", ["baselines", "transfer"])
def test_a_comparison_refuses_problems_its_routers_were_not_fit_for(capsys, tmp_path, command):
    code, _, err = run_cli(capsys, command, "--dataset", "math500", "--out", tmp_path)
    assert code == 2 and "train and validation splits" in err and "drop --dataset" in err


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
    from trim.testbed import task

    monkeypatch.setattr(task, "make_split", lambda name, seed=0, size=None: [])
    code, _, err = run_cli(capsys, "run", "--quiet", "--out", tmp_path)
    assert code == 2 and "gave no problems" in err


def test_console_script_prints_no_traceback(tmp_path):
    result = subprocess.run([sys.executable, "-m", "trim.cli", "metrics", str(tmp_path)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith("trim metrics: error:")


# --- every error a user can cause: one line through the console script, no traceback -------------------


def console(*argv, preexec_fn=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "trim.cli", *map(str, argv)], capture_output=True, text=True,
                          timeout=300, preexec_fn=preexec_fn)


def assert_one_line_error(result: subprocess.CompletedProcess, *needles: str) -> str:
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def _trace_runs(folder):
    """Weak-only, strong-only and TRIM-Thr traces of the scripted models (tests/test_engine.py)."""
    from test_engine import PROBLEMS, KeywordPRM, ScriptedGenerator

    from trim.engine import RunSettings, run_policy
    from trim.policies import StrongOnly, Threshold, WeakOnly

    weak, strong = ScriptedGenerator("weak", bad_steps={2}, answer="8"), ScriptedGenerator("strong")
    paths = {}
    for name, policy, problems, run in [("weak", WeakOnly(), PROBLEMS, RunSettings()),
                                        ("strong", StrongOnly(), PROBLEMS, RunSettings()),
                                        ("thr", Threshold(0.5), PROBLEMS, RunSettings()),
                                        ("thr-seed1", Threshold(0.5), PROBLEMS, RunSettings(seed=1)),
                                        ("rsd-seed1", Threshold(0.7), PROBLEMS, RunSettings(seed=1)),
                                        ("strong-3", StrongOnly(), PROBLEMS[:3], RunSettings())]:
        paths[name] = folder / f"{name}.jsonl"
        run_policy(problems, policy, weak, strong, KeywordPRM(), run, trace_path=paths[name])
    return paths


@pytest.fixture(scope="module")
def traces(tmp_path_factory):
    return _trace_runs(tmp_path_factory.mktemp("traces"))


def test_metrics_reads_consistent_runs(traces):
    result = console("metrics", traces["weak"], traces["strong"], traces["thr"])
    assert result.returncode == 0 and "TRIM-Thr(k=0.5)" in result.stdout, result.stderr


def _metrics_case(traces, tmp_path, case):
    weak, strong, thr = traces["weak"], traces["strong"], traces["thr"]
    if case == "duplicate ids":
        doubled = tmp_path / "doubled.jsonl"
        doubled.write_text(thr.read_text() + thr.read_text().splitlines(keepends=True)[0])
        return [weak, strong, doubled], [f"{doubled} holds problem 'p0' 2 times (lines 1, 5)"]
    if case == "mixed settings":
        return [weak, strong, traces["thr-seed1"], traces["rsd-seed1"]], [
            f"{weak} and {traces['thr-seed1']} were run with different settings", f"seed is 0 in {weak}, 1 in"]
    if case == "endpoints over other problems":
        return [weak, traces["strong-3"], thr], [f"{weak} and {traces['strong-3']} cover different problems",
                                                 f"1 only in {weak} (e.g. p3)"]
    if case == "two runs of one policy":
        copy = tmp_path / "copy.jsonl"
        copy.write_text(thr.read_text())
        return [weak, strong, thr, copy], [f"{thr} and {copy} are both runs of TRIM-Thr(k=0.5)"]
    if case == "one file twice":
        return [weak, strong, thr, thr], [f"{thr} is passed twice"]
    if case == "incomplete run":
        cut = tmp_path / "cut.jsonl"
        cut.write_text("".join(thr.read_text().splitlines(keepends=True)[:3]))
        return [weak, strong, cut], [f"{cut} holds 3 of the 4 problems its run was started on"]
    if case == "a directory":
        return [tmp_path], [f"{tmp_path}: is a directory"]
    if case == "a JSON array":
        array = tmp_path / "array.jsonl"
        array.write_text("[1, 2, 3]\n")
        return [array], [f"{array} is not a trace file (line 1 has no problem_id and settings)"]
    if case == "a record without its grade":
        record = json.loads(thr.read_text().splitlines()[0])
        del record["correct"]
        lacking = tmp_path / "lacking.jsonl"
        lacking.write_text(json.dumps(record) + "\n")
        return [lacking], [f"{lacking}:1 has correct = nothing, not true or false"]
    if case == "negative tokens":
        record = json.loads(thr.read_text().splitlines()[0])
        negative = tmp_path / "negative.jsonl"
        negative.write_text(json.dumps({**record, "strong_tokens": -4}) + "\n")
        return [negative], [f"{negative}:1 has strong_tokens = -4, not a number >= 0"]
    if case == "invalid JSON":
        bad = tmp_path / "bad.jsonl"
        bad.write_text(thr.read_text().splitlines(keepends=True)[0] + "{oops}\n" + thr.read_text())
        return [bad], [f"{bad}:2 is not valid JSON"]
    if case == "invalid UTF-8":
        bad = tmp_path / "latin.jsonl"
        bad.write_bytes(thr.read_bytes().splitlines(keepends=True)[0] + b'{"problem_id": "\xe9"}\n')
        return [bad], [f"{bad}:2 is not valid UTF-8"]
    raise AssertionError(case)


@pytest.mark.parametrize("case", ["duplicate ids", "mixed settings", "endpoints over other problems",
                                  "two runs of one policy", "one file twice", "incomplete run", "a directory",
                                  "a JSON array", "a record without its grade", "negative tokens", "invalid JSON",
                                  "invalid UTF-8"])
def test_metrics_refuses_what_it_cannot_measure(traces, tmp_path, case):
    files, needles = _metrics_case(traces, tmp_path, case)
    assert_one_line_error(console("metrics", *files), "trim metrics: error:", *needles)


def _read_only_dir(tmp_path):
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    if not os.access(folder, os.W_OK):  # not root: permissions hold
        return folder / "out"
    for candidate in ("/sys/trim-out", "/proc/trim-out"):  # root ignores permissions: a read-only mount
        try:
            os.mkdir(candidate)
        except OSError:
            return candidate
        os.rmdir(candidate)
    pytest.skip("no read-only place to write to")


def _limit_file_size():
    import resource
    import signal

    # Writes past 4 KiB fail (EFBIG) instead of killing the process: a disk that is full for this run.
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)


def _models_with(tmp_path, role, make):
    from trim.testbed import DATA_DIR

    folder = tmp_path / "models"
    for r in ("weak", "strong", "prm", "tokenizer"):
        shutil.copytree(DATA_DIR / r, folder / r)
    make(folder / role)
    return folder


def _corrupt(folder):
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])


def _causal_lm(folder):
    from trim.testbed import DATA_DIR

    shutil.rmtree(folder)
    shutil.copytree(DATA_DIR / "weak", folder)


def test_run_errors_are_one_line_before_any_model_loads(tmp_path):
    few = ["--problems", "2", "--quiet"]
    a_file = tmp_path / "file"
    a_file.write_text("x")
    assert_one_line_error(console("run", *few, "--out", a_file), f"--out {a_file} is a file")
    below = a_file / "below"
    assert_one_line_error(console("run", *few, "--out", below), f"--out {below} cannot be written")
    read_only = _read_only_dir(tmp_path)
    assert_one_line_error(console("run", *few, "--out", read_only), f"--out {read_only} cannot be written")
    full = tmp_path / "full"
    assert_one_line_error(console("run", *few, "--out", full, preexec_fn=_limit_file_size),
                          f"--out {full} cannot be written (File too large)")
    assert_one_line_error(console("run", "--random-matched", "-1"), "unrecognized arguments")
    assert_one_line_error(console("sweep", "--random-matched", "-1"), "must be an integer >= 0, got -1")
    assert_one_line_error(console("run", "--k", "1.5"), "trim run: error: argument --k: must be between 0 and 1")
    assert_one_line_error(console("testbed", "report", "--problems", "0"), "must be a positive integer, got 0")
    assert_one_line_error(console("testbed", "report", "--problems", "-3"), "must be a positive integer, got -3")
    assert_one_line_error(console("testbed", "report", "--out", tmp_path), f"--out {tmp_path} is a directory")


def test_a_run_over_another_problem_set_or_a_locked_trace_is_refused_before_loading(tmp_path):
    from trim import testbed
    from trim.engine import problem_set
    from trim.traces import TraceWriter

    trace = tmp_path / "weak-only.jsonl"
    settings = {"policy": "weak-only", "policy_class": "WeakOnly", "policy_params": {}, "seed": 0, "max_steps": 30,
                "max_tokens": 4096, "problems": problem_set(testbed.Splits()["test"][:2])}
    trace.write_text(json.dumps({"problem_id": "test-0", "correct": True, "strong_tokens": 0, "weak_tokens": 9,
                                 "discarded_tokens": 0, "num_steps": 2, "regenerated_steps": 0, "steps": [],
                                 "settings": settings}) + "\n")
    line = assert_one_line_error(console("run", "--policy", "weak-only", "--split", "validation", "--problems", "2",
                                         "--quiet", "--out", tmp_path), f"{trace}:1 was written with other settings")
    assert 'problems.first_id is "test-0" in the file, "validation-0" in this run' in line
    with TraceWriter(tmp_path / "strong-only.jsonl", {"held": True}):
        assert_one_line_error(console("run", "--policy", "strong-only", "--problems", "2", "--quiet", "--out",
                                      tmp_path), "strong-only.jsonl is being written by another process")


@pytest.mark.parametrize("role, make, needles", [
    ("weak", _corrupt, ["cannot load the weights", "weak/model.safetensors (SafetensorError"]),
    ("prm", _causal_lm, ["PRM: the checkpoint in", "has no trained weights for score.bias, score.weight"]),
])
def test_broken_model_folders_are_one_line_errors(tmp_path, role, make, needles):
    models = _models_with(tmp_path, role, make)
    assert_one_line_error(console("run", "--problems", "2", "--quiet", "--models", models, "--out", tmp_path / "out"),
                          *needles)


def test_presets_are_choices_and_bad_combinations_are_refused(capsys, tmp_path):
    from trim.presets import PRESETS

    with pytest.raises(SystemExit):
        main(["run", "--preset", "nope"])
    usage = capsys.readouterr().err
    assert all(name in usage for name in PRESETS)
    code, _, err = run_cli(capsys, "run", "--dataset", "math500", "--quiet", "--out", tmp_path)
    assert code == 2 and "solve only their own task" in err
    code, _, err = run_cli(capsys, "run", "--preset", "colab-t4", "--models", tmp_path, "--out", tmp_path)
    assert code == 2 and "cannot be combined with --preset colab-t4" in err
    code, _, err = run_cli(capsys, "run", "--preset", "colab-t4", "--testbed-prm", "real-noise", "--out", tmp_path)
    assert code == 2 and "--testbed-prm real-noise knows the testbed's task only" in err
