"""`trim testbed report`: the testbed's calibration against the real models, as one table and one figure.

    trim testbed report --problems 1000 --out data/results/testbed_calibration.json
    python -m trim.testbed.report --split-seed 7 --problems 300      # a fresh sample of the task

Everything is measured on weak-model steps labelled exactly, with the testbed's own sampling settings,
beside the real value (`trim.testbed.reference`) and the range the testbed must land in. With `--out`
the per-state PRM score histograms are also drawn into a PNG beside the JSON file.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from trim import prm_quality
from trim.testbed import evaluate, task
from trim.testbed.reference import REAL, REAL_PRM_AUROC, REAL_PRM_STATES, real_prm_bin_masses

# The model ranges by role, as the first report and its tests use them.
TARGETS = {role: {"next_step_accuracy": REAL[f"{role} next-step accuracy"][1],
                  "solution_accuracy": REAL[f"{role} whole-solution accuracy"][1]} for role in ("weak", "strong")}
HISTOGRAM_BINS = 20


def measure(testbed, problems, seed: int = 0) -> dict:
    """Everything the calibration table reports, measured with the testbed's sampling settings."""
    result = {"sampling": {role: getattr(testbed, role).sampling.__dict__ for role in ("weak", "strong")},
              "seed": seed, "problems": len(problems)}
    samples = {}
    for role in ("weak", "strong"):
        generator = getattr(testbed, role)
        steps = evaluate.next_step_samples(generator, problems, seed=seed)
        samples[role] = evaluate.sample_solutions(generator, problems, seed=seed)
        by_type = steps.groupby("step_type")["correct"].mean()
        result[role] = {
            "next_step_accuracy": float(steps["correct"].mean()),
            **evaluate.solution_table(samples[role]),
            **evaluate.step_length_stats(samples[role]),
            "error_rate_by_type": {k: float(1 - v) for k, v in by_type.items()},
        }
    table = evaluate.prm_step_table(testbed.prm, samples["weak"])
    table["self_confidence"] = [c for cs in evaluate.self_confidence(testbed.weak, samples["weak"]) for c in cs]
    scores, labels = table["score"].to_numpy(), table["on_track"].to_numpy().astype(int)
    states, confidence = table["state"].to_numpy(), table["self_confidence"].to_numpy()
    result["prm"] = {
        "auroc": prm_quality.auroc(scores, labels),
        "auroc_s0_s2": evaluate.state_auroc(scores, states),
        "auroc_s0_s1": evaluate.state_auroc(scores, states, "S0", "S1"),
        "states": evaluate.state_stats(scores, states),
        "ece": prm_quality.expected_calibration_error(scores, labels),
        "steps_scored": len(table),
        "processbench": prm_quality.processbench_f1(table),
        "histograms": state_histograms(scores, states),
        "histogram_correct": np.histogram(scores[labels == 1], bins=10, range=(0, 1))[0].tolist(),
        "histogram_wrong": np.histogram(scores[labels == 0], bins=10, range=(0, 1))[0].tolist(),
    }
    result["self_confidence"] = {
        "measure": "weak model's mean token log-probability of its own step given the prefix (temperature 1)",
        "auroc_s0_s2": evaluate.state_auroc(confidence, states),
        "auroc_s0_s1": evaluate.state_auroc(confidence, states, "S0", "S1"),
        "mean_by_state": {s: float(confidence[states == s].mean()) for s in ("S0", "S1", "S2")},
    }
    return result


def _measured(result: dict) -> dict[str, float]:
    weak, strong, prm = result["weak"], result["strong"], result["prm"]
    s = prm["states"]
    return {
        "weak next-step accuracy": weak["next_step_accuracy"],
        "strong next-step accuracy": strong["next_step_accuracy"],
        "weak whole-solution accuracy": weak["solution_accuracy"],
        "strong whole-solution accuracy": strong["solution_accuracy"],
        "weak steps per solution": weak["steps_per_solution"],
        "weak tokens-per-step CV": weak["tokens_per_step_cv"],
        "weak first-error length / mean step": weak["first_error_length_ratio"],
        "PRM S0 P(r<0.5)": s["S0"]["P(r<0.5)"],
        "PRM S0 P(r>=0.9)": s["S0"]["P(r>=0.9)"],
        "PRM S2 P(r<0.5)": s["S2"]["P(r<0.5)"],
        "PRM S2 P(r>=0.9)": s["S2"]["P(r>=0.9)"],
        "PRM S1 P(r<0.5)": s["S1"]["P(r<0.5)"],
        "PRM AUROC S0 vs S2": prm["auroc_s0_s2"],
        "self-confidence AUROC S0 vs S2": result["self_confidence"]["auroc_s0_s2"],
        "PRM AUROC minus self-confidence AUROC": prm["auroc_s0_s2"] - result["self_confidence"]["auroc_s0_s2"],
    }


