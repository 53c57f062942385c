"""Every reader of an inference or search default takes it from unifashion.settings: the model's and
the pipelines' signatures, the evaluation configs, the CLI's flags, the service's request fields and
limits, both index backends (the depth a search re-ranks at, read off the search itself), and no
hard-coded guidance or sampler default anywhere else in the package or the benchmarks."""

from __future__ import annotations

import inspect
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from conftest import requires
from unifashion import settings
from unifashion.settings import GENERATION, MAX_GENERATION_STEPS, SAMPLERS, SEARCH, TEXT_TO_IMAGE_EVAL, TRYON_EVAL

ROOT = Path(__file__).resolve().parents[1]


def defaults(function) -> dict:
    return {name: p.default for name, p in inspect.signature(function).parameters.items()
            if p.default is not inspect.Parameter.empty}


def test_the_settings_themselves():
    # The shipped results' protocol labels say "pndm 50 steps, guidance 3.0": the evaluation must say the same.
    assert TEXT_TO_IMAGE_EVAL.label() == "pndm 50 steps, guidance 3.0"
    assert GENERATION.guidance == TRYON_EVAL.guidance == 3.0
    assert {GENERATION.sampler, TEXT_TO_IMAGE_EVAL.sampler, TRYON_EVAL.sampler} <= set(SAMPLERS)
    assert GENERATION.steps <= MAX_GENERATION_STEPS
    assert SEARCH.candidates_for(10) == SEARCH.candidates and SEARCH.candidates_for(200) == 2000
    with pytest.raises(ValueError, match="sampler must be one of"):
        settings.GenerationSettings(sampler="euler", steps=10, guidance=3.0)
    for shipped in (ROOT / "src" / "unifashion" / "weights").glob("*/results.json"):
        fig = [line for line in shipped.read_text().splitlines() if '"protocol": "text-to-image' in line]
        assert fig and all(TEXT_TO_IMAGE_EVAL.label() in line for line in fig), shipped


def test_model_and_pipelines_generate_with_the_generation_settings():
    from unifashion.models.diffusion import QueryConditionedDiffusion
    from unifashion.models.unifashion import UniFashion
    from unifashion.pipelines.search import SearchPipeline
    from unifashion.pipelines.tryon import generate_on_person

    expected = {"num_inference_steps": GENERATION.steps, "scheduler": GENERATION.sampler,
                "guidance_scale": GENERATION.guidance}
    for function in (QueryConditionedDiffusion.generate, UniFashion.generate):
        assert {k: defaults(function)[k] for k in expected} == expected, function.__qualname__
    expected = {"steps": GENERATION.steps, "scheduler": GENERATION.sampler, "guidance": GENERATION.guidance}
    for function in (SearchPipeline.generate, generate_on_person):
        assert {k: defaults(function)[k] for k in expected} == expected, function.__qualname__


def test_evaluation_configs_use_their_protocols():
    from unifashion.evaluation.runner import EvalConfig
    from unifashion.evaluation.tryon import TryOnEvalConfig

    cfg = EvalConfig()
    assert (cfg.fig_scheduler, cfg.fig_steps, cfg.fig_guidance) == (
        TEXT_TO_IMAGE_EVAL.sampler, TEXT_TO_IMAGE_EVAL.steps, TEXT_TO_IMAGE_EVAL.guidance)
    tryon = TryOnEvalConfig()
    assert (tryon.scheduler, tryon.steps, tryon.guidance) == (TRYON_EVAL.sampler, TRYON_EVAL.steps,
                                                              TRYON_EVAL.guidance)


def subcommand(name: str):
    from unifashion.cli import build_parser

    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.choices and name in a.choices)
    return subparsers.choices[name]


def flag(parser, option: str):
    return next(a for a in parser._actions if option in a.option_strings)


def test_cli_flags_default_to_the_settings():
    generate = subcommand("generate")
    assert flag(generate, "--steps").default == GENERATION.steps
    assert flag(generate, "--scheduler").default == GENERATION.sampler
    assert flag(generate, "--guidance").default == GENERATION.guidance
    assert tuple(flag(generate, "--scheduler").choices) == SAMPLERS
    assert tuple(flag(subcommand("eval"), "--fig-scheduler").choices) == SAMPLERS
    assert flag(subcommand("serve"), "--max-steps").default == MAX_GENERATION_STEPS


