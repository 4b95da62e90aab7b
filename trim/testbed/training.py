"""What every testbed training run shares: model sizes, batching, the learning-rate schedule, the record.

Kept apart from the command (`trim.testbed.train`) so that the language-model and PRM trainers import
it without importing each other."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
from transformers import LlamaConfig, PreTrainedTokenizerFast

# Sizes: the strong model is wider and deeper than the weak one, as Qwen2.5-7B is to 1.5B. A PRM starts
# from a trained model's weights and takes its size; "prm" is the size of one trained from scratch.
# Every head is 32 wide: vLLM's CPU attention kernels take head sizes 32, 64, 80, ... only.
MODEL_SIZES = {
    "weak": dict(hidden_size=128, intermediate_size=384, num_hidden_layers=4, num_attention_heads=4),
    "strong": dict(hidden_size=160, intermediate_size=480, num_hidden_layers=5, num_attention_heads=5),
}
MODEL_SIZES["prm"] = MODEL_SIZES["weak"]
MAX_POSITIONS = 384


def llama_config(role: str, tokenizer: PreTrainedTokenizerFast, **extra) -> LlamaConfig:
    size = MODEL_SIZES[role]
    return LlamaConfig(
        vocab_size=len(tokenizer),
        num_key_value_heads=size["num_attention_heads"],
        max_position_embeddings=MAX_POSITIONS,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
        **size,
        **extra,
    )


def length_bucketed(stream, batch_size: int, rng: np.random.Generator, pool_batches: int = 8):
    """Batches of similar chain length (padding costs as much CPU as real tokens), in random order."""
    while True:
        pool = sorted((next(stream) for _ in range(batch_size * pool_batches)), key=lambda p: len(p.operations))
        chunks = [pool[i: i + batch_size] for i in range(0, len(pool), batch_size)]
        for index in rng.permutation(len(chunks)):
            yield chunks[index]


def write_record(out: Path, record: dict) -> None:
    (out / "training.json").write_text(json.dumps(record, indent=2) + "\n")


def cosine_lr(step: int, total: int, peak: float, warmup: int = 200) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))
