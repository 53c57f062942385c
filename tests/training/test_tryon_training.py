"""Design + try-on training: what learns, both tasks' losses, resume, and the one-command run."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import GEN_SIZE, build_small_model
from unifashion.data.synthetic.catalogue import CatalogueConfig, make_catalogue
from unifashion.data.synthetic.worn import WornConfig, build_worn_dataset
from unifashion.data.viton import load_viton
from unifashion.objectives.phases import phase_of
from unifashion.training.trainer import LoopConfig, OptimConfig
from unifashion.training.tryon import TryOnTrainConfig, set_tryon_trainable, train_tryon, trainable_groups


@pytest.fixture(scope="module", autouse=True)
def one_thread(single_thread_module):
    """Every test and module fixture here on one thread (see conftest.single_thread)."""


@pytest.fixture(scope="module")
def worn_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("worn")
    build_worn_dataset(make_catalogue(CatalogueConfig(n_items=60, seed=1)), root, WornConfig(size=GEN_SIZE),
                       limit=4, progress=False)
    return root


def loop(tmp_path, steps: int, **kwargs) -> LoopConfig:
    return LoopConfig(steps=steps, batch_size=4, checkpoint_every=1, output_dir=str(tmp_path),
                      optim=OptimConfig(lr=1e-3, warmup_steps=1), **kwargs)


def test_what_learns():
    model = build_small_model()
    assert set_tryon_trainable(model, train_unet=True) == ["unet", "diffusion_adapter"]
    assert all(p.requires_grad for p in model.diffusion.unet.parameters())
    assert not any(p.requires_grad for p in model.qformer.parameters())
    assert not any(p.requires_grad for p in model.diffusion.vae.parameters())
    set_tryon_trainable(model, train_unet=False)  # the paper's try-on choice
    assert not any(p.requires_grad for p in model.diffusion.unet.parameters())
    assert all(p.requires_grad for p in model.qformer.parameters())
    assert all(p.requires_grad for p in model.diffusion.adapter.parameters())
    no_channels = build_small_model(diffusion={**model.config.diffusion.to_dict(), "extra_channels": 0})
    with pytest.raises(ValueError, match="no mask/sketch input channels"):
        set_tryon_trainable(no_channels, train_unet=True)


@pytest.mark.parametrize("train_unet, stage", [(True, "tryon"), (False, "tryon_qformer")])
def test_tryon_freezing_goes_through_set_phase(monkeypatch, train_unet, stage):
    model = build_small_model()
    model.train()
    calls = []
    set_phase = model.set_phase
    monkeypatch.setattr(model, "set_phase", lambda *args: calls.append(args) or set_phase(*args))
    groups = set_tryon_trainable(model, train_unet=train_unet)
    assert calls == [(None, stage)] and (model.phase, model.stage) == (None, stage)
    assert groups == trainable_groups(train_unet) == list(phase_of(None, stage).trains)
    # set_phase's step that puts the frozen parts back in eval mode, which try-on used to skip.
    frozen = [m for m in (model.qformer, model.caption_lm, model.diffusion.vae, model.diffusion.unet)
              if not any(p.requires_grad for p in m.parameters())]
    assert frozen and not any(m.training for m in frozen)
    assert model.diffusion.training


@pytest.mark.parametrize("train_unet", [True, False])
def test_training_moves_the_right_weights_and_logs_both_tasks(worn_root, tmp_path, train_unet):
    model = build_small_model()
    records = load_viton(worn_root, "train", "paired")
    unet_before = model.diffusion.unet.conv_in.weight.detach().clone()
    qformer_before = next(model.qformer.parameters()).detach().clone()
    result = train_tryon(model, records, TryOnTrainConfig(train_unet=train_unet, loop=loop(tmp_path, 2)), tmp_path,
                         progress=False)
    assert result.steps_done == 2
    rows = [json.loads(line) for line in result.log_file.read_text().splitlines()]
    assert {"loss", "q2i_design", "q2i_tryon"} <= set(rows[-1])
    assert rows[-1]["loss"] == pytest.approx((rows[-1]["q2i_design"] + rows[-1]["q2i_tryon"]) / 2, rel=1e-5)
    unet_moved = not torch.equal(unet_before, model.diffusion.unet.conv_in.weight)
    qformer_moved = not torch.equal(qformer_before, next(model.qformer.parameters()))
    assert (unet_moved, qformer_moved) == (train_unet, not train_unet)


def test_resume_continues_from_the_checkpoint(worn_root, tmp_path):
    records = load_viton(worn_root, "train", "paired")
    config = TryOnTrainConfig(loop=loop(tmp_path, 3, stop_after=2))
    first = train_tryon(build_small_model(), records, config, tmp_path, progress=False)
    assert first.steps_done == 2
    resumed = train_tryon(build_small_model(), records, TryOnTrainConfig(loop=loop(tmp_path, 3)), tmp_path,
                          progress=False)
    assert resumed.steps_done == 1  # only the step that was left
    steps = [json.loads(line)["step"] for line in resumed.log_file.read_text().splitlines()]
    assert steps == [1, 2, 3]


def test_one_command_writes_results_and_grid(worn_root, tmp_path, monkeypatch):
    from unifashion.evaluation.results import ResultTable
    from unifashion.evaluation.tryon import TryOnEvalConfig
    from unifashion.experiments.tryon import TryOnRunConfig, run_tryon

    # FID itself is tested in test_metrics.py; its 1280-d matrix square root takes seconds, so
    # this orchestration test counts calls instead.
    fid_calls = []
    monkeypatch.setattr("unifashion.evaluation.tryon.fid", lambda real, fake: fid_calls.append(1) or 1.0)
    saved = tmp_path / "start"
    build_small_model().save_pretrained(saved)
    config = TryOnRunConfig(out=str(tmp_path / "run"), data=str(worn_root), model=str(saved),
                            train=TryOnTrainConfig(loop=loop(tmp_path / "unused", 1)),
                            eval=TryOnEvalConfig(max_items=4, steps=1, batch_size=4, judge_steps=2, grid_rows=2))
    report = run_tryon(config, progress=False)
    table = ResultTable.load_json(report["results"])
    keys = {(r.task, r.method, r.metric) for r in table.rows}
    for task in ("fig-design", "fig-tryon"):
        assert (task, "unifashion", "FID-EffLite0") in keys
        assert (task, "condition-only-pasted", "colour acc %") in keys
        assert (task, "ground-truth", "sketch-F1 %") in keys
    assert ("fig-design", "unifashion", "image-text score (model ITC) x100") in keys
    assert ("fig-tryon", "copy-paste", "KID-EffLite0 x1000") in keys
    assert {r.protocol.split(",")[0] for r in table.rows} == {"paired", "unpaired"}
    # settings x (design + try-on methods + the start model), none for the ground truth
    assert len(fid_calls) == 2 * (3 + 3 + 2)
    assert ("fig-tryon", "before-tryon-training", "sketch-F1 %") in keys
    assert report["grid"].is_file()
    assert (tmp_path / "run" / "model" / "tryon.json").is_file()
