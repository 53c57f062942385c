"""Size of the shipped models per design choice and save option, measured on saved files, as markdown.

    PYTHONPATH=src .venv/bin/python benchmarks/bench_artifact_size.py --out benchmarks/results/artifact_size.md

No training: sizes do not depend on the weights' values, so the models are the untrained presets
(``UniFashion.from_pretrained("tiny")`` and the dual-encoder baseline, built offline from their
wheels). Every number is the size of a folder written by ``save_pretrained`` / ``pretrained.package``
in this run. Each design choice of the tiny preset is undone by a config override, one at a time,
so its effect on the size is measured side by side:

* the caption LM's vocabulary sized for its captions (``caption_lm.vocabulary_size``) and its
  output head tied to its input table (``caption_lm.tie_word_embeddings``);
* the Q-Former's MiniLM word table frozen (``qformer.freeze_word_embeddings``), hence left out of
  the file and restored from the MiniLM wheel;
* the dual encoder's attention pool in the embedding width (``pool_width``) and its word table
  frozen (``freeze_word_embeddings``);
* float16 or int8 (per-row scales) storage.

What the compression costs in quality needs a trained model: ``benchmarks/bench_artifact_quality.py``.
"""

from __future__ import annotations

import argparse
import re
import tempfile
import time
from pathlib import Path

import torch

MB = 1_000_000
BUDGET = 50 * MB

# Components of the state dict (parameters and buffers): the first pattern that matches a key wins.
COMPONENTS: tuple[tuple[str, str], ...] = (
    ("vision (EfficientNet-Lite0, frozen, from its wheel)", r"vision\."),
    ("Q-Former word embeddings (MiniLM's, frozen, from its wheel)", r"qformer\.embeddings\.word_embeddings\."),
    ("Q-Former cross-attention (every 2nd layer)", r"qformer\.encoder\.layer\.\d+\.crossattention\."),
    ("Q-Former query FFNs", r"qformer\.encoder\.layer\.\d+\.\w+_query\."),
    ("Q-Former self-attention + text FFNs", r"qformer\.encoder\.layer\."),
    ("Q-Former rest (queries, positions, LayerNorms)", r"qformer\."),
    ("ITC/ITM heads + temperature", r"(vision_projection|text_projection|itm_head)\.|temperature$"),
    ("caption LM vocabulary table (input, tied to the head)", r"caption_lm\.lm\.(model\.embed_tokens|lm_head)\."),
    ("caption LM layers", r"caption_lm\.lm\."),
    ("caption LM adapter", r"caption_lm\.adapter\."),
    ("diffusion UNet (+ null condition)", r"diffusion\.(unet\.|null_condition$)"),
    ("diffusion VAE", r"diffusion\.vae\."),
    ("diffusion adapter", r"diffusion\.adapter\."),
)

# The tiny preset with its design choices undone, one more at a time (config overrides).
UNIFASHION_DESIGNS: tuple[tuple[str, dict], ...] = (
    ("30,522-token caption vocabulary, untied head, Q-Former word table trained (before)",
     {"caption_lm.vocabulary_size": None, "caption_lm.tie_word_embeddings": False,
      "qformer.freeze_word_embeddings": False}),
    ("+ caption LM head tied to its input table",
     {"caption_lm.vocabulary_size": None, "qformer.freeze_word_embeddings": False}),
    ("+ caption vocabulary of 2,048 tokens", {"qformer.freeze_word_embeddings": False}),
    ("+ Q-Former word table frozen, left out (the tiny preset)", {}),
)
DUAL_ENCODER_DESIGNS: tuple[tuple[str, dict], ...] = (
    ("attention pool 1,438 wide, word table trained (before)",
     {"pool_width": "vision", "freeze_word_embeddings": False}),
    ("+ attention pool in the 256-wide embedding", {"freeze_word_embeddings": False}),
    ("+ word table frozen, left out (the default)", {}),
)
STORAGE = ("float16", "int8")


def component_of(key: str) -> str:
    return next((name for name, pattern in COMPONENTS if re.match(pattern, key)), "other")


def folder_bytes(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())


def mb(n: int) -> str:
    return f"{n / MB:.1f}"


