"""Which shard actors ask Ray for a GPU: CPU-visible logic, the same answer with or without one."""

from __future__ import annotations

import pytest

from cluster.service.shards import gpus_per_shard
from operators.index.shard import IndexShard


@pytest.mark.parametrize("factory, append_only, want", [
    ("Flat", True, 0.5),        # two shards share one GPU
    ("IVF16,SQ8", False, 0.5),  # IVF is forced append-only and FAISS holds it on a GPU
    ("Flat", False, 0.0),       # a removable Flat shard filters and deletes: CPU
    ("HNSW16", True, 0.0),      # FAISS has no GPU HNSW
    ("SQ8,RFlat", True, 0.0),   # nor a GPU refining index
    ("SQ8", True, 0.0),         # nor plain SQ8 (its CPU kernel scans at memory speed)
])
def test_only_gpu_eligible_shards_ask_for_a_share_of_the_gpus(factory, append_only, want):
    probe = IndexShard(16, factory, append_only=append_only, device="cpu")
    assert gpus_per_shard(1.0, 2, probe) == want
    assert gpus_per_shard(0.0, 2, probe) == 0.0


def test_a_shard_asks_for_at_most_one_gpu():
    probe = IndexShard(16, "Flat", append_only=True, device="cpu")
    assert gpus_per_shard(8.0, 2, probe) == 1.0
    assert gpus_per_shard(1.0, 4, probe) == 0.25
