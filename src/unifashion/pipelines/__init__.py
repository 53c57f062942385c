"""Pipelines: the model and the catalogue index put together for search, captioning and generation.

- :class:`CatalogueBuilder` / :func:`build_index`: embed a catalogue (records, the embedded
  catalogue, or an image folder with a JSONL/CSV metadata file) into a :class:`CatalogueIndex`,
  storing each item's generated caption and its embedding for caption fusion;
  :func:`embed_catalogue` embeds a large one ahead of that, sharded over the processes of
  ``accelerate launch`` and resumable.
- :class:`SearchPipeline`: text -> images, image -> texts, composed (image + text) -> images,
  captioning, generation, and adding / deleting items.

Dependencies point one way: ``serving.app`` -> ``pipelines`` -> ``models`` (and the index in
``unifashion.index``, which does not depend on the model).
"""

from unifashion.data.folder import load_item_records, read_metadata_file
from unifashion.index import ModelMismatchError
from unifashion.pipelines.embedding import EmbedReport, embed_catalogue
from unifashion.pipelines.indexing import BuildReport, CatalogueBuilder, EmbeddedItems, build_index
from unifashion.pipelines.search import SearchPipeline, TextHit
from unifashion.pipelines.text_bank import GENERATED_STYLE, TextSource

__all__ = [
    "GENERATED_STYLE",
    "BuildReport",
    "CatalogueBuilder",
    "EmbedReport",
    "EmbeddedItems",
    "ModelMismatchError",
    "SearchPipeline",
    "TextHit",
    "TextSource",
    "build_index",
    "embed_catalogue",
    "load_item_records",
    "read_metadata_file",
]
