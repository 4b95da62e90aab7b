"""`transformers` backends: a batched, seeded step generator and a step-tag PRM.

The same classes load the testbed's checkpoints on a CPU and Qwen2.5 / Qwen2.5-Math-PRM on a GPU; only
the directory (and, for Qwen's PRM, `trust_remote_code`) changes."""

from __future__ import annotations

import warnings
from functools import cached_property
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForTokenClassification

from trim.backends.prefix_cache import (
    PastBatch,
    PrefixCache,
    Workspace,
    after_prefix,
    attention_mask,
    length_groups,
    prebuilt_masks,
)
from trim.backends.prompts import (
    PRM_CORRECT_LABEL,
    PRM_STEP_TAG,
    chat_prompt,
    fit_to_context,
    load_tokenizer,
    prm_text,
)
from trim.hashing import weights_fingerprint
from trim.progress import quiet_transformers
from trim.protocols import STEP_DELIMITER, SamplingParams, StepProposal, StepRequest, request_seed
from trim.sampling import sample_rows


def _require_dir(path: str | Path, what: str) -> Path:
    path = Path(path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"{what}: no model at {path} (expected a transformers model directory with config.json). "
            "Pass the directory of a saved model, or a hub id when online; the testbed's models are in "
            "data/testbed/ of the repository."
        )
    return path


def _resolve_source(model: str | Path, what: str) -> str:
    """A local directory (checked, with a clear error) or, for a bare `org/name`, a hub id."""
    text = str(model)
    looks_local = isinstance(model, Path) or text.startswith(("/", ".", "~")) or text.count("/") != 1
    return str(_require_dir(Path(text).expanduser(), what)) if looks_local or Path(text).exists() else text


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"


def _weight_files(source: str) -> str:
    files = sorted(p for pattern in ("*.safetensors", "*.bin") for p in Path(source).glob(pattern))
    return ", ".join(map(str, files)) if files else source


def _load_tokenizer(source: str | Path, **kwargs):
    try:
        tokenizer = load_tokenizer(source, **kwargs)
    except Exception as error:  # a corrupt tokenizer.json, a missing file, ...
        raise ValueError(f"cannot load the tokenizer in {source} ({_first_line(error)}); re-save or re-download "
                         "the model") from error
    tokenizer.padding_side = "left"  # decoding appends on the right, so prompts align on the right
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _load_config(source: str, what: str, trust_remote_code: bool = False):
    try:
        return AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code)
    except Exception as error:
        raise ValueError(f"{what}: cannot read the model config in {source} ({_first_line(error)})") from error


def _load_model(loader, source: str, what: str, **kwargs):
    """The model, or an error naming its files; a checkpoint that lacks weights the model needs is refused
    (transformers would initialise them at random with only a warning)."""
    try:
        with quiet_transformers():
            model, info = loader.from_pretrained(source, output_loading_info=True, **kwargs)
    except Exception as error:  # SafetensorError, OSError, ... from a corrupt or partial checkpoint
        raise ValueError(f"{what}: cannot load the weights {_weight_files(source)} ({_first_line(error)}); the "
                         "file may be corrupt or incomplete: re-save or re-download the model") from error
    missing = list(info.get("missing_keys") or []) + [str(k[0]) if isinstance(k, tuple) else str(k)
                                                       for k in info.get("mismatched_keys") or []]
    if missing:
        architectures = getattr(model.config, "architectures", None)
        raise ValueError(f"{what}: the checkpoint in {source} has no trained weights for "
                         f"{', '.join(sorted(missing)[:4])} (it was saved as {architectures}); "
                         f"pass a {what} checkpoint")
    return model


def _context(config) -> int | None:
    value = getattr(config, "max_position_embeddings", None)
    return int(value) if isinstance(value, int) and value > 0 else None


