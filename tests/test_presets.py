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


def test_each_prm_family_reads_the_separator_and_label_its_checkpoint_was_trained_with(monkeypatch,
                                                                                         tiny_separator_prm):
    """Pinned to the sources cited in trim/backends/prompts.py and trim/backends/separator_prm.py: Qwen2.5-Math-PRM's
    model card (tag <extra_0>, reward = softmax[..., 1]); TRL's PRMTrainer (label 1 = correct step, default
    separator "\\n"); search-and-learn's recipe for HuggingFaceH4's PRMs (--step_separator "\\n\\n")."""
    from trim.backends import prompts, separator_prm

    assert (prompts.PRM_STEP_TAG, prompts.PRM_CORRECT_LABEL) == ("<extra_0>", 1)
    assert (separator_prm.TRL_SEPARATOR, separator_prm.CORRECT_LABEL) == ("\n", 1)
    built = {}
    monkeypatch.setattr(separator_prm, "SeparatorPRM", lambda source, **kwargs: built.update(kwargs, source=source))
    presets._prm(presets.PRESETS["colab-t4"])
    assert built["source"] == "HuggingFaceH4/Qwen2.5-Math-1.5B-Instruct-PRM-0.2" and built["separator"] == "\n\n"
    # The separator decides where a step is scored: at the last token of its own "\n\n".
    prm = SeparatorPRM(tiny_separator_prm, device="cpu", separator="\n\n")
    ids, positions = prm.encode("Start at 3.", ["1) 3 + 4 = 7", "2) 7 * 2 = 4"])
    assert prm.separator_ids == prm.tokenizer.encode("\n\n", add_special_tokens=False)
    assert all(prm.tokenizer.decode(ids[p + 1 - len(prm.separator_ids): p + 1]) == "\n\n" for p in positions)
    with pytest.raises(ValueError, match="empty step separator"):
        SeparatorPRM(tiny_separator_prm, device="cpu", separator="")


T4 = (15_400_000_000, 15_830_000_000, "Tesla T4")


def test_memory_check_names_the_preset_and_the_shortfall():
    t4 = presets.PRESETS["colab-t4"]
    assert presets.memory_problems(t4, {0: T4}) == []
    busy = presets.memory_problems(t4, {0: (6_000_000_000, T4[1], "Tesla T4")})
    assert busy == ["GPU 0 (Tesla T4) has 6.0 GB free of 15.8 GB and the preset needs 11.8 GB (vLLM shares 0.55 "
                    "of 15.8 GB = 8.7 GB, plus 3.1 GB of weights in transformers): 5.8 GB short"]
    small = presets.memory_problems(t4, {0: (7_900_000_000, 8_000_000_000, "small card")})
    assert any("the strong model's share 0.35 of GPU 0 (small card, 8.0 GB) is 2.8 GB, too small for its 3.1 GB"
               in p for p in small)
    release = presets.memory_problems(presets.PRESETS["release"], {0: T4, 1: T4})
    assert any("GPU 0" in p for p in release) and any("GPU 1" in p for p in release)


def test_loading_a_gpu_preset_twice_returns_the_engines_already_running(monkeypatch):
    started, checked = [], []
    monkeypatch.setattr(presets, "_LOADED", {})
    monkeypatch.setattr(presets, "_check_gpu_memory", checked.append)
    monkeypatch.setattr(presets, "_generator", lambda preset, role_name, role, seed: started.append(role_name) or
                        object())
    monkeypatch.setattr(presets, "_prm", lambda preset: started.append("prm") or object())
    first = presets.load("colab-t4")
    assert presets.load("colab-t4") is first and started == ["weak", "strong", "prm"] and len(checked) == 1
    with pytest.raises(RuntimeError, match=r"preset colab-t4 \(seed 0\) already holds the GPU .* to load single-gpu"):
        presets.load("single-gpu")
    with pytest.raises(RuntimeError, match="restart the session"):
        presets.load("colab-t4", seed=1)


def test_colab_t4_starts_its_engines_eager_and_only_gpu_presets_check_memory():
    t4 = presets.PRESETS["colab-t4"]
    assert dict(t4.weak.options)["enforce_eager"] and dict(t4.strong.options)["enforce_eager"]
    for preset in presets.PRESETS.values():
        for role in (preset.weak, preset.strong, preset.prm):
            assert (role.weights_gb > 0) == (preset.name in ("colab-t4", "single-gpu", "release"))


def test_the_memory_check_reads_the_gpu_each_engine_will_use(monkeypatch):
    own, placed = presets.Role("m", "vllm"), presets.Role("m", "vllm", gpu=1)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert (presets._physical_gpu(own), presets._physical_gpu(placed)) == (0, 1)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    assert (presets._physical_gpu(own), presets._physical_gpu(placed)) == (2, 1)  # `gpu` is physical (_on_gpu)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-8a1c2f3e")
    assert presets._physical_gpu(own) is None  # named by UUID: not mapped, the check is skipped
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with pytest.raises(RuntimeError, match="no GPU is visible"):
        presets._physical_gpu(own)


def test_a_gpu_cell_stops_in_one_line_where_the_preset_cannot_run():
    presets.require("testbed")  # CPU presets run anywhere
    with pytest.raises(presets.Unavailable) as stop:
        presets.require("colab-t4")  # this venv has no vLLM (and this machine no GPU)
    assert str(stop.value).startswith("preset colab-t4 needs vLLM, and vLLM is not installed")
    assert "pip install -e .[gpu]" in str(stop.value) and "\n" not in str(stop.value)
