"""Routing overhead: a TRIM-Thr run's wall time over plain batched decoding of the same token counts.

Plain decoding = `model.generate` on the same problems, batched, producing as many weak and strong
tokens as the TRIM run decoded, with no step boundaries, PRM or policy. Target: at most 1.3. The TRIM
run's time is also split by role (weak proposals with their prefill, PRM scoring, strong rewrites).

It also prints the time the routed run spends inside the models' forward passes: bookkeeping aside,
that is what this schedule costs (`forward_floor.py` measures what a leaner forward would save).

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


if __name__ == "__main__":
    main()
