"""``unifashion eval``: every task's protocol on one split, every method side by side.

Methods evaluated in one run on the same split:

- ``UniFashion``: the trained model (CMR; CIR with and without caption fusion, optional ITM
  re-rank; FIC in the three styles; FIG);
- ``random``: random ranking (CMR, CIR), with the run's seed;
- ``dual-encoder``: the CLIP-style baseline on the same backbones, when a trained one is given;
- further UniFashion checkpoints (the paper's Table 5 ablations) under their own names.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from unifashion.data.records import CAPTION_STYLES, sentence_prompt
from unifashion.data.synthetic.catalogue import Catalogue
from unifashion.evaluation.results import ResultTable
from unifashion.evaluation.retrieval import (
    cir_fashioniq,
    cmr_full_gallery,
    cmr_random_100,
    ranks_of_positives,
    recall_curve,
)


@dataclass
class EvalConfig:
    split: str = "test"
    seed: int = 0
    tasks: tuple[str, ...] = ("cmr", "cir", "fic", "fig")
    cmr_text_style: str = "detailed"  # the caption style used as CMR texts
    n_candidates: int = 100
    itm_rerank_k: int = 50  # re-rank the top 50 (a top-10 re-rank cannot change R@10 or R@50); 0: off
    cir_ks: tuple[int, ...] = (10, 50)  # Fashion-IQ's R@K; add 1 where R@10/R@50 saturate
    fic_styles: tuple[str, ...] = CAPTION_STYLES
    fic_max_items: int | None = None
    fig_max_items: int = 64
    fig_steps: int = 50
    fig_scheduler: str = "pndm"
    fig_guidance: float = 3.0
    batch_size: int = 64


@dataclass
class EvalArtifacts:
    """What the pictures need, kept per method: ranks and a few examples."""

    cir_ranks: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # method -> category -> ranks
    cmr_t2i_ranks: dict[str, np.ndarray] = field(default_factory=dict)
    cir_examples: list[dict] = field(default_factory=list)
    fig_examples: list[dict] = field(default_factory=list)


class SplitData:
    """The split's items and triplets, with images loaded once."""

    def __init__(self, catalogue: Catalogue, split: str):
        self.items = catalogue.item_records(split)
        if not self.items:
            raise ValueError(f"the catalogue has no items in split {split!r}")
        self.triplets = catalogue.triplet_records(split)
        self.ids = [r.item_id for r in self.items]
        self.index = {i: k for k, i in enumerate(self.ids)}
        self.images = [r.load_image() for r in tqdm(self.items, desc=f"loading {split} images", leave=False)]
        self.categories = [r.category for r in self.items]

    def cir_groups(self) -> dict[str, tuple[list[int], list[int], list[str], list[int]]]:
        """Per category: gallery indices, reference indices, texts, target positions in the gallery."""
        groups: dict[str, tuple[list[int], list[int], list[str], list[int]]] = {}
        for cat in sorted(set(self.categories)):
            gallery = [k for k, c in enumerate(self.categories) if c == cat]
            pos = {g: j for j, g in enumerate(gallery)}
            trips = [t for t in self.triplets if t.category == cat]
            if not trips:
                continue
            groups[cat] = ([*gallery], [self.index[t.reference_id] for t in trips],
                           [t.modification_text for t in trips], [pos[self.index[t.target_id]] for t in trips])
        return groups


def _batched(fn, items, batch_size):
    out = []
    for start in range(0, len(items), batch_size):
        out.append(fn(items[start:start + batch_size]))
    return torch.cat(out)


