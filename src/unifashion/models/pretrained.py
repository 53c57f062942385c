"""Trained models by tag, as open_clip's pretrained registry: where each lives and how it is made.

Nothing is downloaded. A tag names a model trained by a recipe of this package. It is found in
one of two places, in this order:

1. **packaged**: ``unifashion/weights/TAG/`` inside the installed package (package data), a
   folder written by :func:`package`: the weights in float16 without the tensors a wheel already
   ships, the tokenizers and a ``manifest.json`` with every file's size and sha256, checked on
   each load (:mod:`unifashion.models.artifact`);
2. **trained here**: ``$UNIFASHION_HOME/models/TAG`` (default ``~/.cache/unifashion``), installed
   by ``unifashion train --install-as TAG`` (``make demo`` trains the default tag on first use).

``UniFashion.from_pretrained(TAG)`` loads the first it finds (:func:`locate`), offline.
"""

from __future__ import annotations

import json
import os
import shutil
from importlib import resources
from pathlib import Path

from unifashion.models import artifact
from unifashion.models.config import (
    CONFIG_NAME,
    DUAL_ENCODER_CONFIG_NAME,
    WEIGHTS_NAME,
    DualEncoderConfig,
    UniFashionConfig,
)

TRAINED_TAGS: dict[str, dict[str, str]] = {
    "tiny-default": {
        "kind": "unifashion",
        "preset": "tiny",
        "recipe": "unifashion.training.recipe.default_recipe",
        "data": "the embedded catalogue (2,000 items, seed 0) + 1,000 Fashion-MNIST pairs",
        "how": "unifashion train --install-as tiny-default",
    },
    # The retrieval baseline the demo and the experiments compare against.
    "dual-encoder-default": {
        "kind": "dual_encoder",
        "preset": "dual encoder (EfficientNet-Lite0 + all-MiniLM-L6-v2)",
        "recipe": "unifashion.training.baselines.train_dual_encoder",
        "data": "the embedded catalogue (2,000 items, seed 0) + 1,000 Fashion-MNIST pairs",
        "how": "unifashion train-baseline --install-as dual-encoder-default",
    },
}

# What the packaged folders may take together, every tag's (the presets: docs/architecture.md).
PACKAGED_MAX_BYTES = 50_000_000


def home() -> Path:
    return Path(os.environ.get("UNIFASHION_HOME", Path.home() / ".cache" / "unifashion")).expanduser()


def _check_tag(tag: str) -> None:
    if tag not in TRAINED_TAGS:
        raise KeyError(f"unknown trained model tag {tag!r}; tags: {sorted(TRAINED_TAGS)}")


def trained_model_dir(tag: str) -> Path:
    """Where the model trained here for ``tag`` is installed (under ``$UNIFASHION_HOME``)."""
    _check_tag(tag)
    return home() / "models" / tag


def config_name(tag: str) -> str:
    """The config file that marks a folder of ``tag``'s kind of model."""
    _check_tag(tag)
    return DUAL_ENCODER_CONFIG_NAME if TRAINED_TAGS[tag]["kind"] == "dual_encoder" else CONFIG_NAME


def is_trained(tag: str) -> bool:
    """Whether a model for ``tag`` was trained and installed here (the packaged one aside)."""
    return (trained_model_dir(tag) / config_name(tag)).is_file()


def packaged_root() -> Path:
    """The package data folder of the shipped models, ``unifashion/weights``."""
    return Path(str(resources.files("unifashion"))) / "weights"


def packaged_model_dir(tag: str) -> Path:
    _check_tag(tag)
    return packaged_root() / tag


def is_packaged(tag: str) -> bool:
    """Whether the installed package ships a folder for ``tag`` (whole or not: :func:`locate` checks)."""
    return packaged_model_dir(tag).is_dir()


def is_available(tag: str) -> bool:
    """Whether ``from_pretrained(tag)`` has a folder to load, packaged or trained here."""
    return is_packaged(tag) or is_trained(tag)


def _remedy(tag: str) -> str:
    return f"reinstall the package or run `{TRAINED_TAGS[tag]['how']}`"


def locate(tag: str) -> Path:
    """The folder ``from_pretrained(tag)`` loads: the packaged one, checked against its manifest,
    else the one trained here (checked too if it has a manifest). Raises
    :class:`~unifashion.models.artifact.ModelArtifactError` for a packaged folder that is not
    whole, and ``FileNotFoundError`` (:func:`missing_message`) when there is neither."""
    packaged = packaged_model_dir(tag)
    if packaged.is_dir():
        artifact.verify_folder(packaged, remedy=_remedy(tag), required=True)
        return packaged
    if is_trained(tag):
        cached = trained_model_dir(tag)
        artifact.verify_folder(cached, remedy=f"run `{TRAINED_TAGS[tag]['how']}` again")
        return cached
    raise FileNotFoundError(missing_message(tag))


