"""The shipped testbed: it loads like real models, is deterministic, and is calibrated."""

import json
import time

import numpy as np
import pytest
from transformers import AutoModelForCausalLM, AutoModelForTokenClassification, AutoTokenizer

from trim import testbed
from trim.hashing import join_key
from trim.protocols import StepRequest
from trim.testbed import DATA_DIR, evaluate, task
from trim.testbed.reference import REAL
from trim.testbed.report import TARGETS


@pytest.fixture(scope="module")
def tb():
    return testbed.load(seed=0)


@pytest.mark.parametrize("name, auto", [("weak", AutoModelForCausalLM), ("strong", AutoModelForCausalLM),
                                        ("prm", AutoModelForTokenClassification)])
def test_checkpoints_load_like_real_models(name, auto):
    tokenizer = AutoTokenizer.from_pretrained(DATA_DIR / name)
    model = auto.from_pretrained(DATA_DIR / name)
    assert tokenizer.convert_tokens_to_ids("<extra_0>") != tokenizer.unk_token_id
    assert model.config.vocab_size == len(tokenizer)
    assert (DATA_DIR / name / "training.json").is_file()


def test_documented_training_commands_are_the_recorded_ones():
    """data/testbed/README.md and train.py's docstring give the command each shipped model's training.json
    records, so that whoever retrains from the docs reproduces the shipped checkpoints."""
    import trim.testbed.train

    readme = (DATA_DIR / "README.md").read_text()
    docstring = " ".join(trim.testbed.train.__doc__.replace("\\\n", " ").split())  # shell line continuations
    for name in ("tokenizer", "weak", "strong", "prm"):
        command = json.loads((DATA_DIR / name / "training.json").read_text())["command"]
        assert command in readme, f"data/testbed/README.md lacks {name}'s recorded command: {command}"
        assert command in docstring, f"train.py's docstring lacks {name}'s command: {command}"


def test_checkpoints_fit_the_size_budget():
    size = sum(f.stat().st_size for f in DATA_DIR.rglob("*") if f.is_file())
    assert size < 60e6, f"testbed is {size / 1e6:.1f} MB"


def test_problem_generator_is_deterministic_and_splits_are_disjoint():
    a, b = task.make_split("test"), task.make_split("test")
    assert [p.question for p in a] == [p.question for p in b]
    assert [p.question for p in task.make_split("test", seed=1)] != [p.question for p in a]
    lengths = {len(p.operations) for p in a}
    assert min(lengths) == 2 and max(lengths) == 10
    shifted = task.make_split("shifted")
    assert min(len(p.operations) for p in shifted) >= 8
    train = {p.question for p in task.make_split("train")}
    assert not train & {p.question for p in a}, "test problems leak into train"


def test_shipped_evaluation_splits_are_the_generators_output():
    """data/testbed/splits.json is read instead of generating seed 0's evaluation splits; it must hold
    exactly what the generator makes (rewrite it with `task.write_shipped_splits()` if the generator changes)."""
    for name in ("validation", "test", "shifted"):
        assert task.make_split(name) == list(task._generate_split(name, 0)), name
    assert task.make_split("test", size=3) == list(task._generate_split("test", 0)[:3])


def test_tokenizer_round_trips_every_solution_string():
    tokenizer = AutoTokenizer.from_pretrained(DATA_DIR / "tokenizer")
    rng = np.random.default_rng(0)
    for split in task.SPLITS:
        for p in task.make_split(split, size=500):
            steps, _ = task.demonstration(p, rng, task.WEAK_TEACHER)
            for text in (p.question, p.gold_solution(), task.STEP_DELIMITER.join(steps)):
                ids = tokenizer(text, add_special_tokens=False).input_ids
                assert tokenizer.decode(ids) == text
    assert len(tokenizer.tokenize(task.STEP_DELIMITER)) == 1


