"""``unifashion demo``: the README's main job on the embedded default, step by step.

1. build (or reuse) the embedded catalogue; 2. its contact sheet; 3. the trained default model
(trained once and cached, unless ``no_train``) and the dual-encoder baseline; 4. the evaluation
on the test split beside the baselines (:func:`unifashion.experiments.evaluate.run_evaluation`);
5. a search index over the test split and sample queries. Serving the web page over that index
is the command's own last step (the service is a layer above this one).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from unifashion.evaluation.runner import TASKS

DEFAULT_TAG = "tiny-default"
BASELINE_TAG = "dual-encoder-default"


@dataclass
class DemoConfig:
    output: str = "outputs/demo"
    n_items: int = 2000
    seed: int = 0
    workers: int = 2
    catalogue_only: bool = False  # stop after the catalogue and its picture
    no_train: bool = False  # never train: skip what is not trained yet
    eval_tasks: tuple[str, ...] = TASKS
    # Text-to-image on fewer prompts than the full protocol's 64, to keep the first run short; the
    # shipped model's numbers on the full protocol are in its results file.
    fig_max_items: int = 16


@dataclass
class DemoResult:
    """How far the demo went: ``index`` is None when it stopped before the search step."""

    model: str = DEFAULT_TAG
    index: Path | None = None


def run_demo(config: DemoConfig, echo: Callable[[str], None] = print) -> DemoResult:
    """Run the demo's steps, reporting each through ``echo``; see the module docstring."""
    from unifashion.data.synthetic.catalogue import CatalogueConfig, build_catalogue_files, load_catalogue
    from unifashion.data.synthetic.contact_sheet import catalogue_contact_sheet

    out = Path(config.output)
    cat_dir = out / "catalogue"
    meta = cat_dir / "catalogue.json"
    existing = json.loads(meta.read_text()).get("config", {}) if meta.is_file() else {}
    if existing.get("n_items") == config.n_items and existing.get("seed") == config.seed:
        catalogue = load_catalogue(cat_dir)
        echo(f"[1/5] reusing the embedded catalogue in {cat_dir} ({len(catalogue.items)} items)")
    else:
        echo(f"[1/5] building the embedded catalogue ({config.n_items} items) in {cat_dir}")
        catalogue = build_catalogue_files(cat_dir, CatalogueConfig(n_items=config.n_items, seed=config.seed),
                                          workers=config.workers)
    counts = {s: sum(it.split == s for it in catalogue.items) for s in ("train", "val", "test")}
    echo(f"      items per split: {counts}; CIR triplets: {len(catalogue.triplets)}")
    sheet = catalogue_contact_sheet(catalogue, out / "contact_sheet.png")
    echo(f"[2/5] contact sheet of items, captions and CIR triplets: {sheet.resolve()}")
    if config.catalogue_only:
        return DemoResult()

    from unifashion.models import pretrained

    tag = DEFAULT_TAG
    needs_training = not pretrained.is_available(tag) or not pretrained.is_available(BASELINE_TAG)
    fashion_mnist_pairs = demo_fashion_mnist_pairs(echo) if needs_training and not config.no_train else 0
    if pretrained.is_available(tag):
        echo(f"[3/5] loading the trained default model from {pretrained.locate(tag)}")
    elif config.no_train:
        echo(f"[3/5] {pretrained.missing_message(tag)}")
        return DemoResult()
    else:
        from unifashion.training.recipe import default_recipe, run_recipe

        run_dir = pretrained.home() / "runs" / tag
        echo(f"[3/5] training the default model once (about an hour on 2 CPU cores; resumable: run again to "
             f"continue) in {run_dir}")
        recipe = default_recipe(str(run_dir))
        recipe.data.catalogue = str(cat_dir)
        recipe.data.fashion_mnist_pairs = fashion_mnist_pairs
        pretrained.install(tag, run_recipe(recipe))
    if not pretrained.is_available(BASELINE_TAG) and not config.no_train:
        from unifashion.training.baselines import train_dual_encoder
        from unifashion.training.recipe import DataSpec

        echo("      training the dual-encoder baseline once (a few minutes)")
        final = train_dual_encoder(pretrained.home() / "runs" / BASELINE_TAG,
                                   DataSpec(catalogue=str(cat_dir), fashion_mnist_pairs=fashion_mnist_pairs))
        pretrained.install(BASELINE_TAG, final)
    baseline = pretrained.locate(BASELINE_TAG) if pretrained.is_available(BASELINE_TAG) else None
    echo(f"[4/5] evaluating on the test split -> {out / 'eval'}")
    from unifashion.evaluation.captioning import JAVA_HINT, java_available

    if "fic" in config.eval_tasks and not java_available():
        echo(f"      {JAVA_HINT}")
    from unifashion.evaluation.runner import EvalConfig
    from unifashion.experiments.evaluate import EvalRunConfig, run_evaluation

    evaluation = run_evaluation(EvalRunConfig(
        model=tag, catalogue=str(cat_dir), out=str(out / "eval"),
        eval=EvalConfig(tasks=tuple(config.eval_tasks), fig_max_items=config.fig_max_items),
        classifier=str(pretrained.home() / "models" / "attribute-classifier"),
        dual_encoder=str(baseline) if baseline is not None else None))
    for line in evaluation.summary_lines():
        echo(line)
    if pretrained.is_packaged(tag):
        echo(f"      the shipped model's numbers on the full protocols (text-to-image on 64 prompts, the held-out "
             f"catalogue, the seed noise): {pretrained.packaged_model_dir(tag) / 'results.json'}")
    index = out / "index"
    demo_search(tag, cat_dir, index, echo)
    return DemoResult(tag, index)


