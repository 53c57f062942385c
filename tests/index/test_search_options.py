"""The checks both index backends share (validation.py): a search's options, a new index's
options and staged ids, each error message as a user reads it; and the two backends raising the
same messages for the same bad searches."""

from __future__ import annotations

import numpy as np
import pytest
from test_index import DIM, backend, create, make_items, milvus_uri  # noqa: F401 - the backend fixtures

from unifashion.index import DuplicateItemError, UnknownItemError
from unifashion.index.validation import (
    check_all_held,
    check_index_options,
    check_not_held,
    check_search,
    held_after_staging,
    unknown_category_error,
)
from unifashion.settings import SEARCH

QUERY = np.ones(DIM, dtype=np.float32)


def search(query=QUERY, captions=True, default_nprobe=16, **options):
    """check_search of an index of DIM-vectors at /indexes/shop, with these options."""
    arguments = {"top_k": 10, "candidates": None, "fusion_weight": 0.0, "nprobe": None, "category": None,
                 **options}
    return check_search(query, DIM, **arguments, captions=captions, folder="/indexes/shop",
                        default_nprobe=default_nprobe)


def test_a_search_gets_its_defaults_filled_in():
    request = search(top_k=5)
    assert (request.top_k, request.candidates, request.nprobe) == (5, SEARCH.candidates_for(5), 16)
    assert request.single and request.queries.shape == (1, DIM) and request.queries.dtype == np.float32
    request = search(query=np.stack([QUERY, QUERY]), top_k=3, candidates=3, nprobe=2, fusion_weight=1,
                     category="dress")
    assert not request.single and request.queries.shape == (2, DIM)
    assert (request.candidates, request.nprobe, request.fusion_weight, request.category) == (3, 2, 1.0, "dress")
    assert search(default_nprobe=None).nprobe is None  # the local index reads its own setting


@pytest.mark.parametrize("options, message", [
    ({"top_k": 0}, "top_k must be a positive integer, got 0"),
    ({"top_k": True}, "top_k must be a positive integer, got True"),
    ({"top_k": 2.5}, "top_k must be a positive integer, got 2.5"),
    ({"top_k": 10, "candidates": 5}, r"candidates must be an integer >= top_k \(10\), got 5"),
    ({"candidates": 20.0}, r"candidates must be an integer >= top_k \(10\), got 20.0"),
    ({"fusion_weight": float("nan")}, "fusion_weight must be a finite number, got nan"),
    ({"fusion_weight": "1"}, "fusion_weight must be a finite number, got '1'"),
    ({"fusion_weight": True}, "fusion_weight must be a finite number, got True"),
    ({"nprobe": 0}, "nprobe must be a positive integer, got 0"),
    ({"category": 3}, "category must be a string or None, got 3"),
    ({"query": np.ones(DIM - 1)}, rf"query must have shape \({DIM},\) or \(Q, {DIM}\) with Q >= 1, got \({DIM - 1},\)"),
    ({"query": np.zeros(DIM)}, "query 0 is all zeros"),
    ({"query": np.full(DIM, np.inf)}, "query 0 contains NaN or infinite values"),
    ({"fusion_weight": 1.0, "captions": False},
     "the index at /indexes/shop was built without captions .*search it with fusion_weight=0"),
])
def test_bad_search_options_name_what_is_wrong(options, message):
    with pytest.raises(ValueError, match=message):
        search(**options)


def test_a_new_index_checks_its_options_and_fuses_nothing_without_captions():
    assert check_index_options(256, 32, 1.0, True) == 1.0
    assert check_index_options(256, 32, 0.5, False) == 0.0  # no caption vectors: nothing to fuse
    with pytest.raises(ValueError, match="captions must be True or False, got 1"):
        check_index_options(256, 32, 1.0, 1)
    with pytest.raises(ValueError, match="dim must be a positive integer, got -1"):
        check_index_options(-1, 32, 1.0, True)
    with pytest.raises(ValueError, match="num_queries must be a positive integer, got 0"):
        check_index_options(256, 0, 1.0, True)
    with pytest.raises(ValueError, match="fused_weight must be a finite number, got inf"):
        check_index_options(256, 32, float("inf"), True)


def test_staged_ids_are_checked_against_what_the_index_will_hold():
    committed = {"a": 0, "b": 1, "c": 2}
    # "b" is staged for deleting, "x" for adding.
    held = held_after_staging(["a", "b", "x", "y"], {"x"}, committed, {1})
    assert held == ["a", "x"]
    check_not_held(["b", "y"], held_after_staging(["b", "y"], {"x"}, committed, {1}))
    with pytest.raises(DuplicateItemError, match=r"2 of the ids are already in the index: 'a', 'x'; use upsert"):
        check_not_held(["a", "x", "y"], held)
    many = [f"id-{i}" for i in range(7)]
    with pytest.raises(DuplicateItemError, match=r"'id-4' \.\.\.; use upsert"):
        check_not_held(many, many)
    with pytest.raises(UnknownItemError, match=r"cannot delete 2 id\(s\) not in the index at /x: 'b', 'y'"):
        check_all_held(["a", "b", "y"], held_after_staging(["a", "b", "y"], set(), committed, {1}), "the index at /x")
    message = "unknown category 'hat'; the index has 'dress', 'shirt'"
    assert str(unknown_category_error("hat", ["dress", "shirt"])) == message


def test_both_backends_raise_the_same_messages(tmp_path, backend):  # noqa: F811 - the fixture
    ids, multi, fusion, meta = make_items(12)
    index = create(tmp_path / "index", backend)
    index.add(ids, multi, fusion, meta)
    query = multi[0, 0]
    cases = [({"top_k": 0}, "top_k must be a positive integer, got 0"),
             ({"top_k": 5, "candidates": 4}, r"candidates must be an integer >= top_k \(5\), got 4"),
             ({"fusion_weight": float("inf")}, "fusion_weight must be a finite number, got inf"),
             ({"nprobe": -2}, "nprobe must be a positive integer, got -2"),
             ({"category": "hat"}, "unknown category 'hat'; the index has 'dress', 'shirt', 'toptee'")]
    for options, message in cases:
        for exact in (False, True):
            with pytest.raises(ValueError, match=message):
                index.search(query, exact=exact, **options)
    with pytest.raises(DuplicateItemError, match="1 of the ids are already in the index: 'item-3'; use upsert"):
        index.add(["item-3"], multi[:1], fusion[:1])
    with pytest.raises(UnknownItemError, match=r"cannot delete 1 id\(s\) not in the .*: 'nope'"):
        index.delete(["item-1", "nope"])
    index.close()
