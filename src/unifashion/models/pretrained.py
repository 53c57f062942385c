"""Trained models by tag, as open_clip's pretrained registry: where each lives and how it is made.

Nothing is downloaded. A tag names a model trained *here*, once, by a recipe of this package, and
cached under ``$UNIFASHION_HOME`` (default ``~/.cache/unifashion``). ``make demo`` trains the
default tag on first use; ``UniFashion.from_pretrained(TAG)`` then loads it offline.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

TRAINED_TAGS: dict[str, dict[str, str]] = {
    "tiny-default": {
        "preset": "tiny",
        "recipe": "unifashion.training.recipe.default_recipe",
        "data": "the embedded catalogue (2,000 items, seed 0) + 1,000 Fashion-MNIST pairs",
        "how": "unifashion train --install-as tiny-default",
    },
}


def home() -> Path:
    return Path(os.environ.get("UNIFASHION_HOME", Path.home() / ".cache" / "unifashion")).expanduser()


def trained_model_dir(tag: str) -> Path:
    if tag not in TRAINED_TAGS:
        raise KeyError(f"unknown trained model tag {tag!r}; tags: {sorted(TRAINED_TAGS)}")
    return home() / "models" / tag


def is_trained(tag: str) -> bool:
    return (trained_model_dir(tag) / "config.json").is_file()


def install(tag: str, model_dir: str | Path) -> Path:
    """Copy a trained model folder to the tag's place."""
    return install_folder(model_dir, trained_model_dir(tag))


def install_folder(source: str | Path, target: Path) -> Path:
    """Copy ``source`` to ``target`` through a temporary name, so a crash never leaves half a model."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    shutil.copytree(source, tmp)
    if target.exists():
        shutil.rmtree(target)
    tmp.rename(target)
    return target


def missing_message(tag: str) -> str:
    info = TRAINED_TAGS[tag]
    return (f"the trained model {tag!r} is not in {trained_model_dir(tag)}; it is trained here, not downloaded: "
            f"run `{info['how']}` or `make demo` (about an hour on 2 CPU cores), then load it again")
