"""Prompt rendering shared by every backend: the generator's continued assistant turn and the PRM's input.

Rendering happens here, with the model's own chat template, so that a transformers model, a vLLM
engine and an OpenAI-compatible server (completions endpoint) all see the same text."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Sequence

from trim.protocols import STEP_DELIMITER

# Qwen2.5-Math's system prompt; real-model presets pass it as `system_prompt`. The testbed's models
# were trained without one.
DEFAULT_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."

# Qwen2.5-Math-PRM's step separator, and the label of its 2-label head that means "this step is correct":
# its model card (huggingface.co/Qwen/Qwen2.5-Math-PRM-7B) joins steps with "<extra_0>" and reads each
# step's reward as softmax(logits)[..., 1] at the tag (`make_step_rewards`). The testbed PRM does the same.
PRM_STEP_TAG = "<extra_0>"
PRM_CORRECT_LABEL = 1


def _messages(question: str, system: str | None) -> list[dict]:
    return ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": question}]


def chat_prompt(tokenizer, question: str, steps: Sequence[str], system: str | None = None) -> str:
    """The prompt that continues the assistant turn after the accepted steps (`continue_final_message`)."""
    messages = _messages(question, system)
    if not steps:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    messages.append({"role": "assistant", "content": STEP_DELIMITER.join(steps) + STEP_DELIMITER})
    return tokenizer.apply_chat_template(messages, tokenize=False, continue_final_message=True)


def prm_text(tokenizer, question: str, steps: Sequence[str], step_tag: str = PRM_STEP_TAG,
             system: str | None = None) -> str:
    """The PRM's input: every step followed by the step tag, in the assistant turn (Qwen2.5-Math-PRM)."""
    messages = _messages(question, system)
    messages.append({"role": "assistant", "content": "".join(s + step_tag for s in steps)})
    return tokenizer.apply_chat_template(messages, tokenize=False, continue_final_message=True)


def fit_to_context(encode: Callable[[str, Sequence[str]], list[int]], question: str, steps: Sequence[str],
                   ids: list[int], max_length: int) -> list[int]:
    """A PRM input that fits `max_length` tokens: left truncation that keeps the question.

    The earliest steps are dropped (the fewest that make it fit, found by bisection: fewer steps, fewer
    tokens); their tags go with them, so those steps get no score. Only when the question and the last
    step alone do not fit are the first tokens cut, keeping the last step and its tag. `encode` renders and
    tokenises (question, steps); `ids` is the whole input, already encoded."""
    if len(ids) <= max_length:
        return ids
    low, high, best = 1, len(steps) - 1, None
    while low <= high:
        mid = (low + high) // 2
        kept = encode(question, steps[mid:])
        if len(kept) <= max_length:
            best, high = kept, mid - 1
        else:
            low = mid + 1
    return best if best is not None else encode(question, steps[-1:])[-max_length:]


def load_tokenizer(source: str | Path, **kwargs):
    """The tokenizer saved with a model (a directory or a hub id), as it was saved.

    transformers 5 (which vLLM needs) maps a generic saved fast tokenizer to the architecture's own
    class, whose pre-tokenizer can differ from the saved one (the testbed's splits digits differently),
    so a saved `PreTrainedTokenizerFast` is loaded as that class; everything else through AutoTokenizer."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    config = Path(str(source)) / "tokenizer_config.json"
    if config.is_file() and json.loads(config.read_text()).get("tokenizer_class") == "PreTrainedTokenizerFast":
        return PreTrainedTokenizerFast.from_pretrained(str(source))
    return AutoTokenizer.from_pretrained(str(source), **kwargs)