def test_same_seed_same_steps_and_shared_prefix_shared_continuation(tb):
    problems = tb.splits["test"][:16]
    requests = [StepRequest(p.id, p.question, tuple(p.gold_steps()[:2]), seed=3) for p in problems]
    first = tb.weak.propose(requests)
    # Another batch composition and order: each row's text depends only on its own seed and prefix.
    again = tb.weak.propose(list(reversed(requests)) + requests[:3])[: len(requests)][::-1]
    step = lambda p: (p.text, p.tokens, p.finished, p.truncated)  # noqa: E731
    assert [step(p) for p in first] == [step(p) for p in again]
    # The step's confidence comes from logits of another batch shape: equal to float noise.
    assert np.allclose([p.mean_logprob for p in first], [p.mean_logprob for p in again], atol=1e-5)
    other = tb.weak.propose([StepRequest(r.problem_id, r.question, r.steps, seed=4) for r in requests])
    assert other != first


def test_a_fixed_seed_sample_lands_in_the_calibration_ranges(tb):
    start = time.time()
    problems = tb.splits["test"][:200]
    for role in ("weak", "strong"):
        generator = getattr(tb, role)
        steps = evaluate.next_step_samples(generator, problems, seed=0)
        solutions = evaluate.solution_table(evaluate.sample_solutions(generator, problems, seed=0))
        low, high = TARGETS[role]["next_step_accuracy"]
        assert low <= steps["correct"].mean() <= high, (role, steps["correct"].mean())
        low, high = TARGETS[role]["solution_accuracy"]
        assert low <= solutions["solution_accuracy"] <= high, (role, solutions)
        if role == "weak":
            # A wrong step rarely ends in a right answer: a second error must cancel the first, or the step be
            # wrong only in its working (a wrong intermediate, a right result). (The strong model writes too
            # few wrong solutions in 200 problems for its share to mean much.)
            assert solutions["cascade_recovery"] < 0.15
            errors = 1 - steps.groupby("step_type")["correct"].mean()
            assert errors.max() >= 3 * errors.min(), errors.to_dict()
    print(f"calibration sample of {len(problems)} problems in {time.time() - start:.1f} s")


def test_prm_separates_first_errors_from_clean_steps(tb):
    samples = evaluate.sample_solutions(tb.weak, tb.splits["test"][:200], seed=0)
    table = evaluate.prm_step_table(tb.prm, samples)
    auc = evaluate.state_auroc(table["score"].to_numpy(), table["state"].to_numpy())
    low, high = REAL["PRM AUROC S0 vs S2"][1]
    assert low - 0.03 <= auc <= high + 0.03, auc  # 200 problems: a little sampling slack around the range


def test_hidden_states_follow_the_first_error():
    assert evaluate.step_states([True, True, False, True, False]) == ["S0", "S0", "S2", "S1", "S1"]
    scores = np.array([0.95, 0.9, 0.2, 0.6, 0.7])
    states = np.array(evaluate.step_states([True, True, False, True, True]))
    stats = evaluate.state_stats(scores, states)
    assert stats["S0"]["P(r>=0.9)"] == 1.0 and stats["S2"]["P(r<0.5)"] == 1.0 and stats["S1"]["steps"] == 2
    assert evaluate.state_auroc(scores, states) == 1.0


def test_report_table_names_every_range_of_the_issue():
    from trim.testbed.reference import REAL, real_prm_bin_masses

    for state in ("S0", "S1", "S2"):
        assert abs(sum(real_prm_bin_masses(state)) - 1) < 1e-9
    assert all(low <= high for _, (low, high) in REAL.values())


