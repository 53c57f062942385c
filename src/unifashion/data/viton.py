"""VITON-HD (Choi et al., CVPR 2021) and its MGD extension (Baldrati et al., ICCV 2023).

Layout read here (VITON-HD as distributed, plus MGD's sketches and captions)::

    {root}/{split}_pairs.txt                  lines "person.jpg cloth.jpg" (split: train, test)
    {root}/{split}/image/{person}.jpg         the person photo
    {root}/{split}/cloth/{cloth}.jpg          the in-shop garment
    {root}/{split}/agnostic-mask/{stem}_mask.png   the region to repaint (VITON-HD naming)
    {root}/{split}/agnostic-v3.2/{person}.jpg      optional: the person with that region greyed
    {root}/{split}/im_sketch/{stem}.png            optional (MGD): sketch of the person's own garment
    {root}/{split}/im_sketch_unpaired/{stem}_{cloth_stem}.png  optional (MGD): sketch of the
                                                   pairs-file garment, named per pair
    {root}/captions.json                      optional (MGD): {"03191": ["white detail tee", ...]}

Settings, as the try-on papers evaluate them:

- ``paired``: the garment is the one the person wears; in VITON-HD it has the person image's
  file name (``cloth/03191_00.jpg`` for ``image/03191_00.jpg``), whatever the pairs file says.
  The sketch is ``im_sketch/{person_stem}.png``.
- ``unpaired``: the garment is the pairs file's second column. The sketch is
  ``im_sketch_unpaired/{person_stem}_{cloth_stem}.png`` (MGD names unpaired sketches per pair).

MGD keys ``captions.json`` by the garment's product number, the file stem before the first "_"
(``03191`` for ``03191_00.jpg``) and joins the phrases with ", "; we do the same, after first
trying the full stem, so that a catalogue that keys captions by full stem (as our own try-on
views may) reads too. A garment without a caption gets ``text=""``.

Only the pairs file, the captions file and the folders are read at load time; records carry
paths, and :func:`check_tryon_files` names missing files when you want to know up front.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

from unifashion.data.errors import DatasetFormatError, DatasetNotFoundError
from unifashion.data.records import TryOnRecord

VITON_SPLITS = ("train", "test")
DEFAULT_CAPTIONS_FILE = "captions.json"


def pairs_file(root: str | Path, split: str) -> Path:
    return Path(root) / f"{split}_pairs.txt"


def read_pairs(path: str | Path) -> list[tuple[str, str]]:
    """The (person image, cloth image) file names of a pairs file, in order.

    A non-blank line that is not two whitespace-separated file names raises
    :class:`DatasetFormatError` naming the file and the line number.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetNotFoundError(path, "VITON-HD pairs file missing")
    pairs = []
    with path.open(encoding="utf-8") as f:
        for line_number, line in enumerate(f, start=1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != 2:
                raise DatasetFormatError(
                    path,
                    f"line {line_number}: expected 'person_image cloth_image', "
                    f"got {len(fields)} field(s): {line.strip()[:120]!r}",
                )
            pairs.append((fields[0], fields[1]))
    return pairs


def read_captions(path: str | Path) -> dict[str, str]:
    """MGD's ``captions.json``: {key: [phrases]} (or {key: text}) -> {key: "phrase, phrase"}."""
    path = Path(path)
    if not path.is_file():
        raise DatasetNotFoundError(path, "captions file missing")
    try:
        with path.open(encoding="utf-8") as f:
            raw = json.load(f)
    except json.JSONDecodeError as exc:
        raise DatasetFormatError(path, f"not valid JSON ({exc})") from exc
    if not isinstance(raw, dict):
        raise DatasetFormatError(path, f"expected a JSON object {{garment: [phrases]}}, got {type(raw).__name__}")
    captions = {}
    for key, value in raw.items():
        if isinstance(value, str):
            captions[key] = value.strip()
        elif isinstance(value, list) and all(isinstance(v, str) for v in value):
            captions[key] = ", ".join(v.strip() for v in value if v.strip())
        else:
            raise DatasetFormatError(path, f"caption of {key!r} must be a string or a list of strings, got {value!r}")
    return captions


def _caption_for(garment_stem: str, captions: dict[str, str]) -> str:
    if garment_stem in captions:
        return captions[garment_stem]
    return captions.get(garment_stem.split("_")[0], "")


def load_viton(
    root: str | Path,
    split: str = "test",
    setting: Literal["paired", "unpaired"] = "paired",
    captions_file: str | Path | None = None,
    mask_suffix: str = "_mask.png",
) -> list[TryOnRecord]:
    """Try-on records of ``split`` in the ``paired`` or ``unpaired`` setting.

    ``captions_file`` defaults to ``{root}/captions.json`` when that file exists (no texts
    otherwise); a path given explicitly must exist. ``mask_suffix`` names the agnostic masks:
    ``{person_stem}{mask_suffix}`` in ``agnostic-mask/``.
    """
    root = Path(root)
    if setting not in ("paired", "unpaired"):
        raise ValueError(f"setting must be 'paired' or 'unpaired', got {setting!r}")
    split_dir = root / split
    for folder in ("image", "cloth", "agnostic-mask"):
        if not (split_dir / folder).is_dir():
            raise DatasetNotFoundError(split_dir / folder, f"VITON-HD {folder!r} folder missing")
    pairs = read_pairs(pairs_file(root, split))

    if captions_file is None:
        default = root / DEFAULT_CAPTIONS_FILE
        captions = read_captions(default) if default.is_file() else {}
    else:
        captions_path = Path(captions_file)
        captions = read_captions(captions_path if captions_path.is_absolute() else root / captions_path)

    masked_dir = split_dir / "agnostic-v3.2"
    sketch_dir = split_dir / ("im_sketch" if setting == "paired" else "im_sketch_unpaired")
    has_masked = masked_dir.is_dir()
    has_sketch = sketch_dir.is_dir()

    records = []
    for person, cloth in pairs:
        person_stem = Path(person).stem
        garment = person if setting == "paired" else cloth
        garment_stem = Path(garment).stem
        sample_id = person_stem if garment_stem == person_stem else f"{person_stem}_{garment_stem}"
        sketch_name = f"{person_stem}.png" if setting == "paired" else f"{person_stem}_{garment_stem}.png"
        records.append(
            TryOnRecord(
                sample_id=sample_id,
                person=split_dir / "image" / person,
                garment=split_dir / "cloth" / garment,
                agnostic_mask=split_dir / "agnostic-mask" / f"{person_stem}{mask_suffix}",
                sketch=sketch_dir / sketch_name if has_sketch else None,
                text=_caption_for(garment_stem, captions),
                garment_id=garment_stem,
                masked_person=masked_dir / person if has_masked else None,
            )
        )
    return records


def check_tryon_files(records: Iterable[TryOnRecord]) -> None:
    """Raise :class:`DatasetNotFoundError` naming the first missing file and how many are missing."""
    paths: list[Path] = []
    for r in records:
        for source in (r.person, r.garment, r.agnostic_mask, r.sketch, r.masked_person):
            if isinstance(source, (str, Path)):
                paths.append(Path(source))
    missing = [p for p in paths if not p.is_file()]
    if missing:
        examples = ", ".join(str(p) for p in missing[1:4])
        hint = f"{len(missing)} of {len(paths)} try-on files missing"
        if examples:
            hint += f"; also {examples}" + (", ..." if len(missing) > 4 else "")
        raise DatasetNotFoundError(missing[0], hint)
