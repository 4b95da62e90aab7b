"""Stable hashes of text: the one source of seeds and cache keys that must not change between runs.

Python's `hash()` is salted per process, so seeds and keys are blake2b digests of a text key instead.
Parts of a key are joined by the ASCII unit separator, which no question or step contains."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Iterable

SEPARATOR = "\x1f"


def join_key(*parts: object) -> str:
    return SEPARATOR.join(str(part) for part in parts)


def stable_int(key: str) -> int:
    """A 64-bit integer from `key` (a seed for numpy's generators)."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little")


def stable_uniform(key: str) -> float:
    """A number in [0, 1) from `key`: a coin flip that is the same in every process."""
    return stable_int(key) / 2**64


def stable_digest(key: str) -> str:
    """A 128-bit hex digest of `key` (a cache key)."""
    return hashlib.blake2b(key.encode(), digest_size=16).hexdigest()


def bytes_digest(chunks: Iterable[bytes]) -> str:
    """A 128-bit hex digest of a stream of bytes (a fingerprint of model weights)."""
    digest = hashlib.blake2b(digest_size=16)
    for chunk in chunks:
        digest.update(chunk)
    return digest.hexdigest()


WEIGHT_PATTERNS = ("*.safetensors", "*.bin", "*.gguf", "*.pt")
_SAMPLE = 1 << 20


def weights_fingerprint(source: str | Path) -> str:
    """Which weights a model directory holds, in a digest cheap enough for a 15 GB checkpoint: every weights
    file's name and size with its first and last MiB (a safetensors file starts with its tensor index, and
    any retrained or fine-tuned weights differ in both ends). A hub id is its own fingerprint ("hub:<id>"):
    it names whatever revision the hub serves."""
    folder = Path(source)
    if not folder.is_dir():
        return f"hub:{source}"
    files = sorted(p for pattern in WEIGHT_PATTERNS for p in folder.glob(pattern))

    def chunks():
        for path in files:
            size = path.stat().st_size
            yield f"{path.name}:{size}".encode()
            with path.open("rb") as f:
                yield f.read(_SAMPLE)
                if size > 2 * _SAMPLE:
                    f.seek(size - _SAMPLE)
                    yield f.read(_SAMPLE)
    return bytes_digest(chunks())
