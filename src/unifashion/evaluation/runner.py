"""``unifashion eval``: every task's protocol on one split, every method side by side.

Methods evaluated in one run on the same split:

- ``UniFashion``: the trained model (CMR; CIR with and without caption fusion, optional ITM
  re-rank; FIC in the three styles; FIG);
- ``random``: random ranking (CMR, CIR), with the run's seed;
- ``dual-encoder``: the CLIP-style baseline on the same backbones, when a trained one is given;
- further UniFashion checkpoints (the paper's Table 5 ablations) under their own names.

Every method's CMR goes through one protocol function (:func:`record_cmr`, given its similarity
matrix) and its CIR through another (:func:`record_cir`, given its scores per category), so the
methods differ only in how they score. UniFashion has one function per task
(:func:`evaluate_cmr`, :func:`evaluate_cir`, :func:`evaluate_fic`, :func:`evaluate_fig`) sharing
the split's features through :class:`UniFashionFeatures`; :func:`evaluate_unifashion` runs the
tasks of the config. The report (tables and pictures) is :mod:`unifashion.evaluation.report`.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from unifashion.data.fashion_iq import fashion_iq_protocol_name
from unifashion.data.feature_cache import DeviceRows, build_feature_cache, encoder_key, records_key
from unifashion.data.records import CAPTION_STYLES, sentence_prompt
from unifashion.evaluation.phrasing import evaluate_phrasing
from unifashion.evaluation.results import ResultTable
from unifashion.evaluation.retrieval import (
    cir_fashioniq,
    cmr_full_gallery,
    cmr_random_100,
    draw_random_candidates,
    ranks_of_positives,
)
from unifashion.evaluation.scoring import (
    MatrixScorer,
    MaxSimScorer,
    RandomScorer,
    cmr_full_gallery_tiled,
    cmr_random_tiled,
    full_matrix,
    tensor_rows,
)
from unifashion.evaluation.split_data import SplitData
from unifashion.evaluation.tasks import TASKS
from unifashion.settings import TEXT_TO_IMAGE_EVAL

SAME_PRODUCT = ("dedup", "positives")


@dataclass
class EvalConfig:
    split: str = "test"
    seed: int = 0
    tasks: tuple[str, ...] = TASKS
    cmr_text_style: str = "detailed"  # the caption style used as CMR texts
    n_candidates: int = 100
    # Several images of one product (FashionGen): "dedup" keeps the first image of each product;
    # "positives" keeps them all, counts the product's other images (and their texts) as positives
    # in the full gallery and never draws them as random-N negatives. Recorded in every CMR row.
    same_product: str = "dedup"
    itm_rerank_k: int = 50  # re-rank the top 50 (a top-10 re-rank cannot change R@10 or R@50); 0: off
    cir_ks: tuple[int, ...] = (10, 50)  # Fashion-IQ's R@K; add 1 where R@10/R@50 saturate
    # Fashion-IQ's two protocols and two caption joins (unifashion.data.fashion_iq), named in every CIR row.
    cir_gallery: str = "split"  # "split" (original) | "references-and-targets" (VAL's)
    cir_caption_join: str = "and"  # "and": one query per triplet | "each": one per relative caption
    cir_text_only: bool = True  # also Table 4's "w/o img" row: the modification text alone as the query
    fic_styles: tuple[str, ...] = CAPTION_STYLES
    fic_max_items: int | None = None
    fig_max_items: int = 64
    # the text-to-image protocol the shipped results were measured at (settings.TEXT_TO_IMAGE_EVAL)
    fig_steps: int = TEXT_TO_IMAGE_EVAL.steps
    fig_scheduler: str = TEXT_TO_IMAGE_EVAL.sampler
    fig_guidance: float = TEXT_TO_IMAGE_EVAL.guidance
    batch_size: int = 64
    cmr_full_gallery: bool = True  # the full-gallery protocol (N^2 scores; random-100 alone is linear in N)
    score_tile: int = 1024  # images x texts per scoring tile (memory ~ tile^2 x queries x 4 bytes)
    feature_cache: str | None = None  # folder for the split's frozen-feature cache (default: a temporary one)

    def __post_init__(self):
        self.tasks, self.cir_ks, self.fic_styles = tuple(self.tasks), tuple(self.cir_ks), tuple(self.fic_styles)
        unknown = [t for t in self.tasks if t not in TASKS]
        if unknown:
            raise ValueError(f"unknown tasks {unknown}; choose from {list(TASKS)}")
        fashion_iq_protocol_name(self.cir_gallery, self.cir_caption_join)  # checks both
        if self.same_product not in SAME_PRODUCT:
            raise ValueError(f"same_product must be one of {list(SAME_PRODUCT)}, got {self.same_product!r}")



@dataclass
class EvalArtifacts:
    """What the pictures need, kept per method: ranks and a few examples."""

    cir_ranks: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # method -> category -> ranks
    cmr_t2i_ranks: dict[str, np.ndarray] = field(default_factory=dict)
    cir_examples: list[dict] = field(default_factory=list)
    fig_examples: list[dict] = field(default_factory=list)


def _batched(fn, items, batch_size):
    out = []
    for start in range(0, len(items), batch_size):
        out.append(fn(items[start:start + batch_size]))
    return torch.cat(out)


# ---------------------------------------------------------------------------------- protocols
def record_cmr(scorer, data: SplitData, cfg: EvalConfig, table: ResultTable, art: EvalArtifacts,
               method: str) -> None:
    """The CMR protocols on one method's scores (images x texts, item k's text is text k; a
    scorer of :mod:`unifashion.evaluation.scoring`, or a whole matrix): the full gallery, and
    random-N same-category when the split has N items. Every protocol name says what was run: which
    texts, how several images of one product were treated (``cfg.same_product``; "dedup" is done on
    the split itself, :meth:`SplitData.first_image_per_product`), and how many random-N negatives
    came from other categories. Tile by tile, for any gallery size, except with "positives" on a
    split whose products have several images: those protocols read the whole matrix."""
    if isinstance(scorer, np.ndarray):
        scorer = MatrixScorer(scorer)
    texts = f"{cfg.cmr_text_style} captions"
    product_note, products = data.product_note(), None
    if len(set(data.products)) < len(data.products):
        products = data.products  # cfg.same_product == "positives" (a de-duplicated split has none)
    if products is not None:
        sim = full_matrix(scorer, cfg.score_tile)
        if cfg.cmr_full_gallery:
            full = cmr_full_gallery(sim, np.arange(sim.shape[1]), products=products)
            for metric, value in full.rows():
                table.add("cmr", f"full gallery ({texts}; {product_note})", method, metric, value, cfg.split,
                          cfg.seed)
            art.cmr_t2i_ranks[method] = ranks_of_positives(sim.T, [[i] for i in range(sim.shape[1])])
        if len(data.items) >= cfg.n_candidates:
            r100 = cmr_random_100(sim, data.categories, seed=cfg.seed, n_candidates=cfg.n_candidates,
                                  products=products)
            for metric, value in r100.rows():
                table.add("cmr", f"{r100.protocol} ({texts}; {product_note})", method, metric, value, cfg.split,
                          cfg.seed)
        return
    if cfg.cmr_full_gallery:
        full, t2i_ranks = cmr_full_gallery_tiled(scorer, tile=cfg.score_tile)
        for metric, value in full.rows():
            table.add("cmr", f"full gallery ({texts}; {product_note})", method, metric, value, cfg.split, cfg.seed)
        art.cmr_t2i_ranks[method] = t2i_ranks
    if len(data.items) >= cfg.n_candidates:
        draw = draw_random_candidates(data.categories, cfg.n_candidates, cfg.seed)
        r100 = cmr_random_tiled(scorer, data.categories, seed=cfg.seed, n_candidates=cfg.n_candidates,
                                candidates=draw.indices)
        label = draw.label(cfg.n_candidates)
        for metric, value in r100.rows():
            table.add("cmr", f"{label} ({texts}; {product_note})", method, metric, value, cfg.split, cfg.seed)


def cir_protocol(cfg: EvalConfig) -> str:
    """The CIR rows' protocol: Fashion-IQ's R@K per category, its gallery and caption join."""
    return f"Fashion-IQ protocol (R@K per category; {fashion_iq_protocol_name(cfg.cir_gallery, cfg.cir_caption_join)})"


def record_cir(scores: dict[str, np.ndarray], targets: dict[str, list[int]], cfg: EvalConfig, table: ResultTable,
               art: EvalArtifacts | None, method: str) -> None:
    """The Fashion-IQ CIR protocol on one method's scores (per category: queries x gallery, and
    each query's target position); ``art``: keep the ranks for the recall curves."""
    for metric, value in cir_fashioniq(scores, targets, cfg.cir_ks).rows():
        table.add("cir", cir_protocol(cfg), method, metric, value, cfg.split, cfg.seed)
    if art is not None:
        art.cir_ranks[method] = {c: ranks_of_positives(scores[c], [[t] for t in targets[c]]) for c in scores}