def test_the_ranges_on_a_fresh_sample_of_the_task(tb):
    """Problems drawn with another seed than the shipped splits', weak-model steps labelled exactly: the
    calibration must be the task's, not the shipped test split's. Every range of the weak model, the
    step lengths, the PRM by hidden state and self-confidence is asserted."""
    start = time.time()
    problems = task.make_split("test", seed=7, size=100)
    assert not {p.question for p in problems} & {p.question for p in tb.splits["test"]}
    steps = evaluate.next_step_samples(tb.weak, problems, seed=7)
    samples = evaluate.sample_solutions(tb.weak, problems, seed=7)
    table = evaluate.prm_step_table(tb.prm, samples)
    confidence = np.array([c for cs in evaluate.self_confidence(tb.weak, samples) for c in cs])
    scores, states = table["score"].to_numpy(), table["state"].to_numpy()
    stats = evaluate.state_stats(scores, states)
    lengths = evaluate.step_length_stats(samples)
    prm_auc, self_auc = evaluate.state_auroc(scores, states), evaluate.state_auroc(confidence, states)
    measured = {
        "weak next-step accuracy": steps["correct"].mean(),
        "weak whole-solution accuracy": evaluate.solution_table(samples)["solution_accuracy"],
        "weak steps per solution": lengths["steps_per_solution"],
        "weak tokens-per-step CV": lengths["tokens_per_step_cv"],
        "weak first-error length / mean step": lengths["first_error_length_ratio"],
        "PRM S0 P(r<0.5)": stats["S0"]["P(r<0.5)"], "PRM S0 P(r>=0.9)": stats["S0"]["P(r>=0.9)"],
        "PRM S2 P(r<0.5)": stats["S2"]["P(r<0.5)"], "PRM S2 P(r>=0.9)": stats["S2"]["P(r>=0.9)"],
        "PRM S1 P(r<0.5)": stats["S1"]["P(r<0.5)"], "PRM AUROC S0 vs S2": prm_auc,
        "self-confidence AUROC S0 vs S2": self_auc, "PRM AUROC minus self-confidence AUROC": prm_auc - self_auc,
    }
    # 100 problems carry sampling error: every range gets a little slack.
    failures = {name: round(float(value), 3) for name, value in measured.items()
                if not REAL[name][1][0] - 0.05 <= value <= REAL[name][1][1] + 0.05}
    print(f"fresh sample of {len(problems)} problems in {time.time() - start:.0f} s: {measured}")
    assert not failures, failures


def test_real_noise_prm_reports_each_hidden_state_with_the_real_prms_noise():
    from trim.testbed.oracle import RealNoisePRM
    from trim.testbed.reference import REAL_PRM_STATES

    for state, real in REAL_PRM_STATES.items():
        r = np.array([RealNoisePRM._draw(state, f"{state}-{i}") for i in range(20000)])
        for name, rate in (("P(r<0.1)", np.mean(r < 0.1)), ("P(r<0.5)", np.mean(r < 0.5)),
                           ("P(r>=0.9)", np.mean(r >= 0.9)), ("P(r>=0.95)", np.mean(r >= 0.95))):
            assert abs(rate - real[name]) < 0.015, (state, name, rate)
    problems = task.make_split("validation", size=20)
    prm, other = RealNoisePRM(problems), RealNoisePRM(problems, seed=1)
    p = problems[0]
    gold = p.gold_steps()
    wrong = [gold[0], gold[0], *gold[2:]]  # step 2 repeats step 1: the first error
    assert task.step_labels(p, wrong)[:2] == [True, False]
    full = prm.score([p.question], [wrong])[0]
    # A step scores the same in every prefix that holds it, and is drawn from its own state's distribution.
    assert [prm.score([p.question], [wrong[:k]])[0] for k in (1, 2)] == [full[:1], full[:2]]
    assert full[1] == RealNoisePRM._draw("S2", join_key(0, p.question, *wrong[:2]))
    assert full[2] == RealNoisePRM._draw("S1", join_key(0, p.question, *wrong[:3]))
    assert other.score([p.question], [wrong])[0] != full and prm.name != other.name
    with pytest.raises(KeyError, match="pass every problem you route to RealNoisePRM"):
        prm.score(["a question it was not given"], [["1) 2 + 2 = 4"]])


def test_steps_write_their_working_and_the_checker_reads_it():
    problem = task.ChainProblem("t", 7, (task.Operation("cube"), task.Operation("minus", 5),
                                         task.Operation("times", 8)))
    steps = problem.gold_steps()
    assert steps[0] == "1) 7 ^ 3 = 7 * 7 * 7: 7 * 7 = 49 - 44 = 5, 5 * 7 = 35 - 33 = 2"
    assert steps[1] == "2) 2 - 5 = 13 - 5 = 8"  # a borrow is written out
    assert steps[2].endswith("= 64 - 55 = 9, so the answer is \\boxed{9}.") and problem.answer == "9"
    assert task.step_labels(problem, steps) == [True, True, True]
    assert [task.step_result(s) for s in steps] == [2, 8, 9]
    # One wrong fact inside the working makes the step wrong, and the next step is judged from its value.
    slipped = "1) 7 ^ 3 = 7 * 7 * 7: 7 * 7 = 49 - 44 = 5, 5 * 7 = 36 - 33 = 3"
    assert task.step_labels(problem, [slipped, "2) 3 - 5 = 14 - 5 = 9"]) == [False, True]
    lengths = [len(s) for s in task.make_split("validation", size=50)[0].gold_steps()]
    assert max(lengths) > 2 * min(lengths)


