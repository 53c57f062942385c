"""The documentation's tables, rendered from the committed result files, and the check that keeps
them (and every number the prose quotes) true to those files.

A rendered table sits between two markers in a Markdown file (README.md, docs/*.md)::

    <!-- table:NAME (rendered by `unifashion docs render`; do not edit) -->
    | ... |
    <!-- /table:NAME -->

``NAME`` picks a renderer of :data:`RENDERERS`, which reads its result file under the repository
root. :func:`render_tree` writes every block anew, or with ``check=True`` lists the stale ones.
:func:`unsourced_numbers` finds the decimal numbers the prose quotes (outside code, links and
rendered blocks) that no result, config or recipe file holds: a number a reader cannot trace.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from unifashion.experiments import shipped

#: The Markdown files whose tables and numbers are checked, relative to the repository root.
DOCUMENTS = ("README.md", "docs")
#: Where the packaged models and their results files live, relative to the repository root.
WEIGHTS = "src/unifashion/weights"
#: Files whose numbers count as a source for a number quoted in prose.
SOURCE_GLOBS = ("benchmarks/results/*.json", "src/unifashion/weights/*/results.json",
                "src/unifashion/configs/*.json", "recipes/*.json", "benchmarks/recipes/*.json",
                "src/unifashion/weights/*/config.json", "src/unifashion/weights/*/manifest.json")

_BLOCK = re.compile(r"<!-- table:(?P<name>[\w-]+) \(rendered by `unifashion docs render`; do not edit\) -->\n"
                    r"(?P<body>.*?)\n?<!-- /table:(?P=name) -->", re.S)


def block(name: str, body: str) -> str:
    return (f"<!-- table:{name} (rendered by `unifashion docs render`; do not edit) -->\n"
            f"{body}\n<!-- /table:{name} -->")


def _load(root: Path, relative: str) -> Any:
    path = root / relative
    if not path.is_file():
        raise FileNotFoundError(f"result file not found: {path} (a rendered table reads it)")
    return json.loads(path.read_text())


def _fmt(value: float | None, digits: int = 2) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:,.{digits}f}"


def _table(header: Iterable[str], rows: Iterable[Iterable[Any]], align: str | None = None) -> str:
    header = list(header)
    align = align or "l" + "r" * (len(header) - 1)
    lines = ["| " + " | ".join(header) + " |",
             "| " + " | ".join("---:" if a == "r" else "---" for a in align) + " |"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


# ---------------------------------------------------------------------------- the shipped models
def _shipped(root: Path) -> list[dict[str, Any]]:
    return [shipped.load_results(shipped.results_path(tag, root / WEIGHTS)) for tag in shipped.SHIPPED_TAGS]


def render_shipped_results(root: Path) -> str:
    """Every headline number of both shipped results files, each with its protocol."""
    return shipped.results_table(_shipped(root), shipped.results_pick)


@dataclass(frozen=True)
class Headline:
    """One row of the README's short table: a number, where it was measured, and the methods."""

    label: str
    catalogue: str  # prefix of the row's catalogue
    task: str
    metric: str
    unifashion: str
    dual_encoder: str | None
    reference: str | None = "random"
    protocol: str = ""  # prefix of the row's protocol


