"""The catalogue's items: read (``GET /items/{id}``, ``GET /items/{id}/image``) and write
(``POST /items``, ``DELETE /items/{id}``; these need the API key when one is configured: header
``X-API-Key: KEY`` or ``Authorization: Bearer KEY``; missing -> 401, wrong -> 403)."""

# No "from __future__ import annotations": FastAPI reads the endpoints' annotations at run time.
from typing import Annotated

from fastapi import APIRouter, File, Form, UploadFile
from fastapi.responses import FileResponse

from unifashion.serving.errors import ApiError, error_responses, pipeline_errors
from unifashion.serving.limits import parse_json_object
from unifashion.serving.schemas import DeletedOut, ItemOut, item_out
from unifashion.serving.state import BODY_ERRORS, ITEM_ID_PATTERN, MULTIPART, UPLOAD_ERRORS, ServiceState


def item_router(state: ServiceState) -> APIRouter:
    router = APIRouter()
    settings, pipeline, admission = state.settings, state.pipeline, state.admission

    @router.get("/items/{item_id}", response_model=ItemOut, responses=error_responses(404),
                summary="An item's metadata")
    def get_item(item_id: str) -> ItemOut:
        with pipeline_errors():
            return item_out(pipeline.get(item_id))

    @router.get("/items/{item_id}/image", response_class=FileResponse,
                responses={200: {"content": {"image/png": {}, "image/jpeg": {}}}, **error_responses(404)},
                summary="An item's image")
    def get_item_image(item_id: str) -> FileResponse:
        with pipeline_errors():
            path = pipeline.image_path(item_id)
        if path is None or not path.is_file():
            raise ApiError(404, "image_missing", f"item {item_id!r} has no image file on the server")
        return FileResponse(path)

    @router.post("/items", status_code=201, response_model=ItemOut,
                 dependencies=[*state.write_dependencies, MULTIPART],
                 responses=error_responses(401, 403, 409, *UPLOAD_ERRORS),
                 summary="Add an item (image + metadata); it is embedded and captioned now. Needs the API key")
    def add_item(
        item_id: Annotated[str, Form(description="1-128 characters of A-Z a-z 0-9 . _ -, starting alphanumeric",
                                     json_schema_extra={"pattern": ITEM_ID_PATTERN.pattern})],
        image: Annotated[UploadFile, File(description="PNG, JPEG or WebP")],
        category: Annotated[str, Form(json_schema_extra={"maxLength": settings.max_category_chars})] = "",
        caption: Annotated[str | None, Form(description="stored as the item's 'short' caption",
                                            json_schema_extra={"maxLength": settings.max_text_chars})] = None,
        captions: Annotated[str | None, Form(description=f"JSON object {{style: caption}}, at most "
                                                         f"{settings.max_caption_styles} styles")] = None,
        attributes: Annotated[str | None, Form(description=f"JSON object of attributes, at most "
                                                           f"{settings.max_attributes_chars} characters and "
                                                           f"{settings.max_json_depth} levels deep",
                                               json_schema_extra={"maxLength": settings.max_attributes_chars})
                              ] = None,
        replace: Annotated[bool, Form(description="replace an item with this id")] = False,
    ) -> ItemOut:
        if not ITEM_ID_PATTERN.match(item_id):
            raise ApiError(422, "invalid_item_id",
                           f"item_id {item_id!r} must be 1-128 characters of A-Z a-z 0-9 . _ - starting alphanumeric")
        caption_map = state.captions_map(captions, caption)
        category = state.check_category(category) or ""
        attribute_map = parse_json_object(attributes, "attributes", settings.max_attributes_chars,
                                          settings.max_json_depth)
        with admission.image_slot():
            picture = state.read_image(image, "image")
            with pipeline_errors(), state.model_turn():
                metadata = pipeline.add_item(item_id, picture, category=category, captions=caption_map,
                                             attributes=attribute_map, replace=replace)
        return item_out(metadata)

    @router.delete("/items/{item_id}", response_model=DeletedOut, dependencies=state.write_dependencies,
                   responses=error_responses(401, 404, 409, *BODY_ERRORS), summary="Delete an item. Needs the API key")
    def delete_item(item_id: str) -> DeletedOut:
        with pipeline_errors():
            pipeline.delete_items([item_id])
        return DeletedOut(deleted=item_id)

    return router
