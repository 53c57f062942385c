"""The evaluation runner on a small random model: every task's rows, the report files."""

from __future__ import annotations

import json

import pytest

from conftest import build_small_model, requires
from unifashion.data.synthetic.catalogue import CatalogueConfig, build_catalogue_files, load_catalogue
from unifashion.evaluation.report import write_report
from unifashion.evaluation.results import ResultTable
from unifashion.evaluation.runner import (
    EvalArtifacts,
    EvalConfig,
    SplitData,
    evaluate_random,
    evaluate_unifashion,
)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("evalcat")
    build_catalogue_files(root, CatalogueConfig(n_items=150, seed=9, split_fractions=(0.2, 0.1, 0.7)),
                          progress=False)
    return SplitData(load_catalogue(root), "test")


@requires("java")
def test_every_task_writes_rows_and_pictures(data, tmp_path, single_thread):
    model = build_small_model().eval()
    cfg = EvalConfig(fig_max_items=4, fig_steps=2, itm_rerank_k=3, fic_styles=("short",), n_candidates=20)
    table, art = ResultTable(), EvalArtifacts()
    evaluate_random(data, cfg, table, art)
    evaluate_unifashion(model, data, cfg, table, art)
    rows = table.rows
    methods = {r.method for r in rows}
    assert {"random", "UniFashion", "UniFashion (caption fusion)", "UniFashion (no caption fusion)"} <= methods
    assert any(r.method.endswith("ITM re-rank top-3") for r in rows)
    tasks = {(r.task, r.metric) for r in rows}
    for expected in [("cmr", "i2t_R@1"), ("cmr", "mean_R"), ("cir", "avg_(R@10+R@50)/2"), ("fic", "CIDEr"),
                     ("fig", "UniFashion image-text score x100")]:
        assert expected in tasks, expected
    assert all(0 <= r.value <= 100 for r in rows if r.task == "cmr")
    protocols = {r.protocol for r in rows if r.task == "cmr"}
    # Small categories are topped up from others, and the protocol says so, with the count.
    assert any(p.startswith("random-20") and "one image per product" in p for p in protocols)
    assert not any(p.startswith("random-20 same-category") for p in protocols)
    assert any("topped up from other categories" in p for p in protocols)
    paths = write_report(table, art, tmp_path, cfg, notes=["a note"])
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved[0].keys() == {"task", "protocol", "method", "metric", "value", "split", "seed"}
    assert "| metric |" in (tmp_path / "results.md").read_text()
    for name in ("recall_curves.png", "cir_examples.png", "generated.png"):
        assert paths[name].stat().st_size > 5_000


def test_random_baseline_is_near_chance(data):
    cfg = EvalConfig(tasks=("cir",))
    table, art = ResultTable(), EvalArtifacts()
    evaluate_random(data, cfg, table, art)
    groups = data.cir_groups()
    r10 = {r.metric: r.value for r in table.rows}["avg_R@10"]
    chance = 100 * sum(min(10, len(g[0])) / len(g[0]) for g in groups.values()) / len(groups)
    assert abs(r10 - chance) < 25


def test_markdown_table_reports_mean_and_std_over_seeds():
    table = ResultTable()
    for seed, value in enumerate([10.0, 20.0, 30.0]):
        table.add("cir", "p", "m", "R@10", value, "test", seed)
    assert "20.00 ± 8.16" in table.to_markdown()


def test_merging_one_run_per_seed_gives_mean_and_std(tmp_path, capsys):
    from unifashion.cli import main

    files = []
    for seed, value in enumerate([10.0, 20.0, 30.0]):
        table = ResultTable()
        table.add("cir", "p", "m", "R@10", value, "test", seed)
        table.add("cir", "p", "baseline", "R@10", 5.0, "test", seed)
        files.append(str(table.save_json(tmp_path / f"seed{seed}" / "results.json")))
    assert main(["results", "merge", *files, "--out", str(tmp_path / "merged")]) == 0
    merged = ResultTable.load_json(tmp_path / "merged" / "results.json")
    assert sorted(r.seed for r in merged.rows if r.method == "m") == [0, 1, 2]
    markdown = (tmp_path / "merged" / "results.md").read_text()
    assert "20.00 ± 8.16" in markdown and "5.00 ± 0.00" in markdown and "seeds 0, 1, 2" in markdown


