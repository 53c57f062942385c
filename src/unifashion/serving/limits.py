"""Bounded work per request: request bodies (size, arrival time, bytes buffered by all requests
together), uploaded images (bytes, pixels, each side, the aspect ratio, the format; decoded at
reduced size) and JSON fields (characters, nesting depth).

Memory per image. The header is read first: an image over the limits is refused before a pixel
is decoded. A JPEG is then decoded at the smallest DCT scale (1/2, 1/4, 1/8) that still covers
the working size; other formats are decoded whole. Either way the result is reduced at once to at
most ``working_side`` on its long side, so what waits for the model is at most
``working_side**2 * 4`` bytes (4 MiB at 1024). A full decode holds at most
:attr:`ImageLimits.peak_decode_bytes` (Pillow keeps RGB(A) at 4 bytes per pixel; the conversion to
RGB and the reduction each hold a copy): 8 x 4096 x 4096 = 128 MiB at the defaults, which is why the
service lets only ``decode_slots`` decodes run at once.
"""

from __future__ import annotations

import asyncio
import io
import json
import threading
import warnings
from dataclasses import dataclass
from typing import Any

from PIL import Image, UnidentifiedImageError

from unifashion.serving.errors import ApiError, send_error
from unifashion.serving.settings import IMAGE_FORMATS

# Bytes per pixel that a full decode may hold at its peak: the decoded image and one copy (the
# RGB conversion or the reduced image), 4 bytes per pixel each.
_PEAK_BYTES_PER_PIXEL = 8


@dataclass(frozen=True)
class ImageLimits:
    max_pixels: int
    max_side: int
    max_aspect_ratio: int
    working_side: int
    formats: tuple[str, ...] = IMAGE_FORMATS

    @property
    def peak_decode_bytes(self) -> int:
        """The most memory one decode of an image within the limits holds at a time."""
        return _PEAK_BYTES_PER_PIXEL * self.max_pixels + 4 * self.working_side ** 2 + 2**20

    def check_size(self, width: int, height: int, name: str) -> None:
        """413 (``image_too_large``) for an image over a limit, from its header's size."""
        shape = f"{name} is {width} x {height}"
        if width < 1 or height < 1:
            raise ApiError(400, "invalid_image", f"{shape} pixels")
        if width * height > self.max_pixels:
            raise ApiError(413, "image_too_large",
                           f"{shape} = {width * height} pixels; the limit is {self.max_pixels}")
        if max(width, height) > self.max_side:
            raise ApiError(413, "image_too_large", f"{shape}; no side may exceed {self.max_side} pixels")
        if max(width, height) > self.max_aspect_ratio * min(width, height):
            raise ApiError(413, "image_too_large",
                           f"{shape}: its aspect ratio exceeds {self.max_aspect_ratio}:1")


