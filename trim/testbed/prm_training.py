"""Train the testbed PRM: a token-classification model that scores every step at its `<extra_0>` tag.

Labels (`--labels`, `LABEL_STYLES`). By default a step is labelled *bad* when it is wrong given its own
prefix, or when it directly follows the first wrong step; every other step after an error is judged on
its own. That is how Qwen2.5-Math-PRM behaves, measured (DESIGN 3.1): it scores the first error low (76%
below 0.5), but judges most later steps locally (only 35% below 0.5), so its score is not simply "still
on track". The alternative, `monte-carlo`, labels every step from the first error on bad, as Monte Carlo
estimation does; a trial run with it (with the error-rich teacher and two extra layers below, stopped
at step 800 of 1,200) put up to three quarters of the later steps below 0.5 and scored about a quarter
or more of held-out first errors at 0.9 or more, no better than the default labels, so it is not the
default. The labels are exact, so the PRM's noise comes from the PRM itself, as it should.

Initialisation. From a trained language model's weights (`--init`, the weak model's by default), as real
PRMs start from a language model (Qwen2.5-Math-PRM-7B from Qwen2.5-Math-7B-Instruct): the backbone already
reads the task, and fine-tuning teaches it to judge (and unlearn the weak model's misconceptions).

Data. Whole solutions sampled from the trained weak model on training problems (its real mistakes,
capacity errors included; 16,000 for the shipped PRM), mixed half and half with fresh demonstrations, so
the PRM sees many more distinct problems than sampling on a CPU affords. Three quarters of the shipped
PRM's demonstrations come from a careless teacher (`--error-rich-share 0.75`, `error_rich_teacher`) that
slips on every kind of fact alike, a quarter of its facts (`--error-rich-slip-rate 0.25`) with no cap per
solution (`--error-rich-max-slips 0`), so that wrong additions and subtractions are as common in the data
as the weak model's wrong cubes; the rest come from the weak and strong teachers. Two identity-initialised
layers are stacked on the backbone (`--extra-layers 2`, `deepened`), and the peak learning rate is 1e-3.

Selection and calibration, on validation problems only (never test): the checkpoint whose AUROC between
first errors and steps with a clean prefix is nearest the real PRM's (0.961), then a temperature and a
shift of its logit fitted so that its per-state score distribution is the real PRM's, folded into the
classification head (the model stays an ordinary `transformers` checkpoint). `--select histogram` keeps
the checkpoint whose calibrated histograms are nearest, `--select rates` (the shipped PRM's) the one whose
calibrated ranged rates and AUROC are (`fit_rates`); every checkpoint records both calibrations. A PRM
can become too good a judge: the shipped run's AUROC rose to 0.976 by its last checkpoints, and the rates
selection kept step 800 of 1,200 (0.963).

How the shipped PRM was found. The rate that decides the book's comparisons is the share of first errors
(S2) a PRM scores 0.9 or more while it keeps most clean steps (S0) there: the real PRM's is 0.06, the
range asks at most 0.12. The trials below report it on held-out validation solutions at the score that
keeps 80% of clean steps.

- The first PRM (2,000 sampled weak solutions, the weak and strong teachers' demonstrations only, 5e-4, no
  extra layers; `--select auroc`) waved through most slips in short steps (additions, subtractions,
  doublings) and misread operands with confident scores: 0.167 (on the test split, after calibration, 0.20
  of first errors scored 0.9 or more, and 0.99 of clean steps). It also memorised its sampled solutions:
  of the first errors in the first 500 of its 2,000 weak solutions it let through 2.4%. Yet the weak model's own
  token probabilities single those slips out, and the strong model's mean token log-probability of the
  weak model's steps separates first errors from clean steps with an AUROC of 0.976: the backbone knows,
  the classifier at the tag had not learned to read it.
- A careless teacher at slip rate 0.08 with at most one slip (share 0.5) and two extra layers at 1e-3:
  0.17-0.18 at step 800. `--labels monte-carlo` (every step from the first error on bad), otherwise the
  same: no better, and up to three quarters of the later steps below 0.5, so it is not the default.
- From the strong model (`--init strong`): 0.21-0.23 at steps 200-600, with or without extra layers, and
  with `--token-labels` (a first error's tokens labelled bad from where it leaves the gold step) 0.20 at
  step 600, then 0.24 and 0.21 at steps 200 and 400 with 16,000 sampled solutions.
- 8,000 and then 16,000 sampled solutions (share 0.5, slip rate 0.08): 0.19, 0.15, 0.15 at steps 200-600,
  and with 16,000 a plateau near 0.14 (0.143, 0.188, 0.185, 0.136, 0.143 at steps 200-1,000 of a 4,000-step
  schedule). A corruption test showed why. With a clean step's final result replaced by result + 1, that
  PRM passed the corrupted additions and subtractions as often as the correct ones (0.80 against 0.81 and
  0.68 against 0.72), half the doublings (0.51 against 0.83), and caught cubes and products (0.13-0.15): it
  had not learned to check the short facts, of which its data held few wrong examples.
- The shipped run makes wrong facts dense (share 0.75, slip rate 0.25, uncapped). On its own 500 held-out
  validation solutions (rates fitted on the first 250, measured on the other 250): 0.109, 0.061, 0.068 and
  0.034 at steps 400, 600, 800 and 1,000. The corruption test at step 800, the one kept: corrupted
  additions pass 0.37 (correct ones 0.67), subtractions 0.40 (0.59), doublings 0.00 (0.98), cubes 0.10 and
  products 0.06; at step 400 additions and subtractions still passed as often as the correct ones. Short
  facts are still its weakest, as they are of a real PRM that reads some steps less carefully than others.

The trials' numbers used each run's own held-out solutions, so they compare within a trial, roughly across.
`--stop-after` ends a schedule early, reproducibly, and keeps its checkpoints; `--resume` continues it, or
a run that crashed, from its last checkpoint, exactly as if it had not stopped (same options, same thread
count).
"""

