"""One config system (unifashion.configuration) for every config dataclass of the package: JSON round
trips, unknown keys named by their dotted path, bad values as ConfigError, old files still load."""

from __future__ import annotations

import ast
import dataclasses
import json
import re
from pathlib import Path

import pytest

from unifashion import configuration
from unifashion.configuration import ConfigError, from_dict, load_json, save_json, to_dict
from unifashion.data.synthetic.catalogue import CatalogueConfig
from unifashion.models.config import (
    CaptionLMConfig,
    DiffusionConfig,
    QFormerConfig,
    UniFashionConfig,
    VisionConfig,
    list_presets,
)
from unifashion.models.dual_encoder import DualEncoderConfig
from unifashion.training.recipe import DataSpec, StageSpec, TrainRecipe, default_recipe
from unifashion.training.trainer import LoopConfig, OptimConfig
from unifashion.training.tryon import TryOnTrainConfig
from unifashion.training.two_stage_cir import TwoStageCIRConfig

SRC = Path(configuration.__file__).parent
OLD_CONFIGS = Path(__file__).parent / "models" / "old_configs"

CONFIGS = {
    "vision": VisionConfig(type="hf", hf_config={"model_type": "clip_vision_model", "hidden_size": 24}),
    "qformer": QFormerConfig(hidden_size=64, encoder_width=24),
    "caption_lm": CaptionLMConfig(pretrained_path="/models/llm", lora_target_modules=["q_proj"]),
    "diffusion": DiffusionConfig(image_size=32, vae_block_out_channels=[8, 16], cond_dropout=0.2),
    **{f"unifashion-{name}": UniFashionConfig.from_preset(name) for name in list_presets()},
    "unifashion-no-generators": UniFashionConfig(),
    "dual_encoder": DualEncoderConfig(vision=VisionConfig(image_size=64), embed_dim=32),
    "optim": OptimConfig(lr=3e-4, betas=(0.8, 0.9), schedule="linear"),
    "loop": LoopConfig(steps=5, resume="latest", optim=OptimConfig(warmup_steps=2)),
    "data": DataSpec(n_items=10, fashion_mnist_path="/data/fm"),
    "stage": StageSpec("p2", 2, None, terms=["cir"], loop=LoopConfig(steps=3)),
    "recipe": default_recipe(scale=0.01),
    "recipe-overrides": TrainRecipe(model_overrides={"qformer.num_hidden_layers": 2, "caption_lm": None}),
    "two_stage_cir": TwoStageCIRConfig(stages=("combiner",), text_layers_trained=None),
    "tryon": TryOnTrainConfig(train_unet=False, loop=LoopConfig(steps=7)),
    "catalogue": CatalogueConfig(n_items=30, split_fractions=(0.6, 0.2, 0.2), categories=("dress", "shirt")),
}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_round_trip_through_json(name, tmp_path):
    config = CONFIGS[name]
    data = json.loads(json.dumps(to_dict(config)))
    again = from_dict(type(config), data)
    assert again == config
    assert to_dict(again) == data
    # The classes' own methods (where they have them) are the same functions.
    if hasattr(config, "to_dict"):
        assert config.to_dict() == data
    if hasattr(type(config), "from_dict"):
        assert type(config).from_dict(data) == config
    assert load_json(type(config), save_json(config, tmp_path / "config.json")) == config


def test_nested_sections_have_their_types():
    config = UniFashionConfig.from_dict(to_dict(UniFashionConfig.from_preset("tiny")))
    assert isinstance(config.caption_lm, CaptionLMConfig) and isinstance(config.diffusion, DiffusionConfig)
    recipe = TrainRecipe.from_dict(to_dict(default_recipe()))
    assert all(isinstance(s, StageSpec) and isinstance(s.loop.optim, OptimConfig) for s in recipe.stages)
    assert isinstance(recipe.stages[0].loop.optim.betas, tuple)
    assert isinstance(CatalogueConfig.from_dict({"categories": ["dress"]}).categories, tuple)


@pytest.mark.parametrize(
    "cls, data, path",
    [
        (UniFashionConfig, {"diffusion": {"unet_size": 3}}, "diffusion.unet_size"),
        (UniFashionConfig, {"caption_lm": {"lora": {"r": 4}}}, "caption_lm.lora"),
        (TrainRecipe, {"stages": [{"name": "p2", "phase": 2, "loop": {"optim": {"lrr": 1}}}]},
         "stages.p2.loop.optim.lrr"),
        (TrainRecipe, {"stages": [{"phase": 1, "stage": "qformer", "bogus": 1}]}, "stages[0].bogus"),
        (TrainRecipe, {"data": {"n_itemz": 3}}, "data.n_itemz"),
        (TryOnTrainConfig, {"loop": {"optim": {"beta": 0.9}}}, "tryon.train.loop.optim.beta"),
        (DualEncoderConfig, {"vision": {"colour_stats": True}}, "dual_encoder.vision.colour_stats"),
        (LoopConfig, {"optim": {"learning_rate": 1}}, "loop.optim.learning_rate"),
        (CatalogueConfig, {"n_itmes": 3}, "catalogue.n_itmes"),
        (TwoStageCIRConfig, {"stage1_stepz": 3}, "two_stage_cir.stage1_stepz"),
    ],
)
def test_unknown_nested_key_names_its_dotted_path(cls, data, path):
    with pytest.raises(ConfigError, match=re.escape(f"unknown config key '{path}'")):
        cls.from_dict(data)