@dataclass(frozen=True)
class CIRVariant:
    """One way UniFashion ranks a CIR gallery, reported as its own method ``method + suffix``."""

    suffix: str
    fusion: bool  # add <e_cls, Z_C> of the gallery's own captions (caption fusion)
    rerank: bool  # also report the ITM re-rank of the top-k (when the config asks for one)
    examples: bool  # keep example queries for the picture
    text_only: bool = False  # the query is the modification text alone, no reference image (Table 4's "w/o img")


TEXT_ONLY = CIRVariant(" (w/o img: modification text only)", fusion=False, rerank=False, examples=False,
                       text_only=True)


def cir_variants(model, text_only: bool = True) -> tuple[CIRVariant, ...]:
    """With a caption LM: without and with caption fusion (the latter re-ranked and pictured);
    without one: the plain score. ``text_only`` adds Table 4's caption-only row."""
    if model.caption_lm is None:
        variants = (CIRVariant("", fusion=False, rerank=True, examples=True),)
    else:
        variants = (CIRVariant(" (no caption fusion)", fusion=False, rerank=False, examples=False),
                    CIRVariant(" (caption fusion)", fusion=True, rerank=True, examples=True))
    return (*variants, TEXT_ONLY) if text_only else variants


# ---------------------------------------------------------------------------------- UniFashion
class UniFashionFeatures:
    """A UniFashion model's features of the split, computed once, when a task first needs them.

    The frozen vision features and the image embeddings Z are kept on disk (sharded
    caches, :mod:`unifashion.data.feature_cache`) and read in chunks onto the model's device, so
    memory does not grow with the split; the vision cache lives under ``cache_dir`` (reused by a
    later run on the same images and encoder) or in a temporary folder.
    """

    def __init__(self, model, data: SplitData, batch_size: int, cache_dir: str | None = None):
        self.model, self.data, self.batch_size, self.cache_dir = model, data, batch_size, cache_dir
        self._tmp = tempfile.TemporaryDirectory(prefix="unifashion-eval-", dir=cache_dir)

    @cached_property
    def vision(self) -> DeviceRows:
        model = self.model
        key = records_key(self.data.items, encoder_key(model))
        folder = Path(self.cache_dir) / key if self.cache_dir else Path(self._tmp.name) / "vision"

        def encode(images):
            return model.vision(model.processor.preprocess_images(images).to(model.device)).features

        return build_feature_cache(self.data.items, encode, folder, key, batch_size=self.batch_size,
                                   progress=False).on(model.device)

    @cached_property
    def z(self) -> DeviceRows:
        """Z of every image (N, Q, D), from the vision cache, into a cache of its own."""
        vision = self.vision
        rows = {r.item_id: k for k, r in enumerate(self.data.items)}

        def encode(indices):
            return self.model.get_image_features(vision_features=vision.rows(indices)).image_embeds

        return build_feature_cache(self.data.items, encode, Path(self._tmp.name) / "z", "z", batch_size=self.batch_size,
                                   progress=False, read=lambda r: rows[r.item_id],
                                   description="image embeddings").on(self.model.device)

    @cached_property
    def fusion_captions(self) -> list[str]:
        """The model's own captions behind Z_C (needs a caption LM)."""
        return caption_images(self.model, self.vision, None, self.batch_size)

    @cached_property
    def fusion_embeds(self) -> torch.Tensor:
        """Z_C: the text features of :attr:`fusion_captions`."""
        return self.encode_texts(self.fusion_captions)

    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        return _batched(lambda ts: self.model.encode_text(list(ts)), texts, self.batch_size)

    def captions(self, style: str) -> list[str]:
        """Captions of every image in ``style`` (the fusion style's are the fusion captions)."""
        if style == self.model.config.fusion_caption_style:
            return self.fusion_captions
        return caption_images(self.model, self.vision, style, self.batch_size)


