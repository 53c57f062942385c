"""QueryConditionedDiffusion: q2I loss, sampling, try-on conditioning and the diffusers layout."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from unifashion.models.diffusion import (
    DiffusionAdapter,
    DiffusionConfig,
    QueryConditionedDiffusion,
)

QUERY_DIM = 24
NUM_QUERIES = 4
IMAGE_SIZE = 32


def small_config(**overrides) -> DiffusionConfig:
    """Far smaller than the tiny preset: 32 px images, 16x16 latents, a ~0.1 M-parameter UNet."""
    values = dict(image_size=IMAGE_SIZE, vae_block_out_channels=[8, 16], unet_block_out_channels=[16, 32],
                  unet_attention_heads=2, norm_num_groups=8, cross_attention_dim=16)
    values.update(overrides)
    return DiffusionConfig(**values)


def make_model(**overrides) -> QueryConditionedDiffusion:
    torch.manual_seed(0)
    return QueryConditionedDiffusion(small_config(**overrides), QUERY_DIM)


def queries(batch_size: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch_size, NUM_QUERIES, QUERY_DIM, generator=torch.Generator().manual_seed(seed))


def images(batch_size: int, seed: int = 1) -> torch.Tensor:
    return torch.rand(batch_size, 3, IMAGE_SIZE, IMAGE_SIZE, generator=torch.Generator().manual_seed(seed))


def centre_mask(batch_size: int) -> torch.Tensor:
    mask = torch.zeros(batch_size, 1, IMAGE_SIZE, IMAGE_SIZE)
    mask[:, :, 8:24, 10:22] = 1.0
    return mask


def scaled_linear_alphas_cumprod(config: DiffusionConfig) -> torch.Tensor:
    betas = torch.linspace(config.beta_start**0.5, config.beta_end**0.5, config.num_train_timesteps,
                           dtype=torch.float32) ** 2
    return torch.cumprod(1.0 - betas, dim=0)


def test_config_json_round_trip_and_validation():
    config = small_config(pretrained_path="/models/sd-v1-4", extra_channels=6, cond_dropout=0.2)
    assert DiffusionConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    with pytest.raises(ValueError):
        DiffusionConfig(null_condition="random")
    with pytest.raises(ValueError):
        make_model(extra_channels=3)


def test_tiny_preset_sizes():
    model = QueryConditionedDiffusion(DiffusionConfig(), query_dim=256)
    unet_parameters = sum(p.numel() for p in model.unet.parameters())
    assert 2e6 < unet_parameters < 10e6
    assert model.vae_scale_factor == 4 and model.image_size == 64
    assert isinstance(model.adapter, DiffusionAdapter)
    assert (model.adapter.proj.in_features, model.adapter.proj.out_features) == (256, 256)
    assert not any(p.requires_grad for p in model.vae.parameters())  # freeze_vae defaults to True


def test_q2i_loss_matches_direct_recomputation():
    model = make_model(cond_dropout=0.0)
    with torch.no_grad():
        model.null_condition.normal_()
    batch = 3
    pixels, query_embeds = images(batch), queries(batch)
    noise = torch.randn(batch, 4, 16, 16, generator=torch.Generator().manual_seed(2))
    timesteps = torch.tensor([0, 500, 999])
    loss = model.loss(pixels, query_embeds, noise=noise, timesteps=timesteps,
                      generator=torch.Generator().manual_seed(3))

    with torch.no_grad():
        posterior = model.vae.encode(pixels * 2 - 1).latent_dist
        latents = posterior.sample(generator=torch.Generator().manual_seed(3)) * model.vae.config.scaling_factor
        alpha_bar = scaled_linear_alphas_cumprod(model.config)[timesteps].view(-1, 1, 1, 1)
        noisy = alpha_bar.sqrt() * latents + (1 - alpha_bar).sqrt() * noise
        condition = query_embeds @ model.adapter.proj.weight.T + model.adapter.proj.bias
        predicted = model.unet(noisy, timesteps, encoder_hidden_states=condition).sample
        expected = ((predicted - noise) ** 2).mean()
    torch.testing.assert_close(loss.detach(), expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_min_snr_weighting_matches_a_recomputation_by_hand(prediction_type):
    gamma = 5.0
    model = make_model(cond_dropout=0.0, prediction_type=prediction_type, snr_gamma=gamma)
    batch = 3
    pixels, query_embeds = images(batch), queries(batch)
    noise = torch.randn(batch, 4, 16, 16, generator=torch.Generator().manual_seed(2))
    timesteps = torch.tensor([0, 500, 999])
    loss = model.loss(pixels, query_embeds, noise=noise, timesteps=timesteps,
                      generator=torch.Generator().manual_seed(3))

    alpha_bar = scaled_linear_alphas_cumprod(model.config)[timesteps]
    snr = alpha_bar / (1 - alpha_bar)
    v_prediction = prediction_type == "v_prediction"
    weights = torch.minimum(snr, torch.tensor(gamma)) / (snr + 1 if v_prediction else snr)
    torch.testing.assert_close(model.min_snr_weights(timesteps, v_prediction), weights)
    assert weights[0] < 0.01  # t = 0 is nearly noise-free: down-weighted in both parametrisations
    assert weights[2] > 0.99 if not v_prediction else weights[2] < 0.01
    with torch.no_grad():
        posterior = model.vae.encode(pixels * 2 - 1).latent_dist
        latents = posterior.sample(generator=torch.Generator().manual_seed(3)) * model.vae.config.scaling_factor
        a = alpha_bar.view(-1, 1, 1, 1)
        noisy = a.sqrt() * latents + (1 - a).sqrt() * noise
        condition = query_embeds @ model.adapter.proj.weight.T + model.adapter.proj.bias
        predicted = model.unet(noisy, timesteps, encoder_hidden_states=condition).sample
        target = a.sqrt() * noise - (1 - a).sqrt() * latents if v_prediction else noise
        expected = (((predicted - target) ** 2).flatten(1).mean(1) * weights).mean()
    torch.testing.assert_close(loss.detach(), expected, rtol=1e-4, atol=1e-7)
    with pytest.raises(ValueError, match="snr_gamma"):
        small_config(snr_gamma=0.0)
    with pytest.raises(ValueError, match="prediction_type"):
        small_config(prediction_type="sample")


def test_condition_dropout_uses_the_learned_null_condition():
    model = make_model(cond_dropout=1.0).train()
    with torch.no_grad():
        model.null_condition.normal_()
    batch = 2
    pixels, query_embeds = images(batch), queries(batch)
    noise = torch.randn(batch, 4, 16, 16, generator=torch.Generator().manual_seed(2))
    timesteps = torch.tensor([10, 700])
    loss = model.loss(pixels, query_embeds, noise=noise, timesteps=timesteps,
                      generator=torch.Generator().manual_seed(3))
    loss.backward()
    assert model.null_condition.grad is not None and model.null_condition.grad.abs().sum() > 0
    assert model.adapter.proj.weight.grad.abs().sum() == 0  # every condition was dropped

    with torch.no_grad():
        latents = model.encode_images(pixels, generator=torch.Generator().manual_seed(3))
        noisy = model.noise_scheduler.add_noise(latents, noise, timesteps)
        null = model.null_condition.expand(batch, NUM_QUERIES, -1)
        expected = F.mse_loss(model.unet(noisy, timesteps, encoder_hidden_states=null).sample, noise)
    torch.testing.assert_close(loss.detach(), expected, rtol=1e-4, atol=1e-6)


def test_zero_null_condition_is_not_a_parameter():
    model = make_model(null_condition="zero")
    assert "null_condition" not in dict(model.named_parameters())
    assert "null_condition" not in model.state_dict()


@pytest.mark.parametrize("scheduler", ["pndm", "dpmsolver++"])
def test_generate_returns_images_in_unit_range(scheduler):
    model = make_model().eval()
    generated = model.generate(queries(2), num_inference_steps=4, scheduler=scheduler, guidance_scale=7.5,
                               generator=torch.Generator().manual_seed(0))
    assert generated.shape == (2, 3, IMAGE_SIZE, IMAGE_SIZE)
    assert generated.min() >= 0.0 and generated.max() <= 1.0
    again = model.generate(queries(2), num_inference_steps=4, scheduler=scheduler, guidance_scale=7.5,
                           generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(generated, again)


def test_guidance_changes_the_sample():
    model = make_model().eval()
    with torch.no_grad():
        model.null_condition.normal_()
    kwargs = dict(num_inference_steps=3, scheduler="dpmsolver++")
    unguided = model.generate(queries(1), guidance_scale=1.0, generator=torch.Generator().manual_seed(0), **kwargs)
    guided = model.generate(queries(1), guidance_scale=5.0, generator=torch.Generator().manual_seed(0), **kwargs)
    assert unguided.shape == guided.shape and not torch.equal(unguided, guided)


def test_unknown_sampler_is_rejected():
    with pytest.raises(ValueError, match="scheduler"):
        make_model().generate(queries(1), num_inference_steps=2, scheduler="euler")


def test_try_on_channels_and_exact_pixels_outside_the_mask():
    model = make_model(extra_channels=6).eval()
    assert model.unet.conv_in.in_channels == 4 + 6
    person, mask = images(2), centre_mask(2)
    sketch = torch.rand(2, 1, IMAGE_SIZE, IMAGE_SIZE, generator=torch.Generator().manual_seed(5))
    generated = model.generate(queries(2), num_inference_steps=3, guidance_scale=2.0, mask=mask, sketch=sketch,
                               masked_image=person, generator=torch.Generator().manual_seed(0))
    outside = mask.expand_as(person) == 0
    assert torch.equal(generated[outside], person[outside])
    assert not torch.equal(generated[~outside], person[~outside])

    spatial = model.spatial_condition(2, (16, 16), mask, sketch, person)
    assert spatial.shape == (2, 6, 16, 16)
    torch.testing.assert_close(spatial[:, 4:5], F.interpolate(mask, size=(16, 16)))

    loss = model.train().loss(person, queries(2), mask=mask, sketch=sketch, generator=torch.Generator().manual_seed(0))
    loss.backward()
    assert model.unet.conv_in.weight.grad[:, 4:].abs().sum() > 0


def test_spatial_inputs_need_extra_channels():
    with pytest.raises(ValueError, match="extra_channels"):
        make_model().loss(images(1), queries(1), mask=centre_mask(1))
    with pytest.raises(ValueError, match="sketch"):
        make_model(extra_channels=5).loss(images(1), queries(1), mask=centre_mask(1), sketch=centre_mask(1))


def test_autoencoder_loss_trains_the_vae_when_unfrozen():
    model = make_model(freeze_vae=False)
    model.autoencoder_loss(images(2), generator=torch.Generator().manual_seed(0)).backward()
    assert model.vae.encoder.conv_in.weight.grad.abs().sum() > 0


def test_state_dict_saves_with_safetensors_and_reloads(tmp_path):
    from safetensors.torch import load_file, save_file

    model = make_model(extra_channels=6).eval()
    save_file(model.state_dict(), tmp_path / "weights.safetensors")
    model.save_pretrained(tmp_path / "diffusion")
    reloaded = QueryConditionedDiffusion.from_pretrained(tmp_path / "diffusion", QUERY_DIM).eval()
    reloaded.load_state_dict(load_file(tmp_path / "weights.safetensors"))
    kwargs = dict(noise=torch.randn(1, 4, 16, 16), timesteps=torch.tensor([321]),
                  mask=centre_mask(1), masked_image=images(1))
    with torch.no_grad():
        torch.testing.assert_close(
            reloaded.loss(images(1), queries(1), generator=torch.Generator().manual_seed(0), **kwargs),
            model.loss(images(1), queries(1), generator=torch.Generator().manual_seed(0), **kwargs),
        )


# ---------------------------------------------------------------- paper preset layout, offline
def write_tiny_stable_diffusion(directory):
    """A random 4-channel UNet, a VAE and a PNDM scheduler config in Stable Diffusion's layout."""
    from diffusers import AutoencoderKL, PNDMScheduler, UNet2DConditionModel

    torch.manual_seed(0)
    vae = AutoencoderKL(block_out_channels=(8, 16), down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, norm_num_groups=8,
                        layers_per_block=1, sample_size=IMAGE_SIZE)
    unet = UNet2DConditionModel(sample_size=16, in_channels=4, out_channels=4, layers_per_block=1,
                                block_out_channels=(16, 32), norm_num_groups=8, cross_attention_dim=20,
                                attention_head_dim=2,
                                down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"))
    scheduler = PNDMScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085,
                              beta_end=0.0125, skip_prk_steps=True, set_alpha_to_one=False, steps_offset=1)
    vae.save_pretrained(directory / "vae")
    unet.save_pretrained(directory / "unet")
    scheduler.save_pretrained(directory / "scheduler")
    return unet


