"""Reuse the keys and values of token prefixes a causal model has already read.

Routing reads the same growing solution again and again: the generator re-reads the question and the
accepted steps before every new step, the PRM re-reads them before scoring every candidate. For a
causal model the keys and values of a prefix never change, so each row keeps them here and the next
call feeds only the tokens after its longest cached prefix: linear, not quadratic, in solution length.
(vLLM does the same on a GPU with automatic prefix caching.)"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Hashable, Sequence

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

MAX_SEGMENTS = 8  # more, and an entry's segments are merged into one (one copy per segment to place a row)


class PrefixCache:
    """(key -> token ids and their K/V), least recently used first out, bounded in bytes.

    An entry's K/V is a tuple of segments, each [layers, 2 (keys, values), heads, tokens, head_dim]: its
    parent's segments, shared, then the tokens it added. Storing a longer prefix thus copies only its new
    tokens, not the whole prefix again. A segment's bytes count once, however many entries hold it, and
    leave the count with the last of them: `bytes` is the memory the entries keep."""

    def __init__(self, max_bytes: int = 1 << 30):
        self.max_bytes, self.bytes = max_bytes, 0
        self.entries: OrderedDict = OrderedDict()
        self.holders: dict[int, int] = {}  # id of a held segment -> how many entries hold it

    def find(self, keys: Sequence[Hashable], ids: list[int]) -> dict | None:
        """The first of `keys` whose cached ids are a strict prefix of `ids` (tokenisation can differ at a
        boundary, so the ids are checked, never assumed)."""
        for key in keys:
            entry = self.entries.get(key)
            if entry is not None and len(entry["ids"]) < len(ids) and ids[: len(entry["ids"])] == entry["ids"]:
                self.entries.move_to_end(key)
                return entry
        return None

    def put(self, key: Hashable, ids: list[int], kv: tuple[torch.Tensor, ...], **extra) -> dict:
        """Store the entry (the newest, so eviction spares it) and return it."""
        if len(kv) > MAX_SEGMENTS:  # bound the copies a batch makes to place a long solution
            kv = (torch.cat(kv, dim=3),)
        entry = {"ids": ids, "kv": kv, **extra}
        self._hold(kv, +1)  # before dropping an entry under the same key, which may share its segments
        if key in self.entries:
            self._hold(self.entries.pop(key)["kv"], -1)
        self.entries[key] = entry
        while self.bytes > self.max_bytes and len(self.entries) > 1:
            self._hold(self.entries.popitem(last=False)[1]["kv"], -1)
        return entry

    def _hold(self, kv: tuple[torch.Tensor, ...], change: int) -> None:
        for segment in kv:
            # An id stays a segment's while an entry holds it: the entry keeps the tensor alive.
            count = self.holders.get(id(segment), 0) + change
            if count == 0:
                del self.holders[id(segment)]
            else:
                self.holders[id(segment)] = count
            if count == (1 if change > 0 else 0):
                self.bytes += change * segment.numel() * segment.element_size()


def after_prefix(entry: dict | None, ids: list[int]) -> list[int]:
    """The tokens of `ids` that a found cache entry (or None) has not read."""
    return ids[len(entry["ids"]) if entry else 0:]


def attention_4d(mask: torch.Tensor, queries: int) -> torch.Tensor:
    """The [batch, 1, queries, keys] boolean mask for the last `queries` columns of a 2-D padding mask:
    key j is visible to query q iff it is not padding and j <= q (causal).

    It is the mask transformers would build from the 2-D one; building it here, with two broadcasts,
    spares the model its own construction (a vmap per forward, about 40% of a small model's decoding
    time on a CPU), and transformers passes a 4-D mask through unchanged."""
    keys, device = mask.shape[1], mask.device
    visible = torch.arange(keys, device=device) <= (keys - queries + torch.arange(queries, device=device))[:, None]
    return visible[None, None] & mask.bool()[:, None, None, :]


def attention_mask(mask: torch.Tensor, queries: int, prebuilt: bool) -> torch.Tensor | None:
    """What the model is given: the 2-D padding mask, or, when the model takes one (`prebuilt_masks`), the
    4-D mask, or None where transformers would drop the mask for SDPA's own causal path (no padding,
    and one query or as many queries as keys), so that the numbers are the ones it computes."""
    if not prebuilt:
        return mask
    if (queries == 1 or queries == mask.shape[1]) and bool(mask.all()):
        return None
    return attention_4d(mask, queries)


def prebuilt_masks(model, remote_code: bool = False) -> bool:
    """Whether `model` takes a boolean 4-D mask as it is: transformers' own models with SDPA attention do;
    eager attention adds the mask to the scores, and remote code may expect an additive one."""
    return not remote_code and getattr(model.config, "_attn_implementation", None) == "sdpa"


class RoomyLayer(DynamicLayer):
    """A layer of a KV cache that keeps its keys and values in buffers with room for `room` more tokens.

    transformers' `DynamicLayer` appends a decoded token with `torch.cat`, copying the whole cache at every
    step (on a CPU, as much time as the attention itself); here a step writes into the spare room, and the
    model reads views of the filled part, the same numbers in the same layout. Out of room, the buffers
    grow by copying, as `torch.cat` would."""

    def __init__(self, room: int):
        super().__init__()
        self.room, self.length, self.buffers = room, 0, None

    def _views(self) -> tuple[torch.Tensor, torch.Tensor]:
        self.keys, self.values = (b[:, :, : self.length] for b in self.buffers)
        return self.keys, self.values

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, cache_kwargs=None):
        new = key_states.shape[-2]
        if self.buffers is None or self.length + new > self.buffers[0].shape[-2]:
            size = self.length + new + self.room
            grown = tuple(t.new_empty((*t.shape[:2], size, t.shape[-1])) for t in (key_states, value_states))
            if self.buffers is not None:
                for old, buffer in zip(self.buffers, grown):
                    buffer[:, :, : self.length] = old[:, :, : self.length]
            self.buffers = grown
            self.dtype, self.device, self.is_initialized = key_states.dtype, key_states.device, True
        self.buffers[0][:, :, self.length: self.length + new] = key_states
        self.buffers[1][:, :, self.length: self.length + new] = value_states
        self.length += new
        return self._views()

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        """Keep the rows `indices`, in that order, compacted in place: only the filled part is copied, and the
        buffers stay where they are (often a `Workspace`, whose pages are already mapped)."""
        if self.buffers is None:
            return
        if indices.dtype == torch.bool or len(indices) > len(self.buffers[0]):
            self.buffers = tuple(b[indices] for b in self.buffers)  # a mask, or more rows than there are
        else:
            rows, filled = len(indices), slice(0, self.length)
            # Rows before the first one that moves stay where they are (shedding keeps the order).
            moved = next((k for k, i in enumerate(indices.tolist()) if i != k), rows)
            for buffer in self.buffers:
                buffer[moved:rows, :, filled] = buffer[indices[moved:], :, filled]
            self.buffers = tuple(b[:rows] for b in self.buffers)
        self._views()

    @classmethod
    def holding(cls, keys: torch.Tensor, values: torch.Tensor, length: int, room: int) -> "RoomyLayer":
        """A layer over existing `keys` and `values` buffers, filled up to `length`."""
        layer = cls(room)
        layer.buffers, layer.length = (keys, values), length
        layer.dtype, layer.device, layer.is_initialized = keys.dtype, keys.device, True
        layer._views()
        return layer


def length_groups(lengths: Sequence[int], max_rows: int, fixed_cost: int = 256) -> list[list[int]]:
    """Indices of `lengths` cut into batches of at most `max_rows` rows of similar length.

    A padded batch costs about `fixed_cost` token-rows (a forward's fixed price: kernel launches, Python)
    plus rows x its longest length. Sorted by length, the cheapest contiguous cut is found exactly by
    dynamic programming, so short rows stop paying for the longest one's padding, and a batch is split
    only where the padding saved is worth a forward of its own."""
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    sizes = [max(1, lengths[i]) for i in order]
    best, cut = [0] + [None] * len(order), [0] * (len(order) + 1)
    for end in range(1, len(order) + 1):
        for start in range(max(0, end - max_rows), end):
            cost = best[start] + fixed_cost + (end - start) * sizes[end - 1]
            if best[end] is None or cost < best[end]:
                best[end], cut[end] = cost, start
    groups, end = [], len(order)
    while end:
        groups.append(order[cut[end]: end])
        end = cut[end]
    return groups[::-1]


def roomy_cache(layers: int, room: int) -> DynamicCache:
    """An empty `DynamicCache` whose `layers` are `RoomyLayer`s with room for `room` more tokens."""
    cache = DynamicCache()
    cache.layers = [RoomyLayer(room) for _ in range(layers)]
    return cache


class Workspace:
    """Memory for one batch's K/V store at a time, kept between batches.

    On a CPU a fresh tensor of hundreds of MB costs about three times its copy in page faults (the
    allocator maps blocks that large anew on every call and the kernel zeroes every page); reused, its
    pages stay mapped. A batch's store is dead once its rows are copied out (`PastBatch.rows_kv`) or its
    decoding ends, before the next batch takes the memory, so one model's batches must not overlap.

    Only stores of up to `max_bytes` are kept, so a real model's long prompts do not pin gigabytes
    between calls; larger ones, and every store on a GPU (whose caching allocator already reuses freed
    blocks, across models too), are allocated for the batch alone."""

    def __init__(self, max_bytes: int = 1 << 29):
        self.max_bytes = max_bytes
        self.buffer: torch.Tensor | None = None

    def take(self, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        """An uninitialised tensor of `shape`, with `like`'s dtype and device, over the kept memory if it fits."""
        size = math.prod(shape)
        if like.device.type != "cpu" or size * like.element_size() > self.max_bytes:
            return like.new_empty(shape)
        buffer = self.buffer
        if buffer is None or buffer.numel() < size or buffer.dtype != like.dtype:
            # Prefixes grow every round; room for half as much again spares a new block each time.
            room = min(size + size // 2, self.max_bytes // like.element_size())
            self.buffer = buffer = like.new_empty(room)
        return buffer[:size].view(shape)


class PastBatch:
    """A batch whose rows continue from cached prefixes of different lengths.

    Layout per row: [left pad | cached prefix (L_i) | left pad | new tokens (n_i)], widths P and N, so
    every row's last token sits in the last column (ready for decoding). The K/V of all layers and rows
    live in one store [layers, 2 (keys, values), rows, heads, P + N + room, head_dim], so placing a
    cached segment, or reading a row's new tokens back, is one copy."""

    def __init__(self, found: Sequence[dict | None], news: Sequence[list[int]], pad_id: int, device, layers: int,
                 decode: int = 0, workspace: Workspace | None = None):
        """The cache keeps room for the new tokens and `decode` more (`RoomyLayer`), so the forward pass and
        decoding write into it instead of copying it."""
        self.found = list(found)
        self.lengths = [0 if f is None else len(f["ids"]) for f in found]
        self.news = [len(n) for n in news]
        self.past, self.width = max(self.lengths), max(self.news)
        batch = len(news)
        self.mask = torch.zeros(batch, self.past + self.width, dtype=torch.long, device=device)
        self.input_ids = torch.full((batch, self.width), pad_id, device=device)
        self.positions = torch.zeros(batch, self.width, dtype=torch.long, device=device)
        for row, (length, new) in enumerate(zip(self.lengths, news)):
            self.mask[row, self.past - length: self.past] = 1
            self.mask[row, self.past + self.width - len(new):] = 1
            self.input_ids[row, self.width - len(new):] = torch.tensor(new, device=device)
            self.positions[row, self.width - len(new):] = length + torch.arange(len(new), device=device)
        room = self.width + decode
        self.cache, self.store = roomy_cache(layers, room), None
        template = next((f["kv"][0] for f in found if f is not None), None)
        if template is None:  # nothing cached: the layers make their own buffers
            return
        shape = (template.shape[0], 2, batch, template.shape[2], self.past + room, template.shape[4])
        self.store = workspace.take(shape, template) if workspace else template.new_empty(shape)
        # The store is uninitialised: the forward pass writes every position from `past` on before anything
        # reads it, and the left padding of shorter prefixes is zeroed, because uninitialised memory may hold
        # NaN, and a NaN key or value stays NaN through the mask (NaN - inf, 0 x NaN).
        for row, f in enumerate(found):
            start = self.past - self.lengths[row]
            self.store[:, :, row, :, :start] = 0
            for segment in f["kv"] if f is not None else ():
                self.store[:, :, row, :, start: start + segment.shape[3]] = segment
                start += segment.shape[3]
        self.cache.layers = [RoomyLayer.holding(self.store[layer, 0], self.store[layer, 1], self.past, room)
                             for layer in range(shape[0])]

    def attention(self, prebuilt: bool = True) -> torch.Tensor | None:
        return attention_mask(self.mask, self.width, prebuilt)

    def segment(self, row: int, start: int, end: int) -> torch.Tensor:
        """A copy of the K/V of columns [start, end) of batch row `row`, as the cache holds them now (after
        decoding and any `batch_select_indices`, `row` counts the rows still in the batch)."""
        layers = self.cache.layers
        if self.store is not None and layers[0].buffers[0].data_ptr() == self.store[0, 0].data_ptr():
            return self.store[:, :, row, :, start:end].clone(memory_format=torch.contiguous_format)
        return torch.stack([torch.stack([b[row, :, start:end] for b in layer.buffers]) for layer in layers])

    def rows_kv(self) -> list[tuple[torch.Tensor, ...]]:
        """Each row's K/V segments (`PrefixCache`): its cached prefix's, shared, and a copy of its new tokens',
        read once the forward pass has read them and before any decoding."""
        end = self.past + self.width
        return [(self.found[row]["kv"] if self.found[row] else ()) + (self.segment(row, end - new, end),)
                for row, new in enumerate(self.news)]
