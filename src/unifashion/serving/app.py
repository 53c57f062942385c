"""The HTTP service: a FastAPI app over a :class:`~unifashion.pipelines.SearchPipeline`.

``create_app(pipeline, settings)`` builds the app (tests build it around a small random model);
:func:`serve` loads a model and an index and runs it with uvicorn (``unifashion serve``).

Conventions.

* JSON in (``POST /search/text``) and out; images are uploaded as ``multipart/form-data`` file
  parts; ``POST /generate`` answers with the PNG itself (``image/png``; the seed used is in the
  ``X-Seed`` header), so that a page can show it with a blob URL and ``curl -o`` can save it.
* Every error is JSON: ``{"error": {"status": 413, "code": "upload_too_large", "message": "..."}}``
  (validation errors add ``details``, one entry per bad field).
* Limits (:class:`ServiceSettings`): the request body size (413, checked before the body is
  parsed), the pixels of an uploaded image (413, checked before it is decoded), a corrupt image
  (400, ``invalid_image``), a part or request of the wrong content type (415), ``top_k`` out of
  range (422), generation steps above the cap (422), unknown item ids (404).
* Writes (``POST /items``, ``DELETE /items/{id}``) need the API key when one is configured:
  header ``X-API-Key: KEY`` or ``Authorization: Bearer KEY``; missing -> 401, wrong -> 403.
* The model runs under the pipeline's lock, one request at a time, on the torch threads that
  :func:`serve` sets (1 by default); index searches run concurrently.
* OpenAPI: ``/openapi.json``. The interactive ``/docs`` pages are off: they load their scripts
  from a CDN, which an offline machine cannot reach. The web page is at ``/``.
"""

from __future__ import annotations

import io
import json
import re
import secrets
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Annotated, Any, Literal
from urllib.parse import quote

from fastapi import Depends, FastAPI, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from PIL import Image, UnidentifiedImageError
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from unifashion.data.records import CAPTION_STYLES
from unifashion.index import DuplicateItemError, Hit, ItemMetadata, UnknownItemError
from unifashion.pipelines.search import SCHEDULERS, SearchPipeline
from unifashion.serving.page import render_page

#: Ids of items added through the API: safe in a URL path segment and a file name.
ITEM_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")

# Content types of image parts that are decoded. An undeclared type (or the generic
# application/octet-stream that some clients send for any file) is decoded too and must then be
# an image; anything else declared (text/plain, application/json, ...) is refused with 415.
_GENERIC_CONTENT_TYPES = ("", "application/octet-stream")