def calibration_frame(result: dict) -> pd.DataFrame:
    """One row per calibrated measure: the testbed's value, the real one, the range, and whether it holds;
    then the diagnostics without a range."""
    rows = []
    for name, value in _measured(result).items():
        real, (low, high) = REAL[name]
        rows.append((name, value, real, f"[{low:g}, {high:g}]", bool(low <= value <= high)))
    weak, strong, prm = result["weak"], result["strong"], result["prm"]
    for name, value, real in [
        ("weak wrong step yet right answer", weak["cascade_recovery"], None),
        ("strong steps per solution", strong["steps_per_solution"], None),
        ("weak tokens per step", weak["tokens_per_step"], None),
        ("strong tokens per solution", strong["tokens_per_solution"], None),
        ("PRM S0 P(r>=0.95)", prm["states"]["S0"]["P(r>=0.95)"], REAL_PRM_STATES["S0"]["P(r>=0.95)"]),
        ("PRM S1 P(r>=0.9)", prm["states"]["S1"]["P(r>=0.9)"], REAL_PRM_STATES["S1"]["P(r>=0.9)"]),
        ("PRM S2 P(r<0.1)", prm["states"]["S2"]["P(r<0.1)"], REAL_PRM_STATES["S2"]["P(r<0.1)"]),
        ("PRM AUROC S0 vs S1", prm["auroc_s0_s1"], REAL_PRM_AUROC["S0 vs S1"]),
        ("PRM AUROC on-track vs off-track", prm["auroc"], None),
        ("PRM expected calibration error", prm["ece"], None),
    ] + [(f"weak error rate: {k}", v, None) for k, v in weak["error_rate_by_type"].items()]:
        rows.append((name, value, real, "", None))
    return pd.DataFrame(rows, columns=["measure", "testbed", "real", "range", "pass"])


def state_histograms(scores: np.ndarray, states: np.ndarray) -> dict[str, list[int]]:
    """Counts of scores in `HISTOGRAM_BINS` bins on [0, 1], per hidden state."""
    return {s: np.histogram(scores[states == s], bins=HISTOGRAM_BINS, range=(0, 1))[0].tolist()
            for s in ("S0", "S1", "S2")}


def state_histogram_figure(histograms: dict[str, list[int]], title: str | None = None):
    """The testbed PRM's scores per hidden state beside the real PRM's (DESIGN 3.1), in two rows that
    cannot be mixed up: above, the testbed PRM's share of steps per 0.05 bin; below, both PRMs' share of
    steps in each of the four intervals the real PRM's marginals are known for."""
    import matplotlib.pyplot as plt

    from trim.testbed.reference import REAL_PRM_BINS

    fig, axes = plt.subplots(2, 3, figsize=(12, 5.6), sharey="row", gridspec_kw={"height_ratios": [1, 1]})
    names = {"S0": "S0: all steps so far correct", "S1": "S1: an earlier step wrong",
             "S2": "S2: this step is the first error"}
    edges = np.linspace(0, 1, HISTOGRAM_BINS + 1)
    intervals = [f"[{a:g}, {b:g}{']' if b == 1 else ')'}" for a, b in zip(REAL_PRM_BINS[:-1], REAL_PRM_BINS[1:])]
    at = np.arange(len(intervals))
    for column, state in enumerate(("S0", "S1", "S2")):
        top, bottom = axes[0, column], axes[1, column]
        counts = np.array(histograms[state], dtype=float)
        top.bar(edges[:-1], counts / counts.sum(), width=np.diff(edges), align="edge", color="C0", alpha=0.7)
        top.set_title(names[state], fontsize=10)
        top.set_xlabel("PRM score r_t (bins of 0.05)", fontsize=9)
        testbed = [counts[(edges[:-1] >= a - 1e-9) & (edges[:-1] < b - 1e-9)].sum() / counts.sum()
                   for a, b in zip(REAL_PRM_BINS[:-1], REAL_PRM_BINS[1:])]
        bottom.bar(at - 0.2, testbed, width=0.4, color="C0", label="testbed PRM")
        bottom.bar(at + 0.2, real_prm_bin_masses(state), width=0.4, color="C3",
                   label="real Qwen2.5-Math-PRM-7B")
        bottom.set_xticks(at, intervals, fontsize=9)
        bottom.set_xlabel("PRM score r_t (interval)", fontsize=9)
    axes[0, 0].set_ylabel("share of steps\nper 0.05 bin")
    axes[1, 0].set_ylabel("share of steps\nper interval")
    handles, labels = axes[1, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=2, fontsize=9, frameon=False)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return fig


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The report's options, shared by `trim testbed report` and `python -m trim.testbed.report`."""
    from trim.routing_cli import positive_int

    p.add_argument("--problems", type=positive_int, default=1000, help="problems to measure (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed")
    p.add_argument("--split", default="test", choices=list(task.SPLITS), help="split to draw from (default test)")
    p.add_argument("--split-seed", type=int, default=0,
                   help="seed of the problem generator (0: the shipped splits; any other: a fresh sample)")
    p.add_argument("--out", default=None, help="also write the tables as JSON to this file, and the figure")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m trim.testbed.report", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    return p


def main(args) -> int:
    from trim import testbed as tb

    start = time.time()
    testbed = tb.load(split_seed=args.split_seed)  # the generators keep seed 0
    problems = testbed.splits[args.split][: args.problems]
    result = measure(testbed, problems, seed=args.seed)
    result["split"], result["split_seed"] = args.split, args.split_seed
    frame = calibration_frame(result)
    result["table"] = frame.replace({np.nan: None}).to_dict(orient="records")
    with pd.option_context("display.width", 140, "display.max_colwidth", 45, "display.float_format", "{:.4f}".format):
        print(frame.to_string(index=False))
    checked = frame["pass"].dropna()
    print(f"\n{int(checked.sum())} of {len(checked)} ranges hold")
    print(f"{len(problems)} {result['split']} problems (split seed {result['split_seed']}), seed {args.seed}, "
          f"sampling {result['sampling']}, {time.time() - start:.0f} s")
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(result, fh, indent=2)
        figure = state_histogram_figure(result["prm"]["histograms"],
                                        f"PRM score by hidden state, weak steps of {len(problems)} problems")
        figure.savefig(Path(args.out).with_suffix(".png"), dpi=110)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(_parser().parse_args()))
