"""Per-sample seeds: what an image draws depends on the audit's seed, its sample id and what the draw is for,
never on its batch, position, device or process (sharded runs must agree with single-process ones). The
attacks' random starts, the corruptions' keys and the shortcut controls all draw from here."""

from __future__ import annotations

import hashlib


def sample_seed(seed: int, sample_id: int, salt: str = "") -> int:
    """A generator seed that depends only on (seed, sample id, salt): a sample gets the same random start
    whatever its batch, position or process (sharded runs must agree with single-process ones)."""
    digest = hashlib.blake2b(f"{seed}:{int(sample_id)}:{salt}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)
