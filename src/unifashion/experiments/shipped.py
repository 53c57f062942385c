"""The shipped models' numbers: how they are measured, where they are kept, and how a new version
is judged against them.

Each packaged folder (``unifashion/weights/TAG/``) keeps ``results.json`` beside its weights:
the code commit and recipe that trained it, the steps and wall time of each stage, and every
number measured on it with its protocol. The protocols:

* **demo test split**: the embedded catalogue ``make demo`` builds (2,000 items, seed 0; the
  model trained on its train split), every task, beside random ranking and the dual encoder;
* **held-out catalogue**: a catalogue drawn with a seed the training never used (10,000 items,
  seed 1), CMR, CIR and FIC on its test split;
* **seed noise**: CMR and CIR on held-out catalogues of seeds 1, 2 and 3; the standard deviation
  of each number over the three is its noise. A number without a seed noise (the demo split's)
  gets the binomial standard error of a percentage over its items.

:func:`judge` applies the rule for a new version: it replaces the shipped one only when it beats
it on some number by more than that number's noise and loses none by more than its noise.
:func:`results_table` renders the results files as one table (the documentation's, through
:mod:`unifashion.experiments.tables`).
"""

from __future__ import annotations

import json
import math
import subprocess
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from unifashion.atomic import atomic_write

RESULTS_FORMAT = "unifashion-shipped-results"


@dataclass(frozen=True)
class Protocol:
    """One evaluation of the shipped numbers: a catalogue (items, seed) and the tasks run on it."""

    name: str
    n_items: int
    catalogue_seed: int
    tasks: tuple[str, ...]

    @property
    def catalogue(self) -> str:
        return f"{self.n_items:,} items, seed {self.catalogue_seed}"


DEMO_SPLIT = Protocol("demo test split", 2000, 0, ("cmr", "cir", "fic", "fig", "phrasing"))
HELD_OUT = Protocol("held-out catalogue", 10000, 1, ("cmr", "cir", "fic"))
NOISE_SEEDS = (1, 2, 3)  # held-out catalogue seeds whose spread is the noise (CMR and CIR)
NOISE_TASKS = ("cmr", "cir")

#: Which packaged tag a result row's method belongs to.
DUAL_ENCODER_METHOD = "dual-encoder"


def tag_of_method(method: str) -> str | None:
    if method.startswith(DUAL_ENCODER_METHOD):
        return "dual-encoder-default"
    if method.startswith("UniFashion"):
        return "tiny-default"
    return None  # random ranking, the floors: kept beside every tag's numbers as the reference


def row_key(row: dict[str, Any]) -> tuple:
    return (row["catalogue"], row["task"], row["protocol"], row["method"], row["metric"])


def code_commit(repo: str | Path = ".") -> str:
    """The checkout's commit, with ``+changes`` when its tracked files differ from it."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True,
                                check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return commit + ("+changes" if dirty else "")


# ---------------------------------------------------------------------------- measuring
def ensure_catalogue(root: Path, protocol: Protocol, workers: int = 2) -> Path:
    """The protocol's catalogue under ``root`` (built there when missing or of another config)."""
    from unifashion.data.synthetic.catalogue import CatalogueConfig, build_catalogue_files

    folder = root / f"catalogue-{protocol.n_items}-seed{protocol.catalogue_seed}"
    meta = folder / "catalogue.json"
    config = json.loads(meta.read_text()).get("config", {}) if meta.is_file() else {}
    if config.get("n_items") != protocol.n_items or config.get("seed") != protocol.catalogue_seed:
        build_catalogue_files(folder, CatalogueConfig(n_items=protocol.n_items, seed=protocol.catalogue_seed),
                              workers=workers)
    return folder


def measure(protocol: Protocol, model: str, dual_encoder: str | None, work: str | Path,
            tasks: Sequence[str] | None = None, catalogue: str | Path | None = None,
            classifier: str | None = None) -> list[dict[str, Any]]:
    """Evaluate ``model`` (and ``dual_encoder`` beside it) under ``protocol``; every row of the run
    with the catalogue it was measured on. The report (results.md, pictures) goes to
    ``work/eval-NAME``; the catalogue is ``catalogue`` or built under ``work``."""
    from unifashion.evaluation.runner import EvalConfig
    from unifashion.experiments.evaluate import EvalRunConfig, run_evaluation
    from unifashion.models import pretrained

    work = Path(work)
    folder = Path(catalogue) if catalogue else ensure_catalogue(work, protocol)
    out = work / f"eval-{protocol.name.replace(' ', '-')}-seed{protocol.catalogue_seed}"
    result = run_evaluation(EvalRunConfig(
        model=model, catalogue=str(folder), out=str(out), dual_encoder=dual_encoder,
        classifier=classifier or str(pretrained.home() / "models" / "attribute-classifier"),
        eval=EvalConfig(tasks=tuple(tasks or protocol.tasks))))
    return [{**asdict(row), "catalogue": f"{protocol.name} ({protocol.catalogue})"} for row in result.table.rows]