# ---------------------------------------------------------------------------------- UniFashion
@torch.no_grad()
def evaluate_unifashion(model, data: SplitData, cfg: EvalConfig, table: ResultTable, art: EvalArtifacts,
                        method: str = "UniFashion", classifier=None, fid_features=None) -> None:
    model.eval()
    bs = cfg.batch_size
    vision = _batched(lambda ims: model.vision(model.processor.preprocess_images(ims).to(model.device)).features,
                      data.images, bs)
    z = _batched(lambda f: model.get_image_features(vision_features=f).image_embeds, vision, bs)
    if "cmr" in cfg.tasks:
        texts = [r.caption(cfg.cmr_text_style) for r in data.items]
        t = _batched(lambda ts: model.encode_text(list(ts)), texts, bs)
        sim = model.score(t, z).t().cpu().numpy()  # (images, texts)
        protocol_suffix = f"{cfg.cmr_text_style} captions"
        full = cmr_full_gallery(sim, np.arange(len(texts)))
        for metric, value in full.rows():
            table.add("cmr", f"full gallery ({protocol_suffix})", method, metric, value, cfg.split, cfg.seed)
        if len(texts) >= cfg.n_candidates:
            r100 = cmr_random_100(sim, data.categories, seed=cfg.seed, n_candidates=cfg.n_candidates)
            for metric, value in r100.rows():
                table.add("cmr", f"random-{cfg.n_candidates} same-category ({protocol_suffix})", method, metric,
                          value, cfg.split, cfg.seed)
        art.cmr_t2i_ranks[method] = ranks_of_positives(sim.T, [[i] for i in range(len(texts))])
    captions_for_fusion = None
    if "cir" in cfg.tasks:
        groups = data.cir_groups()
        zc = None
        if model.caption_lm is not None:
            captions_for_fusion = caption_images(model, vision, None, bs)
            zc = _batched(lambda ts: model.encode_text(list(ts)), captions_for_fusion, bs)
        variants = {"": None}
        if zc is not None:
            variants = {" (no caption fusion)": None, " (caption fusion)": zc}
        for suffix, fusion in variants.items():
            scores, targets = {}, {}
            for cat, (gallery, refs, texts, tpos) in groups.items():
                e = _composed(model, vision, refs, texts, bs)
                g = torch.tensor(gallery)
                s = model.score(e, z[g], fusion[g] if fusion is not None else None)
                scores[cat], targets[cat] = s.cpu().numpy(), tpos
            result = cir_fashioniq(scores, targets, cfg.cir_ks)
            name = method + suffix
            for metric, value in result.rows():
                table.add("cir", "Fashion-IQ protocol (R@K per category)", name, metric, value, cfg.split, cfg.seed)
            art.cir_ranks[name] = {c: ranks_of_positives(scores[c], [[t] for t in targets[c]]) for c in scores}
            if suffix != " (no caption fusion)":
                _keep_cir_examples(art, data, groups, scores, name)
            if cfg.itm_rerank_k and suffix != " (no caption fusion)":
                reranked = {c: _itm_rerank(model, scores[c], groups[c], data, vision, cfg.itm_rerank_k)
                            for c in scores}
                rr = cir_fashioniq(reranked, targets, cfg.cir_ks)
                for metric, value in rr.rows():
                    table.add("cir", "Fashion-IQ protocol (R@K per category)", f"{name} + ITM re-rank top-"
                              f"{cfg.itm_rerank_k}", metric, value, cfg.split, cfg.seed)
    if "fic" in cfg.tasks and model.caption_lm is not None:
        from unifashion.evaluation.captioning import caption_metrics

        n = len(data.items) if cfg.fic_max_items is None else min(cfg.fic_max_items, len(data.items))
        for style in cfg.fic_styles:
            generated = (captions_for_fusion if style == model.config.fusion_caption_style
                         and captions_for_fusion is not None
                         else caption_images(model, vision, style, bs))[:n]
            refs = {r.item_id: [r.caption(style)] for r in data.items[:n]}
            preds = {r.item_id: g for r, g in zip(data.items[:n], generated, strict=True)}
            for metric, value in caption_metrics(refs, preds).items():
                if metric in ("BLEU-4", "METEOR", "ROUGE-L", "CIDEr"):
                    table.add("fic", f"{style} style", method, metric, 100 * value, cfg.split, cfg.seed)
    if "fig" in cfg.tasks and model.diffusion is not None:
        _evaluate_generation(model, data, cfg, table, art, method, classifier, fid_features)


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


