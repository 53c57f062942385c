"""The paper recipes (recipes/paper-*.json): the paper's settings as data, each run for a few
steps on CPU with tiny components in the paper's layouts (a diffusers folder, a 9-channel
Paint-by-Example UNet, non-square images)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import small_config_dict
from unifashion.models import UniFashion, UniFashionConfig
from unifashion.models.caption_lm import TABLE7_INSTRUCTIONS, TABLE7_PROMPT_TEMPLATE
from unifashion.training.phase_objective import PhaseObjective
from unifashion.training.recipe import TrainRecipe, run_recipe
from unifashion.training.trainer import build_optimizer

RECIPES = sorted((Path(__file__).resolve().parents[2] / "recipes").glob("paper-*.json"))
PATH_AND_SIZE_KEYS = ("diffusion.unet_path", "diffusion.vae_path", "diffusion.image_size", "diffusion.image_width")


def test_the_four_readings_exist():
    assert [p.stem for p in RECIPES] == ["paper-frozen-qformer", "paper-joint-phase1", "paper-phase2-generators",
                                         "paper-separate-generators"]


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_recipe_holds_the_papers_settings(path):
    recipe = TrainRecipe.load(path)
    o = recipe.model_overrides
    UniFashionConfig.from_preset("paper", o)  # every override is a key of the paper preset
    assert recipe.model == "paper" and o["q2i_condition"] == "image"  # Eq. 7: q2I on Q-Former(I, q)
    assert o["caption_lm.prompt_template"] == TABLE7_PROMPT_TEMPLATE
    assert o["caption_lm.instructions"] == TABLE7_INSTRUCTIONS
    assert (o["diffusion.image_size"], o["diffusion.image_width"]) == (512, 384)
    assert o["diffusion.extra_channels"] == 6 and o["diffusion.cond_dropout"] > 0  # PbE init, null-label dropout
    for stage in recipe.stages:
        assert stage.loop.batch_size == 32
        groups = {name: g for g in stage.loop.optim.groups for name in g.parameter_groups}
        if "llm" in groups:
            g = groups["llm"]
            assert (g.lr, g.betas, g.weight_decay, g.schedule, g.warmup_ratio) == (2e-5, (0.9, 0.99), 0.0, "cosine",
                                                                                    0.03)
        if "unet" in groups:
            assert (groups["unet"].lr, groups["unet"].schedule) == (1e-4, "constant")
    phase2 = recipe.stages[-1]
    assert phase2.phase == 2 and phase2.loop.optim.betas == (0.9, 0.99) and phase2.loop.optim.weight_decay == 0.0


def test_the_paper_preset_reads_the_paper_without_a_recipe():
    """The bare preset holds the same reading as the recipes: Eq. 7's q2I on the image's queries,
    Table 7's prompts with the queries inside the USER turn, 512 x 384 images, the null label."""
    paper = UniFashionConfig.from_preset("paper")
    assert paper.q2i_condition == "image"
    assert paper.caption_lm.prompt_template == TABLE7_PROMPT_TEMPLATE
    assert paper.caption_lm.instructions == TABLE7_INSTRUCTIONS
    assert paper.caption_lm.prompt_template.index("USER:") < paper.caption_lm.prompt_template.index("{image}")
    d = paper.diffusion
    assert (d.image_size, d.image_width, d.null_condition) == (512, 384, "learned") and d.cond_dropout > 0