from __future__ import annotations

import json
import math
import pickle
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from transformers import LlamaConfig, LlamaForTokenClassification, PreTrainedTokenizerFast

from trim.backends.prompts import prm_text
from trim.backends.transformers import StepTagPRM, TransformersGenerator
from trim.testbed import DATA_DIR, SAMPLING, task
from trim.testbed.evaluate import prm_step_table, sample_solutions, state_auroc
from trim.testbed.reference import REAL, REAL_PRM_BINS, real_prm_bin_masses
from trim.testbed.tokenizer import STEP_TAG
from trim.testbed.training import cosine_lr, length_bucketed, llama_config, write_record


# A careless demonstrator for PRM data (`--error-rich-share`): slips on every kind of fact alike, misreads
# operands both ways, and sometimes stops before boxing the answer.
def error_rich_teacher(slip_rate: float = 0.08, max_slips: int | None = 1) -> task.Teacher:
    """The careless demonstrator at `slip_rate` per fact, with at most `max_slips` random errors a solution
    (None: no cap). The defaults are the teacher of the trial runs the docstring reports."""
    return task.Teacher({kind: slip_rate for kind in task.FACT_KINDS}, misread_rate=0.1,
                        misread_shifts=(-2, -1, 1, 2), max_slips=max_slips)


ERROR_RICH_TEACHER = error_rich_teacher()
FORGET_BOX_RATE = 0.1  # of its solutions without a slip: the last step forgets the box


def prm_demonstration(problem, rng: np.random.Generator, error_rich_share: float = 0.0,
                      error_rich: task.Teacher = ERROR_RICH_TEACHER) -> tuple[list[str], list[bool]]:
    """A demonstration for PRM training with exact step labels: by the `error_rich` teacher with probability
    `error_rich_share`, otherwise by the weak teacher (70%) or the strong one. With no error-rich share the
    random stream is consumed exactly as the first PRM's training (the weak and strong teachers only) consumed it."""
    if error_rich_share and rng.random() < error_rich_share:
        steps, correct = task.demonstration(problem, rng, error_rich)
        if all(correct) and rng.random() < FORGET_BOX_RATE:
            steps[-1] = steps[-1].split(", so the answer is")[0]
            correct[-1] = False
        return steps, correct
    return task.demonstration(problem, rng, task.WEAK_TEACHER if rng.random() < 0.7 else task.STRONG_TEACHER)