@torch.no_grad()
def evaluate_unifashion(model, data: SplitData, cfg: EvalConfig, table: ResultTable, art: EvalArtifacts,
                        method: str = "UniFashion", classifier=None, fid_features=None, clip_scorer=None) -> None:
    """Every task of ``cfg.tasks`` the model has the parts for (FIC needs a caption LM, FIG a diffusion model)."""
    model.eval()
    features = UniFashionFeatures(model, data, cfg.batch_size, cfg.feature_cache)
    if "cmr" in cfg.tasks:
        evaluate_cmr(model, data, cfg, table, art, method, features)
    if "phrasing" in cfg.tasks:
        evaluate_phrasing(lambda texts: MaxSimScorer(features.z.rows, len(data.items), features.encode_texts(texts))
                          .full(cfg.score_tile).T,
                          data.items, table, method, cfg.split, cfg.seed)
    if "cir" in cfg.tasks:
        evaluate_cir(model, data, cfg, table, art, method, features)
    if "fic" in cfg.tasks and model.caption_lm is not None:
        evaluate_fic(model, data, cfg, table, method, features)
    if "fig" in cfg.tasks and model.diffusion is not None:
        evaluate_fig(model, data, cfg, table, art, method, classifier, fid_features, clip_scorer)


@torch.no_grad()
def evaluate_cmr(model, data: SplitData, cfg: EvalConfig, table: ResultTable, art: EvalArtifacts,
                 method: str = "UniFashion", features: UniFashionFeatures | None = None) -> None:
    """CMR: the items' captions in ``cfg.cmr_text_style`` against their images, ITC score."""
    features = features or UniFashionFeatures(model.eval(), data, cfg.batch_size, cfg.feature_cache)
    texts = features.encode_texts([r.caption(cfg.cmr_text_style) for r in data.items])
    record_cmr(MaxSimScorer(features.z.rows, len(data.items), texts), data, cfg, table, art, method)