HELD_OUT = shipped.HELD_OUT.name
DEMO = shipped.DEMO_SPLIT.name
HEADLINES = (
    Headline("CMR mean R (full gallery)", HELD_OUT, "cmr", "mean_R", "UniFashion", "dual-encoder (CLIP4CIR)",
             protocol="full gallery"),
    Headline("CMR R@1 text→image", HELD_OUT, "cmr", "t2i_R@1", "UniFashion", "dual-encoder (CLIP4CIR)",
             protocol="full gallery"),
    Headline("CIR (R@10+R@50)/2, caption fusion / learned combiner", HELD_OUT, "cir", "avg_(R@10+R@50)/2",
             "UniFashion (caption fusion)", "dual-encoder (CLIP4CIR), learned combiner"),
    Headline("CIR (R@10+R@50)/2 with the ITM re-rank of the top 50", HELD_OUT, "cir", "avg_(R@10+R@50)/2",
             "UniFashion (caption fusion) + ITM re-rank top-50", None),
    Headline("P@10, template wording", DEMO, "phrasing", "P@10", "UniFashion", "dual-encoder (CLIP4CIR)",
             protocol="shopper phrasing (text->image, all items of the split), template"),
    Headline("P@10, shopper wording", DEMO, "phrasing", "P@10", "UniFashion", "dual-encoder (CLIP4CIR)",
             protocol="shopper phrasing (text->image, all items of the split), shopper"),
    Headline("detailed captions: category right (%)", HELD_OUT, "fic", "category accuracy", "UniFashion", None, None),
    Headline("detailed captions: colour right (%)", HELD_OUT, "fic", "colour accuracy", "UniFashion", None, None),
    Headline("text→image: category right (%)", DEMO, "fig", "attribute accuracy: category (%)", "UniFashion", None,
             "real images (classifier ceiling)"),
    Headline("text→image: colour right (%)", DEMO, "fig", "attribute accuracy: colour (%)", "UniFashion", None,
             "real images (classifier ceiling)"),
    Headline("text→image: pattern right (%)", DEMO, "fig", "attribute accuracy: pattern (%)", "UniFashion", None,
             "real images (classifier ceiling)"),
)


def _find(rows: list[dict[str, Any]], h: Headline, method: str | None) -> dict[str, Any] | None:
    if method is None:
        return None
    for row in rows:
        if (row["catalogue"].startswith(h.catalogue) and row["task"] == h.task and row["metric"] == h.metric
                and row["protocol"].startswith(h.protocol) and row["method"] == method):
            return row
    return None


def render_shipped_headline(root: Path) -> str:
    """The README's short table: the numbers a user asks first, both shipped models side by side."""
    results = _shipped(root)
    by_tag = dict(zip(shipped.SHIPPED_TAGS, results, strict=True))
    rows = [r for res in results for r in res["rows"]]
    out = []
    for h in HEADLINES:
        uni = _find(by_tag["tiny-default"]["rows"], h, h.unifashion)
        if uni is None:
            raise ValueError(f"the shipped results hold no row for {h.label!r} ({h.unifashion}, {h.metric})")
        dual = _find(by_tag["dual-encoder-default"]["rows"], h, h.dual_encoder)
        ref = _find(rows, h, h.reference)
        noise, how = shipped.noise_of(by_tag["tiny-default"], uni)
        out.append((h.label, uni["catalogue"], _fmt(uni["value"]), _fmt(dual and dual["value"]),
                    _fmt(ref and ref["value"]), f"{noise:.2f} ({how})"))
    return _table(("number", "measured on", "UniFashion `tiny-default`", "dual encoder `dual-encoder-default`",
                   "random ranker / judge on real images", "noise of UniFashion's number (±)"), out, "llrrrl")


def render_shipped_training(root: Path) -> str:
    """How the shipped models were trained: each stage's steps and wall time."""
    out = []
    for tag, res in zip(shipped.SHIPPED_TAGS, _shipped(root), strict=True):
        stages = res.get("training", {}).get("stages", {})
        for stage, timing in stages.items():
            seconds = timing.get("seconds", timing.get("train_seconds"))
            out.append((f"`{tag}`", stage, timing.get("steps", ""), _fmt(seconds, 0)))
    return _table(("model", "stage", "steps", "wall time (s)"), out, "llrr")


