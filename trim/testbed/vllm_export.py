"""The testbed PRM rewritten as a `Qwen2ForProcessRewardModel`, the architecture of Qwen2.5-Math-PRM.

vLLM serves Qwen's PRM through that class (a Qwen2 body, a two-layer head, STEP pooling at the step
tag) but has no Llama token-classification model, so the testbed PRM is converted once, exactly:

- the body: a Llama layer is a Qwen2 layer whose q/k/v projections have zero biases;
- the head: the testbed's single linear map z = W h + b (two logits) becomes Qwen's
  Linear(h, h) -> ReLU -> Linear(h, 2) with rows W and -W in the first layer, since
  relu(z) - relu(-z) = z. Every other row is zero; the logits, and so the scores, are unchanged.

With it the vLLM tests exercise the very code path the real PRM takes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja")


def export_prm_for_vllm(source: str | Path, target: str | Path) -> Path:
    """Write `source` (a LlamaForTokenClassification PRM directory) to `target` as a Qwen2 PRM."""
    source, target = Path(source), Path(target)
    config = json.loads((source / "config.json").read_text())
    if config.get("architectures") != ["LlamaForTokenClassification"] or config.get("num_labels", 2) != 2:
        raise ValueError(f"{source}: expected a two-label LlamaForTokenClassification PRM, "
                         f"found {config.get('architectures')}")
    hidden = config["hidden_size"]
    if hidden < 4:
        raise ValueError(f"{source}: hidden size {hidden} is too small to hold the exact head")
    weights = load_file(source / "model.safetensors")
    out = {name: tensor for name, tensor in weights.items() if name.startswith("model.")}
    head_dim = config.get("head_dim") or hidden // config["num_attention_heads"]
    for layer in range(config["num_hidden_layers"]):
        prefix = f"model.layers.{layer}.self_attn."
        out[prefix + "q_proj.bias"] = torch.zeros(config["num_attention_heads"] * head_dim)
        for name in ("k_proj", "v_proj"):
            out[prefix + name + ".bias"] = torch.zeros(config["num_key_value_heads"] * head_dim)
    w, b = weights["score.weight"], weights.get("score.bias", torch.zeros(2))
    first = torch.zeros(hidden, hidden)
    first[0:2], first[2:4] = w, -w
    second = torch.zeros(2, hidden)
    second[0, 0], second[0, 2], second[1, 1], second[1, 3] = 1.0, -1.0, 1.0, -1.0
    out.update({"score.0.weight": first, "score.0.bias": torch.zeros(hidden),
                "score.2.weight": second, "score.2.bias": b.clone()})
    target.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in out.items()}, target / "model.safetensors", metadata={"format": "pt"})
    qwen = {"architectures": ["Qwen2ForProcessRewardModel"], "model_type": "qwen2", "num_labels": 2,
            "tie_word_embeddings": False, "use_sliding_window": False, "sliding_window": None,
            "max_window_layers": config["num_hidden_layers"], "torch_dtype": "float32"}
    keep = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
            "max_position_embeddings", "rms_norm_eps", "rope_theta", "vocab_size", "hidden_act", "bos_token_id",
            "eos_token_id", "pad_token_id")
    qwen.update({key: config[key] for key in keep if key in config})
    (target / "config.json").write_text(json.dumps(qwen, indent=2) + "\n")
    for name in TOKENIZER_FILES:
        if (source / name).is_file():
            shutil.copy(source / name, target / name)
    return target


def engine_args() -> dict:
    """vLLM engine arguments for the testbed's tiny models (float32, eager, as the CPU build needs).

    On a GPU each engine takes a small share of the card: vLLM's default of 90% would leave the next
    engine (the tests start three and a server) nothing. On a CPU the share means CPU memory, which the
    CPU build sizes from VLLM_CPU_KVCACHE_SPACE instead, so it is left alone there."""
    from vllm.platforms import current_platform

    args = dict(dtype="float32", enforce_eager=True)
    if not current_platform.is_cpu():
        args["gpu_memory_utilization"] = 0.15
    return args