def test_merging_the_same_seed_twice_is_an_error(tmp_path, capsys):
    from unifashion.cli import main

    table = ResultTable()
    table.add("cir", "p", "m", "R@10", 1.0, "test", 0)
    path = str(table.save_json(tmp_path / "results.json"))
    assert main(["results", "merge", path, path, "--out", str(tmp_path / "merged")]) == 2
    assert "give each run its own --seed" in capsys.readouterr().err
    assert main(["results", "merge", str(tmp_path / "missing.json"), "--out", str(tmp_path / "m2")]) == 2
    assert "results file not found" in capsys.readouterr().err
    assert not (tmp_path / "merged").exists()


def test_each_task_alone_gives_the_rows_of_the_whole_run(data, single_thread):
    from unifashion.evaluation.runner import CIRVariant, UniFashionFeatures, evaluate_cir, evaluate_cmr

    model = build_small_model().eval()
    cfg = EvalConfig(tasks=("cmr", "cir"), itm_rerank_k=0, n_candidates=20)
    whole = ResultTable()
    evaluate_unifashion(model, data, cfg, whole, EvalArtifacts())
    parts, art = ResultTable(), EvalArtifacts()
    features = UniFashionFeatures(model, data, cfg.batch_size)  # shared: the captions are made once
    evaluate_cmr(model, data, cfg, parts, art, features=features)
    evaluate_cir(model, data, cfg, parts, art, features=features)
    assert parts.rows == whole.rows
    assert set(art.cmr_t2i_ranks) == {"UniFashion"}
    assert set(art.cir_ranks) == {"UniFashion (no caption fusion)", "UniFashion (caption fusion)",
                                  "UniFashion (w/o img: modification text only)"}
    # A variant is data: one without fusion, under its own name, scores as "no caption fusion" does.
    plain = ResultTable()
    evaluate_cir(model, data, cfg, plain, EvalArtifacts(), method="M", features=features,
                 variants=(CIRVariant(" (plain)", fusion=False, rerank=False, examples=False),))
    assert {r.method for r in plain.rows} == {"M (plain)"}
    assert [r.value for r in plain.rows] == [r.value for r in whole.rows
                                             if r.method == "UniFashion (no caption fusion)"]


def test_every_method_reports_cmr_through_one_protocol(data):
    from unifashion.evaluation.runner import record_cmr
    from unifashion.evaluation.scoring import RandomScorer

    cfg = EvalConfig(tasks=("cmr",), n_candidates=20)
    by_random, by_matrix = ResultTable(), ResultTable()
    evaluate_random(data, cfg, by_random, EvalArtifacts())
    record_cmr(RandomScorer(len(data.items), len(data.items), cfg.seed), data, cfg, by_matrix, EvalArtifacts(),
               "random")
    assert by_matrix.rows == by_random.rows
    with pytest.raises(ValueError, match="unknown tasks"):
        EvalConfig(tasks=("cmr", "retrieval"))


def test_itm_rerank_builds_every_tensor_on_the_model_device():
    # A stand-in model on the 'meta' device: any tensor the re-rank makes on the CPU shows up in
    # the devices _itm_logits receives (on a GPU such a mix is an error).
    import numpy as np
    import torch

    from unifashion.evaluation.runner import _itm_rerank

    class Processor:
        def tokenize(self, texts, device=None):
            shape = (len(texts), 4)
            return {"input_ids": torch.zeros(shape, dtype=torch.long, device=device),
                    "attention_mask": torch.ones(shape, dtype=torch.long, device=device)}

    class MetaModel:
        device = torch.device("meta")
        processor = Processor()
        seen: list[set] = []

        def _itm_logits(self, input_ids, attention_mask, vision_features, vision_attention_mask):
            self.seen.append({t.device.type for t in (input_ids, attention_mask, vision_features,
                                                      vision_attention_mask)})
            return torch.tensor([[0.0, 1.0]] * input_ids.shape[0])  # probabilities come back to the host

    model = MetaModel()
    vision = torch.zeros(5, 3, 8)  # cached features on the CPU, as UniFashionFeatures may keep them
    scores = np.random.default_rng(0).random((2, 5))
    group = (list(range(5)), [0, 1], ["is red", "is blue"], [1, 2])
    out = _itm_rerank(model, scores, group, vision, k=3)
    assert model.seen == [{"meta"}, {"meta"}]
    assert out.shape == scores.shape


