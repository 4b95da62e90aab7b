"""Presets, the TRL-format PRM and the testbed PRM's export to vLLM's Qwen PRM layout, on CPU."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import AutoModel, LlamaForTokenClassification

from trim import presets, testbed
from trim.backends.separator_prm import SeparatorPRM
from trim.backends.transformers import StepTagPRM
from trim.engine import run_policy
from trim.policies import Threshold
from trim.testbed.training import llama_config
from trim.testbed.vllm_export import export_prm_for_vllm


def test_every_preset_names_its_hardware_memory_and_backends():
    assert {"testbed", "cpu-smoke", "colab-t4", "single-gpu", "release"} <= set(presets.PRESETS)
    for preset in presets.PRESETS.values():
        assert preset.hardware and preset.memory
        for role in (preset.weak, preset.strong, preset.prm):
            assert role.backend in ("transformers", "vllm") and role.family in ("step-tag", "separator")
        shares = {}
        for role in (preset.weak, preset.strong, preset.prm):
            if role.backend == "vllm":
                shares[role.gpu] = shares.get(role.gpu, 0) + role.share
        assert all(total < 1.0 for total in shares.values()), (preset.name, shares)  # engines sharing a GPU fit
    assert list(presets.table().index) == list(presets.PRESETS)
    with pytest.raises(ValueError, match="unknown preset 'nope'; choose one of testbed"):
        presets.load("nope")


def test_the_testbed_preset_is_the_testbed():
    problems = testbed.Splits()["test"][:4]
    tb = testbed.load()
    weak, strong, prm = presets.load("testbed")
    a = run_policy(problems, Threshold(0.6), weak, strong, prm, progress=False)
    b = run_policy(problems, Threshold(0.6), tb.weak, tb.strong, tb.prm, progress=False)
    assert [r["steps"] for r in a] == [r["steps"] for r in b]


@pytest.fixture(scope="module")
def tiny_separator_prm(tmp_path_factory):
    """A random two-label token classifier saved with the testbed tokenizer (TRL's PRM layout)."""
    from transformers import PreTrainedTokenizerFast

    path = tmp_path_factory.mktemp("separator-prm")
    tokenizer = PreTrainedTokenizerFast.from_pretrained(testbed.DATA_DIR / "prm")
    torch.manual_seed(0)
    LlamaForTokenClassification(llama_config("prm", tokenizer, num_labels=2)).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def test_separator_prm_scores_the_end_of_each_steps_separator(tiny_separator_prm):
    prm = SeparatorPRM(tiny_separator_prm, device="cpu")
    steps = ["1) 3 + 4 = 7", "2) 7 * 2 = 3", "3) 3 - 1 = 2"]
    ids, positions = prm.encode("Start at 3.", steps)
    assert len(positions) == 3 and positions[-1] == len(ids) - 1
    assert all(ids[p + 1 - len(prm.separator_ids): p + 1] == prm.separator_ids for p in positions)
    with torch.inference_mode():
        logits = prm.model(input_ids=torch.tensor([ids])).logits[0]
    expected = torch.softmax(logits, -1)[positions, 1].tolist()
    assert prm.score(["Start at 3."], [steps])[0] == pytest.approx(expected, abs=1e-5)
    short = SeparatorPRM(tiny_separator_prm, device="cpu", max_length=len(ids) - positions[0] - 1)
    with pytest.warns(UserWarning, match="exceed"):
        kept = short.score(["Start at 3."], [steps])[0]
    assert math.isnan(kept[0]) and not math.isnan(kept[-1])


def test_the_vllm_export_of_the_testbed_prm_computes_the_same_scores(tmp_path):
    """Qwen2 body + Linear/ReLU/Linear head, as vLLM's Qwen2ForProcessRewardModel computes it."""
    target = export_prm_for_vllm(testbed.DATA_DIR / "prm", tmp_path / "prm")
    original = StepTagPRM(testbed.DATA_DIR / "prm", device="cpu", reuse_prefix=False)
    body = AutoModel.from_pretrained(target).eval()
    from safetensors.torch import load_file

    head = load_file(target / "model.safetensors")
    problem = testbed.Splits()["test"][0]
    steps = problem.gold_steps()
    ids = original.tokenizer(original.text(problem.question, steps), add_special_tokens=False).input_ids
    with torch.inference_mode():
        hidden = body(input_ids=torch.tensor([ids])).last_hidden_state[0]
        hidden = torch.relu(hidden @ head["score.0.weight"].T + head["score.0.bias"])
        logits = hidden @ head["score.2.weight"].T + head["score.2.bias"]
    tags = torch.tensor(ids) == original.step_tag_id
    exported = torch.softmax(logits, -1)[tags, 1].tolist()
    assert exported == pytest.approx(original.score([problem.question], [steps])[0], abs=1e-5)


def test_cpu_smoke_runs_a_real_chat_model_through_the_same_code():
    """SmolLM2-135M-Instruct from PyPI: its own chat template, and a step that ends at a blank line."""
    from trim.protocols import StepRequest

    weak = presets._generator(presets.PRESETS["cpu-smoke"], "weak", presets.PRESETS["cpu-smoke"].weak, seed=0)
    request = StepRequest("q1", "What is 12 times 7? Reason step by step, then give the answer.")
    assert "<|im_start|>assistant" in weak.prompt(request)  # SmolLM2's template, not the testbed's
    step = weak.propose([request])[0]
    assert step.tokens > 0 and "\n\n" not in step.text and step.text.strip()
    assert weak.propose([request])[0] == step  # seeded per request: the same step again
