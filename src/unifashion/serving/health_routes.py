"""The web page (``GET /``) and the service's status (``GET /health``)."""

# No "from __future__ import annotations": FastAPI reads the endpoints' annotations at run time.
from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from unifashion.data.records import CAPTION_STYLES
from unifashion.serving.errors import error_responses
from unifashion.serving.page import render_page
from unifashion.serving.schemas import HealthOut
from unifashion.serving.state import ServiceState
from unifashion.settings import SAMPLERS


def health_router(state: ServiceState) -> APIRouter:
    router = APIRouter()
    settings = state.settings

    @router.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> HTMLResponse:
        return HTMLResponse(render_page(settings.model_name, settings.default_generation_steps))

    @router.get("/health", response_model=HealthOut, responses=error_responses(),
                summary="Service status, catalogue size and limits")
    def health() -> HealthOut:
        index = state.pipeline.index
        return HealthOut(status="ok", model=settings.model_name, items=len(index), categories=index.categories(),
                         index_generation=index.generation, read_only=index.read_only,
                         writes_need_api_key=settings.api_key is not None, caption_styles=list(CAPTION_STYLES),
                         schedulers=list(SAMPLERS),
                         limits={**settings.limits(), "peak_decode_bytes": state.image_limits.peak_decode_bytes})

    return router
