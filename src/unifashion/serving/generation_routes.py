"""What the model makes from an image or a text: a caption (``POST /caption``) and an image
(``POST /generate``, answered with the PNG itself and the seed used in ``X-Seed``)."""

# No "from __future__ import annotations": FastAPI reads the endpoints' annotations at run time.
import io
import secrets
from contextlib import nullcontext
from typing import Annotated, Literal

from fastapi import APIRouter, File, Form, UploadFile
from fastapi.responses import Response

from unifashion.serving.errors import ApiError, error_responses, pipeline_errors
from unifashion.serving.schemas import CaptionOut
from unifashion.serving.state import MULTIPART, UPLOAD_ERRORS, ServiceState, bounds
from unifashion.settings import GENERATION, SAMPLERS


def generation_router(state: ServiceState) -> APIRouter:
    router = APIRouter()
    settings, pipeline, admission = state.settings, state.pipeline, state.admission

    @router.post("/caption", response_model=CaptionOut, dependencies=[MULTIPART],
                 responses=error_responses(*UPLOAD_ERRORS), summary="Caption an image (FIC)")
    def caption(
        image: Annotated[UploadFile, File(description="PNG, JPEG or WebP")],
        style: Annotated[Literal["short", "professional", "detailed"], Form()] = "detailed",
    ) -> CaptionOut:
        with admission.image_slot():
            picture = state.read_image(image, "image")
            with pipeline_errors(), state.model_turn():
                return CaptionOut(caption=pipeline.caption(picture, style), style=style)

    steps_help = f"denoising steps, 1 to {settings.max_generation_steps} (default {settings.default_generation_steps})"

    @router.post("/generate", dependencies=[MULTIPART], response_class=Response,
                 responses={200: {"content": {"image/png": {}}, "description": "the generated image; seed in X-Seed"},
                            **error_responses(*UPLOAD_ERRORS)},
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
                                          **bounds(1, settings.max_generation_steps))] = None,
        scheduler: Annotated[Literal[SAMPLERS], Form()] = GENERATION.sampler,
        guidance: Annotated[float, Form(ge=0, le=50,
                                        description="classifier-free guidance scale")] = GENERATION.guidance,
        seed: Annotated[int | None, Form(ge=0, lt=2**63, description="random when omitted")] = None,
    ) -> Response:
        steps = settings.default_generation_steps if steps is None else steps
        if not 1 <= steps <= settings.max_generation_steps:
            raise ApiError(422, "too_many_steps" if steps > settings.max_generation_steps else "invalid_steps",
                           f"steps must be between 1 and {settings.max_generation_steps}, got {steps}")
        text = state.check_text(text, required=False)
        if garment is not None and image is not None:
            raise ApiError(422, "invalid_value", "give the garment once: 'garment' (try-on) or 'image'")
        uploads = {"image": image, "mask": mask, "sketch": sketch, "person": person}
        has_images = any(upload is not None for upload in (*uploads.values(), garment))
        seed = secrets.randbelow(2**31) if seed is None else seed
        with admission.generation_slot(), admission.image_slot() if has_images else nullcontext():
            pictures = {name: state.read_image(upload, name, required=False) for name, upload in uploads.items()}
            if garment is not None:
                pictures["image"] = state.read_image(garment, "garment", required=False)
            if text is None and pictures["image"] is None:
                raise ApiError(422, "text_missing", "generation needs a text, a reference image, or both")
            with pipeline_errors(), state.generation_turn():
                generated = pipeline.generate(text, **pictures, steps=steps, scheduler=scheduler,
                                              guidance=guidance, seed=seed)[0]
        buffer = io.BytesIO()
        generated.save(buffer, format="PNG")
        return Response(buffer.getvalue(), media_type="image/png", headers={"X-Seed": str(seed)})

    return router