@dataclass
class ServiceSettings:
    """Limits and options of the service."""

    #: Key that writes (add / delete items) require; None leaves writes open (fine on 127.0.0.1).
    api_key: str | None = None
    #: Largest request body, all uploaded files together (413 above it).
    max_upload_bytes: int = 10 * 2**20
    #: Largest uploaded image, width x height (413 above it; checked before decoding).
    max_image_pixels: int = 4096 * 4096
    max_top_k: int = 100
    max_generation_steps: int = 100
    default_generation_steps: int = 25
    max_text_chars: int = 1000
    #: Shown by /health and the page.
    model_name: str = ""

    def __post_init__(self):
        for name in ("max_upload_bytes", "max_image_pixels", "max_top_k", "max_generation_steps",
                     "default_generation_steps", "max_text_chars"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.default_generation_steps > self.max_generation_steps:
            raise ValueError("default_generation_steps exceeds max_generation_steps")
        if self.api_key is not None and not self.api_key:
            raise ValueError("api_key must be a non-empty string or None")


# -- errors ----------------------------------------------------------------------------------


class ApiError(Exception):
    """An error answered as ``{"error": {"status", "code", "message"}}``."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers


def _error_body(status: int, code: str, message: str, details: list | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {"status": status, "code": code, "message": message}
    if details is not None:
        error["details"] = details
    return {"error": error}


class ErrorDetail(BaseModel):
    status: int
    code: str = Field(description="stable machine-readable name, e.g. upload_too_large")
    message: str = Field(description="what was wrong, for people")
    details: list[dict[str, Any]] | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail


_ERROR_DESCRIPTIONS = {
    400: "corrupt or empty image, malformed body",
    401: "API key missing",
    403: "API key wrong",
    404: "unknown item",
    409: "item id already present, or the index is read-only",
    413: "request body or image too large",
    415: "wrong content type of the request or of an uploaded part",
    422: "invalid field: top_k out of range, too many steps, unknown category or style, text too long",
}


def _error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {s: {"model": ErrorResponse, "description": _ERROR_DESCRIPTIONS[s]} for s in statuses}


@contextmanager
def _pipeline_errors() -> Iterator[None]:
    """Turn the pipeline's and the index's exceptions into API errors."""
    try:
        yield
    except UnknownItemError as exc:
        raise ApiError(404, "unknown_item", str(exc)) from exc
    except DuplicateItemError as exc:
        raise ApiError(409, "duplicate_item", f"{exc}; send replace=true to replace it") from exc
    except PermissionError as exc:
        raise ApiError(409, "read_only", str(exc)) from exc
    except ValueError as exc:
        raise ApiError(422, "invalid_value", str(exc)) from exc


class _BodySizeLimit:
    """ASGI middleware: refuse request bodies over ``max_bytes`` with 413 before the app parses
    them. A declared Content-Length is checked first; otherwise (chunked uploads) the body is read
    up to the limit and then handed to the app, so no more than ``max_bytes`` is ever held."""

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def _refuse(self, send) -> None:
        limit = self.max_bytes
        body = json.dumps(_error_body(413, "upload_too_large",
                                      f"the request body exceeds the limit of {limit} bytes ({limit / 2**20:.1f} MiB)"))
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body.encode()})

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(send)
            return
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the client went away; nothing to answer
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._refuse(send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        delivered = False

        async def replay():
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: wait for the disconnect, as a server would

        await self.app(scope, replay, send)


# -- response models -------------------------------------------------------------------------


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
    limits: dict[str, int]


class TextQuery(BaseModel):
    text: str = Field(min_length=1, description="what to look for, e.g. 'a red floral dress'")
    top_k: int = Field(10, ge=1, description="results to return, 1 to the service's max_top_k (default 100)")
    category: str | None = Field(None, description="only items of this category")


class DeletedOut(BaseModel):
    deleted: str


# -- the app ---------------------------------------------------------------------------------


def _item_out(metadata: ItemMetadata) -> ItemOut:
    return ItemOut(item_id=metadata.item_id, category=metadata.category, captions=dict(metadata.captions),
                   attributes=dict(metadata.attributes), fusion_caption=metadata.fusion_caption,
                   image_url=f"/items/{quote(metadata.item_id, safe='')}/image" if metadata.image_path else None)


def _hit_out(hit: Hit) -> HitOut:
    return HitOut(rank=hit.rank, item_id=hit.item_id, score=hit.score, maxsim=hit.maxsim, fusion=hit.fusion,
                  item=_item_out(hit.metadata))


def create_app(pipeline: SearchPipeline, settings: ServiceSettings | None = None) -> FastAPI:
    """The service around ``pipeline``; see the module docstring for the conventions."""
    settings = settings or ServiceSettings()
    app = FastAPI(
        title="UniFashion",
        description="Fashion retrieval (text->image, image->text, composed image+text->image), captioning and "
                    "generation over one catalogue. Errors are JSON: {\"error\": {\"status\", \"code\", \"message\"}}.",
        version="1",
        docs_url=None,
        redoc_url=None,
    )
    app.state.pipeline = pipeline
    app.state.settings = settings
    app.add_middleware(_BodySizeLimit, max_bytes=settings.max_upload_bytes)

    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError):
        return JSONResponse(_error_body(exc.status, exc.code, exc.message), status_code=exc.status,
                            headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, exc: RequestValidationError):
        details = [{"loc": [str(p) for p in e.get("loc", ())], "msg": str(e.get("msg", "")),
                    "type": str(e.get("type", ""))} for e in exc.errors()]
        # "top_k: Input should be ..." (the loc's first part, "body" or "query", says nothing useful)
        message = "; ".join(f"{'.'.join(d['loc'][1:]) or '.'.join(d['loc']) or 'request'}: {d['msg']}"
                            for d in details)
        return JSONResponse(_error_body(422, "invalid_request", message or "invalid request", details),
                            status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, exc: StarletteHTTPException):
        codes = {400: "bad_request", 404: "not_found", 405: "method_not_allowed"}
        return JSONResponse(_error_body(exc.status_code, codes.get(exc.status_code, "http_error"), str(exc.detail)),
                            status_code=exc.status_code, headers=getattr(exc, "headers", None))

    # -- dependencies and helpers ------------------------------------------------------------

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

    def check_text(text: str | None, name: str = "text", required: bool = True) -> str | None:
        if text is None or not text.strip():
            if required:
                raise ApiError(422, "text_missing", f"{name} must not be empty")
            return None
        if len(text) > settings.max_text_chars:
            raise ApiError(422, "text_too_long",
                           f"{name} has {len(text)} characters; the limit is {settings.max_text_chars}")
        return text.strip()

    def read_image(upload: UploadFile | None, field: str, required: bool = True) -> Image.Image | None:
        """Decode an uploaded image part, enforcing the content type, size and pixel limits."""
        if upload is None or (not upload.filename and upload.size == 0):
            if required:
                raise ApiError(422, "image_missing", f"the file part {field!r} is required")
            return None
        declared = (upload.content_type or "").split(";")[0].strip().lower()
        if declared not in _GENERIC_CONTENT_TYPES and not declared.startswith("image/"):
            raise ApiError(415, "unsupported_media_type",
                           f"the part {field!r} ({upload.filename}) is {declared}; send an image (PNG, JPEG, WebP...)")
        data = upload.file.read(settings.max_upload_bytes + 1)
        name = f"{field!r} ({upload.filename})" if upload.filename else repr(field)
        if len(data) > settings.max_upload_bytes:
            raise ApiError(413, "upload_too_large", f"{name} exceeds {settings.max_upload_bytes} bytes")
        if not data:
            raise ApiError(400, "invalid_image", f"{name} is empty")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                image = Image.open(io.BytesIO(data))
                width, height = image.size  # read from the header: nothing decoded yet
                if width * height > settings.max_image_pixels:
                    raise ApiError(413, "image_too_large",
                                   f"{name} is {width} x {height} = {width * height} pixels; the limit is "
                                   f"{settings.max_image_pixels}")
                image.load()
        except ApiError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ApiError(413, "image_too_large", f"{name}: {exc}") from exc
        except UnidentifiedImageError as exc:  # its message names a BytesIO object: say it plainly
            raise ApiError(400, "invalid_image",
                           f"{name} is not a readable image: not a recognised image format") from exc
        except (OSError, SyntaxError, ValueError) as exc:  # e.g. "image file is truncated"
            raise ApiError(400, "invalid_image", f"{name} is not a readable image: {exc}") from exc
        return image.convert("RGB")

    def parse_json_object(value: str | None, field: str) -> dict[str, Any]:
        if value is None or not value.strip():
            return {}
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError as exc:
            raise ApiError(422, "invalid_json", f"{field} is not valid JSON: {exc.msg}") from exc
        if not isinstance(parsed, dict):
            raise ApiError(422, "invalid_json", f"{field} must be a JSON object")
        return parsed

    # -- endpoints ---------------------------------------------------------------------------

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> HTMLResponse:
        return HTMLResponse(render_page(settings.model_name, settings.default_generation_steps))

    @app.get("/health", response_model=HealthOut, summary="Service status, catalogue size and limits")
    def health() -> HealthOut:
        index = pipeline.index
        limits = {k: v for k, v in asdict(settings).items() if k.startswith(("max_", "default_"))}
        return HealthOut(status="ok", model=settings.model_name, items=len(index), categories=index.categories(),
                         index_generation=index.generation, read_only=index.read_only,
                         writes_need_api_key=settings.api_key is not None, caption_styles=list(CAPTION_STYLES),
                         schedulers=list(SCHEDULERS), limits=limits)

    @app.post("/search/text", response_model=SearchOut, dependencies=[json_body],
              responses=_error_responses(415, 422), summary="Text -> catalogue images (CMR)")
    def search_text(query: TextQuery) -> SearchOut:
        text = check_text(query.text)
        top_k = check_top_k(query.top_k)
        with _pipeline_errors():
            hits = pipeline.text_to_images(text, top_k, category=query.category or None)
        return SearchOut(query={"text": text, "top_k": top_k, "category": query.category},
                         results=[_hit_out(h) for h in hits])

    @app.post("/search/image-to-text", response_model=TextSearchOut, dependencies=[multipart],
              responses=_error_responses(400, 413, 415, 422),
              summary="Image -> catalogue texts (CMR): the items' stored and generated captions")
    def search_image_to_text(
        image: Annotated[UploadFile, File(description="the query image")],
        top_k: Annotated[int, Form(description="results, 1 to max_top_k")] = 10,
    ) -> TextSearchOut:
        top_k = check_top_k(top_k)
        picture = read_image(image, "image")
        with _pipeline_errors():
            hits = pipeline.image_to_texts(picture, top_k)
        return TextSearchOut(query={"top_k": top_k}, results=[TextHitOut(**h.to_dict()) for h in hits])

    @app.post("/search/composed", response_model=SearchOut, dependencies=[multipart],
              responses=_error_responses(400, 413, 415, 422),
              summary="Reference image + modification text -> catalogue images (CIR, caption fusion)")
    def search_composed(
        image: Annotated[UploadFile, File(description="the reference image")],
        text: Annotated[str, Form(description="how the wanted item differs, e.g. 'is red with long sleeves'")],
        top_k: Annotated[int, Form()] = 10,
        fusion: Annotated[bool, Form(description="add caption fusion <e, Z_C> to the score (the paper's)")] = True,
        category: Annotated[str | None, Form()] = None,
    ) -> SearchOut:
        text = check_text(text)
        top_k = check_top_k(top_k)
        picture = read_image(image, "image")
        with _pipeline_errors():
            hits = pipeline.composed(picture, text, top_k, fusion=fusion, category=category or None)
        return SearchOut(query={"text": text, "top_k": top_k, "fusion": fusion, "category": category},
                         results=[_hit_out(h) for h in hits])

    @app.post("/caption", response_model=CaptionOut, dependencies=[multipart],
              responses=_error_responses(400, 413, 415, 422), summary="Caption an image (FIC)")
    def caption(
        image: Annotated[UploadFile, File()],
        style: Annotated[Literal["short", "professional", "detailed"], Form()] = "detailed",
    ) -> CaptionOut:
        picture = read_image(image, "image")
        with _pipeline_errors():
            return CaptionOut(caption=pipeline.caption(picture, style), style=style)

    @app.post("/generate", dependencies=[multipart], response_class=Response,
              responses={200: {"content": {"image/png": {}}, "description": "the generated image; seed in X-Seed"},
                         **_error_responses(400, 413, 415, 422)},
              summary="Generate an image (FIG): text, image + text, or person + mask (+ sketch) + text")
    def generate(
        text: Annotated[str | None, Form(description="what to draw, or how to change the reference image")] = None,
        image: Annotated[UploadFile | None, File(description="reference garment (composed generation)")] = None,
        mask: Annotated[UploadFile | None, File(description="try-on: white = region of the person to redraw")] = None,
        sketch: Annotated[UploadFile | None, File(description="try-on: garment sketch")] = None,
        person: Annotated[UploadFile | None, File(description="design / try-on: the person image (the "
                                                               "result keeps its size and, outside the mask, "
                                                               "its pixels)")] = None,
        garment: Annotated[UploadFile | None, File(description="try-on: the in-shop garment (with person "
                                                                "and mask)")] = None,
        steps: Annotated[int | None, Form(description="denoising steps, 1 to max_generation_steps")] = None,
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
        pictures = {name: read_image(upload, name, required=False)
                    for name, upload in (("image", image), ("mask", mask), ("sketch", sketch), ("person", person))}
        if garment is not None:
            pictures["image"] = read_image(garment, "garment", required=False)
        if text is None and pictures["image"] is None:
            raise ApiError(422, "text_missing", "generation needs a text, a reference image, or both")
        seed = secrets.randbelow(2**31) if seed is None else seed
        with _pipeline_errors():
            if pictures["person"] is not None and pictures["mask"] is not None:
                import torch

                from unifashion.pipelines.tryon import generate_on_person

                with pipeline.lock:  # design / try-on: the person's size, its pixels outside the mask
                    generated = generate_on_person(
                        pipeline.model, pictures["person"], pictures["mask"], text=text, garment=pictures["image"],
                        sketch=pictures["sketch"], steps=steps, scheduler=scheduler, guidance=guidance,
                        generator=torch.Generator().manual_seed(seed))[0]
            else:
                generated = pipeline.generate(text, **pictures, steps=steps, scheduler=scheduler,
                                              guidance=guidance, seed=seed)[0]
        buffer = io.BytesIO()
        generated.save(buffer, format="PNG")
        return Response(buffer.getvalue(), media_type="image/png", headers={"X-Seed": str(seed)})

    @app.get("/items/{item_id}", response_model=ItemOut, responses=_error_responses(404),
             summary="An item's metadata")
    def get_item(item_id: str) -> ItemOut:
        with _pipeline_errors():
            return _item_out(pipeline.get(item_id))

    @app.get("/items/{item_id}/image", response_class=FileResponse,
             responses={200: {"content": {"image/png": {}, "image/jpeg": {}}}, **_error_responses(404)},
             summary="An item's image")
    def get_item_image(item_id: str) -> FileResponse:
        with _pipeline_errors():
            path = pipeline.image_path(item_id)
        if path is None or not path.is_file():
            raise ApiError(404, "image_missing", f"item {item_id!r} has no image file on the server")
        return FileResponse(path)

    @app.post("/items", status_code=201, response_model=ItemOut,
              dependencies=[Depends(require_api_key), multipart],
              responses=_error_responses(400, 401, 403, 409, 413, 415, 422),
              summary="Add an item (image + metadata); it is embedded and captioned now. Needs the API key")
    def add_item(
        item_id: Annotated[str, Form(description="1-128 characters of A-Z a-z 0-9 . _ -, starting alphanumeric")],
        image: Annotated[UploadFile, File()],
        category: Annotated[str, Form()] = "",
        caption: Annotated[str | None, Form(description="stored as the item's 'short' caption")] = None,
        captions: Annotated[str | None, Form(description="JSON object {style: caption}")] = None,
        attributes: Annotated[str | None, Form(description="JSON object of attributes")] = None,
        replace: Annotated[bool, Form(description="replace an item with this id")] = False,
    ) -> ItemOut:
        if not ITEM_ID_PATTERN.match(item_id):
            raise ApiError(422, "invalid_item_id",
                           f"item_id {item_id!r} must be 1-128 characters of A-Z a-z 0-9 . _ - starting alphanumeric")
        caption_map = {str(k): str(v) for k, v in parse_json_object(captions, "captions").items()}
        short = check_text(caption, "caption", required=False)
        if short is not None:
            caption_map["short"] = short
        attribute_map = parse_json_object(attributes, "attributes")
        picture = read_image(image, "image")
        with _pipeline_errors():
            metadata = pipeline.add_item(item_id, picture, category=category.strip(), captions=caption_map,
                                         attributes=attribute_map, replace=replace)
        return _item_out(metadata)

    @app.delete("/items/{item_id}", response_model=DeletedOut, dependencies=[Depends(require_api_key)],
                responses=_error_responses(401, 403, 404, 409), summary="Delete an item. Needs the API key")
    def delete_item(item_id: str) -> DeletedOut:
        with _pipeline_errors():
            pipeline.delete_items([item_id])
        return DeletedOut(deleted=item_id)

    return app


def serve(index_dir: str, model: str = "tiny-default", host: str = "127.0.0.1", port: int = 8000,
          api_key: str | None = None, threads: int = 1, read_only: bool = False,
          settings: ServiceSettings | None = None) -> None:
    """Load ``model`` (a trained tag or a saved folder), open the index and serve until stopped."""
    import torch
    import uvicorn

    from unifashion.index import CatalogueIndex, IndexLockedError
    from unifashion.models import UniFashion

    torch.set_num_threads(threads)
    settings = settings or ServiceSettings()
    settings.api_key = api_key or settings.api_key
    settings.model_name = settings.model_name or str(model)
    loaded = UniFashion.from_pretrained(model)
    try:
        index = CatalogueIndex.open(index_dir, read_only=read_only)
    except IndexLockedError:
        print(f"{index_dir} is open for writing elsewhere: serving it read-only (adding and deleting items is off)")
        index = CatalogueIndex.open(index_dir, read_only=True)
    pipeline = SearchPipeline(loaded, index)
    if settings.api_key is None and host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: serving on {host} without --api-key: anyone who can reach it can add and delete items")
    print(f"serving {len(index)} items from {index_dir} with {model} at http://{host}:{port}/ "
          f"(OpenAPI: http://{host}:{port}/openapi.json)")
    try:
        uvicorn.run(create_app(pipeline, settings), host=host, port=port, log_level="info")
    finally:
        pipeline.close()
