"""Routing overhead: a TRIM-Thr run's wall time over plain batched decoding of the same token counts.

Plain decoding = `model.generate` on the same problems, batched, producing as many weak and strong
tokens as the TRIM run decoded, with no step boundaries, PRM or policy. Target: at most 1.3. The TRIM
run's time is also split by role (weak proposals with their prefill, PRM scoring, strong rewrites).

It also prints a lower bound that no schedule can beat on this machine. One problem's steps are a chain:
each weak token, PRM call and strong token waits for the one before, so the problem with the longest
chain needs that many forward passes in sequence, each paying at least a batch-of-one forward's fixed
cost, and the run needs the plain run's per-token work on top. When the bound is near the target, only a
perfect schedule would meet it.

    python benchmarks/routing_overhead.py [--problems 128] [--k 0.5]
"""

import math

import torch
from _common import Timer, counted_forwards, load, parse_args, split_line, timed_roles

from trim.engine import run_policy
from trim.policies import Threshold
from trim.protocols import StepRequest


def plain_decode(generator, problems, tokens_total: int) -> float:
    """Seconds to decode `tokens_total` tokens as one batch of the problems' prompts."""
    per_row = max(1, math.ceil(tokens_total / len(problems)))
    tok = generator.tokenizer
    prompts = [generator.prompt(StepRequest(p.id, p.question)) for p in problems]
    enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False, return_token_type_ids=False)
    torch.manual_seed(0)
    with Timer() as t, torch.inference_mode():
        generator.model.generate(**enc, do_sample=True, max_new_tokens=per_row, min_new_tokens=per_row,
                                 pad_token_id=tok.pad_token_id)
    return t.seconds


def chain(record: dict) -> tuple[int, int, int]:
    """(weak tokens, strong tokens, PRM calls) that one problem's run decoded or made one after another;
    a rewritten step's weak candidate counts, as it was decoded before the PRM judged it."""
    steps = [s for s in record["steps"] if s["score"] is not None]  # the steps the weak model proposed
    weak = sum(s["discarded_tokens"] if s["model"] == "strong" else s["tokens"] for s in steps)
    strong = sum(s["tokens"] for s in steps if s["model"] == "strong")
    return weak, strong, len(steps)


def fixed_cost(generator, problem, tokens: int = 64) -> float:
    """Seconds per forward pass of a batch of one: the part of every forward that no batching shares."""
    return plain_decode(generator, [problem], tokens) / tokens


def prm_call_cost(prm, problems) -> float:
    """Seconds for one PRM call on a single one-step solution not seen before (best of the problems)."""
    times = []
    for p in problems:
        with Timer() as t:
            prm.score([p.question], [p.gold_steps()[:1]])
        times.append(t.seconds)
    return min(times)


def main():
    args = parse_args(__doc__, 128)
    tb, problems = load(args.problems)
    spent = timed_roles(tb.weak, tb.strong, tb.prm)
    forwards = counted_forwards(tb.weak, tb.strong, tb.prm)
    with Timer() as trim_time:
        records = run_policy(problems, Threshold(args.k), tb.weak, tb.strong, tb.prm)
    routed_forwards = dict(forwards)
    forwards.update(seconds=0.0, calls=0)
    weak_tokens = sum(r["weak_tokens"] for r in records)
    strong_tokens = sum(r["strong_tokens"] for r in records)
    weak_s = plain_decode(tb.weak, problems, weak_tokens)
    strong_s = plain_decode(tb.strong, problems, strong_tokens)
    plain_calls = forwards["calls"]
    ratio = trim_time.seconds / (weak_s + strong_s)
    print(f"TRIM-Thr(k={args.k}) on {len(problems)} problems: {trim_time.seconds:.1f} s "
          f"for {weak_tokens} weak + {strong_tokens} strong tokens")
    print(split_line(spent, trim_time.seconds, "policy, grading and bookkeeping"))
    print(f"plain batched decoding of the same counts: weak {weak_s:.1f} s + strong {strong_s:.1f} s")
    print(f"routing overhead ratio: {ratio:.2f} (target <= 1.3)")
    print(f"the routed run's {routed_forwards['calls']} forward passes (the plain runs': {plain_calls}) took "
          f"{routed_forwards['seconds']:.1f} s, {routed_forwards['seconds'] / (weak_s + strong_s):.2f}x the plain "
          "runs: no bookkeeping makes this schedule faster than that")

    # The bound: the per-token work of the plain run (its time less its own fixed costs), plus the longest
    # chain at the fixed cost of each forward pass.
    a_weak, a_strong = fixed_cost(tb.weak, problems[0]), fixed_cost(tb.strong, problems[0])
    a_prm = prm_call_cost(tb.prm, tb.splits["validation"][:5])
    per_row = [math.ceil(n / len(problems)) for n in (weak_tokens, strong_tokens)]
    work = (weak_s - per_row[0] * a_weak) + (strong_s - per_row[1] * a_strong)
    w, s, n = max((chain(r) for r in records), key=lambda c: c[0] * a_weak + c[1] * a_strong + c[2] * a_prm)
    bound = work + w * a_weak + s * a_strong + n * a_prm
    print(f"lower bound for any schedule on this machine: {bound:.1f} s, {bound / (weak_s + strong_s):.2f}x "
          f"(longest chain: {w} weak + {s} strong tokens and {n} PRM calls, at {a_weak * 1e3:.1f} / "
          f"{a_strong * 1e3:.1f} / {a_prm * 1e3:.0f} ms per forward or call, plus the plain run's per-token work "
          f"{work:.1f} s)")


if __name__ == "__main__":
    main()
