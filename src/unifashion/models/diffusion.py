"""Query-conditioned latent diffusion: the TSA_diff adapter, a VAE and a cross-attention UNet.

UniFashion (arXiv 2408.11305, method section) maps the Q-Former query outputs ``Z`` through a
task-specific adapter ``TSA_diff`` (a linear map into the UNet's cross-attention width) and uses
them in place of Stable Diffusion's text-encoder states. Training minimises the q2I loss

    L_q2I = E_{x, eps ~ N(0, I), t} || eps - eps_theta(z_t, t, TSA_diff(Z)) ||^2,
    z_0 = s * E(x),   z_t = sqrt(abar_t) z_0 + sqrt(1 - abar_t) eps        (DDPM forward process)

with ``E`` the VAE encoder and ``s`` its scaling factor. Sampling uses PLMS (PNDM with
``skip_prk_steps``; the paper's choice, 50 steps) or DPM-Solver++, with classifier-free guidance
against a null condition that replaces the queries with probability ``cond_dropout`` in training.

Try-on / design conditioning (MGD style): the UNet input concatenates, along channels,

    [noisy latents (C)] [masked-image latents (C)] [agnostic mask (1)] [sketch (1)]

at latent resolution (``extra_channels = C + 2``; ``C + 1`` drops the sketch). A pretrained
4-channel UNet gets its ``conv_in`` widened with zero weights for the new channels, so it computes
exactly what it computed before until those weights learn (as MGD and InstructPix2Pix do). Note
that Stable Diffusion *inpainting* checkpoints order their 9 channels differently
(noisy, mask, masked latents); start from a text-to-image checkpoint.

Images are float tensors in [0, 1], (B, 3, H, W); masks (B, 1, H, W) in {0, 1} with 1 = region to
generate; sketches (B, 1, H, W) in [0, 1].

Two presets: tiny (default, CPU) builds a ~1 M-parameter ``AutoencoderKL`` (64 px -> 16x16x4
latents) and a ~6 M-parameter ``UNet2DConditionModel`` from the fields below, with random weights;
the VAE must be trained (:meth:`QueryConditionedDiffusion.autoencoder_loss`) before the UNet, since
``freeze_vae`` defaults to True. Paper: ``pretrained_path`` names a local diffusers-layout directory
(``vae/``, ``unet/``, ``scheduler/``) such as Stable Diffusion v1.4. The configuration,
:class:`~unifashion.models.config.DiffusionConfig`, lives in :mod:`unifashion.models.config` with
the rest of the model's (it is importable from here too).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from unifashion.configuration import load_json, save_json
from unifashion.layers.adapter import TaskSpecificAdapter
from unifashion.models.config import NULL_CONDITION_KINDS as NULL_CONDITION_KINDS
from unifashion.models.config import DiffusionConfig as DiffusionConfig
from unifashion.models.config import torch_dtype
from unifashion.settings import GENERATION, SAMPLERS

CONFIG_FILE_NAME = "diffusion_config.json"
TINY_IMAGE_SIZE = 64


class DiffusionAdapter(TaskSpecificAdapter):
    """TSA_diff: the paper's task-specific adapter, Linear(query_dim -> UNet cross_attention_dim)."""


def tiny_image_size(config: DiffusionConfig) -> int:
    return config.image_size if config.image_size is not None else TINY_IMAGE_SIZE


def build_tiny_vae(config: DiffusionConfig) -> nn.Module:
    from diffusers import AutoencoderKL

    num_blocks = len(config.vae_block_out_channels)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * num_blocks,
        up_block_types=("UpDecoderBlock2D",) * num_blocks,
        block_out_channels=tuple(config.vae_block_out_channels),
        layers_per_block=config.vae_layers_per_block,
        latent_channels=config.latent_channels,
        norm_num_groups=config.norm_num_groups,
        sample_size=tiny_image_size(config),
    )