def test_cmr_rows_record_how_several_images_of_one_product_were_treated():
    import numpy as np

    from unifashion.data.records import ItemRecord
    from unifashion.evaluation.runner import record_cmr
    from unifashion.evaluation.split_data import SplitData

    # 6 images of 3 products; text k is image k's description. Image 1 scores product-mate text 0 best.
    sim = np.eye(6)
    sim[1, 0], sim[0, 1] = 2.0, 2.0
    items = [ItemRecord(item_id=f"i{k}", image="unused.png", category="a", captions={"detailed": f"text {k}"},
                        attributes={"product_id": product}) for k, product in enumerate("ppqqrr")]
    data = SplitData.from_records(items, [], "test")
    rows = {}
    # "dedup" is applied to the split (run_evaluation does it): images 0, 2 and 4 remain.
    deduplicated = data.first_image_per_product()
    assert deduplicated.ids == ["i0", "i2", "i4"] and data.first_image_per_product() is not data
    for same_product, split, scores in (("dedup", deduplicated, sim[np.ix_([0, 2, 4], [0, 2, 4])]),
                                        ("positives", data, sim)):
        table, art = ResultTable(), EvalArtifacts()
        record_cmr(scores, split, EvalConfig(tasks=("cmr",), same_product=same_product), table, art, "m")
        rows[same_product] = {(r.protocol, r.metric): r.value for r in table.rows}
    dedup = {m: v for (p, m), v in rows["dedup"].items()}
    assert {p for p, _ in rows["dedup"]} == {
        "full gallery (detailed captions; de-duplicated by product id: first image of each of 3 products "
        "(6 images))"}
    assert dedup["i2t_R@1"] == 100.0  # images 0, 2, 4 only
    assert {p for p, _ in rows["positives"]} == {
        "full gallery (detailed captions; 6 images of 3 products; the same product's other images count as "
        "positives)"}
    assert {m: v for (p, m), v in rows["positives"].items()}["i2t_R@1"] == 100.0
    with pytest.raises(ValueError, match="same_product"):
        EvalConfig(same_product="ignore")


def test_cir_text_only_row_scores_the_modification_text_alone(data, single_thread):
    import numpy as np
    import torch

    from unifashion.evaluation.retrieval import cir_fashioniq
    from unifashion.evaluation.runner import TEXT_ONLY, UniFashionFeatures, evaluate_cir

    model = build_small_model().eval()
    cfg = EvalConfig(tasks=("cir",), itm_rerank_k=0)
    table = ResultTable()
    features = UniFashionFeatures(model, data, cfg.batch_size)
    evaluate_cir(model, data, cfg, table, EvalArtifacts(), method="M", features=features, variants=(TEXT_ONLY,))
    got = {r.metric: r.value for r in table.rows}
    # Reference: the text's own embedding against every gallery item's 32 queries, max over queries.
    scores, targets = {}, {}
    with torch.no_grad():
        for cat, (gallery, _, texts, tpos) in data.cir_groups().items():
            t = model.encode_text(texts)
            z = features.z[torch.tensor(gallery)]
            scores[cat] = np.einsum("td,gqd->tgq", t.numpy(), z.numpy()).max(-1)
            targets[cat] = tpos
    assert got == pytest.approx(dict(cir_fashioniq(scores, targets, cfg.cir_ks).rows()), abs=1e-4)
    assert {r.method for r in table.rows} == {"M (w/o img: modification text only)"}