def _itm_rerank(model, scores: np.ndarray, group, data: SplitData, vision: torch.Tensor, k: int) -> np.ndarray:
    """Re-order each query's top-k by ITM probability (kept above everything outside the top-k)."""
    gallery, refs, texts, _ = group
    out = scores.copy()
    top = np.argsort(-scores, axis=1)[:, :k]
    for q in range(scores.shape[0]):
        cand = top[q]
        tokens = model.processor.tokenize([texts[q]] * len(cand), device=model.device)
        feats = vision[[gallery[c] for c in cand]]
        logits = model._itm_logits(tokens["input_ids"], tokens["attention_mask"], feats,
                                   torch.ones(feats.shape[:2], dtype=torch.long))
        prob = logits.softmax(-1)[:, 1].cpu().numpy()
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


def _evaluate_generation(model, data: SplitData, cfg: EvalConfig, table: ResultTable, art: EvalArtifacts,
                         method: str, classifier, fid_features) -> None:
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
    size = fake.shape[-1]
    real = model.processor.to_tensor(data.images, size)
    protocol = (f"text-to-image from short captions, {n} generated vs {len(real)} real test images at {size} px, "
                f"{cfg.fig_scheduler} {cfg.fig_steps} steps, guidance {cfg.fig_guidance}")
    if fid_features is not None:
        fr, ff = fid_features(real), fid_features(fake)
        table.add("fig", protocol, method, f"FID-{fid_features.name}", fid(fr, ff), cfg.split, cfg.seed)
        kid_mean, _ = kid(fr, ff, n_subsets=50, subset_size=min(len(fr), len(ff), 100), seed=cfg.seed)
        table.add("fig", protocol, method, f"KIDx1000-{fid_features.name}", 1000 * kid_mean, cfg.split, cfg.seed)
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
    rng = np.random.default_rng(cfg.seed)
    if "cmr" in cfg.tasks:
        sim = rng.random((len(data.items), len(data.items)))
        for metric, value in cmr_full_gallery(sim, np.arange(len(data.items))).rows():
            table.add("cmr", f"full gallery ({cfg.cmr_text_style} captions)", "random", metric, value, cfg.split,
                      cfg.seed)
        if len(data.items) >= cfg.n_candidates:
            r100 = cmr_random_100(sim, data.categories, seed=cfg.seed, n_candidates=cfg.n_candidates)
            for metric, value in r100.rows():
                table.add("cmr", f"random-{cfg.n_candidates} same-category ({cfg.cmr_text_style} captions)", "random",
                          metric, value, cfg.split, cfg.seed)
        art.cmr_t2i_ranks["random"] = ranks_of_positives(sim.T, [[i] for i in range(len(data.items))])
    if "cir" in cfg.tasks:
        scores, targets = {}, {}
        for cat, (gallery, refs, _, tpos) in data.cir_groups().items():
            scores[cat], targets[cat] = rng.random((len(refs), len(gallery))), tpos
        for metric, value in cir_fashioniq(scores, targets, cfg.cir_ks).rows():
            table.add("cir", "Fashion-IQ protocol (R@K per category)", "random", metric, value, cfg.split, cfg.seed)
        art.cir_ranks["random"] = {c: ranks_of_positives(scores[c], [[t] for t in targets[c]]) for c in scores}


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
        sim = (e_img @ e_txt.t()).numpy()
        for metric, value in cmr_full_gallery(sim, np.arange(len(texts))).rows():
            table.add("cmr", f"full gallery ({cfg.cmr_text_style} captions)", method, metric, value, cfg.split,
                      cfg.seed)
        if len(texts) >= cfg.n_candidates:
            r100 = cmr_random_100(sim, data.categories, seed=cfg.seed, n_candidates=cfg.n_candidates)
            for metric, value in r100.rows():
                table.add("cmr", f"random-{cfg.n_candidates} same-category ({cfg.cmr_text_style} captions)", method,
                          metric, value, cfg.split, cfg.seed)
        art.cmr_t2i_ranks[method] = ranks_of_positives(sim.T, [[i] for i in range(len(texts))])
    if "cir" in cfg.tasks:
        for combiner in combiners:
            scores, targets = {}, {}
            for cat, (gallery, refs, texts, tpos) in data.cir_groups().items():
                if reference_captions is not None:
                    texts = [sentence_prompt(reference_captions[data.ids[r]], t)
                             for r, t in zip(refs, texts, strict=True)]
                t = _batched(lambda ts: model.encode_text(list(ts)), texts, bs)
                q = model.compose(e_img[refs], t, combiner=combiner)
                scores[cat], targets[cat] = (q @ e_img[gallery].t()).numpy(), tpos
            name = f"{method}, {combiner} combiner"
            for metric, value in cir_fashioniq(scores, targets, cfg.cir_ks).rows():
                table.add("cir", "Fashion-IQ protocol (R@K per category)", name, metric, value, cfg.split, cfg.seed)
            art.cir_ranks[name] = {c: ranks_of_positives(scores[c], [[t] for t in targets[c]]) for c in scores}


