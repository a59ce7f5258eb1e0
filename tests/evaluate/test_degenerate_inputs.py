"""Evaluation on degenerate inputs: an empty benchmark, duplicate compare labels, a truncated shard in analyze."""

import numpy as np
import pytest

from openclip_ce.errors import UserError
from openclip_ce.evaluate.analyze import read_shard
from openclip_ce.evaluate.compare import unique_labels
from openclip_ce.testing.toy_shards import write_demo_shards
from openclip_ce.evaluate.common import pos_wins
from openclip_ce.shards.tario import read_samples


def test_pos_wins_on_an_empty_benchmark():
    assert pos_wins(np.zeros((0, 0))).shape == (0,)
    assert pos_wins(np.array([[2.0, 1.0], [1.0, 1.0]])).tolist() == [True, False]  # a tie is a miss


def test_compare_labels_are_always_unique():
    paths = ["a/clip.json", "b/clip.json", "c/clip.json"]
    results = [{"model": {"label": "A"}}] * 3
    labels = unique_labels(results, paths, None)
    assert len(set(labels)) == 3 and labels == ["A (a/clip)", "A (b/clip)", "A (c/clip)"]
    same = unique_labels(results[:2], ["x/clip.json", "x/clip.json"], None)
    assert len(set(same)) == 2


def test_analyze_rejects_a_shard_cut_at_a_sample_boundary(tmp_path):
    shard = write_demo_shards(tmp_path, num_shards=1, per_shard=6)[0]
    assert len(read_shard(shard)) == 6
    samples = list(read_samples(shard))
    cut = sum(len(m.raw) for _, members in samples[:3] for m in members)
    with open(shard, "rb") as f:
        head = f.read(cut)
    (tmp_path / "cut.tar").write_bytes(head)
    with pytest.raises(UserError, match=r"cut\.tar: not a readable tar shard .*end-of-archive"):
        read_shard(str(tmp_path / "cut.tar"))
