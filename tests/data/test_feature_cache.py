"""The on-disk frozen-feature cache: round trip, reuse, resume, errors, workers."""

from __future__ import annotations

import json
import pickle
import sys
from pathlib import Path

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
    # A pickled cache (a DataLoader worker's copy) opens its own files and reads the same rows.
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


def test_rows_with_repeats_and_runs_equal_the_shards_as_numpy_loads_them(tmp_path):
    cache = build_feature_cache(_records(23), _Encoder(), tmp_path / "c", "k", shard_size=5)
    reference = np.concatenate([np.load(p) for p in sorted((tmp_path / "c").glob("shard-*.npy"))]).astype(np.float32)
    indices = np.array([3, 4, 5, 6, 6, 22, 0, 1, 2, 4, 21, 20, 3])  # runs across shard ends, repeats, any order
    np.testing.assert_array_equal(cache.rows(indices).numpy(), reference[indices])
    np.testing.assert_array_equal(cache.rows([]).numpy(), np.empty((0, 2, 3), np.float32))


def test_reading_rows_maps_no_shard_into_the_process(tmp_path):
    cache = build_feature_cache(_records(12), _Encoder(), tmp_path / "c", "k", shard_size=4)
    cache.rows(np.arange(12)[::-1])
    maps = Path("/proc/self/maps").read_text() if sys.platform.startswith("linux") else ""
    mapped = [line for line in maps.splitlines() if str(tmp_path / "c") in line]
    assert mapped == []  # read with pread: the pages stay in the page cache, not in this process


def test_a_truncated_shard_is_an_error_naming_it(tmp_path):
    build_feature_cache(_records(8), _Encoder(), tmp_path / "c", "k", shard_size=4)
    shard = tmp_path / "c" / "shard-00001.npy"
    shard.write_bytes(shard.read_bytes()[:-10])
    cache = FeatureCache(tmp_path / "c")
    np.testing.assert_array_equal(cache.rows([0]).numpy()[0], _Encoder()([np.zeros((6, 6, 3), np.uint8)])[0])
    with pytest.raises(ValueError, match="shard-00001.npy: truncated shard"):
        cache.rows([5])