def test_demonstration_labels_match_the_checker_and_misconceptions_always_fire():
    rng = np.random.default_rng(0)
    for p in task.make_split("validation", size=300):
        for teacher in (task.WEAK_TEACHER, task.STRONG_TEACHER):
            steps, correct = task.demonstration(p, rng, teacher)
            assert correct == task.step_labels(p, steps)
    # 7 * 8 = 54 is the weak teacher's misconception: every time, with no random slip needed.
    problem = task.ChainProblem("m", 7, (task.Operation("times", 8),))
    no_slips = type(task.WEAK_TEACHER)({k: 0.0 for k in task.FACT_KINDS},
                                       misconceptions=task.WEAK_TEACHER.misconceptions)
    steps, correct = task.demonstration(problem, rng, no_slips)
    assert steps == ["1) 7 * 8 = 54 - 44 = 10, so the answer is \\boxed{10}."] and correct == [False]


def test_prm_labels_calibration_fit_and_fold():
    import torch
    from transformers import LlamaConfig, LlamaForTokenClassification

    from trim.testbed.prm_training import fit_calibration, fold_calibration, prm_labels

    # Bad: the first error and the step right after it; later steps on their own merits.
    assert prm_labels([True, False, True, True, False]) == [True, False, False, True, False]
    assert prm_labels([True, True]) == [True, True]
    # Scores drawn from a known temperature and shift of per-state logits: the fit recovers a calibration
    # whose per-state histograms are near the real PRM's.
    from trim.testbed.reference import REAL_PRM_BINS, real_prm_bin_masses

    rng = np.random.default_rng(0)
    states = np.array(["S0"] * 4000 + ["S1"] * 1000 + ["S2"] * 1000)
    logits = np.where(states == "S0", rng.normal(6, 2, len(states)),
                      np.where(states == "S2", rng.normal(-3, 3, len(states)), rng.normal(1, 3, len(states))))
    scores = 1 / (1 + np.exp(-logits))
    temperature, shift, distance = fit_calibration(scores, states)
    assert distance < 0.05
    calibrated = 1 / (1 + np.exp(-(logits / temperature + shift)))
    for state in ("S0", "S2"):
        mass = np.histogram(calibrated[states == state], bins=REAL_PRM_BINS)[0] / (states == state).sum()
        assert np.abs(mass - real_prm_bin_masses(state)).max() < 0.12, (state, mass)
    # The rates fit lands every ranged per-state rate in its range when the separation allows it.
    from trim.testbed.prm_training import RANGED_RATES, fit_rates
    from trim.testbed.reference import REAL

    temperature, shift, _ = fit_rates(scores, states)
    calibrated = 1 / (1 + np.exp(-(logits / temperature + shift)))
    for state, threshold, side in RANGED_RATES:
        r = calibrated[states == state]
        rate = np.mean(r < threshold) if side == "<" else np.mean(r >= threshold)
        low, high = REAL[f"PRM {state} P(r{side}{threshold})"][1]
        assert low <= rate <= high, (state, threshold, side, rate)
    # Selection by rates keeps a checkpoint whose AUROC is in the real PRM's range over a closer fit that
    # separates the states better than the real PRM does (no calibration can make it a worse judge).
    from trim.testbed.prm_training import select_checkpoint

    def entry(step, auroc, distance):
        return {"step": step, "validation_auroc_S0_vs_S2": auroc,
                "rates_calibration": {"temperature": 1.0, "shift": 0.0, "rates_distance": distance}}

    assert select_checkpoint([entry(200, 0.95, 0.4), entry(400, 0.995, 0.1)], "rates", 0.961)[0]["step"] == 200
    assert select_checkpoint([entry(200, 0.95, 0.4), entry(400, 0.97, 0.1)], "rates", 0.961)[0]["step"] == 400
    # Folding into the head changes the logit margin exactly as asked.
    config = LlamaConfig(vocab_size=20, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_labels=2)
    model = LlamaForTokenClassification(config).eval()
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        before = model(input_ids=ids).logits.diff(dim=-1)
        fold_calibration(model, 2.5, -0.7)
        after = model(input_ids=ids).logits.diff(dim=-1)
    assert torch.allclose(after, before / 2.5 - 0.7, atol=1e-5)