def demo_fashion_mnist_pairs(echo: Callable[[str], None] = print, pairs: int = 1000) -> int:
    """The Fashion-MNIST pairs the demo's training adds: ``pairs`` when Debian's dataset is
    installed, else none, said plainly. The demo must run on a new user's machine, which has no
    root and so none of the Debian packages; the default recipe itself still asks for them."""
    from unifashion.data.fashion_mnist import DEFAULT_FASHION_MNIST_DIR, fashion_mnist_installed

    if fashion_mnist_installed():
        return pairs
    echo(f"      Fashion-MNIST is not in {DEFAULT_FASHION_MNIST_DIR}: training on the embedded catalogue alone, "
         f"without its {pairs:,} real-photo pairs (to add them: `apt-get install dataset-fashion-mnist` as root, "
         f"then `unifashion train --install-as {DEFAULT_TAG}`)")
    return 0


def demo_search(model_name: str, catalogue: Path, index_dir: Path, echo: Callable[[str], None] = print) -> None:
    """The demo's last step: index the test split and answer a text and a composed sample query."""
    from unifashion.data.records import load_image
    from unifashion.models import UniFashion
    from unifashion.pipelines import SearchPipeline, build_index

    model = UniFashion.from_pretrained(model_name)
    echo(f"[5/5] search over the test split: index in {index_dir}")
    build_index(model, str(catalogue), str(index_dir), split="test", progress=True)
    with SearchPipeline.open(model, str(index_dir), read_only=True) as pipeline:
        query = "a dark blue striped shirt with long sleeves"
        echo(f"      sample query: {query!r}")
        for line in hit_lines(pipeline.text_to_images(query, top_k=5)):
            echo(line)
        first = pipeline.index.ids()[0]
        echo(f"      sample composed query: {first} + 'is red with white stripes'")
        image = load_image(Path(catalogue) / "images" / f"{first}.png")
        for line in hit_lines(pipeline.composed(image, "is red with white stripes", top_k=5)):
            echo(line)


def hit_lines(hits: Iterable) -> list[str]:
    """One line per search hit: rank, id, score (and its parts with caption fusion), category, caption."""
    lines = []
    for hit in hits:
        captions = hit.metadata.captions
        text = captions.get("short") or next(iter(captions.values()), "") or hit.metadata.fusion_caption
        fusion = f" (max-sim {hit.maxsim:.4f} + fusion {hit.fusion:.4f})" if hit.fusion else ""
        category = f"[{hit.metadata.category}] " if hit.metadata.category else ""
        lines.append(f"{hit.rank:3d}. {hit.item_id}  score {hit.score:.4f}{fusion}  {category}{text}")
    return lines


def serve_command(result: DemoResult, port: int) -> str:
    """The command that serves the demo's web page over its index."""
    return f"unifashion serve --index {result.index} --model {result.model} --port {port}"