def deepened(path: Path, extra_layers: int = 0):
    """A token classifier with a language model's weights and `extra_layers` more layers on top, each
    starting as the identity (its output projections zeroed), so that training starts from the model as it is.

    Why deeper may help: the weak model's depth computes a step's result only in its last layer, at the
    position *before* the written result; judging the written result means comparing it with that
    prediction, which takes layers after it. Real PRMs are larger than the weak generator too
    (Qwen2.5-Math-PRM-7B against Qwen2.5-1.5B)."""
    depth = LlamaConfig.from_pretrained(path).num_hidden_layers
    model = LlamaForTokenClassification.from_pretrained(path, num_labels=2, num_hidden_layers=depth + extra_layers)
    with torch.no_grad():
        for layer in model.model.layers[depth:]:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
    return model


def prm_example(tokenizer, question: str, steps: list[str], labels: list[bool],
                token_ends: list[int | None] | None = None) -> tuple[list[int], list[int]]:
    """Token ids of the PRM input and a label at every step tag (-100 elsewhere).

    With `token_ends` (`token_label_ends`), the tokens of a step are labelled too: good up to character
    `token_ends[i]` of step i, bad from there on, and unlabelled where it is None."""
    text = prm_text(tokenizer, question, steps, STEP_TAG)
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=token_ends is not None)
    ids = encoded.input_ids
    tag = tokenizer.convert_tokens_to_ids(STEP_TAG)
    labels_iter = iter(labels)
    targets = [int(next(labels_iter)) if i == tag else -100 for i in ids]
    if token_ends is not None:
        cursor = text.index(question) + len(question)
        for step, end in zip(steps, token_ends):
            start = text.index(step, cursor)
            cursor = start + len(step)
            if end is None:
                continue
            for k, (a, b) in enumerate(encoded.offset_mapping):
                if start <= a and b <= cursor and ids[k] != tag:
                    targets[k] = int(b <= start + end)
    return ids, targets


def token_label_ends(problem, steps: list[str], correct: list[bool]) -> list[int | None]:
    """For `prm_example`'s token labels: where each step stops being right, in characters. A step with a clean
    prefix that is right is right to its end; the first wrong step is right up to where it leaves the gold
    step (the canonical right step after a clean prefix); steps after it are not labelled."""
    gold, ends, clean = problem.gold_steps(), [], True
    for i, (step, ok) in enumerate(zip(steps, correct)):
        if not clean or i >= len(gold):
            ends.append(None)
        elif ok:
            ends.append(len(step))
        else:
            right = gold[i]
            ends.append(next((j for j, (x, y) in enumerate(zip(step, right)) if x != y), min(len(step), len(right))))
        clean = clean and ok
    return ends


# How steps are labelled (`--labels`): "first-error" judges each step on its own, except that the step
# right after the first error is bad too; "monte-carlo" calls every step from the first error on bad, as
# Monte Carlo estimation does (a rollout from a wrong prefix rarely reaches the right answer), which is how
# most of Qwen2.5-Math-PRM's training data was labelled.
LABEL_STYLES = {
    "first-error": "bad: wrong given its prefix, or directly after the first wrong step; otherwise good",
    "monte-carlo": "bad: the first wrong step and every step after it; otherwise good",
}


def prm_labels(step_correct: list[bool], style: str = "first-error") -> list[bool]:
    """Good/bad per step, in one of the LABEL_STYLES."""
    if style not in LABEL_STYLES:
        raise ValueError(f"unknown label style {style!r}; choose one of {', '.join(LABEL_STYLES)}")
    first = next((i for i, ok in enumerate(step_correct) if not ok), None)
    if style == "monte-carlo":
        return [first is None or i < first for i in range(len(step_correct))]
    return [bool(ok) and (first is None or i != first + 1) for i, ok in enumerate(step_correct)]