def test_retraining_reproduces_the_shipped_tokenizer_and_training_is_seeded(tmp_path):
    """The tokenizer retrains byte for byte; a language model and a PRM trained twice from one seed (a
    few steps, the shipped code path) come out with identical weights, and differ with another seed."""
    import torch
    from safetensors.torch import load_file

    from trim.testbed.train import main

    main(["tokenizer", "--out", str(tmp_path / "tokenizer")])
    for name in ("tokenizer.json", "chat_template.jinja", "tokenizer_config.json"):
        assert (tmp_path / "tokenizer" / name).read_bytes() == (DATA_DIR / "tokenizer" / name).read_bytes(), name
    # The models keep the tokenizer files they were saved with (transformers 4 wrote them in another layout);
    # they must tokenize exactly as the retrained tokenizer does.
    from transformers import PreTrainedTokenizerFast

    retrained = PreTrainedTokenizerFast.from_pretrained(tmp_path / "tokenizer")
    texts = [text for p in testbed.Splits()["test"][:300] for text in (p.question, *p.gold_steps())]
    for role in ("weak", "strong", "prm"):
        shipped = PreTrainedTokenizerFast.from_pretrained(DATA_DIR / role)
        assert shipped(texts).input_ids == retrained(texts).input_ids, role

    def weights(kind, seed, *extra):
        out = tmp_path / f"{kind}-{seed}"
        main([kind, *extra, "--steps", "2", "--eval-every", "2", "--batch-size", "8", "--seed", str(seed),
              "--out", str(out)])
        record = json.loads((out / "training.json").read_text())
        assert record["command"].startswith(f"python -m trim.testbed.train {kind}") and record["seed"] == seed
        return load_file(out / "model.safetensors")

    small_prm = ["--weak-samples", "8", "--validation-samples", "8"]
    for kind, extra in (("lm", ["--role", "weak"]), ("prm", small_prm)):
        first, again, other = weights(kind, 0, *extra), weights(kind, 0, *extra), weights(kind, 1, *extra)
        assert first.keys() == again.keys()
        assert all(torch.equal(first[k], again[k]) for k in first), kind
        assert not all(torch.equal(first[k], other[k]) for k in first), kind
    # --stop-after ends a longer schedule early: the steps it runs are the whole schedule's first steps.
    runs = {}
    for name, stop in (("whole", []), ("early", ["--stop-after", "2"])):
        main(["prm", *small_prm, "--steps", "4", *stop, "--eval-every", "1", "--batch-size", "8",
              "--out", str(tmp_path / name)])
        record = json.loads((tmp_path / name / "training.json").read_text())
        runs[name] = record, [{k: v for k, v in h.items() if k != "minutes"} for h in record["history"]]
    (whole, whole_history), (early, early_history) = runs["whole"], runs["early"]
    assert (whole["steps_run"], early["steps_run"], early["steps_planned"]) == (4, 2, 4)
    assert early_history == whole_history[:2]
    # ... and keeps its checkpoints, so that --resume continues it to exactly the whole run's weights.
    assert not (tmp_path / "whole" / "checkpoints").exists() and (tmp_path / "early" / "checkpoints").is_dir()
    early_args = ["prm", *small_prm, "--steps", "4", "--eval-every", "1", "--batch-size", "8",
                  "--out", str(tmp_path / "early")]
    with pytest.raises(SystemExit, match="other options"):
        main([*early_args, "--resume", "--lr", "1e-3"])
    main([*early_args, "--resume"])
    resumed = json.loads((tmp_path / "early" / "training.json").read_text())
    assert resumed["steps_run"] == 4 and resumed["resumed_by"][0].endswith("--resume")
    assert [{k: v for k, v in h.items() if k != "minutes"} for h in resumed["history"]] == whole_history
    whole_weights, resumed_weights = (load_file(tmp_path / name / "model.safetensors") for name in ("whole", "early"))
    assert all(torch.equal(whole_weights[k], resumed_weights[k]) for k in whole_weights)