def test_pretrained_diffusers_layout_loads_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    original_unet = write_tiny_stable_diffusion(tmp_path / "sd").eval()
    model = QueryConditionedDiffusion(DiffusionConfig(pretrained_path=str(tmp_path / "sd")), QUERY_DIM).eval()
    assert model.cross_attention_dim == 20 and model.adapter.proj.out_features == 20
    assert model.noise_scheduler.config.beta_end == pytest.approx(0.0125)  # read from scheduler/
    assert model.unet.conv_in.in_channels == 4
    assert model.image_size == IMAGE_SIZE  # unet sample_size x VAE factor
    generated = model.generate(queries(1), num_inference_steps=2, generator=torch.Generator().manual_seed(0))
    assert generated.shape == (1, 3, IMAGE_SIZE, IMAGE_SIZE)

    widened = QueryConditionedDiffusion(
        DiffusionConfig(pretrained_path=str(tmp_path / "sd"), extra_channels=6), QUERY_DIM
    ).eval()
    assert widened.unet.conv_in.in_channels == 10 and widened.unet.config.in_channels == 10
    assert torch.count_nonzero(widened.unet.conv_in.weight[:, 4:]) == 0
    latents = torch.randn(2, 4, 16, 16)
    timesteps = torch.tensor([5, 900])
    condition = torch.randn(2, NUM_QUERIES, 20)
    with torch.no_grad():
        expected = original_unet(latents, timesteps, encoder_hidden_states=condition).sample
        zero_extras = torch.cat([latents, torch.zeros(2, 6, 16, 16)], dim=1)
        actual = widened.unet(zero_extras, timesteps, encoder_hidden_states=condition).sample
        spatial = widened.spatial_condition(2, (16, 16), None, None, None)  # no try-on inputs -> zeros
        via_component = widened.predict_noise(latents, timesteps, condition, spatial)
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(via_component, expected, rtol=1e-5, atol=1e-6)