def fit_calibration(scores: np.ndarray, states: np.ndarray) -> tuple[float, float, float]:
    """(temperature, shift) for the logit, so that the per-state score histograms over REAL_PRM_BINS
    are as near the real PRM's as they can be (least squares over S0, S1, S2), and that distance."""
    from scipy.optimize import minimize

    logits = _logits(scores)

    def loss(params):
        calibrated = 1 / (1 + np.exp(-(logits / math.exp(params[0]) + params[1])))
        total = 0.0
        for state in ("S0", "S1", "S2"):
            mass = np.histogram(calibrated[states == state], bins=REAL_PRM_BINS)[0] / max(1, (states == state).sum())
            total += float(np.sum((mass - np.array(real_prm_bin_masses(state))) ** 2))
        return total

    best = min((minimize(loss, start, method="Nelder-Mead") for start in ([0.0, 0.0], [1.0, 0.0], [-1.0, 1.0])),
               key=lambda r: r.fun)
    return math.exp(best.x[0]), float(best.x[1]), float(best.fun)


# The per-state rates the issue ranges (trim.testbed.reference.REAL): state, threshold, below or at-or-above.
RANGED_RATES = (("S0", 0.5, "<"), ("S0", 0.9, ">="), ("S2", 0.5, "<"), ("S2", 0.9, ">="), ("S1", 0.5, "<"))


def _logits(scores: np.ndarray) -> np.ndarray:
    clipped = np.clip(scores, 1e-7, 1 - 1e-7)
    return np.log(clipped) - np.log1p(-clipped)


# Outside its range (shrunk by RANGE_MARGIN of its width at each end) a measure costs OUTSIDE_WEIGHT times
# more than the same distance from the real value inside it.
RANGE_MARGIN, OUTSIDE_WEIGHT = 0.1, 100.0


def range_distance(value, measure: str):
    """How far a measured `value` (a number or an array) is from what `REAL[measure]` asks, in units of its
    range's width, squared: mostly how far it lies outside the range, then how far from the real value.

    The ranges are the contract, checked again on freshly drawn problems, so a calibration that misses
    one range to sit nearer the real value of another is the wrong trade; the margin keeps a fit on
    validation problems away from the edges a fresh sample would scatter across."""
    real, (low, high) = REAL[measure]
    width = high - low
    inner_low, inner_high = low + RANGE_MARGIN * width, high - RANGE_MARGIN * width
    outside = np.maximum(0.0, np.maximum(inner_low - value, value - inner_high)) / width
    return OUTSIDE_WEIGHT * outside ** 2 + ((value - real) / width) ** 2


def fit_rates(scores: np.ndarray, states: np.ndarray) -> tuple[float, float, float]:
    """(temperature, shift) for the logit that bring the five ranged per-state rates (`RANGED_RATES`) into
    their ranges and, within them, nearest the real PRM's (`range_distance`), and that distance.

    The histogram fit (`fit_calibration`) weighs every bin alike, so a PRM too sure of later steps (S1)
    drags the S0 and S2 rates away from the real ones; here the rates the book's policies turn on are
    the target. The rates are step functions of the parameters, so the fit is an exhaustive grid, each
    point counted with sorted per-state logits."""
    logits = _logits(scores)
    temperatures = np.exp(np.linspace(-2.0, 2.5, 91))[:, None]
    shifts = np.linspace(-6.0, 6.0, 241)[None, :]
    distance = np.zeros((temperatures.shape[0], shifts.shape[1]))
    for state, threshold, side in RANGED_RATES:
        ranked = np.sort(logits[states == state])
        # calibrated >= threshold  <=>  logit >= temperature * (logit(threshold) - shift)
        cut = temperatures * (math.log(threshold / (1 - threshold)) - shifts)
        below = np.searchsorted(ranked, cut, side="left") / max(1, len(ranked))
        rate = below if side == "<" else 1 - below
        distance += range_distance(rate, f"PRM {state} P(r{side}{threshold})")
    i, j = np.unravel_index(np.argmin(distance), distance.shape)
    return float(temperatures[i, 0]), float(shifts[0, j]), float(distance[i, j])


