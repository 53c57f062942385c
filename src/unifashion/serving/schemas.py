"""The response bodies of the service (its OpenAPI schemas) and how index results become them."""

from __future__ import annotations

from typing import Any, Literal
from urllib.parse import quote

from pydantic import BaseModel, Field

from unifashion.index import Hit, ItemMetadata


class ItemOut(BaseModel):
    item_id: str
    category: str
    captions: dict[str, str] = Field(description="the catalogue's captions, by style")
    attributes: dict[str, Any]
    fusion_caption: str = Field(description="the model's own (detailed) caption, used for caption fusion")
    image_url: str | None = Field(description="where GET serves the item's image; null when it has none")


class HitOut(BaseModel):
    rank: int
    item_id: str
    score: float = Field(description="maxsim + fusion (fusion is 0 unless caption fusion is on)")
    maxsim: float
    fusion: float
    item: ItemOut


class SearchOut(BaseModel):
    query: dict[str, Any]
    results: list[HitOut]


class TextSourceOut(BaseModel):
    item_id: str
    style: str = Field(description="caption style of the item's text, or 'generated' for the model's caption")


class TextHitOut(BaseModel):
    rank: int
    text: str
    score: float
    sources: list[TextSourceOut]


class TextSearchOut(BaseModel):
    query: dict[str, Any]
    results: list[TextHitOut]


class CaptionOut(BaseModel):
    caption: str
    style: str


class HealthOut(BaseModel):
    status: Literal["ok"]
    model: str
    items: int
    categories: dict[str, int]
    index_generation: int
    read_only: bool
    writes_need_api_key: bool
    caption_styles: list[str]
    schedulers: list[str]
    limits: dict[str, int | float]


class DeletedOut(BaseModel):
    deleted: str


def item_out(metadata: ItemMetadata) -> ItemOut:
    return ItemOut(item_id=metadata.item_id, category=metadata.category, captions=dict(metadata.captions),
                   attributes=dict(metadata.attributes), fusion_caption=metadata.fusion_caption,
                   image_url=f"/items/{quote(metadata.item_id, safe='')}/image" if metadata.image_path else None)


def hit_out(hit: Hit) -> HitOut:
    return HitOut(rank=hit.rank, item_id=hit.item_id, score=hit.score, maxsim=hit.maxsim, fusion=hit.fusion,
                  item=item_out(hit.metadata))