def test_cir_rows_name_the_gallery_and_the_caption_join(data):
    from unifashion.data.records import join_relative_captions
    from unifashion.evaluation.runner import cir_protocol

    rows = {}
    for gallery in ("split", "references-and-targets"):
        for join in ("and", "each"):
            cfg = EvalConfig(tasks=("cir",), cir_gallery=gallery, cir_caption_join=join)
            table = ResultTable()
            evaluate_random(data, cfg, table, EvalArtifacts())
            assert {r.protocol for r in table.rows} == {cir_protocol(cfg)}
            rows[gallery, join] = data.cir_groups(gallery, join)
    assert "original protocol" in cir_protocol(EvalConfig()) and "' and '" in cir_protocol(EvalConfig())
    for cat, (gallery, refs, texts, tpos) in rows["split", "and"].items():
        vgallery, vrefs, vtexts, vtpos = rows["references-and-targets", "and"][cat]
        assert set(vgallery) <= set(gallery) and len(vrefs) == len(refs)
        assert [vgallery[t] for t in vtpos] == [gallery[t] for t in tpos]  # the same targets
        egallery, erefs, etexts, _ = rows["split", "each"][cat]
        assert len(erefs) == 2 * len(refs)  # two relative captions per embedded triplet
        assert join_relative_captions(etexts[:2]) == texts[0]
    with pytest.raises(ValueError, match="caption join"):
        EvalConfig(cir_caption_join="concat")


def test_split_products_come_from_fashiongen_ids_or_image_lists():
    from PIL import Image

    from unifashion.data.records import ItemRecord
    from unifashion.evaluation.split_data import SplitData

    image = Image.new("RGB", (8, 8))
    items = [ItemRecord("a_0", image, "top", attributes={"product_id": "a"}),  # h5 layout
             ItemRecord("a_1", image, "top", attributes={"product_id": "a"}),
             ItemRecord("x.jpg", image, "top", attributes={"product_images": ["x.jpg", "y.jpg"]}),  # jsonl layout
             ItemRecord("y.jpg", image, "top", attributes={"product_images": ["x.jpg", "y.jpg"]}),
             ItemRecord("z", image, "top")]
    data = SplitData.from_records(items, [], "test")
    assert data.products == ["a", "a", "images:x.jpg", "images:x.jpg", "z"]


def test_fig_rows_report_fid_and_kid_of_the_features_and_clip_s(data, single_thread, monkeypatch):
    import warnings

    import numpy as np
    from scipy import linalg

    from unifashion.evaluation.generation import kid
    from unifashion.evaluation.runner import evaluate_fig

    class FakeInception:  # stands in for the TorchScript file: fixed features per image, kept
        name = "Inception"

        def __init__(self):
            self.seen = []

        def __call__(self, images):
            flat = images.reshape(len(images), -1)[:, :6].numpy().astype(np.float64)
            self.seen.append(flat + np.arange(len(images))[:, None] * 0.01)
            return self.seen[-1]

    seen = {}

    def clip_scorer(images, texts):
        seen["n"] = (len(images), len(texts))
        return np.full(len(images), 30.0)

    model = build_small_model().eval()
    cfg = EvalConfig(tasks=("fig",), fig_max_items=4, fig_steps=2)
    table = ResultTable()
    features = FakeInception()
    evaluate_fig(model, data, cfg, table, EvalArtifacts(), fid_features=features, clip_scorer=clip_scorer)
    rows = {r.metric: r.value for r in table.rows}
    assert rows["CLIP-S"] == 30.0 and seen["n"] == (4, 4)
    # FID of the real against the generated images' features, against SciPy's matrix root (of
    # singular covariances: 4 generated images); KID x1000 of the same features, seeded by cfg.
    real, fake = features.seen
    assert len(fake) == 4 and len(real) == len(data.images)
    s1, s2 = np.cov(real, rowvar=False), np.cov(fake, rowvar=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        root = linalg.sqrtm(s1 @ s2).real
    reference = ((real.mean(0) - fake.mean(0)) ** 2).sum() + np.trace(s1 + s2 - 2 * root)
    assert rows["FID-Inception"] == pytest.approx(reference, rel=1e-4, abs=1e-6)
    assert rows["KIDx1000-Inception"] == pytest.approx(1000 * kid(real, fake, n_subsets=50, subset_size=100,
                                                                   seed=cfg.seed)[0])