def decode_image(data: bytes, name: str, limits: ImageLimits) -> Image.Image:
    """An uploaded image as RGB, at most ``limits.working_side`` on its long side; ApiError 400
    (corrupt), 413 (over a limit) or 415 (a format the service does not decode)."""
    if not data:
        raise ApiError(400, "invalid_image", f"{name} is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            try:
                image = Image.open(io.BytesIO(data), formats=limits.formats)
            except UnidentifiedImageError as exc:
                raise _unreadable(data, name, limits) from exc
            width, height = image.size  # read from the header: nothing decoded yet
            limits.check_size(width, height, name)
            box = (limits.working_side, limits.working_side)
            if image.format == "JPEG":
                image.draft("RGB", box)  # decode at 1/2, 1/4 or 1/8 scale where that still covers box
            image.load()
            if image.mode != "RGB":
                image = image.convert("RGB")
            image.thumbnail(box, Image.Resampling.BICUBIC, reducing_gap=2.0)
            return image
    except ApiError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ApiError(413, "image_too_large", f"{name}: {exc}") from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:  # e.g. "image file is truncated"
        raise ApiError(400, "invalid_image", f"{name} is not a readable image: {exc}") from exc


def _unreadable(data: bytes, name: str, limits: ImageLimits) -> ApiError:
    """415 for an image in a format the service does not decode (named from its header), else 400."""
    allowed = ", ".join(limits.formats)
    try:
        with Image.open(io.BytesIO(data)) as other:  # the header only: nothing is decoded
            found = other.format
    except Exception:  # noqa: BLE001 - whatever Pillow makes of it, it is not an image we take
        found = None
    if found:
        return ApiError(415, "unsupported_image_format", f"{name} is {found}; the service decodes {allowed}")
    # Pillow's own message names a BytesIO object: say it plainly.
    return ApiError(400, "invalid_image", f"{name} is not a readable image: not a recognised image format")


def json_depth(value: Any) -> int:
    """Nesting depth of parsed JSON (a scalar is 0), without recursion."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, depth + 1)
        stack.extend((child, depth + 1) for child in children)
    return deepest


def parse_json_object(value: str | None, field: str, max_chars: int, max_depth: int) -> dict[str, Any]:
    """A form field holding a JSON object: 422 when it is not one, too long or nested too deep."""
    if value is None or not value.strip():
        return {}
    if len(value) > max_chars:
        raise ApiError(422, "text_too_long", f"{field} has {len(value)} characters; the limit is {max_chars}")
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as exc:
        raise ApiError(422, "invalid_json", f"{field} is not valid JSON: {exc.msg}") from exc
    except RecursionError as exc:
        raise ApiError(422, "invalid_json", f"{field} nests too deeply (the limit is {max_depth} levels)") from exc
    if not isinstance(parsed, dict):
        raise ApiError(422, "invalid_json", f"{field} must be a JSON object")
    if json_depth(parsed) > max_depth:
        raise ApiError(422, "invalid_json", f"{field} nests too deeply (the limit is {max_depth} levels)")
    return parsed


class BodyLimits:
    """ASGI middleware: a request body over ``max_bytes`` gets 413 before the app parses it (a
    declared Content-Length is checked first; a chunked body is read up to the limit); a body
    that does not arrive within ``timeout_s`` gets 408; and the bodies being received by all
    requests together may hold ``max_buffered`` bytes: a request that would exceed that gets 503.
    Slow or stalled clients thus hold a bounded amount of memory for a bounded time."""

    def __init__(self, app, max_bytes: int, timeout_s: float, max_buffered: int, retry_after_s: int):
        self.app = app
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s
        self.max_buffered = max_buffered
        self.retry_after = str(retry_after_s)
        self._buffered = 0
        self._buffered_lock = threading.Lock()  # uvicorn runs one event loop, but tests may run several

    @property
    def buffered_bytes(self) -> int:
        return self._buffered

    def _reserve(self, amount: int) -> bool:
        with self._buffered_lock:
            if self._buffered + amount > self.max_buffered:
                return False
            self._buffered += amount
            return True

    def _release(self, amount: int) -> None:
        with self._buffered_lock:
            self._buffered -= amount

    async def _too_large(self, send) -> None:
        limit = self.max_bytes
        await send_error(send, 413, "upload_too_large",
                         f"the request body exceeds the limit of {limit} bytes ({limit / 2**20:.1f} MiB)")

    async def _busy(self, send) -> None:
        await send_error(send, 503, "busy", "the service is receiving too many request bodies at once; retry "
                                            f"after {self.retry_after} s", {"Retry-After": self.retry_after})

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        declared = int(declared) if declared is not None and declared.isdigit() else None
        if declared is not None and declared > self.max_bytes:
            await self._too_large(send)
            return
        held = [declared or 0]  # bytes reserved for this body; a chunked body adds as it arrives
        if not self._reserve(held[0]):
            await self._busy(send)
            return
        try:
            body = await self._read_body(receive, send, held)
            if body is None:
                return
            delivered = False

            async def replay():
                nonlocal delivered
                if not delivered:
                    delivered = True
                    return {"type": "http.request", "body": body, "more_body": False}
                return await receive()  # after the body: wait for the disconnect, as a server would

            await self.app(scope, replay, send)
        finally:
            self._release(held[0])

    async def _read_body(self, receive, send, held: list[int]) -> bytes | None:
        """The whole body, or None after answering 408 / 413 / 503 (or when the client left).
        Bytes beyond ``held[0]`` (a chunked body) are reserved, and added to it, as they arrive."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout_s
        chunks, size = [], 0
        while True:
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - loop.time()))
            except TimeoutError:
                await send_error(send, 408, "body_timeout",
                                 f"the request body did not arrive within {self.timeout_s:g} s")
                return None
            if message["type"] == "http.disconnect":
                return None  # the client went away; nothing to answer
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._too_large(send)
                return None
            if size > held[0]:
                if not self._reserve(size - held[0]):
                    await self._busy(send)
                    return None
                held[0] = size
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)