def test_service_fields_default_to_the_settings():
    from unifashion.serving.app import ServiceSettings, create_app
    from unifashion.serving.page import render_page

    service = ServiceSettings()
    assert (service.default_generation_steps, service.max_generation_steps) == (GENERATION.steps,
                                                                                MAX_GENERATION_STEPS)
    assert defaults(render_page)["default_steps"] == GENERATION.steps
    # The request fields as the API schema publishes them (no model needed to build the routes).
    spec = create_app(SimpleNamespace(separate_generation=lambda: None)).openapi()
    body = spec["paths"]["/generate"]["post"]["requestBody"]["content"]
    schema = spec["components"]["schemas"][next(iter(body.values()))["schema"]["$ref"].split("/")[-1]]
    fields = schema["properties"]
    assert fields["scheduler"]["default"] == GENERATION.sampler and tuple(fields["scheduler"]["enum"]) == SAMPLERS
    assert fields["guidance"]["default"] == GENERATION.guidance
    assert f"default {GENERATION.steps}" in fields["steps"]["description"]


def test_index_builders_default_to_the_search_settings():
    from unifashion.index import CatalogueIndex
    from unifashion.index.milvus_index import MilvusCatalogueIndex
    from unifashion.index.text_ann import TextIndex

    for create in (CatalogueIndex.create, MilvusCatalogueIndex.create):
        assert defaults(create)["nprobe"] == SEARCH.nprobe, create.__qualname__
        assert defaults(create)["fused_weight"] == SEARCH.fusion_weight, create.__qualname__
    assert (defaults(TextIndex)["nprobe"], defaults(TextIndex)["hits"]) == (SEARCH.text_nprobe, SEARCH.text_hits)


def small_items(n: int = 40, dim: int = 16, num_queries: int = 4):
    rng = np.random.default_rng(0)
    multi = rng.standard_normal((n, num_queries, dim)).astype(np.float32)
    multi /= np.linalg.norm(multi, axis=-1, keepdims=True)
    fusion = multi.mean(axis=1)
    fusion /= np.linalg.norm(fusion, axis=-1, keepdims=True)
    ids = [f"item-{i}" for i in range(n)]
    return ids, multi, fusion, [{"category": "dress"} for _ in ids]


@pytest.mark.parametrize("backend", ["faiss", pytest.param("milvus", marks=requires("milvus"))])
def test_both_backends_rerank_at_the_same_default_depth(tmp_path, monkeypatch, backend):
    """The depth each backend's search hands its candidate stage when the caller names none."""
    from unifashion.index import MilvusBackend, create_index
    from unifashion.index import catalogue_index as local
    from unifashion.index.milvus_index import MilvusCatalogueIndex

    seen = []
    if backend == "faiss":
        original = local.search_ann

        def recording(snap, queries, top_k, candidates, *args):
            seen.append(candidates)
            return original(snap, queries, top_k, candidates, *args)

        monkeypatch.setattr(local, "search_ann", recording)
        where = None
    else:
        original = MilvusCatalogueIndex._search_grouped

        def recording(self, queries, top_k, candidates, *args):
            seen.append(candidates)
            return original(self, queries, top_k, candidates, *args)

        monkeypatch.setattr(MilvusCatalogueIndex, "_search_grouped", recording)
        where = MilvusBackend(uri=str(tmp_path / "milvus.db"), collection="defaults", index_type="FLAT")
    ids, multi, fusion, metadata = small_items()
    index = create_index(tmp_path / "index", where, dim=16, num_queries=4)
    index.add(ids, multi, fusion, metadata)
    index.search(multi[0, 0], top_k=5)
    index.search(multi[0, 0], top_k=100)
    assert seen == [SEARCH.candidates_for(5), SEARCH.candidates_for(100)]


# A guidance scale or a sampler written as a default (or passed as a literal) outside settings.py.
HARD_CODED = re.compile(r"""guidance\w*\s*(?::\s*float\s*)?=\s*\d"""
                        r"""|(?:scheduler|sampler)\w*\s*(?::\s*str\s*)?=\s*["'](?:pndm|plms|dpmsolver\+\+)["']"""
                        r"""|default\s*=\s*["'](?:pndm|dpmsolver\+\+)["']"""
                        r"""|["']--[\w-]*guidance["'][^)]*default\s*=\s*\d""")


def test_no_hard_coded_generation_default_outside_settings():
    sources = [*(ROOT / "src" / "unifashion").rglob("*.py"), *(ROOT / "benchmarks").glob("*.py")]
    found = [f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
             for path in sources if path.name != "settings.py" or path.parent.name != "unifashion"
             for number, line in enumerate(path.read_text().splitlines(), 1) if HARD_CODED.search(line)]
    assert not found, "\n".join(found)
    assert HARD_CODED.search('ge.add_argument("--guidance", type=float, default=7.5)')  # the check can fail
    assert HARD_CODED.search('    guidance: float = 7.5,') and HARD_CODED.search('scheduler: str = "pndm",')
