"""What the service's routers share: one :class:`ServiceState` (the pipeline, that is the model and
the index with their locks; the settings; admission; the image limits) and the checks every
endpoint applies to its input (API key, content type, top_k, text fields, uploaded images)."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field
from typing import Any

from fastapi import Depends, Request, Security, UploadFile
from fastapi.security import APIKeyHeader, HTTPBearer
from PIL import Image

from unifashion.pipelines.search import SearchPipeline
from unifashion.serving.admission import Admission
from unifashion.serving.errors import ApiError
from unifashion.serving.limits import ImageLimits, decode_image, parse_json_object
from unifashion.serving.settings import ServiceSettings

#: Ids of items added through the API: safe in a URL path segment and a file name.
ITEM_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")

#: Documented in the schema only (the endpoints check them, with their own error codes).
NOT_BLANK = r"\S"

#: What any request with a body can get before an endpoint sees it: a cross-origin refusal
#: (403), a body that came too slowly (408) or is too large (413).
BODY_ERRORS = (403, 408, 413)
#: ... and an endpoint that takes uploads besides: a part of the wrong type (415), bad fields (422).
UPLOAD_ERRORS = (*BODY_ERRORS, 415, 422)

# Content types of image parts that are decoded. An undeclared type (or the generic
# application/octet-stream that some clients send for any file) is decoded too and must then be
# an image; anything else declared (text/plain, application/json, ...) is refused with 415.
_GENERIC_CONTENT_TYPES = ("", "application/octet-stream")

# For the schema: writes take the key in either header (the endpoints read them directly).
_API_KEY_HEADER = APIKeyHeader(name="X-API-Key", scheme_name="ApiKey", auto_error=False)
_BEARER = HTTPBearer(scheme_name="Bearer", auto_error=False)


def bounds(minimum: int, maximum: int) -> dict[str, Any]:
    """Field keywords that document an integer range in the schema (the endpoints check it)."""
    return {"json_schema_extra": {"minimum": minimum, "maximum": maximum}}


def content_type(*expected: str):
    """A dependency: 415 unless the request's content type is one of ``expected``."""
    def check(request: Request) -> None:
        given = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if given not in expected:
            raise ApiError(415, "unsupported_media_type",
                           f"this endpoint takes {' or '.join(expected)}, got {given or 'no content type'}")
    return Depends(check)


JSON_BODY = content_type("application/json")
# Form endpoints: multipart carries the images; a form without files may come url-encoded.
MULTIPART = content_type("multipart/form-data", "application/x-www-form-urlencoded")


@dataclass
class ServiceState:
    """The service's shared state; :meth:`create` derives admission and the image limits from
    the settings (and gives generation its own lane when they ask for it)."""

    pipeline: SearchPipeline
    settings: ServiceSettings
    admission: Admission
    image_limits: ImageLimits
    #: The write endpoints' dependencies: the key schemes (declared in the schema only when a key
    #: is configured; without one, writes are open) and the check itself.
    write_dependencies: list[Any] = field(default_factory=list)

    @classmethod
    def create(cls, pipeline: SearchPipeline, settings: ServiceSettings) -> ServiceState:
        if settings.generation_lane:
            pipeline.separate_generation()
        admission = Admission(max_waiting_images=settings.max_waiting_images, decode_slots=settings.decode_slots,
                              max_waiting_generations=settings.max_waiting_generations,
                              queue_timeout_s=settings.queue_timeout_s, retry_after_s=settings.retry_after_s)
        image_limits = ImageLimits(max_pixels=settings.max_image_pixels, max_side=settings.max_image_side,
                                   max_aspect_ratio=settings.max_aspect_ratio,
                                   working_side=settings.working_image_side)
        state = cls(pipeline, settings, admission, image_limits)
        key_schemes = [Security(_API_KEY_HEADER), Security(_BEARER)] if settings.api_key is not None else []
        state.write_dependencies = [*key_schemes, Depends(state.require_api_key)]
        return state

    # -- access ------------------------------------------------------------------------------

    def require_api_key(self, request: Request) -> None:
        """401 without the key (when one is configured), 403 with a wrong one."""
        expected = self.settings.api_key
        if expected is None:
            return
        given = request.headers.get("x-api-key")
        authorization = request.headers.get("authorization", "")
        if given is None and authorization.lower().startswith("bearer "):
            given = authorization[len("bearer "):].strip()
        if not given:
            raise ApiError(401, "api_key_missing", "this endpoint needs the API key: send the header X-API-Key",
                           headers={"WWW-Authenticate": "Bearer"})
        if not secrets.compare_digest(given.encode(), expected.encode()):
            raise ApiError(403, "api_key_wrong", "the API key is wrong")

    def model_turn(self):
        """The model's lock, waited for at most queue_timeout_s (503 after)."""
        return self.admission.turn(self.pipeline.lock)

    def generation_turn(self):
        """The generation lane's lock (the model's own without a separate lane), bounded likewise."""
        return self.admission.turn(self.pipeline.generation_lock)

    # -- input checks ------------------------------------------------------------------------

    def check_top_k(self, top_k: int) -> int:
        maximum = self.settings.max_top_k
        if not 1 <= top_k <= maximum:
            raise ApiError(422, "top_k_out_of_range", f"top_k must be between 1 and {maximum}, got {top_k}")
        return top_k

    def check_text(self, text: str | None, name: str = "text", required: bool = True,
                   limit: int | None = None) -> str | None:
        """``text`` stripped; 422 when it is missing (and ``required``) or over ``limit``
        characters (default: the settings' max_text_chars). A blank optional text is None."""
        limit = self.settings.max_text_chars if limit is None else limit
        if text is None or not text.strip():
            if required:
                raise ApiError(422, "text_missing", f"{name} must not be empty")
            return None
        if len(text) > limit:
            raise ApiError(422, "text_too_long", f"{name} has {len(text)} characters; the limit is {limit}")
        return text.strip()

    def check_category(self, category: str | None) -> str | None:
        return self.check_text(category, "category", required=False, limit=self.settings.max_category_chars)

    def read_image(self, upload: UploadFile | None, field: str, required: bool = True) -> Image.Image | None:
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
        max_bytes = self.settings.max_upload_bytes
        data = upload.file.read(max_bytes + 1)
        name = f"{field!r} ({upload.filename})" if upload.filename else repr(field)
        if len(data) > max_bytes:
            raise ApiError(413, "upload_too_large", f"{name} exceeds {max_bytes} bytes")
        with self.admission.decoding():
            return decode_image(data, name, self.image_limits)

    def captions_map(self, captions: str | None, caption: str | None) -> dict[str, str]:
        """The captions of a new item: the ``captions`` JSON object {style: text} (bounded in
        styles, style name length and text length) and ``caption`` as its 'short' one."""
        settings = self.settings
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
            checked = self.check_text(text, f"captions.{style}", required=False)
            if checked is not None:
                result[style] = checked
        short = self.check_text(caption, "caption", required=False)
        if short is not None:
            result["short"] = short
        return result
