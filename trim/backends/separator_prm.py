"""PRMs trained with TRL's `PRMTrainer` (e.g. HuggingFaceH4/Qwen2.5-Math-1.5B-Instruct-PRM-0.2).

Their interface differs from Qwen2.5-Math-PRM's: no chat template and no special tag. TRL's trainer
tokenises the question (after the BOS token, if the tokenizer has one), then every step followed by a
separator, and trains a two-label token classifier on the *last token of each step's separator*, with
label 1 for a correct step and 0 for a wrong one. Scoring must rebuild exactly those token ids, with the
separator the model was *trained* with; P(correct) is the softmax of label 1 there.

The separator is a property of the checkpoint, not of TRL: `PRMConfig.step_separator` defaults to "\n"
(TRL's PRM trainer docs), but search-and-learn's recipe for the HuggingFaceH4 Qwen2.5-Math PRMs passes
`--step_separator="\n\n"` (recipes/training/Qwen2.5-Math-1.5B-Instruct-PRM/prm_qwen_math_1p5b_instruct.sh,
github.com/huggingface/search-and-learn), and its README asks for the training separator at evaluation.
A preset names the separator of its checkpoint (`trim.presets`, role options)."""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Sequence

import torch

# TRL's `PRMConfig.step_separator` default, and the label its `PRMTrainer` gives a correct step.
TRL_SEPARATOR = "\n"
CORRECT_LABEL = 1


class SeparatorPRM:
    """A TRL-format step PRM on transformers: one score per step, read at the end of its separator."""

    def __init__(self, model: str | Path, name: str | None = None, separator: str = TRL_SEPARATOR,
                 device: str | None = None, dtype: torch.dtype | None = None, max_length: int = 4096,
                 batch_size: int = 16):
        from transformers import AutoModelForTokenClassification

        from trim.backends.prompts import load_tokenizer
        from trim.hashing import weights_fingerprint
        from trim.progress import quiet_transformers

        self.name = name or Path(str(model)).name
        self.fingerprint = weights_fingerprint(model)
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.tokenizer = load_tokenizer(model)
        with quiet_transformers():
            self.model = AutoModelForTokenClassification.from_pretrained(str(model), dtype=dtype).to(self.device)
        self.model.eval()
        if self.model.config.num_labels != 2:
            raise ValueError(f"PRM {model}: expected a two-label token classifier, found "
                             f"{self.model.config.num_labels} labels")
        if not separator:
            raise ValueError(f"PRM {model}: an empty step separator; pass the one the PRM was trained with")
        self.separator = separator
        self.separator_ids = self.tokenizer.encode(separator, add_special_tokens=False)
        self.max_length, self.batch_size = max_length, batch_size

    def encode(self, question: str, steps: Sequence[str]) -> tuple[list[int], list[int]]:
        """Token ids as TRL's trainer built them, and the position scored for each step."""
        encode = self.tokenizer.encode
        ids = ([self.tokenizer.bos_token_id] if self.tokenizer.bos_token_id is not None else [])
        ids += encode(question, add_special_tokens=False)
        positions = []
        for step in steps:
            ids += encode(step, add_special_tokens=False) + self.separator_ids
            positions.append(len(ids) - 1)
        return ids, positions

    @torch.inference_mode()
    def score(self, questions: Sequence[str], steps: Sequence[Sequence[str]]) -> list[list[float]]:
        result = []
        for start in range(0, len(questions), self.batch_size):
            rows = [self.encode(q, s) for q, s in zip(questions[start: start + self.batch_size],
                                                       steps[start: start + self.batch_size])]
            over = sum(len(ids) > self.max_length for ids, _ in rows)
            if over:
                warnings.warn(f"{self.name}: {over} inputs exceed {self.max_length} tokens; their earliest tokens "
                              "are dropped and steps that fall off score NaN", stacklevel=2)
            width = min(self.max_length, max(len(ids) for ids, _ in rows))
            pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
            batch = torch.full((len(rows), width), pad, device=self.device)
            mask = torch.zeros_like(batch)
            for row, (ids, _) in enumerate(rows):  # left truncation, right padding
                kept = ids[-width:]
                batch[row, : len(kept)], mask[row, : len(kept)] = torch.tensor(kept), 1
            logits = self.model(input_ids=batch, attention_mask=mask).logits.float()
            probabilities = torch.softmax(logits, -1)[..., CORRECT_LABEL]
            for row, (ids, positions) in enumerate(rows):
                shift = max(0, len(ids) - width)
                result.append([probabilities[row, p - shift].item() if p >= shift else math.nan for p in positions])
        return result