def _tiny_diffusers(root: Path) -> tuple[Path, Path]:
    """A VAE + scheduler folder in Stable Diffusion's layout and a 9-channel Paint-by-Example UNet."""
    from diffusers import AutoencoderKL, PNDMScheduler, UNet2DConditionModel

    torch.manual_seed(0)
    AutoencoderKL(block_out_channels=(8, 16), down_block_types=("DownEncoderBlock2D",) * 2,
                  up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, norm_num_groups=8,
                  layers_per_block=1, sample_size=16).save_pretrained(root / "sd" / "vae")
    unet = dict(sample_size=8, out_channels=4, layers_per_block=1, block_out_channels=(16, 32), norm_num_groups=8,
                cross_attention_dim=16, attention_head_dim=2, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"))
    UNet2DConditionModel(in_channels=4, **unet).save_pretrained(root / "sd" / "unet")
    UNet2DConditionModel(in_channels=9, **unet).save_pretrained(root / "pbe" / "unet")
    PNDMScheduler(skip_prk_steps=True, beta_schedule="scaled_linear").save_pretrained(root / "sd" / "scheduler")
    return root / "sd", root / "pbe"


@pytest.fixture(scope="module")
def tiny_parts(tmp_path_factory):
    from unifashion.data.synthetic.catalogue import CatalogueConfig, build_catalogue_files

    root = tmp_path_factory.mktemp("paper-recipes")
    build_catalogue_files(root / "catalogue", CatalogueConfig(n_items=40, seed=5), progress=False)
    sd, pbe = _tiny_diffusers(root)
    return root, sd, pbe


def _tiny_model_for(recipe: TrainRecipe, sd: Path, pbe: Path) -> UniFashion:
    """The small test model with the recipe's own settings; paths and sizes swapped for tiny ones
    in the same layouts (16 x 12 images in place of 512 x 384)."""
    data = small_config_dict()
    data["diffusion"] = {"pretrained_path": str(sd), "unet_path": str(pbe), "extra_channels": 6, "image_size": 16,
                         "image_width": 12}
    behaviour = {k: v for k, v in recipe.model_overrides.items() if k not in PATH_AND_SIZE_KEYS}
    torch.manual_seed(0)
    return UniFashion.from_config(UniFashionConfig.from_dict(data).replace(**behaviour))


def _weights(folder: Path, prefix: str) -> dict[str, torch.Tensor]:
    return {k: v for k, v in load_file(folder / "model.safetensors").items() if k.startswith(prefix)}


def _changed(a: Path, b: Path, prefix: str) -> bool:
    wa, wb = _weights(a, prefix), _weights(b, prefix)
    assert wa and wa.keys() == wb.keys()
    return any(not torch.equal(wa[k], wb[k]) for k in wa)


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_recipe_runs_a_few_steps_with_tiny_components(path, tiny_parts, tmp_path, single_thread):
    root, sd, pbe = tiny_parts
    recipe = TrainRecipe.load(path)
    model = _tiny_model_for(recipe, sd, pbe)
    assert model.diffusion.unet.conv_in.in_channels == 10 and model.diffusion.image_size == (16, 12)
    model.save_pretrained(tmp_path / "start")
    recipe.model, recipe.model_overrides = str(tmp_path / "start"), {}
    recipe.output_dir, recipe.data.catalogue = str(tmp_path / "run"), str(root / "catalogue")
    for stage in recipe.stages:
        stage.loop.steps, stage.loop.batch_size, stage.loop.checkpoint_every = 2, 4, 2
    final = run_recipe(recipe, progress=False)
    assert final == tmp_path / "run" / "phase2" / "final"
    timings = json.loads((tmp_path / "run" / "timings.json").read_text())
    assert list(timings) == [s.name for s in recipe.stages]
    for stage in recipe.stages:
        losses = timings[stage.name]["last_losses"]
        assert set(losses) >= {"loss", *(stage.terms or [])} - {"cir"} and all(v == v for v in losses.values())
    # What learned where: each reading's freezing, read off the saved weights.
    finals = [tmp_path / "start", *(tmp_path / "run" / s.name / "final" for s in recipe.stages)]
    qformer_moved = [_changed(a, b, "qformer.") for a, b in zip(finals, finals[1:], strict=False)]
    unet_moved = [_changed(a, b, "diffusion.unet.") for a, b in zip(finals, finals[1:], strict=False)]
    expected = {  # per stage: (Q-Former learns, UNet learns)
        "paper-frozen-qformer": [(True, False), (False, True), (True, False)],
        "paper-separate-generators": [(True, False), (False, False), (False, True), (True, False)],
        "paper-joint-phase1": [(True, True), (True, False)],
        "paper-phase2-generators": [(True, False), (False, True), (True, True)],
    }[path.stem]
    assert list(zip(qformer_moved, unet_moved, strict=True)) == expected


def test_per_module_groups_get_their_own_settings_and_schedules():
    recipe = TrainRecipe.load(RECIPES[0])  # paper-frozen-qformer
    stage = recipe.stages[1]
    assert stage.name == "phase1-generators"
    data = small_config_dict()
    model = UniFashion.from_config(UniFashionConfig.from_dict(data))
    model.set_phase(stage.phase, stage.stage, stage.learns)
    objective = PhaseObjective(model, 1, stage.terms)
    trainable = [(n, p) for n, p in objective.named_parameters() if p.requires_grad]
    optimizer, scheduler = build_optimizer(objective, trainable, stage.loop.optim, total_steps=1000)
    by_param = {id(p): g for g in optimizer.param_groups for p in g["params"]}
    llm = by_param[id(model.parameter_group("llm")[0])]
    unet = by_param[id(model.parameter_group("unet")[0])]
    assert (llm["betas"], llm["weight_decay"]) == ((0.9, 0.99), 0.0)
    assert unet["betas"] == (0.9, 0.999)
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(trainable)  # each parameter once
    lrs = []
    for _ in range(1000):
        lrs.append((by_param[id(model.parameter_group("llm")[0])]["lr"], unet["lr"]))
        optimizer.step()
        scheduler.step()
    # LLM: 30 warm-up steps (3% of 1000) to 2e-5, then cosine towards 0; UNet: constant 1e-4.
    assert lrs[0][0] == pytest.approx(2e-5 / 30) and lrs[29][0] == pytest.approx(2e-5)
    assert lrs[515][0] == pytest.approx(1e-5, rel=1e-2) and lrs[999][0] < 1e-8
    assert all(u == pytest.approx(1e-4) for _, u in lrs)


def test_bad_optimiser_groups_are_clear_errors():
    from unifashion.configuration import ConfigError
    from unifashion.training.trainer import OptimConfig, ParamGroupConfig

    with pytest.raises(ConfigError, match="more than once"):
        OptimConfig(groups=[ParamGroupConfig(["unet"]), ParamGroupConfig(["unet", "llm"])])
    with pytest.raises(ConfigError, match="parameter_groups"):
        ParamGroupConfig([])
    with pytest.raises(ConfigError, match="schedule"):
        ParamGroupConfig(["unet"], schedule="step")
    with pytest.raises(ConfigError, match="unknown parameter groups"):
        TrainRecipe.from_dict({"stages": [{"name": "s", "phase": 2, "learns": ["unett"]}]})
