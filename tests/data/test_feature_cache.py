"""The on-disk frozen-feature cache: round trip, reuse, resume, errors, workers."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch

from unifashion.data.feature_cache import FeatureCache, build_feature_cache, records_key
from unifashion.data.records import ItemRecord


def _records(n: int) -> list[ItemRecord]:
    return [ItemRecord(f"item{i}", np.full((6, 6, 3), i, np.uint8)) for i in range(n)]


class _Encoder:
    """A stand-in encoder: (2, 3) features per image from its pixel value; counts its calls."""

    def __init__(self):
        self.images = 0

    def __call__(self, images):
        self.images += len(images)
        values = torch.tensor([float(np.asarray(im)[0, 0, 0]) for im in images])
        return values[:, None, None] * torch.arange(1, 7, dtype=torch.float32).reshape(1, 2, 3)


def test_rows_round_trip_in_any_order_across_shards(tmp_path):
    encoder = _Encoder()
    cache = build_feature_cache(_records(23), encoder, tmp_path / "c", "k", shard_size=5, batch_size=3,
                                progress=False)
    assert cache.shape == (23, 2, 3) and len(list(tmp_path.joinpath("c").glob("shard-*.npy"))) == 5
    rows = cache.rows([22, 0, 7, 7])
    expected = torch.tensor([22.0, 0.0, 7.0, 7.0])[:, None, None] * torch.arange(1, 7).reshape(1, 2, 3)
    assert torch.equal(rows, expected)
    assert torch.equal(cache[3:6][:, 0, 0], torch.tensor([3.0, 4.0, 5.0]))
    assert torch.equal(cache.features(["item4"])[0], cache[4])
    # A pickled cache (a DataLoader worker's copy) maps its own files and reads the same rows.
    assert torch.equal(pickle.loads(pickle.dumps(cache)).rows([11, 2]), cache.rows([11, 2]))


def test_a_built_cache_is_reused_and_a_stopped_build_redoes_only_missing_shards(tmp_path):
    records = _records(12)
    first = _Encoder()
    build_feature_cache(records, first, tmp_path / "c", "k", shard_size=4, progress=False)
    assert first.images == 1 + 12  # one image probes the row shape
    again = _Encoder()
    build_feature_cache(records, again, tmp_path / "c", "k", shard_size=4, progress=False)
    assert again.images == 0
    (tmp_path / "c" / "shard-00001.npy").unlink()  # as if the build had stopped there
    with pytest.raises(FileNotFoundError, match="incomplete"):
        FeatureCache(tmp_path / "c")
    resumed = _Encoder()
    cache = build_feature_cache(records, resumed, tmp_path / "c", "k", shard_size=4, progress=False)
    assert resumed.images == 4 and torch.equal(cache.rows([5])[0, 0, 0], torch.tensor(5.0))


def test_a_cache_of_other_images_or_encoder_is_refused(tmp_path):
    build_feature_cache(_records(4), _Encoder(), tmp_path / "c", "key-a", progress=False)
    with pytest.raises(ValueError, match="built for other images or another encoder"):
        build_feature_cache(_records(4), _Encoder(), tmp_path / "c", "key-b", progress=False)
    with pytest.raises(ValueError, match="duplicate item ids"):
        build_feature_cache(_records(2) * 2, _Encoder(), tmp_path / "d", "k", progress=False)
    meta = json.loads((tmp_path / "c" / "meta.json").read_text())
    assert meta["ids"] == [f"item{i}" for i in range(4)] and meta["dtype"] == "float16"


def test_records_key_follows_ids_and_image_origins(tmp_path):
    a = [ItemRecord("x", tmp_path / "x.png"), ItemRecord("y", tmp_path / "y.png")]
    b = [ItemRecord("x", tmp_path / "x.png"), ItemRecord("y", tmp_path / "z.png")]
    assert records_key(a, "enc") == records_key(list(a), "enc")
    assert records_key(a, "enc") != records_key(b, "enc") != records_key(a, "other")


def test_workers_read_the_images(tmp_path):
    cache = build_feature_cache(_records(9), _Encoder(), tmp_path / "c", "k", shard_size=4, batch_size=2,
                                workers=2, progress=False)
    assert torch.equal(cache[:][:, 0, 0], torch.arange(9, dtype=torch.float32))