# ---------------------------------------------------------------------------------- pictures
def plot_recall_curves(art: EvalArtifacts, path: Path, max_k: int = 50) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for method, per_cat in art.cir_ranks.items():
        curve = np.mean([recall_curve(r, max_k) for r in per_cat.values()], axis=0)
        axes[0].plot(range(1, max_k + 1), curve, label=method)
    axes[0].set(title="CIR: recall@K (mean over categories)", xlabel="K", ylabel="recall (%)")
    for method, ranks in art.cmr_t2i_ranks.items():
        axes[1].plot(range(1, max_k + 1), recall_curve(ranks, max_k), label=method)
    axes[1].set(title="CMR text-to-image: recall@K (full gallery)", xlabel="K", ylabel="recall (%)")
    for ax in axes:
        ax.grid(alpha=0.3)
        if ax.lines:  # a task that was not evaluated leaves its panel empty
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def cir_grid(art: EvalArtifacts, path: Path, tile: int = 96) -> Path:
    from PIL import ImageDraw

    from unifashion.visualize import font

    rows = art.cir_examples
    width = tile * 7 + 40 + 220
    sheet = Image.new("RGB", (width, len(rows) * (tile + 26) + 30), "white")
    draw = ImageDraw.Draw(sheet)
    draw.text((8, 6), "CIR queries: reference + text -> top-5 (green = the target)", fill=(20, 20, 20), font=font(14))
    for i, ex in enumerate(rows):
        y = 30 + i * (tile + 26)
        sheet.paste(ex["reference"].resize((tile, tile)), (8, y))
        draw.text((8, y + tile + 2), ex["method"][:40], fill=(90, 90, 90), font=font(10))
        import textwrap

        for j, line in enumerate(textwrap.wrap(f"\u201c{ex['text']}\u201d", 34)[:5]):
            draw.text((tile + 16, y + 4 + j * 14), line, fill=(180, 30, 50), font=font(11))
        for j, (im, hit) in enumerate(zip(ex["results"], ex["hits"], strict=True)):
            x = tile + 240 + j * (tile + 8)
            if hit:
                draw.rectangle([x - 3, y - 3, x + tile + 2, y + tile + 2], outline=(20, 160, 60), width=4)
            sheet.paste(im.resize((tile, tile)), (x, y))
    sheet.save(path)
    return path


def generation_grid(art: EvalArtifacts, path: Path, tile: int = 96) -> Path:
    from unifashion.visualize import item_grid

    images, captions = [], []
    for ex in art.fig_examples:
        images += [ex["generated"], ex["real"]]
        captions += [f"generated: {ex['prompt']}", "real item"]
    item_grid(images, captions, columns=8, tile=tile, caption_lines=4,
              title="Text-to-image: generated (left) beside the real item (right)").save(path)
    return path


def write_report(table: ResultTable, art: EvalArtifacts, out_dir: Path, cfg: EvalConfig, notes: Sequence[str] = ()
                 ) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"results.json": table.save_json(out_dir / "results.json")}
    md = [f"# Evaluation on the `{cfg.split}` split (seed {cfg.seed})", "", *notes, "", table.to_markdown()]
    (out_dir / "results.md").write_text("\n".join(md))
    paths["results.md"] = out_dir / "results.md"
    (out_dir / "eval_config.json").write_text(json.dumps(asdict(cfg), indent=2))
    if art.cir_ranks or art.cmr_t2i_ranks:
        paths["recall_curves.png"] = plot_recall_curves(art, out_dir / "recall_curves.png")
    if art.cir_examples:
        paths["cir_examples.png"] = cir_grid(art, out_dir / "cir_examples.png")
    if art.fig_examples:
        paths["generated.png"] = generation_grid(art, out_dir / "generated.png")
    return paths