def write_tiny_paint_by_example_unet(directory):
    """A random 9-channel UNet (noisy latents, masked-image latents, mask), Paint-by-Example's input."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(1)
    unet = UNet2DConditionModel(sample_size=16, in_channels=9, out_channels=4, layers_per_block=1,
                                block_out_channels=(16, 32), norm_num_groups=8, cross_attention_dim=20,
                                attention_head_dim=2,
                                down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"))
    unet.save_pretrained(directory / "unet")
    return unet


def test_paint_by_example_unet_gets_a_zero_sketch_channel_and_the_vae_comes_from_its_own_folder(tmp_path):
    from diffusers import AutoencoderKL

    write_tiny_stable_diffusion(tmp_path / "sd")
    pbe = write_tiny_paint_by_example_unet(tmp_path / "pbe").eval()
    torch.manual_seed(2)
    viton_vae = AutoencoderKL(block_out_channels=(8, 16), down_block_types=("DownEncoderBlock2D",) * 2,
                              up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, norm_num_groups=8,
                              layers_per_block=1, sample_size=IMAGE_SIZE)
    viton_vae.save_pretrained(tmp_path / "stableviton-vae")  # a VAE folder itself (config.json inside)
    config = DiffusionConfig(pretrained_path=str(tmp_path / "sd"), unet_path=str(tmp_path / "pbe"),
                             vae_path=str(tmp_path / "stableviton-vae"), extra_channels=6, image_size=16,
                             image_width=12)
    model = QueryConditionedDiffusion(config, QUERY_DIM).eval()
    # 9 channels are a prefix of ours (latents, masked latents, mask); the sketch channel is new, zero.
    assert model.unet.conv_in.in_channels == 10
    torch.testing.assert_close(model.unet.conv_in.weight[:, :9], pbe.conv_in.weight)
    assert torch.count_nonzero(model.unet.conv_in.weight[:, 9:]) == 0
    torch.testing.assert_close(model.vae.encoder.conv_in.weight, viton_vae.encoder.conv_in.weight)
    latents, spatial = torch.randn(1, 4, 8, 6), torch.randn(1, 5, 8, 6)
    condition = torch.randn(1, NUM_QUERIES, 20)
    with torch.no_grad():
        expected = pbe(torch.cat([latents, spatial], 1), torch.tensor([10]), encoder_hidden_states=condition).sample
        actual = model.predict_noise(latents, torch.tensor([10]), condition,
                                     torch.cat([spatial, torch.randn(1, 1, 8, 6)], 1))  # any sketch: zero weights
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-6)
    # Non-square: 16 x 12 images, 8 x 6 latents (the paper: 512 x 384).
    assert model.image_size == (16, 12) and model.image_hw == (16, 12)
    out = model.generate(queries(1), num_inference_steps=2, generator=torch.Generator().manual_seed(0))
    assert out.shape == (1, 3, 16, 12)
    loss = model.loss(torch.rand(2, 3, 16, 12), queries(2), generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(loss)


def test_a_unet_of_another_width_is_a_clear_error(tmp_path):
    from diffusers import UNet2DConditionModel

    write_tiny_stable_diffusion(tmp_path / "sd")
    UNet2DConditionModel(sample_size=16, in_channels=7, out_channels=4, layers_per_block=1,
                         block_out_channels=(16, 32), norm_num_groups=8, cross_attention_dim=20, attention_head_dim=2,
                         down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                         up_block_types=("UpBlock2D", "CrossAttnUpBlock2D")).save_pretrained(tmp_path / "odd")
    with pytest.raises(ValueError, match="7 input channels.*Paint-by-Example"):
        QueryConditionedDiffusion(DiffusionConfig(pretrained_path=str(tmp_path / "sd"), unet_path=str(tmp_path / "odd"),
                                                  extra_channels=6), QUERY_DIM)
    with pytest.raises(FileNotFoundError, match="vae_path"):
        QueryConditionedDiffusion(DiffusionConfig(pretrained_path=str(tmp_path / "sd"),
                                                  vae_path=str(tmp_path / "nowhere")), QUERY_DIM)