@torch.no_grad()
def evaluate_cir(model, data: SplitData, cfg: EvalConfig, table: ResultTable, art: EvalArtifacts,
                 method: str = "UniFashion", features: UniFashionFeatures | None = None,
                 variants: Sequence[CIRVariant] | None = None) -> None:
    """CIR per category, once per variant (default: :func:`cir_variants`), with the ITM re-rank
    of the top ``cfg.itm_rerank_k`` for the variants that ask for it."""
    features = features or UniFashionFeatures(model.eval(), data, cfg.batch_size, cfg.feature_cache)
    groups = data.cir_groups(cfg.cir_gallery, cfg.cir_caption_join)
    for variant in cir_variants(model, cfg.cir_text_only) if variants is None else variants:
        fusion = features.fusion_embeds if variant.fusion else None
        scores, targets = {}, {}
        for cat, (gallery, refs, texts, tpos) in groups.items():
            if variant.text_only:  # e_cls of the text alone (the unimodal text path)
                e = features.encode_texts(texts)
            else:
                e = _composed(model, features.vision, refs, texts, cfg.batch_size)
            g = np.asarray(gallery)
            scorer = MaxSimScorer(lambda idx, g=g: features.z.rows(g[idx]), len(g), e,
                                  fusion[torch.as_tensor(g)] if fusion is not None else None)
            scores[cat] = scorer.full(cfg.score_tile).T  # queries x gallery, tile by tile
            targets[cat] = tpos
        name = method + variant.suffix
        record_cir(scores, targets, cfg, table, art, name)
        if variant.examples:
            _keep_cir_examples(art, data, groups, scores, name)
        if variant.rerank and cfg.itm_rerank_k:
            reranked = {c: _itm_rerank(model, scores[c], groups[c], features.vision, cfg.itm_rerank_k)
                        for c in scores}
            record_cir(reranked, targets, cfg, table, None, f"{name} + ITM re-rank top-{cfg.itm_rerank_k}")