def package(
    tag: str,
    model_dir: str | Path,
    dtype: str | None = "float16",
    root: str | Path | None = None,
    max_bytes: int = PACKAGED_MAX_BYTES,
) -> Path:
    """Write the packaged folder of ``tag`` from a trained model folder (``save_pretrained``'s
    output) and return it: the model's files only, the weights in ``dtype`` (``"float16"``, or
    ``"int8"`` with per-row scales) with the wheel parts left out
    (:func:`~unifashion.models.artifact.compact_weights`), and a ``manifest.json``.

    ``root`` defaults to :func:`packaged_root` (in a source checkout: ``src/unifashion/weights``,
    to be committed). The folder is built beside the target and moved in place only when whole and
    when it and the other tags' packaged folders under ``root`` take at most ``max_bytes``
    together; over it, :class:`~unifashion.models.artifact.ModelArtifactError` lists the largest
    files and nothing is written.
    """
    _check_tag(tag)
    root = Path(root if root is not None else packaged_root())
    target = root / tag
    tmp = _staging(target)
    others = sum(folder_bytes(root / other) for other in TRAINED_TAGS if other != tag and (root / other).is_dir())
    try:
        if TRAINED_TAGS[tag]["kind"] == "dual_encoder":
            tmp.mkdir(parents=True)
            for name in (DUAL_ENCODER_CONFIG_NAME, WEIGHTS_NAME):
                if not (Path(model_dir) / name).is_file():
                    raise FileNotFoundError(f"{model_dir} is not a saved dual encoder: it has no {name}")
                shutil.copy2(Path(model_dir) / name, tmp / name)
            config = DualEncoderConfig.from_dict(json.loads((tmp / DUAL_ENCODER_CONFIG_NAME).read_text()))
        else:
            artifact.copy_model_folder(model_dir, tmp)
            config = UniFashionConfig.load(tmp / CONFIG_NAME)
        artifact.compact_weights(tmp / WEIGHTS_NAME, config, dtype=dtype, leave_out_wheel_parts=True)
        kind = TRAINED_TAGS[tag]["kind"]
        components = artifact.split_weights(
            tmp, artifact.DUAL_ENCODER_COMPONENTS if kind == "dual_encoder" else artifact.UNIFASHION_COMPONENTS)
        kept = keep_unchanged_components(tmp, target, Path(model_dir) / WEIGHTS_NAME, components)
        if (target / artifact.RESULTS_NAME).is_file():
            shutil.copy2(target / artifact.RESULTS_NAME, tmp / artifact.RESULTS_NAME)  # until new numbers replace them
        manifest = artifact.write_manifest(tmp, components=components, tag=tag, preset=TRAINED_TAGS[tag]["preset"],
                                           unchanged_components=kept)
        if others + manifest["total_bytes"] > max_bytes:
            largest = sorted(manifest["files"], key=lambda entry: -entry["size"])[:3]
            raise artifact.ModelArtifactError(
                f"the packaged folder of {tag!r} would take {manifest['total_bytes']:,} bytes (the other packaged "
                f"tags {others:,}), over the {max_bytes:,} allowed together; largest: "
                + ", ".join(f"{e['path']} {e['size']:,}" for e in largest)
            )
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return _move_into_place(tmp, target)


def keep_unchanged_components(new: Path, previous: Path, source_weights: Path, components: list[dict]) -> list[str]:
    """Put the previous version's file in place of each new component file whose tensors are the
    previous file's exactly (read back as a load reads them, against the trained model's own
    full-precision tensors), so that a component that did not change is re-committed byte for
    byte. Returns the names of the components kept."""
    from safetensors.torch import load_file

    if not previous.is_dir():
        return []
    source = load_file(str(source_weights))
    kept = []
    for entry in components:
        old = previous / entry["file"]
        if not old.is_file():
            continue
        keys = artifact.read_weights(new / entry["file"])[0].keys()
        if keys <= source.keys() and artifact.same_tensors(old, {key: source[key] for key in keys}):
            shutil.copy2(old, new / entry["file"])
            kept.append(entry["name"])
    return kept


def folder_bytes(directory: str | Path) -> int:
    return sum(path.stat().st_size for path in Path(directory).rglob("*") if path.is_file())


def install(tag: str, model_dir: str | Path) -> Path:
    """Copy a trained model folder to the tag's place."""
    return install_folder(model_dir, trained_model_dir(tag))


def install_folder(source: str | Path, target: Path) -> Path:
    """Copy ``source`` to ``target`` through a temporary name, so a crash never leaves half a model."""
    tmp = _staging(target)
    shutil.copytree(source, tmp)
    return _move_into_place(tmp, target)


def _staging(target: Path) -> Path:
    """An empty-to-be temporary name beside ``target``, where a folder is built before it replaces it."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    return tmp


def _move_into_place(tmp: Path, target: Path) -> Path:
    if target.exists():
        shutil.rmtree(target)
    tmp.rename(target)
    return target


def missing_message(tag: str) -> str:
    info = TRAINED_TAGS[tag]
    return (f"the trained model {tag!r} is not in {trained_model_dir(tag)} (nor packaged, in "
            f"{packaged_model_dir(tag)}); it is trained here, not downloaded: "
            f"run `{info['how']}` or `make demo` (about an hour on 2 CPU cores), then load it again")


def model_label(spec: str | Path, identity: str | None = None) -> str:
    """How a result file names a model: its tag (a registered tag, or a folder's own name), never a
    path of the machine that measured it, with the weights' identity (sha256) when known."""
    name = str(spec) if str(spec) in TRAINED_TAGS or str(spec) in ("tiny", "paper") else Path(spec).name
    return f"{name} (weights sha256 {identity[:16]})" if identity else name
