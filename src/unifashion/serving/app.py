"""The HTTP service: a FastAPI app over a :class:`~unifashion.pipelines.SearchPipeline`.

``create_app(pipeline, settings)`` builds the app (tests build it around a small random model);
:func:`serve` loads a model and an index and runs it with uvicorn (``unifashion serve``).

Conventions.

* JSON in (``POST /search/text``) and out; images are uploaded as ``multipart/form-data`` file
  parts; ``POST /generate`` answers with the PNG itself (``image/png``; the seed used is in the
  ``X-Seed`` header), so that a page can show it with a blob URL and ``curl -o`` can save it.
* Every error is JSON: ``{"error": {"status": 413, "code": "upload_too_large", "message": "..."}}``
  (validation errors add ``details``); an unexpected one is a 500 that says nothing of the
  internals (serving/errors.py).
* Limits (:class:`ServiceSettings`): the request body (413 over its size, 408 when it does not
  arrive in time, 503 when all bodies being received together would exceed a budget); an
  uploaded image's pixels, sides and aspect ratio (413, checked before it is decoded), its format
  (PNG, JPEG, WebP; else 415) and a corrupt image (400, ``invalid_image``), decoded at reduced
  size (serving/limits.py); a part or request of the wrong content type (415); ``top_k`` out of
  range, generation steps above the cap, text fields too long, JSON too deep (422); unknown item
  ids (404).
* Admission (serving/admission.py): a bounded number of requests with decoded images waiting for
  the model, then 503 with ``Retry-After``; bounded waits; generation in its own lane, so that
  searches never wait behind one.
* Browser safety (serving/security.py): unknown Host headers get 400, cross-origin writes 403.
* Writes (``POST /items``, ``DELETE /items/{id}``) need the API key when one is configured:
  header ``X-API-Key: KEY`` or ``Authorization: Bearer KEY``; missing -> 401, wrong -> 403.
  :func:`serve` refuses to listen beyond loopback without a key.
* The model runs under the pipeline's lock, one request at a time, on the torch threads that
  :func:`serve` sets (1 by default); index searches run concurrently.
* OpenAPI: ``/openapi.json``. The interactive ``/docs`` pages are off: they load their scripts
  from a CDN, which an offline machine cannot reach. The web page is at ``/``.
"""

# No "from __future__ import annotations": FastAPI reads the endpoints' annotations at run time,
# and TextQuery is made per app (its bounds are the settings').
import io
import re
import secrets
from contextlib import asynccontextmanager, nullcontext
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, File, Form, Request, Security, UploadFile
from fastapi.responses import FileResponse, HTMLResponse, Response
from fastapi.security import APIKeyHeader, HTTPBearer
from pydantic import BaseModel, Field, StrictInt, StrictStr

from unifashion.data.records import CAPTION_STYLES
from unifashion.pipelines.search import SCHEDULERS, SearchPipeline
from unifashion.serving.admission import Admission
from unifashion.serving.errors import ApiError, error_responses, install_error_handlers, pipeline_errors
from unifashion.serving.limits import BodyLimits, ImageLimits, decode_image, parse_json_object
from unifashion.serving.page import render_page
from unifashion.serving.schemas import (
    CaptionOut,
    DeletedOut,
    HealthOut,
    ItemOut,
    SearchOut,
    TextHitOut,
    TextSearchOut,
    hit_out,
    item_out,
)
from unifashion.serving.security import BrowserSafety
from unifashion.serving.settings import LOOPBACK_HOSTS, ServiceSettings

__all__ = ["ServiceSettings", "create_app", "serve", "uvicorn_options"]

#: Ids of items added through the API: safe in a URL path segment and a file name.
ITEM_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")

# Content types of image parts that are decoded. An undeclared type (or the generic
# application/octet-stream that some clients send for any file) is decoded too and must then be
# an image; anything else declared (text/plain, application/json, ...) is refused with 415.
_GENERIC_CONTENT_TYPES = ("", "application/octet-stream")

# Documented in the schema only (the endpoints check them, with their own error codes).
_NOT_BLANK = r"\S"

# For the schema: writes take the key in either header (the endpoints read them directly).
_API_KEY_HEADER = APIKeyHeader(name="X-API-Key", scheme_name="ApiKey", auto_error=False)
_BEARER = HTTPBearer(scheme_name="Bearer", auto_error=False)


def _bounds(minimum: int, maximum: int) -> dict[str, Any]:
    return {"json_schema_extra": {"minimum": minimum, "maximum": maximum}}


