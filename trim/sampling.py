"""Seeded sampling for batched decoding: one random stream per row, drawn by inverse CDF.

Each row owns a `numpy` generator seeded from its (problem, prefix, model) key and spends exactly one
uniform per decoded token, so a row's text does not depend on what else is in the batch."""

from __future__ import annotations

import numpy as np
import torch

from trim.protocols import SamplingParams


def filtered_probs(logits: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """Softmax after temperature, top-k and top-p (nucleus) filtering, as vLLM applies them."""
    logits = logits.float()
    if params.temperature == 0:
        probs = torch.zeros_like(logits)
        probs.scatter_(-1, logits.argmax(-1, keepdim=True), 1.0)
        return probs
    logits = logits / params.temperature
    if params.top_k and params.top_k < logits.shape[-1]:
        kth = logits.topk(params.top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    if params.top_p < 1.0:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        # keep a token if the mass strictly before it is below top_p (the first token always stays)
        drop_sorted = (sorted_probs.cumsum(-1) - sorted_probs) >= params.top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        probs = probs.masked_fill(drop, 0.0)
        probs = probs / probs.sum(-1, keepdim=True)
    return probs


def sample_rows(logits: torch.Tensor, params: SamplingParams, rngs: list[np.random.Generator]) -> torch.Tensor:
    """One token per row; row i uses only rngs[i]."""
    probs = filtered_probs(logits, params)
    uniforms = torch.tensor([rng.random() for rng in rngs], dtype=torch.float64)
    cdf = probs.double().cumsum(-1)
    cdf[:, -1] = 1.0 + 1e-9  # guard against rounding: u < 1 always lands on a token
    return torch.searchsorted(cdf, uniforms.unsqueeze(-1), right=True).squeeze(-1).clamp(max=probs.shape[-1] - 1)
