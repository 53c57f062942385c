"""Input checks of the catalogue index, one set for both backends: ids, vector batches, metadata,
staged changes and search arguments.

Each check raises ``ValueError`` (or the index's :class:`DuplicateItemError` /
:class:`UnknownItemError`) naming the offending argument (and item) and otherwise returns the
input in the form the index works with. The local index's ANN settings are checked by
:func:`unifashion.index.ann.check_ann_config`, next to the stage they configure.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from unifashion.data.records import ItemRecord
from unifashion.index.errors import DuplicateItemError, UnknownItemError
from unifashion.index.kernels import to_fp16_storage
from unifashion.index.store import ItemMetadata, ItemRow
from unifashion.settings import SEARCH

# How far from 1 a vector's norm may be before ``add`` calls it not normalised. fp16 model
# outputs are off by ~1e-3.
_NORM_TOLERANCE = 1e-2

MetadataInput = ItemMetadata | ItemRecord | Mapping[str, Any] | None
_METADATA_KEYS = {"item_id", "category", "captions", "attributes", "image_path", "fusion_caption"}


def check_positive_int(value: Any, name: str) -> None:
    """A positive integer (numpy's included, bool not)."""
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def check_fused_weight(value: Any) -> None:
    """The weight w of an index's fused vectors ``Z_q + w Z_C``: a finite number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"fused_weight must be a finite number, got {value!r}")


def check_index_options(dim: Any, num_queries: Any, fused_weight: Any, captions: Any) -> float:
    """The options of a new index that both backends take; returns the fused weight to create it
    with (0 without captions: there is nothing to fuse)."""
    if not isinstance(captions, bool):
        raise ValueError(f"captions must be True or False, got {captions!r}")
    for name, value in (("dim", dim), ("num_queries", num_queries)):
        check_positive_int(value, name)
    check_fused_weight(fused_weight)
    return float(fused_weight) if captions else 0.0


# -- items -----------------------------------------------------------------------------------


def check_ids(ids: Sequence[str], name: str) -> list[str]:
    if isinstance(ids, str):
        raise ValueError(f"{name} must be a sequence of strings, got the single string {ids!r}")
    item_ids = list(ids)
    seen: set[str] = set()
    for position, item_id in enumerate(item_ids):
        if not isinstance(item_id, str) or not item_id:
            raise ValueError(f"{name}[{position}] must be a non-empty string, got {item_id!r}")
        if item_id in seen:
            raise ValueError(f"{name} lists {item_id!r} more than once")
        seen.add(item_id)
    return [str(i) for i in item_ids]


def _shown(item_ids: Sequence[str]) -> str:
    return ", ".join(repr(i) for i in item_ids[:5]) + (" ..." if len(item_ids) > 5 else "")


def held_after_staging(item_ids: Sequence[str], staged: Collection[str], committed: Mapping[str, int],
                       staged_deletes: Collection[int]) -> list[str]:
    """Those of ``item_ids`` that the index holds once its staged changes are applied: staged
    for adding, or committed (``committed``: id -> key) and not staged for deleting."""
    return [i for i in item_ids if i in staged or (i in committed and committed[i] not in staged_deletes)]


def check_not_held(item_ids: Sequence[str], held: Sequence[str]) -> None:
    """``add``: none of the ids may be held already (:func:`held_after_staging`)."""
    if held:
        raise DuplicateItemError(
            f"{len(held)} of the ids are already in the index: {_shown(held)}; use upsert() to replace them")


def check_all_held(item_ids: Sequence[str], held: Sequence[str], where: str) -> None:
    """``delete``: every id must be held; ``where`` names the index in the message."""
    held_set = set(held)
    unknown = [i for i in item_ids if i not in held_set]
    if unknown:
        raise UnknownItemError(f"cannot delete {len(unknown)} id(s) not in {where}: {_shown(unknown)}")


def as_float_array(values: Any, name: str) -> Any:
    """An array-like with .shape whose slices give floats; memory maps stay memory maps."""
    if not hasattr(values, "shape") or not hasattr(values, "dtype"):
        try:
            values = np.asarray(values, dtype=np.float32)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{name} must be an array of numbers: {exc}") from exc
    dtype = values.dtype
    is_float = getattr(dtype, "is_floating_point", None)  # torch dtypes
    if is_float is None:
        is_float = np.issubdtype(dtype, np.floating)
    if not is_float:
        raise ValueError(f"{name} must hold floating-point numbers, got dtype {dtype}")
    return values


def no_captions_error(folder: Any) -> ValueError:
    """The error of a fusion search (or fused index) asked of an index built without captions."""
    return ValueError(f"the index at {folder} was built without captions (no caption-fusion vectors): search it "
                      f"with fusion_weight=0, or build an index with captions to use caption fusion")


def check_fusion_vectors_given(captions: bool, fusion_vectors: Any, folder: Any) -> None:
    """An index with captions needs every item's caption vector; one without takes none."""
    if captions and fusion_vectors is None:
        raise ValueError(f"fusion_vectors are required: the index at {folder} fuses captions "
                         f"(create it with captions=False to index without them)")
    if not captions and fusion_vectors is not None:
        raise ValueError(f"the index at {folder} was built without captions: pass fusion_vectors=None")


def check_batch(
    count: int,
    multi_vectors: Any,
    fusion_vectors: Any,
    metadata: Sequence[MetadataInput] | None,
    fusion_captions: Sequence[str] | None,
    num_queries: int,
    dim: int,
) -> tuple[Any, Any]:
    """The shapes and lengths of one ``add`` of ``count`` items; returns the two vector arrays
    (still unread: their values are checked chunk by chunk as they are written).
    ``fusion_vectors`` None: the items have no caption vectors (an index built without captions)."""
    multi_vectors = as_float_array(multi_vectors, "multi_vectors")
    expected_multi = (count, num_queries, dim)
    if tuple(multi_vectors.shape) != expected_multi:
        raise ValueError(
            f"multi_vectors must have shape (items, num_queries, dim) = {expected_multi}, "
            f"got {tuple(multi_vectors.shape)}"
        )
    if fusion_vectors is not None:
        fusion_vectors = as_float_array(fusion_vectors, "fusion_vectors")
    if fusion_vectors is not None and tuple(fusion_vectors.shape) != (count, dim):
        raise ValueError(
            f"fusion_vectors must have shape (items, dim) = {(count, dim)}, got {tuple(fusion_vectors.shape)}"
        )
    if metadata is not None and len(metadata) != count:
        raise ValueError(f"{len(metadata)} metadata entries for {count} ids")
    if fusion_captions is not None and len(fusion_captions) != count:
        raise ValueError(f"{len(fusion_captions)} fusion captions for {count} ids")
    return multi_vectors, fusion_vectors


def check_vectors(vectors: np.ndarray, name: str, item_ids: list[str], offset: int, normalize: bool) -> None:
    """Reject non-finite and (unless normalising) non-unit vectors, naming the first bad item.

    vectors: (n, k, dim) float32, items ``offset .. offset + n`` of the batch.
    """
    finite = np.isfinite(vectors).all(axis=(1, 2))
    if not finite.all():
        i = int(np.flatnonzero(~finite)[0])
        raise ValueError(
            f"{name} of item {item_ids[offset + i]!r} (position {offset + i}) contain NaN or infinite values"
        )
    norms = np.linalg.norm(vectors, axis=-1)
    if normalize:
        bad = (norms == 0).any(axis=1)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(f"{name} of item {item_ids[offset + i]!r} (position {offset + i}) has a zero vector")
    else:
        bad = (np.abs(norms - 1) > _NORM_TOLERANCE).any(axis=1)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            worst = float(norms[i][np.argmax(np.abs(norms[i] - 1))])
            raise ValueError(
                f"{name} of item {item_ids[offset + i]!r} (position {offset + i}) are not L2-normalised "
                f"(a norm of {worst:.4g}); pass normalize=True to normalise them"
            )


def stored_vectors(multi_vectors: Any, fusion_vectors: Any, item_ids: list[str], offset: int, normalize: bool,
                   dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Items ``offset ..`` of an ``add`` as both backends store them: checked (:func:`check_vectors`),
    normalised if asked, and rounded to fp16 storage, as (n, num_queries, dim) and (n, dim)
    float16. ``fusion_vectors`` None (items without captions) gives zero caption vectors: their
    fusion term is 0."""
    multi = np.array(multi_vectors, dtype=np.float32)
    check_vectors(multi, "multi_vectors", item_ids, offset, normalize)
    if normalize:
        multi /= np.linalg.norm(multi, axis=-1, keepdims=True)
    if fusion_vectors is None:
        fusion = np.zeros((len(multi), dim), dtype=np.float32)
    else:
        fusion = np.array(fusion_vectors, dtype=np.float32)
        check_vectors(fusion[:, None, :], "fusion_vectors", item_ids, offset, normalize)
        if normalize:
            fusion /= np.linalg.norm(fusion, axis=-1, keepdims=True)
    return to_fp16_storage(multi), to_fp16_storage(fusion)


def item_row(
    key: int, item_id: str, segment: int, row: int, meta: MetadataInput, fusion_caption: str | None
) -> ItemRow:
    """The ``items`` table row of one item, from any accepted metadata form."""
    fields: dict[str, Any] = {"category": "", "captions": {}, "attributes": {}, "image_path": "", "fusion_caption": ""}
    if isinstance(meta, ItemMetadata):
        source_id = meta.item_id
        fields.update(meta.to_dict())
    elif isinstance(meta, ItemRecord):
        source_id = meta.item_id
        fields.update(category=meta.category, captions=meta.captions, attributes=meta.attributes)
        if isinstance(meta.image, (str, os.PathLike)):
            fields["image_path"] = str(meta.image)
    elif isinstance(meta, Mapping):
        unknown = set(meta) - _METADATA_KEYS
        if unknown:
            raise ValueError(
                f"metadata of item {item_id!r} has unknown keys {sorted(unknown)}; allowed: {sorted(_METADATA_KEYS)}"
            )
        source_id = meta.get("item_id", item_id)
        fields.update({k: v for k, v in meta.items() if k != "item_id"})
    elif meta is None:
        source_id = item_id
    else:
        raise ValueError(f"metadata of item {item_id!r} must be an ItemRecord, ItemMetadata, mapping or None")
    if source_id != item_id:
        raise ValueError(f"metadata for id {item_id!r} describes item {source_id!r}")
    if fusion_caption is not None:
        fields["fusion_caption"] = fusion_caption
    for text_field in ("category", "image_path", "fusion_caption"):
        if not isinstance(fields[text_field], str):
            raise ValueError(f"{text_field} of item {item_id!r} must be a string, got {fields[text_field]!r}")
    captions = fields["captions"]
    if not isinstance(captions, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in captions.items()
    ):
        raise ValueError(f"captions of item {item_id!r} must map caption style to text, got {captions!r}")
    if not isinstance(fields["attributes"], Mapping):
        raise ValueError(f"attributes of item {item_id!r} must be a mapping, got {fields['attributes']!r}")
    try:
        attributes_json = json.dumps(dict(fields["attributes"]), sort_keys=True, ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"attributes of item {item_id!r} are not JSON-serialisable: {exc}") from exc
    return ItemRow(
        key=key,
        item_id=item_id,
        segment=segment,
        row=row,
        category=fields["category"],
        captions=json.dumps(dict(captions), sort_keys=True, ensure_ascii=False),
        attributes=attributes_json,
        image_path=fields["image_path"],
        fusion_caption=fields["fusion_caption"],
    )


# -- search ----------------------------------------------------------------------------------


def check_queries(query: Any, dim: int) -> tuple[np.ndarray, bool]:
    """(Q, dim) float32 queries, and whether ``query`` was one vector (dim,)."""
    try:
        queries = np.asarray(query, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"query must be an array of numbers: {exc}") from exc
    single = queries.ndim == 1
    if single:
        queries = queries[None, :]
    if queries.ndim != 2 or queries.shape[1] != dim or queries.shape[0] == 0:
        raise ValueError(f"query must have shape ({dim},) or (Q, {dim}) with Q >= 1, got {np.shape(query)}")
    bad = np.flatnonzero(~np.isfinite(queries).all(axis=1))
    if len(bad):
        raise ValueError(f"query {int(bad[0])} contains NaN or infinite values")
    zero = np.flatnonzero(~(np.abs(queries) > 0).any(axis=1))
    if len(zero):
        raise ValueError(f"query {int(zero[0])} is all zeros")
    return np.ascontiguousarray(queries), single


def check_search_options(top_k: Any, candidates: Any, fusion_weight: Any, nprobe: Any, category: Any) -> None:
    """The options of a search (``candidates`` and ``nprobe`` may be None: the defaults)."""
    check_positive_int(top_k, "top_k")
    if candidates is not None and (
        not isinstance(candidates, (int, np.integer)) or isinstance(candidates, bool) or candidates < top_k
    ):
        raise ValueError(f"candidates must be an integer >= top_k ({top_k}), got {candidates!r}")
    if (isinstance(fusion_weight, bool) or not isinstance(fusion_weight, (int, float, np.floating, np.integer))
            or not math.isfinite(fusion_weight)):
        raise ValueError(f"fusion_weight must be a finite number, got {fusion_weight!r}")
    if nprobe is not None:
        check_positive_int(nprobe, "nprobe")
    if category is not None and not isinstance(category, str):
        raise ValueError(f"category must be a string or None, got {category!r}")


@dataclass(frozen=True)
class SearchRequest:
    """A search's checked arguments with the defaults filled in: what both backends search with."""

    queries: np.ndarray  # (Q, dim) float32, finite, none all zeros
    single: bool  # the query was one vector (dim,): the answer is one list of hits
    top_k: int
    candidates: int  # items the ANN stage proposes for the exact re-rank
    fusion_weight: float
    nprobe: int | None  # None: the index's own setting
    category: str | None


def check_search(query: Any, dim: int, top_k: Any, candidates: Any, fusion_weight: Any, nprobe: Any,
                 category: Any, *, captions: bool, folder: Any, default_nprobe: int | None = None) -> SearchRequest:
    """Every check of a search of an index of ``dim``-vectors (``captions``: whether its items
    have caption vectors, for the fusion term; ``folder`` names it in errors). ``candidates``
    None: ``settings.SEARCH.candidates_for(top_k)``; ``nprobe`` None: ``default_nprobe``."""
    queries, single = check_queries(query, dim)
    check_search_options(top_k, candidates, fusion_weight, nprobe, category)
    if fusion_weight and not captions:
        raise no_captions_error(folder)
    return SearchRequest(
        queries=queries,
        single=single,
        top_k=int(top_k),
        candidates=SEARCH.candidates_for(top_k) if candidates is None else int(candidates),
        fusion_weight=float(fusion_weight),
        nprobe=default_nprobe if nprobe is None else int(nprobe),
        category=category,
    )


def unknown_category_error(category: str, known: Sequence[str]) -> ValueError:
    """The error of a search filtered by a category that no item of the index has."""
    shown = ", ".join(repr(c) for c in list(known)[:20])
    return ValueError(f"unknown category {category!r}; the index has {shown}")