def fold_calibration(model, temperature: float, shift: float) -> None:
    """Make the head output logit / temperature + shift for P(good), exactly, in its own weights."""
    with torch.no_grad():
        model.score.weight /= temperature
        model.score.bias /= temperature
        model.score.bias[1] += shift


def collate(examples: list[tuple[list[int], list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    width = max(len(ids) for ids, _ in examples)
    ids = torch.full((len(examples), width), pad_id)
    labels = torch.full((len(examples), width), -100)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, (tokens, targets) in enumerate(examples):
        ids[row, : len(tokens)], mask[row, : len(tokens)] = torch.tensor(tokens), 1
        labels[row, : len(targets)] = torch.tensor(targets)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


# How `--select` picks the checkpoint, and which calibration is folded into it.
SELECTIONS = {
    "auroc": "validation AUROC S0 vs S2 nearest {auroc}, histogram calibration",
    "histogram": "calibrated per-state histograms nearest the real PRM's",
    "rates": "calibrated ranged per-state rates and AUROC in their ranges, then nearest the real PRM's (fit_rates)",
}


def checkpoint_calibrations(scores: np.ndarray, states: np.ndarray) -> dict:
    """What selection reads of a checkpoint on validation solutions: its AUROC and both calibrations."""
    temperature, shift, distance = fit_calibration(scores, states)
    rates_temperature, rates_shift, rates_distance = fit_rates(scores, states)
    return {"validation_auroc_S0_vs_S2": round(state_auroc(scores, states), 4),
            "calibration": {"temperature": temperature, "shift": shift, "histogram_distance": round(distance, 5)},
            "rates_calibration": {"temperature": rates_temperature, "shift": rates_shift,
                                  "rates_distance": round(rates_distance, 5)}}


def _auroc_distance(entry: dict) -> float:
    """A checkpoint's AUROC (S0 vs S2) against its range and the real PRM's (`range_distance`): the sixth
    ranged quantity beside `fit_rates`' five, counted alike.

    A monotone calibration cannot change the AUROC, so the rates fit alone would happily keep a PRM that
    separates the states better than the real one does: too good a judge."""
    return float(range_distance(entry["validation_auroc_S0_vs_S2"], "PRM AUROC S0 vs S2"))


def select_checkpoint(history: list[dict], select: str, target_auroc: float) -> tuple[dict, dict]:
    """The checkpoint `select` keeps (a `history` entry) and the calibration to fold into it."""
    if select == "rates":
        chosen = min(history, key=lambda h: h["rates_calibration"]["rates_distance"] + _auroc_distance(h))
        return chosen, chosen["rates_calibration"]
    if select == "histogram":
        chosen = min(history, key=lambda h: h["calibration"]["histogram_distance"])
    else:
        chosen = min(history, key=lambda h: abs(h["validation_auroc_S0_vs_S2"] - target_auroc))
    return chosen, chosen["calibration"]


# Kept beside each checkpoint so that `--resume` continues the run exactly: the step, the optimizer's
# state, the history so far and the wall time spent; and, once per run, the sampled solutions.
TRAINER_STATE, SAMPLES_FILE = "trainer_state.pt", "samples.pkl"
# The options a resumed run must share with the run it continues (the same numbers, step by step).
RESUME_KEYS = ("seed", "init", "extra_layers", "error_rich_share", "error_rich_slip_rate", "error_rich_max_slips",
               "labels", "token_labels", "validation_samples",
               "weak_samples", "strong_samples", "steps", "batch_size", "lr", "eval_every", "threads", "tokenizer")


def _error_rich(args) -> task.Teacher:
    return error_rich_teacher(args.error_rich_slip_rate, args.error_rich_max_slips or None)


def draw_batch(sampled: list, demos, rng: np.random.Generator, args) -> list:
    """One step's examples: half from the sampled solutions, half fresh demonstrations. Everything random in
    the data is drawn here, so replaying it `step` times puts a resumed run where the first one was."""
    batch = [sampled[i] for i in rng.choice(len(sampled), args.batch_size // 2, replace=False)]
    for p in next(demos):
        steps, correct = prm_demonstration(p, rng, args.error_rich_share, _error_rich(args))
        batch.append((p.question, steps, prm_labels(correct, args.labels),
                      token_label_ends(p, steps, correct) if args.token_labels else None))
    return batch


def _samples(args, out: Path) -> tuple[dict, list, float]:
    """The sampled training solutions by role and the held-out validation solutions: sampled (minutes), or
    read back from a run being resumed."""
    cached = out / SAMPLES_FILE
    if args.resume and cached.is_file():
        with cached.open("rb") as f:
            saved = pickle.load(f)
        print(f"read the sampled solutions of the run being resumed from {cached}", flush=True)
        return saved["pools"], saved["held_out"], saved["sampling_time"]
    start = time.time()
    train_problems = task.make_split("train", seed=0)
    pools = {}
    for role, offset, count in (("weak", 0, args.weak_samples), ("strong", args.weak_samples, args.strong_samples)):
        if not count:
            continue
        generator = TransformersGenerator(DATA_DIR / role, sampling=SAMPLING[role], name=f"testbed-{role}",
                                          seed=args.seed, device="cpu")
        pools[role] = sample_solutions(generator, train_problems[offset: offset + count], seed=args.seed)
        print(f"sampled {count} {role} solutions in {time.time() - start:.0f} s", flush=True)
    weak = TransformersGenerator(DATA_DIR / "weak", sampling=SAMPLING["weak"], name="testbed-weak", seed=args.seed,
                                 device="cpu")
    held_out = sample_solutions(weak, task.make_split("validation", size=args.validation_samples), seed=args.seed)
    sampling_time = time.time() - start
    print(f"sampled {len(held_out)} held-out validation solutions; sampling took {sampling_time:.0f} s", flush=True)
    out.mkdir(parents=True, exist_ok=True)
    with cached.open("wb") as f:
        pickle.dump({"pools": pools, "held_out": held_out, "sampling_time": sampling_time}, f)
    return pools, held_out, sampling_time


def _latest_checkpoint(out: Path) -> Path | None:
    saved = [c for c in (out / "checkpoints").glob("step-*") if (c / TRAINER_STATE).is_file()]
    return max(saved, key=lambda c: int(c.name.split("-")[1]), default=None)


def train_prm(args) -> None:
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    start = time.time()
    tokenizer = PreTrainedTokenizerFast.from_pretrained(args.tokenizer)
    out = Path(args.out or DATA_DIR / "prm")
    pools, held_out, sampling_time = _samples(args, out)
    sampled = [(s.problem.question, s.steps, prm_labels(s.step_correct, args.labels),
                token_label_ends(s.problem, s.steps, s.step_correct) if args.token_labels else None)
               for pool in pools.values() for s in pool]

    latest = _latest_checkpoint(out) if args.resume else None
    if args.resume and latest is None:
        print(f"--resume: no checkpoint with {TRAINER_STATE} under {out / 'checkpoints'}; starting afresh", flush=True)
    if latest is not None:
        saved = torch.load(latest / TRAINER_STATE, weights_only=False)
        # A key the saved run lacks is an option added since, which that run had at its default.
        differs = {k: (saved["args"][k], getattr(args, k)) for k in RESUME_KEYS
                   if k in saved["args"] and saved["args"][k] != getattr(args, k)}
        if differs:
            raise SystemExit(f"--resume: {latest} was trained with other options (saved, now): {differs}; resume "
                             "with the same options, or start a new run in another --out")
        model = LlamaForTokenClassification.from_pretrained(latest)
    elif args.init == "scratch":
        model = LlamaForTokenClassification(llama_config("prm", tokenizer, num_labels=2))
    else:
        model = deepened(DATA_DIR / args.init, args.extra_layers)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01, betas=(0.9, 0.98))
    rng = np.random.default_rng([args.seed, 11])
    demos = length_bucketed(task.iter_problems(args.seed + 1), args.batch_size // 2, rng)
    history, first_step, earlier_wall_time, commands = [], 0, 0.0, [args.command]
    if latest is not None:
        optimizer.load_state_dict(saved["optimizer"])
        torch.set_rng_state(saved["torch_rng"])
        first_step, history, earlier_wall_time = saved["step"], saved["history"], saved["wall_time_s"]
        commands = saved["commands"] + [args.command]
        for _ in range(first_step):  # the data of the steps already taken, drawn again and dropped
            draw_batch(sampled, demos, rng, args)
        print(f"resumed from {latest} (step {first_step})", flush=True)

    def wall_time() -> float:
        return earlier_wall_time + time.time() - start

    for step in range(first_step, args.stop_after or args.steps):
        for group in optimizer.param_groups:
            group["lr"] = cosine_lr(step, args.steps, args.lr)
        batch = draw_batch(sampled, demos, rng, args)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(**collate([prm_example(tokenizer, *b) for b in batch], tokenizer.pad_token_id)).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if (step + 1) % args.eval_every == 0 or step + 1 == args.steps:
            checkpoint = out / "checkpoints" / f"step-{step + 1}"
            model.save_pretrained(checkpoint)
            tokenizer.save_pretrained(checkpoint)
            table = prm_step_table(StepTagPRM(checkpoint, device="cpu"), held_out)
            scores, states = table["score"].to_numpy(), table["state"].to_numpy()
            history.append({"step": step + 1, "loss": round(loss.item(), 4),
                            "minutes": round(wall_time() / 60, 1),
                            **checkpoint_calibrations(scores, states)})
            # Written last: a checkpoint without it (a crash while saving) is not resumed from.
            torch.save({"step": step + 1, "optimizer": optimizer.state_dict(), "torch_rng": torch.get_rng_state(),
                        "history": history, "wall_time_s": wall_time(), "commands": commands,
                        "args": {k: getattr(args, k) for k in RESUME_KEYS}}, checkpoint / TRAINER_STATE)
            print(json.dumps(history[-1]), flush=True)
    # Real PRMs are good but imperfect: keep the checkpoint that, calibrated, is nearest the real PRM by
    # --select (its AUROC, its per-state histograms, or its ranged per-state rates), so the book's PRM is as
    # noisy as the real one is, with the calibration fitted to it folded in.
    chosen, calibration = select_checkpoint(history, args.select, args.target_auroc)
    model = LlamaForTokenClassification.from_pretrained(out / "checkpoints" / f"step-{chosen['step']}")
    fold_calibration(model, calibration["temperature"], calibration["shift"])
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    if history[-1]["step"] == args.steps:  # the whole schedule ran; a run stopped early stays resumable
        shutil.rmtree(out / "checkpoints")
        (out / SAMPLES_FILE).unlink(missing_ok=True)
    write_record(out, {
        "command": commands[0], **({"resumed_by": commands[1:]} if len(commands) > 1 else {}), "seed": args.seed,
        "role": "prm", "initialised_from": args.init, "extra_layers": args.extra_layers,
        "parameters": sum(p.numel() for p in model.parameters()),
        "labels": LABEL_STYLES[args.labels],
        "token_labels": bool(args.token_labels),
        "steps_planned": args.steps, "steps_run": history[-1]["step"], "selected_step": chosen["step"],
        "selection": SELECTIONS[args.select].format(auroc=args.target_auroc),
        "error_rich_share": args.error_rich_share,
        **({"error_rich_teacher": _error_rich(args).record(), "forget_box_rate": FORGET_BOX_RATE}
           if args.error_rich_share else {}),
        "calibration": {**calibration,
                        "fitted_on": f"{len(held_out)} weak solutions of the validation split",
                        "target": ("the real PRM's ranged per-state rates (trim.testbed.reference.REAL)"
                                   if args.select == "rates" else
                                   "the real PRM's per-state score histogram (trim.testbed.reference)")},
        "batch_size": args.batch_size, "sampled_solutions": {role: len(pool) for role, pool in pools.items()},
        "held_out_validation_solutions": len(held_out), "sampling_wall_time_s": round(sampling_time, 1),
        "sampling": {role: params.__dict__ for role, params in SAMPLING.items()},
        "fresh_demonstrations_per_step": args.batch_size - args.batch_size // 2,
        "wall_time_s": round(wall_time(), 1), "threads": args.threads, "history": history,
    })
