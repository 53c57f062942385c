"""The evaluation report: results.json, results.md, the config, recall curves and example grids."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from unifashion.configuration import save_json
from unifashion.evaluation.results import ResultTable
from unifashion.evaluation.retrieval import recall_curve
from unifashion.evaluation.runner import EvalArtifacts, EvalConfig


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
    save_json(cfg, out_dir / "eval_config.json")
    if art.cir_ranks or art.cmr_t2i_ranks:
        paths["recall_curves.png"] = plot_recall_curves(art, out_dir / "recall_curves.png")
    if art.cir_examples:
        paths["cir_examples.png"] = cir_grid(art, out_dir / "cir_examples.png")
    if art.fig_examples:
        paths["generated.png"] = generation_grid(art, out_dir / "generated.png")
    return paths