def build_tiny_unet(config: DiffusionConfig, latent_size: int) -> nn.Module:
    """UNet with cross-attention in every block but the lowest-resolution one (SD's layout)."""
    from diffusers import UNet2DConditionModel

    num_blocks = len(config.unet_block_out_channels)
    down_blocks = ("CrossAttnDownBlock2D",) * (num_blocks - 1) + ("DownBlock2D",)
    up_blocks = ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * (num_blocks - 1)
    return UNet2DConditionModel(
        sample_size=latent_size,
        in_channels=config.latent_channels + config.extra_channels,
        out_channels=config.latent_channels,
        layers_per_block=config.unet_layers_per_block,
        block_out_channels=tuple(config.unet_block_out_channels),
        down_block_types=down_blocks,
        up_block_types=up_blocks,
        cross_attention_dim=config.cross_attention_dim,
        attention_head_dim=config.unet_attention_heads,  # diffusers' legacy name: number of heads
        norm_num_groups=config.norm_num_groups,
    )


def widen_unet_input(unet: nn.Module, extra_channels: int) -> None:
    """Add ``extra_channels`` zero-initialised input channels to ``unet.conv_in`` in place.

    The new weights are zero, so for any extra input the widened UNet's output equals the
    original's until training moves them (MGD / InstructPix2Pix initialisation).
    """
    old = unet.conv_in
    new = nn.Conv2d(
        old.in_channels + extra_channels,
        old.out_channels,
        kernel_size=old.kernel_size,
        stride=old.stride,
        padding=old.padding,
        device=old.weight.device,
        dtype=old.weight.dtype,
    )
    with torch.no_grad():
        new.weight.zero_()
        new.weight[:, : old.in_channels].copy_(old.weight)
        new.bias.copy_(old.bias)
    unet.conv_in = new
    unet.register_to_config(in_channels=new.in_channels)