def create_app(pipeline: SearchPipeline, settings: ServiceSettings | None = None) -> FastAPI:
    """The service around ``pipeline``; see the module docstring for the conventions."""
    settings = settings or ServiceSettings()
    if settings.generation_lane:
        pipeline.separate_generation()
    admission = Admission(max_waiting_images=settings.max_waiting_images, decode_slots=settings.decode_slots,
                          max_waiting_generations=settings.max_waiting_generations,
                          queue_timeout_s=settings.queue_timeout_s, retry_after_s=settings.retry_after_s)
    image_limits = ImageLimits(max_pixels=settings.max_image_pixels, max_side=settings.max_image_side,
                               max_aspect_ratio=settings.max_aspect_ratio, working_side=settings.working_image_side)

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        # Embed the catalogue texts for image-to-text now, not in the first request's turn.
        pipeline.prepare_texts()
        yield

    app = FastAPI(
        title="UniFashion",
        description="Fashion retrieval (text->image, image->text, composed image+text->image), captioning and "
                    "generation over one catalogue. Errors are JSON: {\"error\": {\"status\", \"code\", \"message\"}}.",
        version="1",
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.pipeline = pipeline
    app.state.settings = settings
    app.state.admission = admission
    # Outermost first: the Host / Origin check, then the body limits, then the app.
    app.add_middleware(BodyLimits, max_bytes=settings.max_upload_bytes, timeout_s=settings.body_timeout_s,
                       max_buffered=settings.max_buffered_bytes, retry_after_s=settings.retry_after_s)
    app.add_middleware(BrowserSafety, allowed_hosts=settings.allowed_hosts, allowed_origins=settings.allowed_origins)
    install_error_handlers(app)

    class TextQuery(BaseModel):
        text: StrictStr = Field(min_length=1, description="what to look for, e.g. 'a red floral dress'",
                                json_schema_extra={"maxLength": settings.max_text_chars, "pattern": _NOT_BLANK})
        top_k: StrictInt = Field(10, description="results to return", **_bounds(1, settings.max_top_k))
        category: StrictStr | None = Field(None, description="only items of this category",
                                           json_schema_extra={"maxLength": settings.max_category_chars})

    # -- dependencies and helpers ------------------------------------------------------------

    # Only a service with a key declares it in the schema: without one, writes are open.
    key_schemes = ([Security(_API_KEY_HEADER), Security(_BEARER)] if settings.api_key is not None else [])

    def require_api_key(request: Request) -> None:
        if settings.api_key is None:
            return
        given = request.headers.get("x-api-key")
        authorization = request.headers.get("authorization", "")
        if given is None and authorization.lower().startswith("bearer "):
            given = authorization[len("bearer "):].strip()
        if not given:
            raise ApiError(401, "api_key_missing", "this endpoint needs the API key: send the header X-API-Key",
                           headers={"WWW-Authenticate": "Bearer"})
        if not secrets.compare_digest(given.encode(), settings.api_key.encode()):
            raise ApiError(403, "api_key_wrong", "the API key is wrong")

    def content_type(*expected: str):
        def check(request: Request) -> None:
            given = request.headers.get("content-type", "").split(";")[0].strip().lower()
            if given not in expected:
                raise ApiError(415, "unsupported_media_type",
                               f"this endpoint takes {' or '.join(expected)}, got {given or 'no content type'}")
        return Depends(check)

    json_body = content_type("application/json")
    # Form endpoints: multipart carries the images; a form without files may come url-encoded.
    multipart = content_type("multipart/form-data", "application/x-www-form-urlencoded")

    def check_top_k(top_k: int) -> int:
        if not 1 <= top_k <= settings.max_top_k:
            raise ApiError(422, "top_k_out_of_range", f"top_k must be between 1 and {settings.max_top_k}, got {top_k}")
        return top_k

    def check_text(text: str | None, name: str = "text", required: bool = True,
                   limit: int = settings.max_text_chars) -> str | None:
        if text is None or not text.strip():
            if required:
                raise ApiError(422, "text_missing", f"{name} must not be empty")
            return None
        if len(text) > limit:
            raise ApiError(422, "text_too_long", f"{name} has {len(text)} characters; the limit is {limit}")
        return text.strip()

    def check_category(category: str | None) -> str | None:
        return check_text(category, "category", required=False, limit=settings.max_category_chars)

    def read_image(upload: UploadFile | None, field: str, required: bool = True):
        """Decode an uploaded image part (content type, size, pixel, side, aspect and format
        limits; reduced to the working size), one of ``decode_slots`` at a time."""
        if upload is None or (not upload.filename and upload.size == 0):
            if required:
                raise ApiError(422, "image_missing", f"the file part {field!r} is required")
            return None
        declared = (upload.content_type or "").split(";")[0].strip().lower()
        if declared not in _GENERIC_CONTENT_TYPES and not declared.startswith("image/"):
            raise ApiError(415, "unsupported_media_type",
                           f"the part {field!r} ({upload.filename}) is {declared}; send an image (PNG, JPEG, WebP)")
        data = upload.file.read(settings.max_upload_bytes + 1)
        name = f"{field!r} ({upload.filename})" if upload.filename else repr(field)
        if len(data) > settings.max_upload_bytes:
            raise ApiError(413, "upload_too_large", f"{name} exceeds {settings.max_upload_bytes} bytes")
        with admission.decoding():
            return decode_image(data, name, image_limits)

    def captions_map(captions: str | None, caption: str | None) -> dict[str, str]:
        parsed = parse_json_object(captions, "captions", settings.max_caption_styles * (settings.max_text_chars + 64),
                                   max_depth=1)
        if len(parsed) > settings.max_caption_styles:
            raise ApiError(422, "invalid_json", f"captions has {len(parsed)} styles; the limit is "
                                                f"{settings.max_caption_styles}")
        result = {}
        for style, text in parsed.items():
            if not isinstance(text, str) or not 1 <= len(style) <= settings.max_style_chars:
                raise ApiError(422, "invalid_json", f"captions must map style names of 1 to "
                                                    f"{settings.max_style_chars} characters to strings")
            checked = check_text(text, f"captions.{style}", required=False)
            if checked is not None:
                result[style] = checked
        short = check_text(caption, "caption", required=False)
        if short is not None:
            result["short"] = short
        return result

    def model_turn():
        """The model's lock, waited for at most queue_timeout_s (503 after)."""
        return admission.turn(pipeline.lock)

    # -- endpoints ---------------------------------------------------------------------------

    # What any request with a body can get before an endpoint sees it: a cross-origin refusal
    # (403), a body that came too slowly (408) or is too large (413).
    body_errors = (403, 408, 413)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> HTMLResponse:
        return HTMLResponse(render_page(settings.model_name, settings.default_generation_steps))

    @app.get("/health", response_model=HealthOut, responses=error_responses(),
             summary="Service status, catalogue size and limits")
    def health() -> HealthOut:
        index = pipeline.index
        return HealthOut(status="ok", model=settings.model_name, items=len(index), categories=index.categories(),
                         index_generation=index.generation, read_only=index.read_only,
                         writes_need_api_key=settings.api_key is not None, caption_styles=list(CAPTION_STYLES),
                         schedulers=list(SCHEDULERS),
                         limits={**settings.limits(), "peak_decode_bytes": image_limits.peak_decode_bytes})

    @app.post("/search/text", response_model=SearchOut, dependencies=[json_body],
              responses=error_responses(*body_errors, 415, 422), summary="Text -> catalogue images (CMR)")
    def search_text(query: TextQuery) -> SearchOut:
        text = check_text(query.text)
        top_k = check_top_k(query.top_k)
        category = check_category(query.category)
        with pipeline_errors(), model_turn():
            hits = pipeline.text_to_images(text, top_k, category=category)
        return SearchOut(query={"text": text, "top_k": top_k, "category": query.category},
                         results=[hit_out(h) for h in hits])

    upload_errors = (*body_errors, 415, 422)

    @app.post("/search/image-to-text", response_model=TextSearchOut, dependencies=[multipart],
              responses=error_responses(*upload_errors),
              summary="Image -> catalogue texts (CMR): the items' stored and generated captions")
    def search_image_to_text(
        image: Annotated[UploadFile, File(description="the query image (PNG, JPEG or WebP)")],
        top_k: Annotated[int, Form(description="results to return", **_bounds(1, settings.max_top_k))] = 10,
    ) -> TextSearchOut:
        top_k = check_top_k(top_k)
        with admission.image_slot():
            picture = read_image(image, "image")
            with pipeline_errors(), model_turn():
                hits = pipeline.image_to_texts(picture, top_k)
        return TextSearchOut(query={"top_k": top_k}, results=[TextHitOut(**h.to_dict()) for h in hits])

    @app.post("/search/composed", response_model=SearchOut, dependencies=[multipart],
              responses=error_responses(*upload_errors),
              summary="Reference image + modification text -> catalogue images (CIR, caption fusion)")
    def search_composed(
        image: Annotated[UploadFile, File(description="the reference image (PNG, JPEG or WebP)")],
        text: Annotated[str, Form(description="how the wanted item differs, e.g. 'is red with long sleeves'",
                                  json_schema_extra={"maxLength": settings.max_text_chars, "pattern": _NOT_BLANK})],
        top_k: Annotated[int, Form(**_bounds(1, settings.max_top_k))] = 10,
        fusion: Annotated[bool, Form(description="add caption fusion <e, Z_C> to the score (the paper's)")] = True,
        category: Annotated[str | None, Form(json_schema_extra={"maxLength": settings.max_category_chars})] = None,
    ) -> SearchOut:
        text = check_text(text)
        top_k = check_top_k(top_k)
        category = check_category(category)
        with admission.image_slot():
            picture = read_image(image, "image")
            with pipeline_errors(), model_turn():
                hits = pipeline.composed(picture, text, top_k, fusion=fusion, category=category)
        # The fusion actually applied: an index built without captions has none.
        return SearchOut(query={"text": text, "top_k": top_k, "fusion": pipeline.uses_fusion(fusion),
                                "category": category},
                         results=[hit_out(h) for h in hits])

    @app.post("/caption", response_model=CaptionOut, dependencies=[multipart],
              responses=error_responses(*upload_errors), summary="Caption an image (FIC)")
    def caption(
        image: Annotated[UploadFile, File(description="PNG, JPEG or WebP")],
        style: Annotated[Literal["short", "professional", "detailed"], Form()] = "detailed",
    ) -> CaptionOut:
        with admission.image_slot():
            picture = read_image(image, "image")
            with pipeline_errors(), model_turn():
                return CaptionOut(caption=pipeline.caption(picture, style), style=style)

    steps_help = f"denoising steps, 1 to {settings.max_generation_steps} (default {settings.default_generation_steps})"

    @app.post("/generate", dependencies=[multipart], response_class=Response,
              responses={200: {"content": {"image/png": {}}, "description": "the generated image; seed in X-Seed"},
                         **error_responses(*upload_errors)},
              summary="Generate an image (FIG): text, image + text, or person + mask (+ sketch) + text")
    def generate(
        text: Annotated[str | None, Form(description="what to draw, or how to change the reference image",
                                         json_schema_extra={"maxLength": settings.max_text_chars})] = None,
        image: Annotated[UploadFile | None, File(description="reference garment (composed generation)")] = None,
        mask: Annotated[UploadFile | None, File(description="try-on: white = region of the person to redraw")] = None,
        sketch: Annotated[UploadFile | None, File(description="try-on: garment sketch")] = None,
        person: Annotated[UploadFile | None, File(description="design / try-on: the person image (the "
                                                               "result keeps its size, reduced to the working "
                                                               "size, and, outside the mask, its pixels)")] = None,
        garment: Annotated[UploadFile | None, File(description="try-on: the in-shop garment (with person "
                                                                "and mask)")] = None,
        steps: Annotated[int | None, Form(description=steps_help,
                                          **_bounds(1, settings.max_generation_steps))] = None,
        scheduler: Annotated[Literal["pndm", "dpmsolver++"], Form()] = "pndm",
        guidance: Annotated[float, Form(ge=0, le=50, description="classifier-free guidance scale")] = 7.5,
        seed: Annotated[int | None, Form(ge=0, lt=2**63, description="random when omitted")] = None,
    ) -> Response:
        steps = settings.default_generation_steps if steps is None else steps
        if not 1 <= steps <= settings.max_generation_steps:
            raise ApiError(422, "too_many_steps" if steps > settings.max_generation_steps else "invalid_steps",
                           f"steps must be between 1 and {settings.max_generation_steps}, got {steps}")
        text = check_text(text, required=False)
        if garment is not None and image is not None:
            raise ApiError(422, "invalid_value", "give the garment once: 'garment' (try-on) or 'image'")
        uploads = {"image": image, "mask": mask, "sketch": sketch, "person": person}
        has_images = any(upload is not None for upload in (*uploads.values(), garment))
        seed = secrets.randbelow(2**31) if seed is None else seed
        with admission.generation_slot(), admission.image_slot() if has_images else nullcontext():
            pictures = {name: read_image(upload, name, required=False) for name, upload in uploads.items()}
            if garment is not None:
                pictures["image"] = read_image(garment, "garment", required=False)
            if text is None and pictures["image"] is None:
                raise ApiError(422, "text_missing", "generation needs a text, a reference image, or both")
            with pipeline_errors(), admission.turn(pipeline.generation_lock):
                generated = pipeline.generate(text, **pictures, steps=steps, scheduler=scheduler,
                                              guidance=guidance, seed=seed)[0]
        buffer = io.BytesIO()
        generated.save(buffer, format="PNG")
        return Response(buffer.getvalue(), media_type="image/png", headers={"X-Seed": str(seed)})

    @app.get("/items/{item_id}", response_model=ItemOut, responses=error_responses(404),
             summary="An item's metadata")
    def get_item(item_id: str) -> ItemOut:
        with pipeline_errors():
            return item_out(pipeline.get(item_id))

    @app.get("/items/{item_id}/image", response_class=FileResponse,
             responses={200: {"content": {"image/png": {}, "image/jpeg": {}}}, **error_responses(404)},
             summary="An item's image")
    def get_item_image(item_id: str) -> FileResponse:
        with pipeline_errors():
            path = pipeline.image_path(item_id)
        if path is None or not path.is_file():
            raise ApiError(404, "image_missing", f"item {item_id!r} has no image file on the server")
        return FileResponse(path)

    @app.post("/items", status_code=201, response_model=ItemOut,
              dependencies=[*key_schemes, Depends(require_api_key), multipart],
              responses=error_responses(401, 403, 409, *upload_errors),
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
        caption_map = captions_map(captions, caption)
        category = check_category(category) or ""
        attribute_map = parse_json_object(attributes, "attributes", settings.max_attributes_chars,
                                          settings.max_json_depth)
        with admission.image_slot():
            picture = read_image(image, "image")
            with pipeline_errors(), model_turn():
                metadata = pipeline.add_item(item_id, picture, category=category, captions=caption_map,
                                             attributes=attribute_map, replace=replace)
        return item_out(metadata)

    @app.delete("/items/{item_id}", response_model=DeletedOut,
                dependencies=[*key_schemes, Depends(require_api_key)],
                responses=error_responses(401, 404, 409, *body_errors), summary="Delete an item. Needs the API key")
    def delete_item(item_id: str) -> DeletedOut:
        with pipeline_errors():
            pipeline.delete_items([item_id])
        return DeletedOut(deleted=item_id)

    return app


def uvicorn_options(settings: ServiceSettings) -> dict[str, Any]:
    """uvicorn's own limits for the service: connections (503 above), keep-alive time."""
    return {"limit_concurrency": settings.max_connections, "timeout_keep_alive": settings.keep_alive_s,
            "timeout_graceful_shutdown": 10}


def is_loopback(host: str) -> bool:
    return host in LOOPBACK_HOSTS or host.startswith("127.")


def serve(index_dir: str, model: str = "tiny-default", host: str = "127.0.0.1", port: int = 8000,
          api_key: str | None = None, threads: int = 1, read_only: bool = False,
          settings: ServiceSettings | None = None, backend: Any = None, break_lock: bool = False) -> None:
    """Load ``model`` (a trained tag or a saved folder), open the index and serve until stopped.
    ``backend``: a :class:`~unifashion.index.MilvusBackend` overriding what a Milvus-backed index
    folder records (e.g. a cluster's URI); ``break_lock``: take a Milvus index's write lock from a
    writer that is gone (see :func:`~unifashion.index.open_index`).

    Beyond loopback the API key is required (writes would be open to anyone who can reach the
    port), and the Host names to answer to default to the bound address (``0.0.0.0`` / ``::``:
    any name, the key guarding the writes)."""
    settings = settings or ServiceSettings()
    settings.api_key = api_key or settings.api_key
    if not is_loopback(host):
        if settings.api_key is None:
            raise ValueError(f"serving on {host} (beyond loopback) needs --api-key (or $UNIFASHION_API_KEY): "
                             "without one anyone who can reach the port could add and delete items")
        if settings.allowed_hosts == LOOPBACK_HOSTS:
            settings.allowed_hosts = ("*",) if host in ("0.0.0.0", "::") else (*LOOPBACK_HOSTS, host.lower())

    import torch
    import uvicorn

    from unifashion.index import IndexLockedError, open_index
    from unifashion.models import UniFashion

    torch.set_num_threads(threads)
    settings.model_name = settings.model_name or str(model)
    loaded = UniFashion.from_pretrained(model)
    try:
        index = open_index(index_dir, read_only=read_only, backend=backend, break_lock=break_lock)
    except IndexLockedError:
        print(f"{index_dir} is open for writing elsewhere: serving it read-only (adding and deleting items is off)")
        index = open_index(index_dir, read_only=True, backend=backend)
    try:
        pipeline = SearchPipeline(loaded, index)
    except BaseException:
        index.close()
        raise
    print(f"serving {len(index)} items from {index_dir} with {model} at http://{host}:{port}/ "
          f"(OpenAPI: http://{host}:{port}/openapi.json)")
    try:
        uvicorn.run(create_app(pipeline, settings), host=host, port=port, log_level="info",
                    **uvicorn_options(settings))
    finally:
        pipeline.close()