def packaged_sizes(save, tag: str, kind_dir: Path) -> dict[str, int]:
    """Bytes of the packaged folder of ``tag`` for each storage, from one full-precision save."""
    from unifashion.models import pretrained

    source = kind_dir / "saved"
    save(source)
    sizes = {"float32 save_pretrained": folder_bytes(source)}
    for dtype in STORAGE:
        folder = pretrained.package(tag, source, dtype=dtype, root=kind_dir / dtype, max_bytes=10**12)
        sizes[dtype] = folder_bytes(folder)
    return sizes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results/artifact_size.md")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from unifashion.models import UniFashion
    from unifashion.models.config import UniFashionConfig
    from unifashion.models.dual_encoder import DualEncoder, DualEncoderConfig

    started = time.perf_counter()
    unifashion_rows, dual_rows = [], []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for index, (label, overrides) in enumerate(UNIFASHION_DESIGNS):
            model = UniFashion(UniFashionConfig.from_preset("tiny", overrides)).eval()
            sizes = packaged_sizes(model.save_pretrained, "tiny-default", tmp / f"unifashion{index}")
            unifashion_rows.append((label, sizes))
        tiny = model  # the last design is the preset itself
        start = time.perf_counter()
        UniFashion.from_pretrained(tmp / f"unifashion{len(UNIFASHION_DESIGNS) - 1}" / "int8" / "tiny-default")
        load_s = time.perf_counter() - start
        for index, (label, overrides) in enumerate(DUAL_ENCODER_DESIGNS):
            baseline = DualEncoder(DualEncoderConfig.from_dict(overrides)).eval()
            sizes = packaged_sizes(baseline.save_pretrained, "dual-encoder-default", tmp / f"dual{index}")
            dual_rows.append((label, sizes))

    state = tiny.state_dict()
    elements: dict[str, int] = {}
    for key, tensor in state.items():
        if key == "caption_lm.lm.lm_head.weight":
            continue  # the same tensor as the input table
        elements[component_of(key)] = elements.get(component_of(key), 0) + tensor.numel()
    left_out = elements[COMPONENTS[0][0]] + elements[COMPONENTS[1][0]]
    stored = sum(elements.values()) - left_out
    counts = tiny.parameter_counts()
    vocabulary = tiny.config.caption_lm.vocabulary

    def table(rows):
        out = ["| design | float32, `save_pretrained` (MB) | packaged float16 (MB) | packaged int8 (MB) |",
               "|---|---:|---:|---:|"]
        out += [f"| {label} | {mb(s['float32 save_pretrained'])} | {mb(s['float16'])} | {mb(s['int8'])} |"
                for label, s in rows]
        return out

    ours, theirs = unifashion_rows[-1][1], dual_rows[-1][1]
    budget_rows = [(a, b, ours[a] + theirs[b]) for a in STORAGE for b in STORAGE]
    lines = [
        "# Size of the shipped models",
        "",
        "Written by `benchmarks/bench_artifact_size.py` (untrained presets: sizes do not depend on the "
        "weights' values; every size is a folder written in this run). MB = 10^6 bytes. The packaged "
        "folders of `tiny-default` and `dual-encoder-default` may take 50 MB together. A packaged folder "
        "holds the weights (wheel parts left out), the config, the tokenizers and a sha256 manifest.",
        "",
        "## UniFashion `tiny`, one design choice at a time",
        "",
        *table(unifashion_rows),
        "",
        "## The dual-encoder baseline, one design choice at a time",
        "",
        *table(dual_rows),
        "",
        "## Both together against the 50 MB budget",
        "",
        "| UniFashion stored as | baseline stored as | together (MB) | within 50 MB |",
        "|---|---|---:|---|",
        *[f"| {a} | {b} | {mb(total)} | {'yes' if total <= BUDGET else 'no'} |" for a, b, total in budget_rows],
        "",
        f"Loading the packaged int8 `tiny` folder (manifest checked, vision and the Q-Former's word table "
        f"restored from their wheels, int8 dequantised) took {load_s:.1f} s.",
        "",
        "## Where the bytes of `tiny` are",
        "",
        "`model.parameter_counts()`: " + ", ".join(f"{k} {v:,}" for k, v in counts.items()) + ".",
        "",
        f"The caption LM's vocabulary holds {len(vocabulary):,} tokenizer ids (built from the training "
        "captions by the recipe; here, untrained, from the instructions and MiniLM's most frequent words).",
        "",
        "| component | elements | float16 (MB) | share of what is stored |",
        "|---|---:|---:|---:|",
    ]
    for name, _ in (*COMPONENTS, ("other", "")):
        n = elements.get(name, 0)
        if not n:
            continue
        share = "left out" if name in (COMPONENTS[0][0], COMPONENTS[1][0]) else f"{100 * n / stored:.1f}%"
        lines.append(f"| {name} | {n:,} | {mb(2 * n)} | {share} |")
    lines += ["", f"Measured in {time.perf_counter() - started:.0f} s.", ""]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