class TransformersGenerator:
    """Proposes the next step for a batch of prefixes with one batched, KV-cached decoding loop.

    Rows are left-padded, decode in lockstep and stop at a token containing the step delimiter or at
    EOS; each row samples from its own seeded stream (`trim.sampling`)."""

    def __init__(self, model: str | Path, sampling: SamplingParams = SamplingParams(), name: str | None = None,
                 seed: int = 0, device: str | None = None, dtype: torch.dtype | None = None,
                 system_prompt: str | None = None, batch_size: int = 256, reuse_prefix: bool = True,
                 prefix_cache_bytes: int = 1 << 30, gguf_file: str | None = None):
        self.name = name or Path(str(model)).name
        self.sampling, self.seed, self.system_prompt, self.batch_size = sampling, seed, system_prompt, batch_size
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.reuse_prefix, self.prefixes = reuse_prefix, PrefixCache(prefix_cache_bytes)
        self.workspace = Workspace()
        self.overflows = 0  # prompts longer than the model's context (decoded anyway, with a warning)
        self.fingerprint = weights_fingerprint(model)   # which weights: part of every trace's identity
        if gguf_file is not None:  # a GGUF checkpoint (llama.cpp's format): transformers dequantises it
            if not (Path(model) / gguf_file).is_file():
                raise FileNotFoundError(f"generator: no GGUF file {Path(model) / gguf_file}")
            self.tokenizer = _load_tokenizer(model, gguf_file=gguf_file)
            self.model = _load_model(AutoModelForCausalLM, str(model), "generator", gguf_file=gguf_file,
                                     dtype=dtype).to(self.device).eval()
            self.context = _context(self.model.config)
            self.prebuilt_masks = prebuilt_masks(self.model)
            return
        source = _resolve_source(model, "generator")
        architectures = getattr(_load_config(source, "generator"), "architectures", None) or []
        if architectures and not any(a.endswith(("ForCausalLM", "LMHeadModel", "ForConditionalGeneration"))
                                     for a in architectures):
            raise ValueError(f"generator: the model in {source} is a {', '.join(architectures)}, not a causal "
                             "language model; pass a generator's directory (its config names a *ForCausalLM)")
        self.tokenizer = _load_tokenizer(source)
        self.model = _load_model(AutoModelForCausalLM, source, "generator", dtype=dtype).to(self.device).eval()
        self.context = _context(self.model.config)
        self.prebuilt_masks = prebuilt_masks(self.model)

    def _check_context(self, encoded: list[list[int]]) -> None:
        """Warn (once per generator, with counts) when prompts are longer than the model's context."""
        over = [len(ids) for ids in encoded if self.context and len(ids) > self.context]
        if not over:
            return
        if not self.overflows:
            warnings.warn(f"{self.name}: {len(over)} of {len(encoded)} prompts are longer than the model's context "
                          f"(longest {max(over)} tokens > {self.context}); they are decoded anyway and their steps "
                          "are unreliable. Later overflows are counted in `.overflows`.", stacklevel=4)
        self.overflows += len(over)

    @cached_property
    def stop_ids(self) -> torch.Tensor:
        """Every token whose text contains the delimiter (real BPEs merge '\\n\\n' with punctuation)."""
        vocab = range(len(self.tokenizer))
        texts = self.tokenizer.batch_decode([[i] for i in vocab])
        ids = [i for i, t in zip(vocab, texts) if STEP_DELIMITER in t]
        return torch.tensor(ids + [self.tokenizer.eos_token_id], device=self.device)

    def prompt(self, request: StepRequest) -> str:
        return chat_prompt(self.tokenizer, request.question, request.steps, self.system_prompt)

    cache_key = prompt  # the rendered prompt pins template, system prompt, question and prefix

    def propose(self, requests: Sequence[StepRequest]) -> list[StepProposal]:
        out: list[StepProposal] = []
        for start in range(0, len(requests), self.batch_size):
            out.extend(self._propose_batch(requests[start: start + self.batch_size]))
        return out

    def _prefill(self, requests, encoded, found) -> list[dict]:
        """Read every prompt but its last token into the prefix cache, and return those entries.

        Rows are read in batches of similar numbers of new tokens (`length_groups`): the new tokens are the
        steps this model did not write itself (`_keep_decoded` keeps its own), a few tokens for a doubling
        and dozens for a cube or a strong model's first look at a solution, and one padded batch would make
        every row pay for the longest. Decoding then starts from one token per row. The last token is left
        out because the next call must feed at least one."""
        found = list(found)
        unread = [after_prefix(f, ids)[:-1] for f, ids in zip(found, encoded)]
        todo = [row for row, tokens in enumerate(unread) if tokens]
        for group in length_groups([len(unread[row]) for row in todo], self.batch_size):
            rows = [todo[k] for k in group]
            batch = PastBatch([found[row] for row in rows], [unread[row] for row in rows],
                              self.tokenizer.pad_token_id, self.device, self.model.config.num_hidden_layers,
                              workspace=self.workspace)
            self.model(input_ids=batch.input_ids, attention_mask=batch.attention(self.prebuilt_masks),
                       position_ids=batch.positions, past_key_values=batch.cache, use_cache=True)
            for row, kv in zip(rows, batch.rows_kv()):
                r = requests[row]
                found[row] = self.prefixes.put((r.question, r.steps), encoded[row][:-1], kv)
        return found

    @torch.inference_mode()
    def _propose_batch(self, requests: Sequence[StepRequest]) -> list[StepProposal]:
        rngs = [np.random.default_rng(request_seed(self.seed, self.name, r)) for r in requests]
        # One batched call: the fast tokenizer encodes the rows in parallel, in Rust.
        encoded = self.tokenizer([self.prompt(r) for r in requests], add_special_tokens=False).input_ids
        self._check_context(encoded)
        # Continue from the longest cached prefix of this prompt: the request's own (its last step, as this
        # model decoded it) or an earlier step's prompt.
        found = [self.prefixes.find([(r.question, r.steps[:k]) for k in range(len(r.steps), -1, -1)], ids)
                 if self.reuse_prefix else None for r, ids in zip(requests, encoded)]
        if self.reuse_prefix:
            found = self._prefill(requests, encoded, found)
        batch = PastBatch(found, [after_prefix(f, ids) for f, ids in zip(found, encoded)],
                          self.tokenizer.pad_token_id, self.device, self.model.config.num_hidden_layers,
                          decode=self.sampling.max_step_tokens, workspace=self.workspace)
        out = self.model(input_ids=batch.input_ids, attention_mask=batch.attention(self.prebuilt_masks),
                         position_ids=batch.positions, past_key_values=batch.cache, use_cache=True)
        mask, positions, cache, logits = batch.mask, batch.positions[:, -1:], out.past_key_values, out.logits[:, -1]
        pad, eos, limit = self.tokenizer.pad_token_id, self.tokenizer.eos_token_id, self.sampling.max_step_tokens
        # Per-row bookkeeping lives in Python lists: a tick's few hundred list operations cost less than the
        # dozen small indexed tensor ops they replace, which dominate a tiny model's decoding on a CPU.
        tokens: list[list[int]] = [[] for _ in requests]
        logprob = [0.0] * len(requests)   # summed raw log-probability of each row's decoded tokens
        ended = [False] * len(requests)   # stopped at a token holding the delimiter, or at EOS
        live = list(range(len(requests)))  # the batch's rows, as indices of `requests`
        stopped = [False] * len(live)      # per batch row
        for _ in range(limit):
            sampled = sample_rows(logits, self.sampling, [rngs[row] for row in live]).to(self.device)
            token = torch.where(torch.tensor(stopped, device=self.device), pad, sampled)
            # Raw log-probabilities (before temperature and truncation), as vLLM's logprobs are by default; the
            # chosen logit minus the log-normaliser, so no vocabulary-sized buffer is built for it.
            raw = logits.float()
            chosen = (raw.gather(-1, token.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(raw, -1)).tolist()
            for k, (row, t, end) in enumerate(zip(live, token.tolist(), torch.isin(token, self.stop_ids).tolist())):
                if not stopped[k]:
                    tokens[row].append(t)
                    logprob[row] += chosen[k]
                    ended[row] = stopped[k] = end
            if all(stopped):
                break
            # Steps differ in length (a doubling is a few tokens, a cube about 45), so most rows stop long
            # before the last one; a stopped row would still cost its share of every forward pass. Drop the
            # stopped rows from the batch and its KV cache once a quarter of the batch has stopped (copying
            # the cache at every stop would cost as much as it saves). A row's tokens depend only on its own
            # random stream, so which rows share its batch changes nothing.
            if 4 * stopped.count(False) <= 3 * len(live):
                self._keep_decoded(batch, requests, encoded, found, tokens, ended, live, stopped)
                keep = [k for k, done in enumerate(stopped) if not done]
                index = torch.tensor(keep, device=self.device)
                cache.batch_select_indices(index)
                token, mask, positions = token[index], mask[index], positions[index]
                live, stopped = [live[k] for k in keep], [False] * len(keep)
            going = torch.tensor([not done for done in stopped], device=self.device)
            mask = torch.cat([mask, going.long().unsqueeze(-1)], dim=-1)
            positions = positions + 1
            out = self.model(input_ids=token.unsqueeze(-1), attention_mask=attention_mask(mask, 1, self.prebuilt_masks),
                             position_ids=positions, past_key_values=cache, use_cache=True)
            cache, logits = out.past_key_values, out.logits[:, -1]
        self._keep_decoded(batch, requests, encoded, found, tokens, ended, live, stopped)
        return [StepProposal(text=self._step_text(ids), tokens=len(ids), finished=end and ids[-1] == eos,
                             truncated=not end, mean_logprob=total / len(ids))
                for ids, end, total in zip(tokens, ended, logprob)]

    def _step_text(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True).split(STEP_DELIMITER)[0].strip()

    def _keep_decoded(self, batch: PastBatch, requests, encoded, found, tokens, ended, live, stopped) -> None:
        """Cache the K/V of the rows of `live` that stopped at the delimiter: the prompt and the step's tokens,
        under the key of the request that accepts the step. Most next steps follow this model's own step,
        whose K/V decoding has just computed; the next prompt then reads only the delimiter (`find` checks
        that the ids agree). The step's last token, holding the delimiter, was never fed, so it has no K/V."""
        if not self.reuse_prefix:
            return
        eos = self.tokenizer.eos_token_id
        for k, row in enumerate(live):
            ids = tokens[row]
            if not (stopped[k] and ended[row]) or ids[-1] == eos:
                continue
            r, start = requests[row], batch.past + batch.width - batch.news[row]
            kv = batch.segment(k, start, batch.past + batch.width + len(ids) - 1)
            self.prefixes.put((r.question, r.steps + (self._step_text(ids),)), encoded[row] + ids[:-1],
                              (found[row]["kv"] if found[row] else ()) + (kv,))


def _place(result: list, rows: list[int], values: list) -> list:
    for i, value in zip(rows, values):
        result[i] = value
    return result


class StepTagPRM:
    """A PRM that reads every step followed by a step tag and scores P(correct) at each tag.

    This is Qwen2.5-Math-PRM's interface: steps joined by `<extra_0>` in the assistant turn, a 2-label
    head, reward = softmax(logits)[..., 1] at each tag. The testbed PRM is a token-classification model
    with the same interface; Qwen's loads with `AutoModel(..., trust_remote_code=True)`."""

    def __init__(self, model: str | Path, name: str | None = None, step_tag: str = PRM_STEP_TAG,
                 device: str | None = None, dtype: torch.dtype | None = None, trust_remote_code: bool = False,
                 system_prompt: str | None = None, batch_size: int = 64, max_length: int | None = None,
                 reuse_prefix: bool = True, prefix_cache_bytes: int = 1 << 30):
        source = _resolve_source(model, "PRM")
        self.name = name or Path(str(model)).name
        self.fingerprint = weights_fingerprint(source)
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.tokenizer = _load_tokenizer(source)
        self.step_tag, self.system_prompt, self.batch_size = step_tag, system_prompt, batch_size
        if system_prompt and step_tag in system_prompt:
            raise ValueError(f"PRM {source}: the system prompt contains the step tag {step_tag!r}")
        self.step_tag_id = self._check_step_tag(source)
        config = _load_config(source, "PRM", trust_remote_code)
        if not trust_remote_code and getattr(config, "num_labels", 2) < 2:
            raise ValueError(f"PRM {source}: its head has {config.num_labels} label(s); a step-tag PRM reads "
                             "P(correct) as label 1 of a 2-label head")
        loader = AutoModel if trust_remote_code else AutoModelForTokenClassification
        self.model = _load_model(loader, source, "PRM", dtype=dtype,
                                 trust_remote_code=trust_remote_code).to(self.device).eval()
        self.max_length = max_length or _context(self.model.config) or 4096
        self.prebuilt_masks = prebuilt_masks(self.model, trust_remote_code)
        self.overflows = 0  # inputs longer than max_length, scored with their earliest steps dropped
        self.reuse_prefix = reuse_prefix
        self.prefixes = PrefixCache(prefix_cache_bytes)  # (question, steps) -> ids, per-layer K/V, scores
        self.workspace = Workspace()

    def _check_step_tag(self, source) -> int:
        """The tag's token id; refused when the tokenizer has no single token for it (scores would be read
        nowhere, or at the wrong places) or when its chat template loses or adds tags."""
        tag_id = self.tokenizer.convert_tokens_to_ids(self.step_tag)
        ids = self.tokenizer(self.step_tag, add_special_tokens=False).input_ids
        if tag_id is None or tag_id == self.tokenizer.unk_token_id or ids != [tag_id]:
            raise ValueError(f"PRM {source}: its tokenizer has no token for the step tag {self.step_tag!r} (it reads "
                             f"as {len(ids)} tokens); pass the PRM's own tag as step_tag, or a PRM whose tokenizer "
                             "defines it")
        rendered = self.tokenizer(self.text("question", ["a", "b"]), add_special_tokens=False).input_ids
        if rendered.count(tag_id) != 2:
            raise ValueError(f"PRM {source}: its chat template turns two tagged steps into {rendered.count(tag_id)} "
                             f"step tags {self.step_tag!r}; the PRM's scores could not be matched to steps")
        return tag_id

    def text(self, question: str, steps: Sequence[str]) -> str:
        return prm_text(self.tokenizer, question, steps, self.step_tag, self.system_prompt)

    def score(self, questions: Sequence[str], steps: Sequence[Sequence[str]]) -> list[list[float]]:
        if len(questions) != len(steps):
            raise ValueError(f"{len(questions)} questions but {len(steps)} step lists")
        for row, (q, s) in enumerate(zip(questions, steps)):
            if self.step_tag in q:
                raise ValueError(f"the question of row {row} contains the PRM's step tag {self.step_tag!r}, which "
                                 f"would add a score: {q[:80]!r}")
            for step in s:
                if self.step_tag in step:
                    raise ValueError(f"a step contains the PRM's step tag {self.step_tag!r}: {step!r}")
        return self._score_rows(list(questions), [list(x) for x in steps])

    def _score_rows(self, questions, steps) -> list[list[float]]:
        encoded = self.tokenizer([self.text(q, s) for q, s in zip(questions, steps)],
                                 add_special_tokens=False).input_ids
        fits = [len(ids) <= self.max_length for ids in encoded]
        result: list = [None] * len(encoded)
        if self.reuse_prefix:
            for i, (q, s) in enumerate(zip(questions, steps)):
                entry = self.prefixes.entries.get((q, tuple(s)))
                if entry is not None:
                    result[i] = list(entry["scores"])
        todo = [i for i in range(len(encoded)) if result[i] is None]
        # Rows over the context limit take the left-truncated full pass; the rest reuse their prefix.
        incremental = [i for i in todo if self.reuse_prefix and fits[i]]
        full = [i for i in todo if not (self.reuse_prefix and fits[i])]
        if incremental:
            scored = self._score_incremental([questions[i] for i in incremental], [steps[i] for i in incremental],
                                             [encoded[i] for i in incremental])
            result = _place(result, incremental, scored)
        if full:
            over = [len(encoded[i]) for i in full if not fits[i]]
            if over:
                if not self.overflows:
                    warnings.warn(f"{self.name}: {len(over)} of {len(encoded)} inputs are longer than the PRM's "
                                  f"context (longest {max(over)} tokens > {self.max_length}); their earliest steps "
                                  "were dropped, keeping the question, and score NaN. Later overflows are counted in "
                                  "`.overflows`.", stacklevel=4)
                self.overflows += len(over)
            fitted = [self._fit(questions[i], steps[i], encoded[i]) for i in full]
            for group in length_groups([len(ids) for ids in fitted], self.batch_size):
                scored = self._score_full([fitted[k] for k in group], [len(steps[full[k]]) for k in group])
                result = _place(result, [full[k] for k in group], scored)
        return result

    def _fit(self, question: str, steps: Sequence[str], ids: list[int]) -> list[int]:
        return fit_to_context(lambda q, s: self.tokenizer(self.text(q, s), add_special_tokens=False).input_ids,
                              question, steps, ids, self.max_length)

    def _tag_scores(self, logits: torch.Tensor, ids: torch.Tensor) -> list[float]:
        return torch.softmax(logits.float(), dim=-1)[..., PRM_CORRECT_LABEL][ids == self.step_tag_id].tolist()

    @torch.inference_mode()
    def _score_full(self, encoded: list[list[int]], n_steps: list[int]) -> list[list[float]]:
        # Rows arrive fitted to the context (`_fit`); the cut is a guard.
        encoded = [ids[-self.max_length:] for ids in encoded]
        width = max(len(ids) for ids in encoded)
        pad = self.tokenizer.pad_token_id
        input_ids = torch.tensor([[pad] * (width - len(ids)) + ids for ids in encoded], device=self.device)
        mask = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in encoded], device=self.device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        logits = self.model(input_ids=input_ids, attention_mask=attention_mask(mask, width, self.prebuilt_masks),
                            position_ids=positions).logits
        result = []
        for row, n in enumerate(n_steps):
            tag_scores = self._tag_scores(logits[row], input_ids[row])
            # Steps whose tags were truncated away keep no score of their own: NaN on the left.
            result.append([float("nan")] * (n - len(tag_scores)) + tag_scores)
        return result

    def _score_incremental(self, questions, steps, encoded) -> list[list[float]]:
        """Score only the tokens after the longest already-scored prefix of each row (`PrefixCache`), in
        batches of rows with similar numbers of new tokens (`length_groups`)."""
        found = [self.prefixes.find([(q, tuple(s[:k])) for k in range(len(s) - 1, 0, -1)], ids)
                 for q, s, ids in zip(questions, steps, encoded)]
        result: list = [None] * len(encoded)
        for group in length_groups([len(after_prefix(f, ids)) for f, ids in zip(found, encoded)], self.batch_size):
            scored = self._score_past([questions[i] for i in group], [steps[i] for i in group],
                                      [encoded[i] for i in group], [found[i] for i in group])
            result = _place(result, group, scored)
        return result

    @torch.inference_mode()
    def _score_past(self, questions, steps, encoded, found) -> list[list[float]]:
        batch = PastBatch(found, [after_prefix(f, ids) for f, ids in zip(found, encoded)],
                          self.tokenizer.pad_token_id, self.device, self.model.config.num_hidden_layers,
                          workspace=self.workspace)
        logits = self.model(input_ids=batch.input_ids, attention_mask=batch.attention(self.prebuilt_masks),
                            position_ids=batch.positions, past_key_values=batch.cache, use_cache=True).logits
        result = []
        for row, (q, s, ids, kv) in enumerate(zip(questions, steps, encoded, batch.rows_kv())):
            new = slice(batch.width - batch.news[row], batch.width)
            earlier = found[row]["scores"] if found[row] else []
            scores = earlier + self._tag_scores(logits[row, new], batch.input_ids[row, new])
            self.prefixes.put((q, tuple(s)), ids, kv, scores=scores)
            result.append(scores)
        return result
