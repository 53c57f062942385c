"""What the pipelines need of a model, as protocols: :class:`CatalogueEmbedder` for indexing
(:class:`~unifashion.pipelines.CatalogueBuilder`, :func:`~unifashion.pipelines.embed_catalogue`)
and :class:`SearchModel` for :class:`~unifashion.pipelines.SearchPipeline` and try-on.
:class:`~unifashion.models.UniFashion` satisfies both (tests/index/test_protocols.py checks its
methods' signatures against them); what the pipelines need of an index is
:class:`~unifashion.index.CatalogueIndexProtocol`.

Images are PIL images (or what :data:`~unifashion.models.processor.ImageInput` accepts); tensors
are returned on the model's device.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol, runtime_checkable

import torch


@runtime_checkable
class CatalogueEmbedder(Protocol):
    """A model that embeds catalogue items: Z (``encode_image``), and for caption fusion its own
    caption of each image with the caption's embedding Z_C (``encode_captions``), computed from
    the Q-Former queries that ``get_image_features`` returns beside Z.

    ``config.embed_dim`` and ``num_queries`` give the vectors' shape. A model may also have
    ``weights_identity()``, the digest an index records of the model that built it (optional:
    the builder checks for it).
    """

    config: Any

    @property
    def num_queries(self) -> int: ...

    def eval(self) -> Any: ...

    def encode_image(self, images: Any = None, pixel_values: torch.Tensor | None = None) -> torch.Tensor:
        """(B, Q, D) L2-normalised query embeddings Z."""

    def encode_text(self, texts: Any) -> torch.Tensor:
        """(B, D) L2-normalised text embeddings."""

    def get_image_features(self, images: Any = None, pixel_values: torch.Tensor | None = None,
                           vision_features: torch.Tensor | None = None) -> Any:
        """An output with ``image_embeds`` (Z) and ``query_output`` (the Q-Former queries)."""

    def encode_captions(self, images: Any = None, pixel_values: torch.Tensor | None = None,
                        vision_features: torch.Tensor | None = None,
                        query_output: torch.Tensor | None = None) -> tuple[list[str], torch.Tensor]:
        """The fusion captions and their (B, D) embeddings Z_C."""


@runtime_checkable
class SearchModel(CatalogueEmbedder, Protocol):
    """A model that also embeds composed queries, captions and generates: what
    :class:`~unifashion.pipelines.SearchPipeline` calls. ``processor.postprocess_images`` turns
    generated pixels into PIL images; ``diffusion`` (None without one) tells try-on whether the
    model can inpaint (``config.extra_channels``) and draw from a sketch (``uses_sketch``).
    ``parameters`` / ``buffers`` let the pipeline copy the model for generation, sharing weights.
    """

    processor: Any
    diffusion: Any

    def encode_composed(self, images: Any, texts: Any, pixel_values: torch.Tensor | None = None) -> torch.Tensor:
        """(B, D) L2-normalised composed-query embeddings (reference image + modifying text)."""

    def caption(self, images: Any = None, style: str | None = None, pixel_values: torch.Tensor | None = None,
                vision_features: torch.Tensor | None = None, query_output: torch.Tensor | None = None,
                **generate_kwargs: Any) -> list[str]:
        """One caption per image, in ``style``."""

    def generate(self, texts: Any = None, images: Any = None, mask: Any = None, sketch: Any = None,
                 masked_image: Any = None, num_inference_steps: int = ..., scheduler: str = ...,
                 guidance_scale: float = ..., generator: torch.Generator | None = None) -> torch.Tensor:
        """(B, 3, H, W) images in [0, 1]."""

    def parameters(self, recurse: bool = True) -> Iterator[torch.nn.Parameter]: ...

    def buffers(self, recurse: bool = True) -> Iterator[torch.Tensor]: ...