def seed_noise(rows_by_seed: dict[int, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Per number measured on every seed: its values and their sample standard deviation."""
    values: dict[tuple, dict[int, float]] = {}
    for seed, rows in rows_by_seed.items():
        for row in rows:
            values.setdefault((row["task"], row["protocol"], row["method"], row["metric"]), {})[seed] = row["value"]
    out = []
    for (task, protocol, method, metric), by_seed in sorted(values.items()):
        if len(by_seed) < 2 or len(by_seed) < len(rows_by_seed):
            continue
        series = [by_seed[s] for s in sorted(by_seed)]
        mean = sum(series) / len(series)
        std = math.sqrt(sum((v - mean) ** 2 for v in series) / (len(series) - 1))
        out.append({"task": task, "protocol": protocol, "method": method, "metric": metric,
                    "seeds": sorted(by_seed), "values": series, "std": std})
    return out


def binomial_noise(value: float, n: int) -> float:
    """The standard error of a percentage ``value`` measured on ``n`` items."""
    p = min(max(value / 100.0, 0.0), 1.0)
    return 100.0 * math.sqrt(max(p * (1 - p), 1.0 / (4 * n)) / max(1, n))


# ---------------------------------------------------------------------------- the results file
def results_path(tag: str, root: str | Path | None = None) -> Path:
    from unifashion.models import artifact, pretrained

    return (Path(root) / tag if root else pretrained.packaged_model_dir(tag)) / artifact.RESULTS_NAME


def write_results(tag: str, rows: list[dict[str, Any]], noise: list[dict[str, Any]], training: dict[str, Any],
                  items: dict[str, int], root: str | Path | None = None) -> Path:
    """``results.json`` of a packaged tag: its own rows and random's (the reference), its noise,
    how it was trained, and ``items`` (catalogue name -> test items: the binomial noise's n)."""
    own = [r for r in rows if tag_of_method(r["method"]) in (tag, None)]
    data = {"format": RESULTS_FORMAT, "tag": tag, "training": training, "test_items": items,
            "noise": {"how": f"sample std over held-out catalogue seeds {list(NOISE_SEEDS)} "
                             f"({HELD_OUT.n_items:,} items each; tasks {', '.join(NOISE_TASKS)}); numbers without "
                             "it: binomial standard error of a percentage over the protocol's test items",
                      "rows": [n for n in noise if tag_of_method(n["method"]) in (tag, None)]},
            "rows": own}
    return atomic_write(results_path(tag, root), json.dumps(data, indent=1, sort_keys=True) + "\n")


def load_results(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"{path}: no results file (the shipped model's numbers)") from exc
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not JSON ({exc})") from exc
    if not isinstance(data, dict) or data.get("format") != RESULTS_FORMAT:
        raise ValueError(f"{path}: not a {RESULTS_FORMAT} file")
    return data


#: Metrics that are percentages of test items (recalls, precision, accuracies): a binomial standard
#: error is their noise where no seed spread was measured. FID, KID, BLEU, CIDEr and scores are not.
PERCENTAGE_METRICS = ("R@", "mean_R", "P@", "accuracy", "(%)")


def is_percentage(metric: str) -> bool:
    return any(part in metric for part in PERCENTAGE_METRICS)


def noise_of(results: dict[str, Any], row: dict[str, Any]) -> tuple[float, str]:
    """A number's noise and where it comes from: the seed spread when measured, else, for a
    percentage of test items, its binomial standard error; else none is known (``"none"``)."""
    for entry in results.get("noise", {}).get("rows", []):
        if (entry["task"], entry["protocol"], entry["method"], entry["metric"]) == (
                row["task"], row["protocol"], row["method"], row["metric"]):
            return float(entry["std"]), "seed std"
    n = int(results.get("test_items", {}).get(row["catalogue"], 0) or 0)
    if not is_percentage(row["metric"]):
        return 0.0, "none"
    if row["task"] == "fig":
        n = min(n or 64, 64)
    return (binomial_noise(row["value"], n), "binomial") if n else (0.0, "none")


# ---------------------------------------------------------------------------- judging a new version
#: Metrics where lower is better; every other is higher-is-better.
LOWER_IS_BETTER = ("FID", "KID", "median rank", "mean rank")


def lower_is_better(metric: str) -> bool:
    return any(metric.startswith(prefix) for prefix in LOWER_IS_BETTER)


def compare(shipped: dict[str, Any], new_rows: Iterable[dict[str, Any]], tag: str) -> list[dict[str, Any]]:
    """One entry per number of ``tag``'s methods measured both in the shipped results and in
    ``new_rows``: before, after, the change (positive: better), its noise and a verdict."""
    before = {row_key(r): r for r in shipped["rows"] if tag_of_method(r["method"]) == tag}
    out = []
    for row in new_rows:
        old = before.get(row_key(row))
        if old is None:
            continue
        sign = -1.0 if lower_is_better(row["metric"]) else 1.0
        gain = sign * (row["value"] - old["value"])
        noise, source = noise_of(shipped, old)
        if source == "none":  # no noise known: reported, but it decides nothing
            verdict = "no noise measured"
        else:
            verdict = "better" if gain > noise else "worse" if gain < -noise else "within noise"
        out.append({"catalogue": row["catalogue"], "task": row["task"], "protocol": row["protocol"],
                    "method": row["method"], "metric": row["metric"], "before": old["value"], "after": row["value"],
                    "gain": gain, "noise": noise, "noise_from": source, "verdict": verdict})
    return out


def judge(comparison: list[dict[str, Any]]) -> dict[str, Any]:
    """The rule for a new version: some number better beyond its noise, none worse beyond it.
    Numbers whose noise is unknown (FID, KID, caption metrics without a seed spread) decide nothing."""
    better = [c for c in comparison if c["verdict"] == "better"]
    worse = [c for c in comparison if c["verdict"] == "worse"]
    replace = bool(better) and not worse
    if not comparison:
        reason = "nothing measured on the shipped protocols"
    elif replace:
        reason = f"{len(better)} numbers better beyond noise, none worse"
    else:
        reason = f"{len(better)} numbers better and {len(worse)} worse beyond noise"
    return {"replace": replace, "reason": reason, "better": len(better), "worse": len(worse),
            "compared": len(comparison)}


def comparison_markdown(comparison: list[dict[str, Any]], verdict: dict[str, Any], title: str) -> str:
    decision = "replace the shipped version" if verdict["replace"] else "keep the shipped version"
    lines = [f"# {title}", "", f"**Verdict: {decision}** ({verdict['reason']}).", "",
             "| catalogue | task | protocol | method | metric | shipped | new | change | noise | verdict |",
             "| --- | --- | --- | --- | --- | ---: | ---: | ---: | ---: | --- |"]
    for c in comparison:
        lines.append(f"| {c['catalogue']} | {c['task']} | {c['protocol']} | {c['method']} | {c['metric']} | "
                     f"{c['before']:.2f} | {c['after']:.2f} | {c['gain']:+.2f} | {c['noise']:.2f} ({c['noise_from']}) "
                     f"| {c['verdict']} |")
    return "\n".join(lines) + "\n"


def write_comparison(out: str | Path, comparison: list[dict[str, Any]], title: str) -> dict[str, Any]:
    """``comparison.json`` and ``comparison.md`` in ``out``; returns the verdict."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    verdict = judge(comparison)
    (out / "comparison.json").write_text(json.dumps({"verdict": verdict, "numbers": comparison}, indent=1) + "\n")
    (out / "comparison.md").write_text(comparison_markdown(comparison, verdict, title))
    return verdict


# ---------------------------------------------------------------------------- the results table
def results_table(results: Sequence[dict[str, Any]], pick: Callable[[dict[str, Any]], bool] | None = None) -> str:
    """One table from the shipped results files: one row per (catalogue, task,
    protocol, metric), one column per method, each number labelled with its protocol."""
    rows = [r for results_file in results for r in results_file["rows"] if pick is None or pick(r)]
    methods: dict[str, None] = {}
    cells: dict[tuple, dict[str, float]] = {}
    for row in rows:
        methods.setdefault(row["method"], None)
        key = (row["catalogue"], row["task"], row["protocol"], row["metric"])
        cells.setdefault(key, {})[row["method"]] = row["value"]
    names = list(methods)
    lines = ["| catalogue | task | protocol | metric | " + " | ".join(names) + " |",
             "| --- | --- | --- | --- | " + " | ".join("---:" for _ in names) + " |"]
    for (catalogue, task, protocol, metric), values in cells.items():
        lines.append(f"| {catalogue} | {task} | {protocol} | {metric} | "
                     + " | ".join(f"{values[m]:.2f}" if m in values else "" for m in names) + " |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------- the whole measurement
SHIPPED_TAGS = ("tiny-default", "dual-encoder-default")


def test_items(catalogue: str | Path) -> int:
    from unifashion.data.synthetic.catalogue import load_catalogue

    return sum(item.split == "test" for item in load_catalogue(catalogue).items)


def training_record(run_dir: str | Path, commit: str) -> dict[str, Any]:
    """How a model was trained, read from its run folder: the commit, the recipe or run config,
    the data, and each stage's steps and wall time."""
    run_dir = Path(run_dir)
    record: dict[str, Any] = {"code_commit": commit, "run_dir": run_dir.name}
    for name, key in (("recipe.json", "recipe"), ("run_config.json", "run_config"), ("data.json", "data"),
                      ("timings.json", "stages")):
        if (run_dir / name).is_file():
            record[key] = json.loads((run_dir / name).read_text())
    return record


def measure_shipped(work: str | Path, training: dict[str, dict[str, Any]], demo_catalogue: str | Path | None = None,
                    noise_seeds: Sequence[int] = NOISE_SEEDS, root: str | Path | None = None,
                    echo: Callable[[str], None] = print) -> list[Path]:
    """Measure the packaged ``tiny-default`` and ``dual-encoder-default`` under every protocol
    (the demo split, the held-out catalogue, the seed noise) in one run and write each tag's
    ``results.json``; ``training``: tag -> :func:`training_record`."""
    work = Path(work)
    rows: list[dict[str, Any]] = []
    items: dict[str, int] = {}
    for protocol in (DEMO_SPLIT, HELD_OUT):
        echo(f"measuring on the {protocol.name} ({protocol.catalogue}): {', '.join(protocol.tasks)}")
        folder = Path(demo_catalogue) if demo_catalogue and protocol is DEMO_SPLIT else ensure_catalogue(work, protocol)
        rows += measure(protocol, "tiny-default", "dual-encoder-default", work, catalogue=folder)
        items[f"{protocol.name} ({protocol.catalogue})"] = test_items(folder)
    held_out = f"{HELD_OUT.name} ({HELD_OUT.catalogue})"
    by_seed = {HELD_OUT.catalogue_seed: [r for r in rows if r["catalogue"] == held_out and r["task"] in NOISE_TASKS]}
    for seed in noise_seeds:
        if seed in by_seed:
            continue
        protocol = Protocol(HELD_OUT.name, HELD_OUT.n_items, seed, NOISE_TASKS)
        echo(f"seed noise: the {protocol.name} of seed {seed} ({', '.join(NOISE_TASKS)})")
        by_seed[seed] = measure(protocol, "tiny-default", "dual-encoder-default", work)
    noise = seed_noise(by_seed) if len(by_seed) > 1 else []
    return [write_results(tag, rows, noise, training.get(tag, {}), items, root) for tag in SHIPPED_TAGS]


#: The results table shows these metrics of each task (every protocol they were measured under).
RESULTS_METRICS: dict[str, tuple[str, ...]] = {
    "cmr": ("mean_R", "i2t_R@1", "t2i_R@1"),
    "cir": ("avg_R@10", "avg_R@50", "avg_(R@10+R@50)/2"),
    "fic": ("BLEU-4", "CIDEr", "colour accuracy", "category accuracy"),
    "fig": ("FID-EffLite0", "attribute accuracy: category (%)", "attribute accuracy: colour (%)",
            "attribute accuracy: pattern (%)"),
    "phrasing": ("P@10",),
}


def results_pick(row: dict[str, Any]) -> bool:
    """Whether a results row goes into the results table: each task's headline metrics, CMR on
    the full gallery, FIC in the detailed style, no ITM re-rank or text-only ablation."""
    if "re-rank" in row["method"] or "w/o img" in row["method"]:
        return False
    if row["task"] == "cmr" and not row["protocol"].startswith("full gallery"):
        return False
    if row["task"] == "fic" and not row["protocol"].startswith("detailed"):
        return False
    return row["metric"] in RESULTS_METRICS.get(row["task"], ())