@torch.no_grad()
def evaluate_fic(model, data: SplitData, cfg: EvalConfig, table: ResultTable, method: str = "UniFashion",
                 features: UniFashionFeatures | None = None) -> None:
    """FIC: the model's captions in each of ``cfg.fic_styles`` against the catalogue's (needs a caption LM)."""
    from unifashion.evaluation.captioning import caption_attribute_accuracy, caption_metrics, caption_toolkit

    features = features or UniFashionFeatures(model.eval(), data, cfg.batch_size, cfg.feature_cache)
    n = len(data.items) if cfg.fic_max_items is None else min(cfg.fic_max_items, len(data.items))
    for style in cfg.fic_styles:
        generated = features.captions(style)[:n]
        refs = {r.item_id: [r.caption(style)] for r in data.items[:n]}
        preds = {r.item_id: g for r, g in zip(data.items[:n], generated, strict=True)}
        for metric, value in caption_metrics(refs, preds).items():
            if metric in ("BLEU-4", "METEOR", "ROUGE-L", "CIDEr"):
                table.add("fic", f"{style} style ({caption_toolkit()})", method, metric, 100 * value, cfg.split,
                          cfg.seed)
        if style == "detailed" and all(r.attributes.get("colour") for r in data.items[:n]):
            # The embedded catalogue's attributes: is what the caption says true of the image?
            accuracy = caption_attribute_accuracy(generated, [r.attributes for r in data.items[:n]])
            for metric, value in accuracy.items():
                table.add("fic", "detailed style read back to attributes (unparsable = wrong)", method, metric,
                          value, cfg.split, cfg.seed)


def _composed(model, vision: torch.Tensor, refs: list[int], texts: list[str], bs: int) -> torch.Tensor:
    """e_cls of (reference, text) pairs from the references' cached vision features."""
    out = []
    for start in range(0, len(refs), bs):
        feats = vision[refs[start:start + bs]]
        mask = torch.ones(feats.shape[:2], dtype=torch.long, device=feats.device)
        out.append(model.get_composed_features(texts=texts[start:start + bs], vision_features=feats,
                                               vision_attention_mask=mask).composed_embeds)
    return torch.cat(out)


def caption_images(model, vision: torch.Tensor, style: str | None, bs: int) -> list[str]:
    """Captions of every image in ``style``; ``None``: the fusion captions behind Z_C."""
    out: list[str] = []
    desc = f"captioning ({style or model.config.fusion_caption_style})"
    for start in tqdm(range(0, len(vision), bs), desc=desc, leave=False):
        feats = vision[start:start + bs]
        out.extend(model.fusion_captions(vision_features=feats) if style is None else
                   model.caption(vision_features=feats, style=style,
                                 max_new_tokens=model.config.fusion_caption_tokens))
    return out


def _itm_rerank(model, scores: np.ndarray, group, vision: torch.Tensor, k: int) -> np.ndarray:
    """Re-order each query's top-k by ITM probability (kept above everything outside the top-k)."""
    gallery, refs, texts, _ = group
    out = scores.copy()
    top = np.argsort(-scores, axis=1)[:, :k]
    for q in range(scores.shape[0]):
        cand = top[q]
        # Every tensor on the model's device: the cached features may sit elsewhere (e.g. on the CPU).
        tokens = model.processor.tokenize([texts[q]] * len(cand), device=model.device)
        feats = vision[[gallery[c] for c in cand]].to(model.device)
        logits = model._itm_logits(tokens["input_ids"], tokens["attention_mask"], feats,
                                   torch.ones(feats.shape[:2], dtype=torch.long, device=feats.device))
        prob = logits.float().softmax(-1)[:, 1].cpu().numpy()
        out[q, cand] = scores.max() + 1.0 + prob
    return out