def test_prm_token_labels_mark_a_first_error_from_where_it_leaves_the_gold_step():
    from transformers import PreTrainedTokenizerFast

    from trim.testbed.prm_training import prm_example, token_label_ends
    from trim.testbed.tokenizer import STEP_TAG

    tokenizer = PreTrainedTokenizerFast.from_pretrained(DATA_DIR / "tokenizer")
    problem = next(p for p in task.make_split("validation", size=50) if len(p.operations) >= 3)
    gold = problem.gold_steps()
    slip = gold[1].rsplit("=", 1)[0] + "= 99"  # the right working, then a wrong result
    steps = [gold[0], slip, *gold[2:]]
    correct = task.step_labels(problem, steps)
    assert correct[:2] == [True, False]
    ends = token_label_ends(problem, steps, correct)
    assert ends[0] == len(gold[0]) and ends[1] == len(slip) - 2 and all(e is None for e in ends[2:])
    labels = [True, False, *([True] * (len(steps) - 2))]
    ids, targets = prm_example(tokenizer, problem.question, steps, labels, ends)
    plain_ids, plain_targets = prm_example(tokenizer, problem.question, steps, labels)
    tag = tokenizer.convert_tokens_to_ids(STEP_TAG)
    assert ids == plain_ids and [t for i, t in zip(ids, targets) if i == tag] == [int(x) for x in labels]
    labelled = [(tokenizer.decode([i]), t) for i, t in zip(ids, targets) if t != -100 and i != tag]
    text = "".join(piece for piece, _ in labelled)
    assert text.replace(" ", "") == (gold[0] + slip).replace(" ", "")  # the first two steps' tokens, no others
    assert [t for _, t in labelled][-2:] == [0, 0] and all(t == 1 for _, t in labelled[:-2])


def test_prm_training_options_error_rich_data_and_identity_layers():
    """The shipped PRM's data and model options: error-rich demonstrations are labelled exactly (forgotten
    boxes included) and rich in errors, more so uncapped at a higher slip rate; with no error-rich share the
    stream is the first PRM's recipe; extra layers start as the identity, so the deepened model scores
    exactly as the model it starts from."""
    import torch
    from transformers import LlamaForTokenClassification

    from trim.testbed.prm_training import deepened, error_rich_teacher, prm_demonstration

    problems = task.make_split("train", size=400)
    rng = np.random.default_rng(0)
    rich = [prm_demonstration(p, rng, error_rich_share=1.0) for p in problems]
    assert all(correct == task.step_labels(p, steps) for p, (steps, correct) in zip(problems, rich))
    assert np.mean([not all(c) for _, c in rich]) > 0.5
    assert any("boxed" not in steps[-1] for steps, _ in rich)
    # Uncapped and denser, it puts several wrong steps in a solution, each still labelled exactly.
    dense = [prm_demonstration(p, rng, 1.0, error_rich_teacher(0.25, None)) for p in problems]
    assert all(correct == task.step_labels(p, steps) for p, (steps, correct) in zip(problems, dense))
    assert np.mean([c.count(False) for _, c in dense]) > 1.5 * np.mean([c.count(False) for _, c in rich])
    shipped, again = np.random.default_rng(1), np.random.default_rng(1)
    for p in problems[:50]:
        teacher = task.WEAK_TEACHER if again.random() < 0.7 else task.STRONG_TEACHER
        assert prm_demonstration(p, shipped) == task.demonstration(p, again, teacher)

    base = LlamaForTokenClassification.from_pretrained(DATA_DIR / "weak", num_labels=2).eval()
    deep = deepened(DATA_DIR / "weak", extra_layers=2).eval()
    assert deep.config.num_hidden_layers == base.config.num_hidden_layers + 2
    deep.score.load_state_dict(base.score.state_dict())
    ids = torch.tensor([[5, 17, 30, 42, 8, 99]])
    with torch.no_grad():
        assert torch.allclose(deep(ids).logits, base(ids).logits, atol=1e-5)