@pytest.mark.parametrize(
    "make, words",
    [
        (lambda: DiffusionConfig(cond_dropout=1.5), "cond_dropout"),
        (lambda: DiffusionConfig(null_condition="noise"), "null_condition"),
        (lambda: UniFashionConfig.from_dict({"diffusion": {"cond_dropout": -1}}), "'diffusion'.*cond_dropout"),
        (lambda: UniFashionConfig.from_dict({"vision": {"resize_mode": "crop"}}), "'vision'.*resize_mode"),
        (lambda: UniFashionConfig.from_dict({"vision": 3}), "'vision' must be a JSON object"),
        (lambda: OptimConfig(schedule="step"), "schedule"),
        (lambda: LoopConfig.from_dict({"optim": {"schedule": "step"}}), "'loop.optim'.*schedule"),
        (lambda: StageSpec("p3", 3), "phase must be 1, 2 or None"),
        (lambda: TrainRecipe.from_dict({"stages": [{"name": "p1", "phase": 1, "stage": "all"}]}),
         "'stages.p1'.*phase 1 stages"),
        (lambda: TrainRecipe.from_dict({"stages": [{"phase": 1}]}), "'stages\\[0\\]'.*name"),
        (lambda: TwoStageCIRConfig(stages=("combiner", "encoders")), "order"),
        (lambda: TryOnTrainConfig.from_dict({"loop": {"optim": {"schedule": "step"}}}), "schedule"),
        (lambda: CatalogueConfig(n_items=1), "n_items"),
        (lambda: CatalogueConfig.from_dict({"split_fractions": [0.5, 0.5, 0.5]}), "'catalogue'.*split_fractions"),
    ],
)
def test_a_bad_value_is_a_config_error(make, words):
    with pytest.raises(ConfigError, match=words):
        make()


def test_missing_fields_take_their_defaults_so_old_files_load(tmp_path):
    # config.json as the first UniFashion version (commit db6b68d) saved the tiny preset.
    old = OLD_CONFIGS / "tiny-db6b68d.json"
    data = json.loads(old.read_text())
    assert "itm_max_pairs" not in data and "fusion_caption_style" not in data
    config = UniFashionConfig.load(old)
    defaults = UniFashionConfig()
    assert config.itm_max_pairs == defaults.itm_max_pairs
    assert (config.fusion_caption_style, config.fusion_caption_tokens) == ("detailed", 48)
    assert config.caption_lm.hidden_size == data["caption_lm"]["hidden_size"]
    assert config.diffusion.extra_channels == data["diffusion"]["extra_channels"]
    # What a field-less file means is the defaults, section by section.
    assert UniFashionConfig.from_dict({"qformer": {}}) == UniFashionConfig()
    assert LoopConfig.from_dict({"steps": 3}) == LoopConfig(steps=3)


def test_missing_and_broken_files(tmp_path):
    with pytest.raises(ConfigError, match="config file not found") as missing:
        UniFashionConfig.load(tmp_path / "none.json")
    assert isinstance(missing.value, FileNotFoundError)
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(ConfigError, match="not valid JSON"):
        TrainRecipe.load(tmp_path / "broken.json")


def test_recipes_in_the_repository_load():
    recipes = sorted((Path(__file__).parents[1] / "recipes").glob("*.json"))
    assert recipes
    for path in recipes:
        recipe = TrainRecipe.load(path)
        assert recipe.stages and TrainRecipe.from_dict(to_dict(recipe)) == recipe


def test_configs_stay_importable_from_their_model_modules():
    from unifashion.models import caption_lm, diffusion

    assert caption_lm.CaptionLMConfig is CaptionLMConfig
    assert diffusion.DiffusionConfig is DiffusionConfig


def test_no_config_class_has_its_own_key_logic():
    """models/config.py imports no model module, and nothing outside configuration.py checks keys or
    builds nested sections by hand."""
    tree = ast.parse((SRC / "models" / "config.py").read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert not any(m.startswith("unifashion.models") for m in imported), imported
    assert not hasattr(configuration, "dataclass_from_dict")
    for path in SRC.rglob("*.py"):
        if path.name != "configuration.py":
            text = path.read_text()
            assert "check_keys" not in text and "dataclass_from_dict" not in text, path


def test_dataclass_fields_are_all_json():
    for config in CONFIGS.values():
        for field in dataclasses.fields(config):
            json.dumps(to_dict(getattr(config, field.name)))
