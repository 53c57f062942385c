"""The limits and options of the service, one dataclass (``unifashion serve`` fills it from flags)."""

from __future__ import annotations

from dataclasses import dataclass, fields

from unifashion.settings import GENERATION, MAX_GENERATION_STEPS

#: Host names a service bound to loopback answers to (a foreign Host header is DNS rebinding).
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")

#: The image formats the service decodes (Pillow's names); anything else is refused with 415.
IMAGE_FORMATS = ("PNG", "JPEG", "WEBP")


@dataclass
class ServiceSettings:
    """Limits and options of the service."""

    #: Key that writes (add / delete items) require; None leaves writes open (only allowed on loopback).
    api_key: str | None = None
    #: Largest request body, all uploaded files together (413 above it).
    max_upload_bytes: int = 10 * 2**20
    #: Largest uploaded image, width x height (413 above it; checked before decoding).
    max_image_pixels: int = 4096 * 4096
    #: Longest side of an uploaded image, and the largest ratio of its long to its short side (413).
    max_image_side: int = 4096
    max_aspect_ratio: int = 8
    #: Decoded images are reduced (keeping their aspect ratio) so that neither side exceeds this
    #: before any tensor exists; JPEGs are decoded at reduced scale directly.
    working_image_side: int = 1024
    max_top_k: int = 100
    max_generation_steps: int = MAX_GENERATION_STEPS
    default_generation_steps: int = GENERATION.steps
    #: Limits on free text: queries and captions; categories and caption style names; the
    #: attributes JSON (characters, nesting depth); caption styles per item.
    max_text_chars: int = 1000
    max_category_chars: int = 64
    max_style_chars: int = 32
    max_caption_styles: int = 8
    max_attributes_chars: int = 4000
    max_json_depth: int = 8
    #: Admission: requests holding a decoded image (waiting for the model or using it); above it, 503.
    max_waiting_images: int = 8
    #: Full-size decodes at a time (each holds up to ImageLimits.peak_decode_bytes).
    decode_slots: int = 2
    #: Generations waiting or running (they have their own lane: searches never wait behind them).
    max_waiting_generations: int = 2
    #: Longest wait for the model (or the generation lane), seconds; then 503 with Retry-After.
    queue_timeout_s: float = 30.0
    #: Retry-After of a 503, seconds.
    retry_after_s: int = 2
    #: A request body must arrive within this many seconds (408 after it).
    body_timeout_s: float = 30.0
    #: Request bodies being received at once may hold this many bytes together (503 above it).
    max_buffered_bytes: int = 64 * 2**20
    #: Open connections uvicorn accepts (503 above it); keep-alive idle time, seconds.
    max_connections: int = 100
    keep_alive_s: int = 5
    #: Host header names the service answers to ("*": any); the port is not compared.
    allowed_hosts: tuple[str, ...] = LOOPBACK_HOSTS
    #: Origins (scheme://host[:port]) besides the service's own from which browsers may send
    #: POST / DELETE requests; every other Origin (and Sec-Fetch-Site: cross-site) gets 403.
    allowed_origins: tuple[str, ...] = ()
    #: Run generation on its own copy of the model's modules (sharing the weights, so little
    #: memory), under its own lock, so that searches never wait behind a generation.
    generation_lane: bool = True
    #: Shown by /health and the page.
    model_name: str = ""

    def __post_init__(self):
        for field in fields(self):
            value = getattr(self, field.name)
            if field.type == "int":
                if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                    raise ValueError(f"{field.name} must be a positive integer, got {value!r}")
            elif field.type == "float" and (isinstance(value, bool) or not isinstance(value, (int, float))
                                            or not value > 0):
                raise ValueError(f"{field.name} must be a positive number of seconds, got {value!r}")
        if self.default_generation_steps > self.max_generation_steps:
            raise ValueError("default_generation_steps exceeds max_generation_steps")
        if self.api_key is not None and not self.api_key:
            raise ValueError("api_key must be a non-empty string or None")
        self.allowed_hosts = tuple(h.strip().lower().strip("[]") for h in self.allowed_hosts)
        self.allowed_origins = tuple(o.strip().lower().rstrip("/") for o in self.allowed_origins)
        if not self.allowed_hosts:
            raise ValueError("allowed_hosts must name at least one host (or '*')")

    def limits(self) -> dict[str, int | float]:
        """The numeric limits, as /health reports them."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.type in ("int", "float")}
