"""The data layer: the embedded synthetic catalogue, real-image sources and dataset loaders.

All sources return the records of :mod:`unifashion.data.records`, the one interface that training
and evaluation use.
"""

from unifashion.data.errors import DatasetError, DatasetFormatError, DatasetNotFoundError
from unifashion.data.records import (
    CAPTION_STYLES,
    ItemDataset,
    ItemRecord,
    TripletDataset,
    TripletRecord,
    TryOnRecord,
    join_relative_captions,
    load_image,
)
from unifashion.data.synthetic.catalogue import (
    Catalogue,
    CatalogueConfig,
    build_catalogue_files,
    load_catalogue,
    make_catalogue,
)
from unifashion.data.synthetic.render import render_garment

__all__ = [
    "CAPTION_STYLES", "Catalogue", "CatalogueConfig", "DatasetError", "DatasetFormatError", "DatasetNotFoundError",
    "ItemDataset", "ItemRecord", "TripletDataset", "TripletRecord", "TryOnRecord", "build_catalogue_files",
    "join_relative_captions", "load_catalogue", "load_image", "make_catalogue", "render_garment",
]
