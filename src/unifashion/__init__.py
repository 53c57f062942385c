"""unifashion: a unified vision-language model for fashion retrieval, captioning and generation.

The main classes are importable from the top, as in transformers, open_clip and diffusers::

    from unifashion import UniFashion, SearchPipeline, build_index

They are imported on first use (PEP 562), so ``import unifashion`` itself stays cheap and the
command line starts without loading torch for commands that do not need it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: Public name -> the module that defines it.
_EXPORTS: dict[str, str] = {
    "UniFashion": "unifashion.models",
    "UniFashionConfig": "unifashion.models",
    "UniFashionProcessor": "unifashion.models",
    "ConfigError": "unifashion.configuration",
    "DualEncoder": "unifashion.models.dual_encoder",
    "DualEncoderConfig": "unifashion.models.dual_encoder",
    "CatalogueIndex": "unifashion.index",
    "Hit": "unifashion.index",
    "CatalogueBuilder": "unifashion.pipelines",
    "SearchPipeline": "unifashion.pipelines",
    "build_index": "unifashion.pipelines",
    "design": "unifashion.pipelines.tryon",
    "try_on": "unifashion.pipelines.tryon",
    "ItemRecord": "unifashion.data",
    "TripletRecord": "unifashion.data",
    "load_image": "unifashion.data",
}

__all__ = [
    "CatalogueBuilder", "CatalogueIndex", "ConfigError", "DualEncoder", "DualEncoderConfig", "Hit", "ItemRecord",
    "SearchPipeline", "TripletRecord", "UniFashion", "UniFashionConfig", "UniFashionProcessor", "__version__",
    "build_index", "design", "load_image", "try_on",
]

if TYPE_CHECKING:  # for type checkers and IDEs; at run time the names load lazily
    from unifashion.configuration import ConfigError
    from unifashion.data import ItemRecord, TripletRecord, load_image
    from unifashion.index import CatalogueIndex, Hit
    from unifashion.models import UniFashion, UniFashionConfig, UniFashionProcessor
    from unifashion.models.dual_encoder import DualEncoder, DualEncoderConfig
    from unifashion.pipelines import CatalogueBuilder, SearchPipeline, build_index
    from unifashion.pipelines.tryon import design, try_on


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'unifashion' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