# ---------------------------------------------------------------------------- benchmarks
def render_search(root: Path) -> str:
    data = _load(root, "benchmarks/results/search.json")
    out = []
    for size in data["sizes"]:
        for kind, result in size["kinds"].items():
            d = result["default"]
            out.append((f"{size['items']:,}", f"{size.get('distinct_items', size['items']):,}", kind,
                        _fmt(d["p50_ms"], 1), _fmt(d["p99_ms"], 1), _fmt(d["recall_at_10"], 3),
                        _fmt(d.get("recall_at_10_ties"), 3), _fmt(result.get("exact", {}).get("p50_ms"), 0),
                        _fmt(d.get("batched_qps"), 0)))
    return _table(("items", "distinct", "query", "search p50 ms", "p99 ms", "recall@10 vs exact",
                   "recall@10 (ties)", "exact p50 ms", "batched q/s"), out, "rrlrrrrrr")


def render_generation(root: Path) -> str:
    data = _load(root, "benchmarks/results/generation.json")
    out = []
    for s in data["samplers"]:
        m = s["metrics"]

        def metric(name: str, metrics: dict[str, Any] = m) -> str:
            return next((_fmt(v, 1) for k, v in metrics.items() if k.startswith(name)), "")

        out.append((s["scheduler"], s["steps"], _fmt(s["seconds_per_image_batch_1"]),
                    _fmt(s["seconds_per_image_batch_16"]), metric("FID"),
                    " / ".join(metric(f"attribute accuracy: {a}") for a in ("category", "colour", "pattern"))))
    return _table(("sampler", "steps", "s/image, batch 1", "s/image, batch 16", "FID-EffLite0",
                   "attribute accuracy: category / colour / pattern (%)"), out, "lrrrrl")


def render_indexing_throughput(root: Path) -> str:
    runs = [_load(root, f"benchmarks/results/{name}")
            for name in ("indexing_throughput.json", "indexing_throughput_2threads.json")]
    keys = sorted(runs[0]["models"][0]["items_per_s"])
    out = []
    for data in runs:
        for model in data["models"]:
            rates = model["items_per_s"]
            frac = model.get("fraction_of_encode_image", {})
            out.append((model["model"], data["threads"], *(
                _fmt(rates.get(k), 1) + (f" ({_fmt(frac.get(k))})" if k in frac else "") for k in keys)))
    return _table(("model", "threads", *(f"{k} items/s" for k in keys)), out)


def render_training_memory(root: Path) -> str:
    data = _load(root, "benchmarks/results/training_memory.json")
    sizes = list(data["sizes"])
    out = []
    for run in ("train", "eval"):
        cells = [data["sizes"][s][run] for s in sizes]
        out.append((run, *(f"{_fmt(c['peak_rss_mb'], 0)} MB, {_fmt(c['seconds'], 0)} s" for c in cells),
                    _fmt(data["growth_percent"].get(run), 1)))
    return _table(("run", *(f"{int(s):,} items: peak RSS, time" for s in sizes), "growth (%)"), out)


def render_service_soak(root: Path) -> str:
    data = _load(root, "benchmarks/results/service_soak.json")
    out = []
    for phase, result in data.items():
        if not isinstance(result, dict) or not phase[:1].isdigit():
            continue
        for kind, stats in result.items():
            if isinstance(stats, dict) and "p50_ms" in stats:
                out.append((phase.split(" ", 1)[1], kind, stats["requests"], _fmt(stats["p50_ms"], 1),
                            _fmt(stats["p99_ms"], 1), stats["errors"], stats["busy_503"]))
    return _table(("phase", "requests of", "count", "p50 ms", "p99 ms", "errors", "503 + Retry-After"), out,
                  "llrrrrr")


RENDERERS: dict[str, Callable[[Path], str]] = {
    "shipped-headline": render_shipped_headline,
    "shipped-results": render_shipped_results,
    "shipped-training": render_shipped_training,
    "search": render_search,
    "generation": render_generation,
    "indexing-throughput": render_indexing_throughput,
    "training-memory": render_training_memory,
    "service-soak": render_service_soak,
}


