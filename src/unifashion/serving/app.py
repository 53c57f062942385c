"""The HTTP service: a FastAPI app over a :class:`~unifashion.pipelines.SearchPipeline`.

``create_app(pipeline, settings)`` builds the app (tests build it around a small random model)
from routers by concern: the page and health (serving/health_routes.py), search
(search_routes.py), caption and generation (generation_routes.py), items (item_routes.py), which
share one :class:`~unifashion.serving.state.ServiceState` (the pipeline, settings, admission and
image limits, and the input checks). :func:`serve` loads a model and an index and runs it with
uvicorn (``unifashion serve``).

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

from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from unifashion.pipelines.search import SearchPipeline
from unifashion.serving.errors import install_error_handlers
from unifashion.serving.generation_routes import generation_router
from unifashion.serving.health_routes import health_router
from unifashion.serving.item_routes import item_router
from unifashion.serving.limits import BodyLimits
from unifashion.serving.search_routes import search_router
from unifashion.serving.security import BrowserSafety
from unifashion.serving.settings import LOOPBACK_HOSTS, ServiceSettings
from unifashion.serving.state import ServiceState

__all__ = ["ServiceSettings", "create_app", "serve", "uvicorn_options"]


def create_app(pipeline: SearchPipeline, settings: ServiceSettings | None = None) -> FastAPI:
    """The service around ``pipeline``; see the module docstring for the conventions. The
    endpoints live in routers by concern (page and health, search, caption and generation,
    items), which share one :class:`~unifashion.serving.state.ServiceState`."""
    state = ServiceState.create(pipeline, settings or ServiceSettings())
    settings = state.settings

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
    app.state.service = state
    app.state.pipeline = pipeline
    app.state.settings = settings
    app.state.admission = state.admission
    # Outermost first: the Host / Origin check, then the body limits, then the app.
    app.add_middleware(BodyLimits, max_bytes=settings.max_upload_bytes, timeout_s=settings.body_timeout_s,
                       max_buffered=settings.max_buffered_bytes, retry_after_s=settings.retry_after_s)
    app.add_middleware(BrowserSafety, allowed_hosts=settings.allowed_hosts, allowed_origins=settings.allowed_origins)
    install_error_handlers(app)
    for router in (health_router, search_router, generation_router, item_router):
        app.include_router(router(state))
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