def _keep_cir_examples(art: EvalArtifacts, data: SplitData, groups, scores, method: str, n: int = 6) -> None:
    if any(ex["method"] == method for ex in art.cir_examples):
        return
    rng = np.random.default_rng(0)
    cats = list(groups)
    for i in range(n):
        cat = cats[i % len(cats)]
        gallery, refs, texts, tpos = groups[cat]
        q = int(rng.integers(len(refs)))
        top = np.argsort(-scores[cat][q])[:5]
        art.cir_examples.append({"method": method, "reference": data.images[refs[q]], "text": texts[q],
                                 "results": [data.images[gallery[j]] for j in top],
                                 "hits": [int(j) == tpos[q] for j in top]})


@torch.no_grad()
def evaluate_fig(model, data: SplitData, cfg: EvalConfig, table: ResultTable, art: EvalArtifacts,
                 method: str = "UniFashion", classifier=None, fid_features=None, clip_scorer=None) -> None:
    """FIG: text-to-image from the short captions of the first ``cfg.fig_max_items`` items, FID/KID
    (torchmetrics') on ``fid_features``, the model's own image-text score, CLIP-S with
    ``clip_scorer`` (a local CLIP), attribute accuracy by ``classifier``."""
    from unifashion.evaluation.generation import fid, kid

    n = min(cfg.fig_max_items, len(data.items))
    items = data.items[:n]
    prompts = [r.caption("short") for r in items]
    generator = torch.Generator().manual_seed(cfg.seed)
    generated = []
    for start in tqdm(range(0, n, 16), desc=f"generating ({cfg.fig_scheduler}, {cfg.fig_steps} steps)", leave=False):
        generated.append(model.generate(prompts[start:start + 16], num_inference_steps=cfg.fig_steps,
                                        scheduler=cfg.fig_scheduler, guidance_scale=cfg.fig_guidance,
                                        generator=generator).cpu())
    fake = torch.cat(generated)
    height, width = fake.shape[-2:]
    real = model.processor.to_tensor(data.images, (height, width))  # the real images at the generated size
    shown = f"{height}" if height == width else f"{height}x{width}"
    protocol = (f"text-to-image from short captions, {n} generated vs {len(real)} real test images at {shown} px, "
                f"{cfg.fig_scheduler} {cfg.fig_steps} steps, guidance {cfg.fig_guidance}")
    if fid_features is not None:
        fr, ff = fid_features(real), fid_features(fake)
        kid_mean, _ = kid(fr, ff, n_subsets=50, subset_size=100, seed=cfg.seed)
        table.add("fig", protocol, method, f"FID-{fid_features.name}", fid(fr, ff), cfg.split, cfg.seed)
        table.add("fig", protocol, method, f"KIDx1000-{fid_features.name}", 1000 * kid_mean, cfg.split, cfg.seed)
    if clip_scorer is not None:
        table.add("fig", protocol, method, "CLIP-S", float(clip_scorer(fake, prompts).mean()), cfg.split, cfg.seed)
    # The model's own image-text score (stands in for CLIP-S): max_q <Z(generated), e(prompt)>.
    z = model.encode_image(pixel_values=model.processor.preprocess_images(fake))
    t = model.encode_text(prompts)
    own = (z @ t.unsqueeze(-1)).squeeze(-1).max(dim=1).values.mean().item()
    table.add("fig", protocol, method, "UniFashion image-text score x100", 100 * own, cfg.split, cfg.seed)
    if classifier is not None:
        from unifashion.evaluation.attribute_classifier import attribute_accuracy

        acc = attribute_accuracy(classifier.predict(fake), [r.attributes for r in items])
        for name, value in acc.items():
            table.add("fig", protocol, method, f"attribute accuracy: {name} (%)", value, cfg.split, cfg.seed)
        real_acc = attribute_accuracy(classifier.predict(real[:n]), [r.attributes for r in items])
        for name, value in real_acc.items():
            table.add("fig", protocol, "real images (classifier ceiling)", f"attribute accuracy: {name} (%)", value,
                      cfg.split, cfg.seed)
    pil = model.processor.postprocess_images(fake[:16])
    art.fig_examples = [{"prompt": p, "generated": g, "real": data.images[i]} for i, (p, g) in
                        enumerate(zip(prompts[:16], pil, strict=True))]