# ---------------------------------------------------------------------------- rendering and checking
def documents(root: Path) -> list[Path]:
    paths: list[Path] = []
    for entry in DOCUMENTS:
        path = root / entry
        paths += sorted(path.rglob("*.md")) if path.is_dir() else [path] if path.is_file() else []
    return [p for p in paths if p.name.lower() != "changelog.md"]  # history keeps the numbers of its time


def render_text(text: str, root: Path, source: str = "") -> str:
    """``text`` with every rendered block written anew."""
    def replace(match: re.Match) -> str:
        name = match["name"]
        if name not in RENDERERS:
            raise ValueError(f"{source}: unknown table {name!r}; known: {', '.join(RENDERERS)}")
        return block(name, RENDERERS[name](root))

    return _BLOCK.sub(replace, text)


def render_tree(root: str | Path, check: bool = False) -> list[Path]:
    """Render every block of the documents; returns the files that changed (``check``: that would
    change, writing nothing)."""
    root = Path(root)
    changed = []
    for path in documents(root):
        text = path.read_text()
        new = render_text(text, root, str(path.relative_to(root)))
        if new != text:
            changed.append(path)
            if not check:
                path.write_text(new)
    return changed


def _numbers_in(value: Any) -> Iterator[float]:
    if isinstance(value, bool):
        return
    if isinstance(value, (int, float)):
        if math.isfinite(value):
            yield float(value)
    elif isinstance(value, dict):
        for v in value.values():
            yield from _numbers_in(v)
    elif isinstance(value, list):
        for v in value:
            yield from _numbers_in(v)
    elif isinstance(value, str):  # numbers inside labels ("guidance 3.0", "64 px")
        for m in re.finditer(r"\d+(?:\.\d+)?", value):
            yield float(m[0])


def source_numbers(root: str | Path) -> set[str]:
    """Every number of the source files as the prose may print it: at 0-4 decimals, as is, as a
    percentage of a fraction, in thousands and millions."""
    root = Path(root)
    out: set[str] = set()
    for pattern in SOURCE_GLOBS:
        for path in root.glob(pattern):
            for v in _numbers_in(json.loads(path.read_text())):
                for scaled in (v, 100 * v, v / 1e3, v / 1e6, v / 2**20, v / 2**30):
                    out.update(f"{abs(scaled):.{d}f}" for d in range(1, 5))
    return out


_CODE_FENCE = re.compile(r"^```.*?^```", re.S | re.M)
_INLINE_CODE = re.compile(r"`[^`\n]*`")
_LINK_TARGET = re.compile(r"\]\([^)]*\)|<!--.*?-->|https?://\S+", re.S)
_IDENTIFIER = re.compile(r"arXiv[ :]\d+\.\d+|\bv?\d+\.\d+\.\d+(?:\.\d+)*\b|\b\d+\.\d+(?=\.\d)")
_DECIMAL = re.compile(r"(?<![\w.])(\d{1,3}(?:,\d{3})+|\d+)\.(\d+)(?![\w])")


def quoted_numbers(text: str) -> list[str]:
    """The decimal numbers a Markdown text quotes in prose and hand-written tables: outside code,
    link targets, comments, version numbers and rendered blocks."""
    for pattern in (_BLOCK, _CODE_FENCE, _INLINE_CODE, _LINK_TARGET, _IDENTIFIER):
        text = pattern.sub(" ", text)
    return [f"{m[1].replace(',', '')}.{m[2]}" for m in _DECIMAL.finditer(text)]


def unsourced_numbers(root: str | Path) -> dict[str, list[str]]:
    """Per document, the quoted numbers no source file holds at the printed precision."""
    root = Path(root)
    sources = source_numbers(root)
    missing: dict[str, list[str]] = {}
    for path in documents(root):
        bad = [n for n in quoted_numbers(path.read_text()) if n not in sources]
        if bad:
            missing[str(path.relative_to(root))] = bad
    return missing
