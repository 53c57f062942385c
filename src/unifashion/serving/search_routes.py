"""Retrieval: text -> images (``POST /search/text``), image -> texts (``/search/image-to-text``)
and reference image + modification text -> images (``/search/composed``)."""

# No "from __future__ import annotations": FastAPI reads the endpoints' annotations at run time,
# and TextQuery is made per app (its bounds are the settings').
from typing import Annotated

from fastapi import APIRouter, File, Form, UploadFile
from pydantic import BaseModel, Field, StrictInt, StrictStr

from unifashion.serving.errors import error_responses, pipeline_errors
from unifashion.serving.schemas import SearchOut, TextHitOut, TextSearchOut, hit_out
from unifashion.serving.state import (
    BODY_ERRORS,
    JSON_BODY,
    MULTIPART,
    NOT_BLANK,
    UPLOAD_ERRORS,
    ServiceState,
    bounds,
)


def search_router(state: ServiceState) -> APIRouter:
    router = APIRouter()
    settings, pipeline, admission = state.settings, state.pipeline, state.admission

    class TextQuery(BaseModel):
        text: StrictStr = Field(min_length=1, description="what to look for, e.g. 'a red floral dress'",
                                json_schema_extra={"maxLength": settings.max_text_chars, "pattern": NOT_BLANK})
        top_k: StrictInt = Field(10, description="results to return", **bounds(1, settings.max_top_k))
        category: StrictStr | None = Field(None, description="only items of this category",
                                           json_schema_extra={"maxLength": settings.max_category_chars})

    @router.post("/search/text", response_model=SearchOut, dependencies=[JSON_BODY],
                 responses=error_responses(*BODY_ERRORS, 415, 422), summary="Text -> catalogue images (CMR)")
    def search_text(query: TextQuery) -> SearchOut:
        text = state.check_text(query.text)
        top_k = state.check_top_k(query.top_k)
        category = state.check_category(query.category)
        with pipeline_errors(), state.model_turn():
            hits = pipeline.text_to_images(text, top_k, category=category)
        return SearchOut(query={"text": text, "top_k": top_k, "category": query.category},
                         results=[hit_out(h) for h in hits])

    @router.post("/search/image-to-text", response_model=TextSearchOut, dependencies=[MULTIPART],
                 responses=error_responses(*UPLOAD_ERRORS),
                 summary="Image -> catalogue texts (CMR): the items' stored and generated captions")
    def search_image_to_text(
        image: Annotated[UploadFile, File(description="the query image (PNG, JPEG or WebP)")],
        top_k: Annotated[int, Form(description="results to return", **bounds(1, settings.max_top_k))] = 10,
    ) -> TextSearchOut:
        top_k = state.check_top_k(top_k)
        with admission.image_slot():
            picture = state.read_image(image, "image")
            with pipeline_errors(), state.model_turn():
                hits = pipeline.image_to_texts(picture, top_k)
        return TextSearchOut(query={"top_k": top_k}, results=[TextHitOut(**h.to_dict()) for h in hits])

    @router.post("/search/composed", response_model=SearchOut, dependencies=[MULTIPART],
                 responses=error_responses(*UPLOAD_ERRORS),
                 summary="Reference image + modification text -> catalogue images (CIR, caption fusion)")
    def search_composed(
        image: Annotated[UploadFile, File(description="the reference image (PNG, JPEG or WebP)")],
        text: Annotated[str, Form(description="how the wanted item differs, e.g. 'is red with long sleeves'",
                                  json_schema_extra={"maxLength": settings.max_text_chars, "pattern": NOT_BLANK})],
        top_k: Annotated[int, Form(**bounds(1, settings.max_top_k))] = 10,
        fusion: Annotated[bool, Form(description="add caption fusion <e, Z_C> to the score (the paper's)")] = True,
        category: Annotated[str | None, Form(json_schema_extra={"maxLength": settings.max_category_chars})] = None,
    ) -> SearchOut:
        text = state.check_text(text)
        top_k = state.check_top_k(top_k)
        category = state.check_category(category)
        with admission.image_slot():
            picture = state.read_image(image, "image")
            with pipeline_errors(), state.model_turn():
                hits = pipeline.composed(picture, text, top_k, fusion=fusion, category=category)
        # The fusion actually applied: an index built without captions has none.
        return SearchOut(query={"text": text, "top_k": top_k, "fusion": pipeline.uses_fusion(fusion),
                                "category": category},
                         results=[hit_out(h) for h in hits])

    return router