# ---------------------------------------------------------------------------------- baselines
def evaluate_random(data: SplitData, cfg: EvalConfig, table: ResultTable, art: EvalArtifacts) -> None:
    """Random ranking (CMR, CIR) with the run's seed: chance level on the same protocols."""
    rng = np.random.default_rng(cfg.seed)
    if "cmr" in cfg.tasks:
        record_cmr(RandomScorer(len(data.items), len(data.items), cfg.seed), data, cfg, table, art, "random")
    if "phrasing" in cfg.tasks:
        evaluate_phrasing(lambda texts: rng.random((len(texts), len(data.items))), data.items, table, "random",
                          cfg.split, cfg.seed)
    if "cir" in cfg.tasks:
        scores, targets = {}, {}
        for cat, (gallery, refs, _, tpos) in data.cir_groups(cfg.cir_gallery, cfg.cir_caption_join).items():
            scores[cat], targets[cat] = rng.random((len(refs), len(gallery))), tpos
        record_cir(scores, targets, cfg, table, art, "random")


@torch.no_grad()
def evaluate_dual_encoder(model, data: SplitData, cfg: EvalConfig, table: ResultTable, art: EvalArtifacts,
                          method: str = "dual-encoder (CLIP4CIR)", combiners: Sequence[str] = ("sum", "learned"),
                          reference_captions: dict[str, str] | None = None,
                          vision_features: torch.Tensor | None = None) -> None:
    """CMR and CIR of a dual encoder. ``reference_captions`` (item id -> caption) turn the CIR texts
    into sentence-level prompts (:func:`unifashion.training.two_stage_cir.sentence_prompt`);
    ``vision_features`` are the split's frozen backbone features when computed already."""
    model.eval()
    bs = cfg.batch_size
    feats = vision_features if vision_features is not None else _batched(
        lambda ims: model.vision_features(model.processor.preprocess_images(ims)), data.images, bs)
    e_img = _batched(lambda f: model.embed_vision_features(f), feats, bs)
    if "cmr" in cfg.tasks:
        texts = [r.caption(cfg.cmr_text_style) for r in data.items]
        e_txt = _batched(lambda ts: model.encode_text(list(ts)), texts, bs)
        record_cmr(MaxSimScorer(tensor_rows(e_img), len(e_img), e_txt), data, cfg, table, art, method)
    if "phrasing" in cfg.tasks:
        def score_texts(texts):
            return (_batched(lambda ts: model.encode_text(list(ts)), texts, bs) @ e_img.t()).numpy()

        evaluate_phrasing(score_texts, data.items, table, method, cfg.split, cfg.seed)
    if "cir" in cfg.tasks:
        for combiner in combiners:
            scores, targets = {}, {}
            groups = data.cir_groups(cfg.cir_gallery, cfg.cir_caption_join)
            for cat, (gallery, refs, texts, tpos) in groups.items():
                if reference_captions is not None:
                    texts = [sentence_prompt(reference_captions[data.ids[r]], t)
                             for r, t in zip(refs, texts, strict=True)]
                t = _batched(lambda ts: model.encode_text(list(ts)), texts, bs)
                q = model.compose(e_img[refs], t, combiner=combiner)
                scores[cat], targets[cat] = (q @ e_img[gallery].t()).float().cpu().numpy(), tpos
            record_cir(scores, targets, cfg, table, art, f"{method}, {combiner} combiner")
