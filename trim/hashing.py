"""Stable hashes of text: the one source of seeds and cache keys that must not change between runs.

Python's `hash()` is salted per process, so seeds and keys are blake2b digests of a text key instead.
Parts of a key are joined by the ASCII unit separator, which no question or step contains."""

from __future__ import annotations

import hashlib
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