def _randn(shape, generator: torch.Generator | None, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Standard normal noise drawn on the generator's device (so a CPU generator works for CUDA)."""
    draw_device = generator.device if generator is not None else device
    return torch.randn(shape, generator=generator, device=draw_device, dtype=dtype).to(device)


def _rand(shape, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    draw_device = generator.device if generator is not None else device
    return torch.rand(shape, generator=generator, device=draw_device).to(device)


def _component_folder(path: str | None, root: Path, name: str) -> tuple[Path, str | None]:
    """(folder, subfolder) of a diffusers component: ``root/name`` by default; ``path`` given,
    ``path/name`` when it holds one, else ``path`` itself (a component folder)."""
    if path is None:
        return root, name
    folder = Path(path)
    if not folder.is_dir():
        raise FileNotFoundError(f"diffusion.{name}_path is not a directory: {folder}")
    if (folder / name / "config.json").is_file():
        return folder, name
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"diffusion.{name}_path {folder} holds neither {name}/config.json nor config.json")
    return folder, None


class QueryConditionedDiffusion(nn.Module):
    """TSA_diff + VAE + UNet: the q2I loss for training and query-conditioned image generation.

    Args:
        config: the component's configuration.
        query_dim: width of the Q-Former query outputs it is conditioned on.
    """

    def __init__(self, config: DiffusionConfig, query_dim: int):
        super().__init__()
        from diffusers import DDPMScheduler

        self.config = config
        self.query_dim = query_dim
        if config.is_pretrained:
            self.vae, self.unet, scheduler_config = self._load_pretrained(config)
        else:
            self.vae = build_tiny_vae(config)
            latent_size = tiny_image_size(config) // 2 ** (len(config.vae_block_out_channels) - 1)
            self.unet = build_tiny_unet(config, latent_size)
            scheduler_config = {
                "num_train_timesteps": config.num_train_timesteps,
                "beta_schedule": config.beta_schedule,
                "beta_start": config.beta_start,
                "beta_end": config.beta_end,
                "prediction_type": config.prediction_type,
            }
        self.latent_channels = self.vae.config.latent_channels
        if config.image_size is not None:
            height = config.image_size
        elif config.is_pretrained:
            height = int(self.unet.config.sample_size) * self.vae_scale_factor
        else:
            height = tiny_image_size(config)
        width = config.image_width if config.image_width is not None else height
        if height % self.vae_scale_factor or width % self.vae_scale_factor:
            raise ValueError(f"image size {height} x {width} must be a multiple of the VAE's factor "
                             f"{self.vae_scale_factor}")
        # An int when square (every square caller), (height, width) otherwise (the paper: 512 x 384).
        self.image_size: int | tuple[int, int] = height if width == height else (height, width)
        self._check_extra_channels()
        # The DDPM schedule used for training; samplers are rebuilt from its config per call.
        self.noise_scheduler = DDPMScheduler.from_config(scheduler_config)
        self.cross_attention_dim = self.unet.config.cross_attention_dim
        self.adapter = DiffusionAdapter(query_dim, self.cross_attention_dim)
        null = torch.zeros(1, 1, self.cross_attention_dim)
        if config.null_condition == "learned":
            self.null_condition = nn.Parameter(null)
        else:
            self.register_buffer("null_condition", null, persistent=False)
        if config.freeze_vae:
            self.vae.requires_grad_(False)
        if config.freeze_unet:
            self.unet.requires_grad_(False)

    @staticmethod
    def _load_pretrained(config: DiffusionConfig):
        """Load ``vae/``, ``unet/`` and the ``scheduler/`` config from a local diffusers directory."""
        from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel

        root = Path(str(config.pretrained_path))
        if not root.is_dir():
            raise FileNotFoundError(f"pretrained_path is not a directory: {root}")
        dtype = torch_dtype(config.torch_dtype)
        vae_root, vae_sub = _component_folder(config.vae_path, root, "vae")
        unet_root, unet_sub = _component_folder(config.unet_path, root, "unet")
        vae = AutoencoderKL.from_pretrained(vae_root, subfolder=vae_sub, torch_dtype=dtype, local_files_only=True)
        unet = UNet2DConditionModel.from_pretrained(unet_root, subfolder=unet_sub, torch_dtype=dtype,
                                                    local_files_only=True)
        latent_channels = vae.config.latent_channels
        wanted_in = latent_channels + config.extra_channels
        # Starting points whose input channels are a prefix of ours: text-to-image (latents only)
        # and Paint-by-Example (latents, masked-image latents, mask: 9 channels, in our order).
        # The missing channels are added with zero weights.
        prefixes = (latent_channels, 2 * latent_channels + 1)
        if unet.config.in_channels in prefixes and unet.config.in_channels < wanted_in:
            widen_unet_input(unet, wanted_in - unet.config.in_channels)
        elif unet.config.in_channels != wanted_in:
            raise ValueError(
                f"UNet at {unet_root / (unet_sub or '')} takes {unet.config.in_channels} input channels; expected "
                f"{wanted_in} (latents + extra_channels) or fewer to widen: {latent_channels} (text-to-image) or "
                f"{2 * latent_channels + 1} (Paint-by-Example)"
            )
        if (root / "scheduler").is_dir():
            scheduler_config = DDPMScheduler.load_config(root, subfolder="scheduler", local_files_only=True)
        else:
            scheduler_config = {
                "num_train_timesteps": config.num_train_timesteps,
                "beta_schedule": config.beta_schedule,
                "beta_start": config.beta_start,
                "beta_end": config.beta_end,
            }
        return vae, unet, scheduler_config

    def _check_extra_channels(self) -> None:
        allowed = (0, self.latent_channels + 1, self.latent_channels + 2)
        if self.config.extra_channels not in allowed:
            raise ValueError(
                f"extra_channels must be one of {allowed} (none, masked-image latents + mask, + sketch); "
                f"got {self.config.extra_channels}"
            )

    # ------------------------------------------------------------------ geometry and scaling
    @property
    def image_hw(self) -> tuple[int, int]:
        """(height, width) of generated images."""
        return (self.image_size, self.image_size) if isinstance(self.image_size, int) else self.image_size

    @property
    def vae_scale_factor(self) -> int:
        """Image pixels per latent pixel along each side."""
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def latent_scaling_factor(self) -> float:
        if self.config.vae_scaling_factor is not None:
            return self.config.vae_scaling_factor
        return float(self.vae.config.scaling_factor)

    @property
    def uses_sketch(self) -> bool:
        return self.config.extra_channels == self.latent_channels + 2

    # ------------------------------------------------------------------ building blocks
    def encode_condition(self, query_embeds: torch.Tensor) -> torch.Tensor:
        """TSA_diff(Z): (B, num_queries, query_dim) -> (B, num_queries, cross_attention_dim)."""
        return self.adapter(query_embeds.to(self.adapter.proj.weight.dtype))

    def null_condition_like(self, condition: torch.Tensor) -> torch.Tensor:
        """The null condition broadcast to ``condition``'s shape (all query slots identical)."""
        return self.null_condition.to(condition.dtype).expand_as(condition)

    def encode_images(self, images: torch.Tensor, generator: torch.Generator | None = None,
                      sample: bool | None = None) -> torch.Tensor:
        """Images in [0, 1] -> scaled latents ``s * E(2x - 1)`` (posterior sample or mean)."""
        sample = self.config.sample_posterior if sample is None else sample
        pixels = (images * 2.0 - 1.0).to(self.vae.dtype)
        posterior = self.vae.encode(pixels).latent_dist
        latents = posterior.sample(generator=generator) if sample else posterior.mode()
        return latents * self.latent_scaling_factor

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled latents -> images in [0, 1]."""
        pixels = self.vae.decode((latents / self.latent_scaling_factor).to(self.vae.dtype)).sample
        return ((pixels.float() + 1.0) / 2.0).clamp(0.0, 1.0)

    def spatial_condition(
        self,
        batch_size: int,
        latent_hw: tuple[int, int],
        mask: torch.Tensor | None,
        sketch: torch.Tensor | None,
        masked_image: torch.Tensor | None,
    ) -> torch.Tensor | None:
        """The extra UNet input channels: [masked-image latents, mask, (sketch)] at latent size.

        The person image is masked in the VAE's [-1, 1] space (masked pixels become 0, mid grey)
        and encoded with the posterior mean. Missing inputs give zero channels, which a freshly
        widened pretrained UNet ignores exactly. Returns None when the UNet has no extra channels.
        """
        if self.config.extra_channels == 0:
            if mask is not None or sketch is not None or masked_image is not None:
                raise ValueError("mask/sketch/masked_image given but the config has extra_channels=0")
            return None
        if sketch is not None and not self.uses_sketch:
            raise ValueError("sketch given but extra_channels leaves no sketch channel")
        device, dtype = self.unet.device, self.unet.dtype
        height, width = latent_hw
        masked_latents = torch.zeros(batch_size, self.latent_channels, height, width, device=device, dtype=dtype)
        mask_channel = torch.zeros(batch_size, 1, height, width, device=device, dtype=dtype)
        if mask is not None:
            if masked_image is None:
                raise ValueError("a mask needs the person image (masked_image) it applies to")
            keep = (1.0 - mask).to(self.vae.dtype)
            masked_pixels = (masked_image.to(self.vae.dtype) * 2.0 - 1.0) * keep
            posterior = self.vae.encode(masked_pixels).latent_dist
            masked_latents = (posterior.mode() * self.latent_scaling_factor).to(dtype)
            mask_channel = F.interpolate(mask.to(dtype), size=latent_hw, mode="nearest")
        channels = [masked_latents, mask_channel]
        if self.uses_sketch:
            sketch_channel = torch.zeros(batch_size, 1, height, width, device=device, dtype=dtype)
            if sketch is not None:
                sketch_channel = F.interpolate(sketch.to(dtype), size=latent_hw, mode="area")
            channels.append(sketch_channel)
        return torch.cat(channels, dim=1)

    def predict_noise(
        self,
        noisy_latents: torch.Tensor,
        timesteps: torch.Tensor,
        condition: torch.Tensor,
        spatial: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """eps_theta(z_t, t, c): the UNet on [noisy latents, spatial condition] with cross-attention c."""
        unet_input = noisy_latents if spatial is None else torch.cat([noisy_latents, spatial], dim=1)
        return self.unet(
            unet_input.to(self.unet.dtype), timesteps, encoder_hidden_states=condition.to(self.unet.dtype)
        ).sample

    # ------------------------------------------------------------------ training
    def loss(
        self,
        images: torch.Tensor,
        query_embeds: torch.Tensor,
        mask: torch.Tensor | None = None,
        sketch: torch.Tensor | None = None,
        masked_image: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        noise: torch.Tensor | None = None,
        timesteps: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The q2I loss (paper, ``L_q2I``): mean over the batch of ||eps - eps_theta(z_t, t, c)||^2.

        ``c = TSA_diff(Z)``, replaced by the null condition per sample with probability
        ``cond_dropout`` while the module is in training mode (classifier-free guidance). With a
        mask, ``masked_image`` defaults to ``images`` (the person the garment is generated on).
        ``noise`` and ``timesteps`` may be given to make the loss deterministic; otherwise they are
        drawn from ``generator``, which also drives the VAE posterior sample and the dropout.
        """
        latents = self.encode_images(images, generator=generator).to(self.unet.dtype)
        batch_size = latents.shape[0]
        if mask is not None and masked_image is None:
            masked_image = images
        spatial = self.spatial_condition(batch_size, latents.shape[-2:], mask, sketch, masked_image)
        if noise is None:
            noise = _randn(latents.shape, generator, latents.device, latents.dtype)
        if timesteps is None:
            timesteps = torch.randint(
                0, self.noise_scheduler.config.num_train_timesteps, (batch_size,),
                generator=generator, device=generator.device if generator is not None else latents.device,
            )
        timesteps = timesteps.to(latents.device).long()
        noisy_latents = self.noise_scheduler.add_noise(latents, noise, timesteps)

        condition = self.encode_condition(query_embeds)
        if self.training and self.config.cond_dropout > 0:
            drop = _rand((batch_size,), generator, condition.device) < self.config.cond_dropout
            condition = torch.where(drop[:, None, None], self.null_condition_like(condition), condition)

        prediction = self.predict_noise(noisy_latents, timesteps, condition, spatial)
        v_prediction = self.noise_scheduler.config.prediction_type == "v_prediction"
        target = self.noise_scheduler.get_velocity(latents, noise, timesteps) if v_prediction else noise
        if self.config.snr_gamma is None:
            return F.mse_loss(prediction.float(), target.float())
        per_sample = F.mse_loss(prediction.float(), target.float(), reduction="none").flatten(1).mean(1)
        return (per_sample * self.min_snr_weights(timesteps, v_prediction)).mean()

    def min_snr_weights(self, timesteps: torch.Tensor, v_prediction: bool = False) -> torch.Tensor:
        """min(SNR(t), gamma) / SNR(t) per timestep (/ (SNR(t) + 1) for v-prediction), with
        SNR(t) = alpha_bar_t / (1 - alpha_bar_t) of the noise schedule."""
        alphas = self.noise_scheduler.alphas_cumprod.to(timesteps.device)[timesteps].float()
        snr = alphas / (1.0 - alphas)
        clipped = snr.clamp(max=float(self.config.snr_gamma))
        return clipped / (snr + 1.0) if v_prediction else clipped / snr

    def autoencoder_loss(
        self, images: torch.Tensor, kl_weight: float = 1e-6, generator: torch.Generator | None = None,
        lowpass_weight: float = 1.0, lowpass_size: int = 8,
    ) -> torch.Tensor:
        """Reconstruction MSE + ``lowpass_weight`` x MSE of the images averaged over
        ``lowpass_size`` px cells + ``kl_weight`` x KL(posterior || N(0, I)), to train the tiny VAE.

        The low-pass term weighs each region's mean colour on its own: with the pixel MSE alone
        the short-trained tiny VAE returned desaturated, brown-grey garments (a small error per
        pixel, a wrong colour name for the garment). The tiny preset's VAE starts random; train it
        with this loss (with its parameters set trainable) before training the UNet with
        :meth:`loss`. Images in [0, 1].
        """
        pixels = (images * 2.0 - 1.0).to(self.vae.dtype)
        posterior = self.vae.encode(pixels).latent_dist
        reconstruction = self.vae.decode(posterior.sample(generator=generator)).sample.float()
        loss = F.mse_loss(reconstruction, pixels.float()) + kl_weight * posterior.kl().mean()
        if lowpass_weight:
            size = min(lowpass_size, pixels.shape[-1])
            loss = loss + lowpass_weight * F.mse_loss(F.avg_pool2d(reconstruction, size),
                                                      F.avg_pool2d(pixels.float(), size))
        return loss

    # ------------------------------------------------------------------ sampling
    def make_sampler(self, scheduler: str):
        """A fresh sampler with the training noise schedule: PLMS ("pndm") or DPM-Solver++ (the
        names of :data:`unifashion.settings.SAMPLERS`)."""
        from diffusers import DPMSolverMultistepScheduler, PNDMScheduler

        schedule = self.noise_scheduler.config
        if scheduler == "pndm":
            return PNDMScheduler.from_config(schedule, skip_prk_steps=True)
        if scheduler == "dpmsolver++":
            return DPMSolverMultistepScheduler.from_config(schedule, algorithm_type="dpmsolver++", solver_order=2)
        raise ValueError(f"scheduler must be one of {SAMPLERS}, got {scheduler!r}")

    @torch.no_grad()
    def generate(
        self,
        query_embeds: torch.Tensor,
        num_inference_steps: int = GENERATION.steps,
        scheduler: str = GENERATION.sampler,
        guidance_scale: float = GENERATION.guidance,
        mask: torch.Tensor | None = None,
        sketch: torch.Tensor | None = None,
        masked_image: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Images in [0, 1], (B, 3, H, W), generated from the queries ``Z``.

        Classifier-free guidance: eps = eps(null) + w (eps(c) - eps(null)), skipped when w <= 1.
        With a mask, ``masked_image`` is the person image: it conditions the UNet (masked), and
        every pixel outside the mask is copied back from it, so those pixels are exactly unchanged.
        """
        batch_size = query_embeds.shape[0]
        reference = masked_image if masked_image is not None else mask if mask is not None else sketch
        if reference is not None:
            height, width = reference.shape[-2:]
        else:
            height, width = self.image_hw
        latent_hw = (height // self.vae_scale_factor, width // self.vae_scale_factor)
        device, dtype = self.unet.device, self.unet.dtype

        condition = self.encode_condition(query_embeds.to(device))
        use_guidance = guidance_scale > 1.0
        if use_guidance:
            condition = torch.cat([self.null_condition_like(condition), condition], dim=0)
        spatial = self.spatial_condition(batch_size, latent_hw, mask, sketch, masked_image)
        if spatial is not None and use_guidance:
            spatial = torch.cat([spatial, spatial], dim=0)

        sampler = self.make_sampler(scheduler)
        sampler.set_timesteps(num_inference_steps, device=device)
        latents = _randn((batch_size, self.latent_channels, *latent_hw), generator, device, dtype)
        latents = latents * sampler.init_noise_sigma
        for timestep in sampler.timesteps:
            model_input = torch.cat([latents, latents], dim=0) if use_guidance else latents
            model_input = sampler.scale_model_input(model_input, timestep)
            noise_prediction = self.predict_noise(model_input, timestep, condition, spatial)
            if use_guidance:
                unconditional, conditional = noise_prediction.chunk(2)
                noise_prediction = unconditional + guidance_scale * (conditional - unconditional)
            latents = sampler.step(noise_prediction, timestep, latents).prev_sample

        images = self.decode_latents(latents)
        if mask is not None:
            images = torch.where(mask.to(images.device) > 0.5, images, masked_image.to(images.dtype))
        return images

    # ------------------------------------------------------------------ persistence
    def save_pretrained(self, directory: str | os.PathLike) -> None:
        """Write ``diffusion_config.json`` into ``directory`` (weights: the top-level state dict)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_json(self.config, directory / CONFIG_FILE_NAME)

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, query_dim: int) -> QueryConditionedDiffusion:
        """Rebuild the component saved by :meth:`save_pretrained`; load its state dict afterwards."""
        return cls(load_json(DiffusionConfig, Path(directory) / CONFIG_FILE_NAME, "diffusion"), query_dim)
