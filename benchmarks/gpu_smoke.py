"""The cpu-smoke trio through vLLM on a GPU: SmolLM2-135M-Instruct (offline, from PyPI) as weak and strong
vLLM engines, the testbed PRM on transformers, TRIM-Thr on a few MATH-500 problems.

    .venv-gpu/bin/python benchmarks/gpu_smoke.py        # part of `make gpu-check`

The GGUF file is dequantised once into a transformers directory (vLLM's GGUF loader would want the
tokenizer from the hub). Checks that every step decoded tokens and most hold text, that every solution
ended for a stated reason, and that the same seed gives the same traces; exits non-zero otherwise."""

from __future__ import annotations

import tempfile
from pathlib import Path


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", type=int, default=8, help="MATH-500 problems (a CPU needs minutes for 2)")
    args = parser.parse_args()

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from trim import data, presets
    from trim.backends.vllm import VLLMGenerator
    from trim.engine import run_policy
    from trim.policies import Threshold
    from trim.testbed.vllm_export import engine_args

    preset = presets.PRESETS["cpu-smoke"]
    gguf = dict(preset.weak.options)["gguf_file"]
    source = presets._smollm2()
    target = Path(tempfile.mkdtemp(prefix="smollm2-")) / "hf"
    dequantised = AutoModelForCausalLM.from_pretrained(source, gguf_file=gguf)
    config = dequantised.config  # transformers refuses to save a model loaded from GGUF: copy it into a plain one
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config)
    plain.load_state_dict(dequantised.state_dict())
    plain.save_pretrained(target)
    AutoTokenizer.from_pretrained(source, gguf_file=gguf).save_pretrained(target)

    engine = {**engine_args(), "max_model_len": 2048}
    weak = VLLMGenerator(target, preset.sampling, name="cpu-smoke-weak", **engine)
    strong = VLLMGenerator(target, preset.sampling, name="cpu-smoke-strong", **engine)
    prm = presets._prm(preset)
    problems = data.load_dataset("math500")[: args.problems]
    first = run_policy(problems, Threshold(0.5), weak, strong, prm, progress=False)
    again = run_policy(problems, Threshold(0.5), weak, strong, prm, progress=False)
    steps = [s for r in first for s in r["steps"]]
    assert steps and all(s["tokens"] > 0 for s in steps), "a step decoded no tokens"
    assert sum(bool(s["text"].strip()) for s in steps) >= 0.9 * len(steps), "most steps should hold text"
    assert all(r["num_steps"] >= 1 and r["stop_reason"] for r in first), "a solution ended without a reason"
    assert [r["steps"] for r in first] == [r["steps"] for r in again], "one seed gave two traces"
    print(f"cpu-smoke through vLLM: {len(problems)} problems, {len(steps)} steps, "
          f"{sum(r['regenerated_steps'] for r in first)} regenerated; same seed, same traces")


if __name__ == "__main__":  # vLLM spawns its engine processes
    main()
