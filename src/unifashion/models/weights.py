"""Checkpoint reading and key mappings: BLIP-2 Q-Former weights in the LAVIS and transformers layouts.

Our parameter names (``qformer.encoder.layer.N.attention.attention.query.weight``,
``vision_projection``, ``text_projection``, ``itm_head``...) follow transformers' BLIP-2, so:

* the **transformers** layout (``Blip2Model``, ``Blip2ForImageTextRetrieval``, a bare
  ``Blip2QFormerModel``) maps almost by identity; its ``vision_model.post_layernorm`` is LAVIS's
  ``ln_vision`` and becomes ``qformer.vision_layernorm``;
* the **LAVIS** layout (``Qformer.bert.encoder.layer.N.attention.self.query.weight``,
  ``query_tokens``, ``vision_proj``, ``text_proj``, ``itm_head``, ``temp``, ``ln_vision``) maps by
  renaming ``Qformer.bert.`` -> ``qformer.``, ``.self.`` -> ``.attention.``, the embedding LayerNorm
  -> ``qformer.layernorm`` and the heads' names.

Keys of parts taken from elsewhere (the vision tower, the language model, LAVIS's Q-Former LM head)
are *ignored* and listed as such; keys nobody knows are *unexpected*. Every load returns a
:class:`WeightLoadingReport` and logs it. Checkpoints are read without unpickling arbitrary
objects: safetensors, or ``torch.load(weights_only=True)`` for ``.pth``/``.bin`` files.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

logger = logging.getLogger(__name__)

LAVIS = "lavis"
TRANSFORMERS = "transformers"
TRANSFORMERS_QFORMER = "transformers-qformer"  # a bare Blip2QFormerModel state dict

# Our parameters that a BLIP-2 checkpoint provides.
BLIP2_SCOPE_PREFIXES = ("qformer.", "vision_projection.", "text_projection.", "itm_head.")
_IGNORED = object()  # mapping result for keys we knowingly do not take


@dataclass
class WeightLoadingReport:
    """What a checkpoint load did, in our key names where it concerns our parameters.

    * ``loaded_keys``: our parameters overwritten from the checkpoint;
    * ``missing_keys``: our parameters in the loaded scope that the checkpoint did not provide;
    * ``unexpected_keys``: checkpoint keys the mapping does not know (checkpoint names);
    * ``ignored_keys``: checkpoint keys known to belong to parts loaded elsewhere (checkpoint names);
    * ``mismatched_keys``: (our key, checkpoint shape, our shape) left unloaded.
    """

    layout: str
    source: str
    loaded_keys: list[str] = field(default_factory=list)
    missing_keys: list[str] = field(default_factory=list)
    unexpected_keys: list[str] = field(default_factory=list)
    ignored_keys: list[str] = field(default_factory=list)
    mismatched_keys: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing_keys or self.unexpected_keys or self.mismatched_keys)

    def summary(self) -> str:
        return (
            f"{self.source} ({self.layout} layout): {len(self.loaded_keys)} loaded, "
            f"{len(self.missing_keys)} missing, {len(self.unexpected_keys)} unexpected, "
            f"{len(self.mismatched_keys)} shape-mismatched, {len(self.ignored_keys)} ignored"
        )

    def log(self) -> None:
        logger.info(self.summary())
        if self.missing_keys:
            logger.warning("missing keys (left as initialised): %s", self.missing_keys)
        if self.unexpected_keys:
            logger.warning("unexpected checkpoint keys (not loaded): %s", self.unexpected_keys)
        for key, theirs, ours in self.mismatched_keys:
            logger.warning("shape mismatch for %s: checkpoint %s, model %s", key, theirs, ours)


# ---------------------------------------------------------------------------- reading checkpoints
def read_state_dict(path: str | Path, keep: Callable[[str], bool] | None = None) -> dict[str, torch.Tensor]:
    """Tensors of a checkpoint file or directory, optionally only the keys ``keep`` accepts.

    A directory is read from its ``*.safetensors`` files (all shards), else from ``*.bin`` /
    ``*.pth`` files. ``.pth``/``.bin``/``.pt`` files go through ``torch.load(weights_only=True)``;
    a LAVIS-style ``{"model": state_dict}`` wrapper is unwrapped.
    """
    path = Path(path).expanduser()
    if path.is_dir():
        files = sorted(path.glob("*.safetensors")) or sorted(
            p for p in path.iterdir() if p.suffix in (".bin", ".pth", ".pt")
        )
        if not files:
            raise FileNotFoundError(f"no checkpoint files (*.safetensors, *.bin, *.pth) in {path}")
    elif path.is_file():
        files = [path]
    else:
        raise FileNotFoundError(f"checkpoint not found: {path}")

    state: dict[str, torch.Tensor] = {}
    for file in files:
        if file.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(file), framework="pt") as handle:
                for key in handle.keys():  # noqa: SIM118 - safe_open handles are not iterable
                    if keep is None or keep(key):
                        state[key] = handle.get_tensor(key)
        else:
            loaded = torch.load(str(file), map_location="cpu", weights_only=True)
            for wrapper in ("model", "state_dict"):
                if isinstance(loaded, dict) and isinstance(loaded.get(wrapper), dict):
                    loaded = loaded[wrapper]
            if not isinstance(loaded, dict):
                raise ValueError(f"{file} does not hold a state dict (got {type(loaded).__name__})")
            state.update({k: v for k, v in loaded.items() if keep is None or keep(k)})
    return state


# ---------------------------------------------------------------------------- key mappings
_LAVIS_LAYER = re.compile(r"^Qformer\.bert\.encoder\.layer\.(\d+)\.(.*)$")
_LAVIS_RENAMES = {
    "query_tokens": "qformer.query_tokens",
    "temp": "temperature",
    "Qformer.bert.embeddings.word_embeddings.weight": "qformer.embeddings.word_embeddings.weight",
    "Qformer.bert.embeddings.position_embeddings.weight": "qformer.embeddings.position_embeddings.weight",
    "Qformer.bert.embeddings.LayerNorm.weight": "qformer.layernorm.weight",
    "Qformer.bert.embeddings.LayerNorm.bias": "qformer.layernorm.bias",
    "ln_vision.weight": "qformer.vision_layernorm.weight",
    "ln_vision.bias": "qformer.vision_layernorm.bias",
}
_LAVIS_HEADS = {"vision_proj.": "vision_projection.", "text_proj.": "text_projection.", "itm_head.": "itm_head."}
# Parts of LAVIS checkpoints we take from elsewhere or do not use.
_LAVIS_IGNORED_PREFIXES = (
    "visual_encoder.",  # the vision tower: loaded by the vision encoder
    "Qformer.cls.",  # BLIP-2's Q-Former LM head: UniFashion's ITG runs through the LLM
    "Qformer.bert.embeddings.position_ids",  # a buffer
    "opt_model.", "t5_model.", "llm_model.", "opt_proj.", "t5_proj.", "llm_proj.",  # LLM side
)


def lavis_key_to_ours(key: str):
    """Our key for a LAVIS BLIP-2 key; ``_IGNORED`` for known unused keys; None if unknown."""
    if key in _LAVIS_RENAMES:
        return _LAVIS_RENAMES[key]
    for prefix, ours in _LAVIS_HEADS.items():
        if key.startswith(prefix):
            return ours + key[len(prefix):]
    match = _LAVIS_LAYER.match(key)
    if match:
        index, rest = match.groups()
        rest = re.sub(r"^(attention|crossattention)\.self\.", r"\1.attention.", rest)
        return f"qformer.encoder.layer.{index}.{rest}"
    if key.startswith(_LAVIS_IGNORED_PREFIXES):
        return _IGNORED
    return None


_TRANSFORMERS_IGNORED_PREFIXES = ("vision_model.", "language_model.", "language_projection.")
# Tensors of the vision tower and the LLM: not read from disk at all when loading the Q-Former.
_LARGE_UNUSED_PREFIXES = (
    "visual_encoder.", "opt_model.", "t5_model.", "llm_model.", "language_model.", "vision_model."
)


def transformers_key_to_ours(key: str):
    """Our key for a transformers ``Blip2*`` key; ``_IGNORED`` for known unused keys; None if unknown."""
    if key == "query_tokens":
        return "qformer.query_tokens"
    if key.startswith("vision_model.post_layernorm."):
        return "qformer.vision_layernorm." + key.rsplit(".", 1)[1]
    if key.startswith(("embeddings.word_embeddings.", "embeddings.position_embeddings.")):
        return "qformer." + key
    if key.startswith(("qformer.layernorm.", "qformer.encoder.layer.")):
        return key
    if key.startswith(("vision_projection.", "text_projection.", "itm_head.")):
        return key
    if key.startswith(_TRANSFORMERS_IGNORED_PREFIXES) or key.endswith("position_ids"):
        return _IGNORED
    return None


def transformers_qformer_key_to_ours(key: str):
    """A bare ``Blip2QFormerModel`` state dict (``encoder.layer.N...``, ``layernorm``)."""
    return transformers_key_to_ours("qformer." + key)


def detect_layout(keys) -> str:
    """Which BLIP-2 layout a set of checkpoint keys is in."""
    keys = list(keys)
    if any(k.startswith("Qformer.") for k in keys):
        return LAVIS
    if any(k.startswith("qformer.") for k in keys):
        return TRANSFORMERS
    if any(k.startswith("encoder.layer.") for k in keys):
        return TRANSFORMERS_QFORMER
    raise ValueError("not a BLIP-2 Q-Former checkpoint: no 'Qformer.', 'qformer.' or 'encoder.layer.' keys")


_MAPPERS = {
    LAVIS: lavis_key_to_ours,
    TRANSFORMERS: transformers_key_to_ours,
    TRANSFORMERS_QFORMER: transformers_qformer_key_to_ours,
}


def _scope_for(layout: str, our_keys: list[str]) -> set[str]:
    """Our keys a checkpoint of ``layout`` is expected to fill."""
    scope = {k for k in our_keys if k.startswith(BLIP2_SCOPE_PREFIXES)}
    if layout == LAVIS:
        scope.add("temperature")  # LAVIS stores its learnable temperature; transformers does not
    if layout == TRANSFORMERS_QFORMER:
        # A bare Q-Former has no text embeddings, queries, heads or vision LayerNorm.
        scope = {
            k for k in scope
            if k.startswith(("qformer.encoder.", "qformer.layernorm."))
        }
    return scope & set(our_keys)


def load_blip2_weights(
    model: nn.Module,
    checkpoint: str | Path | dict[str, torch.Tensor],
    layout: str | None = None,
) -> WeightLoadingReport:
    """Load BLIP-2 Q-Former (+ ITC/ITM heads) weights into a UniFashion model.

    ``checkpoint`` is a path (file or directory) or an in-memory state dict; ``layout`` is detected
    from the keys when None. Tensors are copied into the matching parameters; shape mismatches are
    reported, not loaded. Returns the report (also logged).
    """
    source = str(checkpoint) if not isinstance(checkpoint, dict) else "<state dict>"
    skipped: list[str] = []
    if isinstance(checkpoint, dict):
        state = checkpoint
    else:
        # Read only what can be ours: the (large) vision-tower and LLM tensors are listed, not read.
        def keep(key: str) -> bool:
            large = key.startswith(_LARGE_UNUSED_PREFIXES) and "post_layernorm" not in key
            if large:
                skipped.append(key)
            return not large

        state = read_state_dict(checkpoint, keep)
    layout = layout or detect_layout(state)
    if layout not in _MAPPERS:
        raise ValueError(f"unknown layout {layout!r}; expected one of {sorted(_MAPPERS)}")
    to_ours = _MAPPERS[layout]

    ours = model.state_dict()
    report = WeightLoadingReport(layout=layout, source=source, ignored_keys=sorted(skipped))
    mapped: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        target = to_ours(key)
        if target is _IGNORED:
            report.ignored_keys.append(key)
        elif target is None or target not in ours:
            report.unexpected_keys.append(key)
        elif tuple(tensor.shape) != tuple(ours[target].shape):
            if target == "temperature" and tensor.numel() == 1:  # LAVIS stores a 0-d or 1-element temp
                mapped[target] = tensor.reshape(ours[target].shape)
            else:
                report.mismatched_keys.append((target, tuple(tensor.shape), tuple(ours[target].shape)))
        else:
            mapped[target] = tensor

    with torch.no_grad():
        for key, tensor in mapped.items():
            ours[key].copy_(tensor.to(ours[key].dtype))
    report.loaded_keys = sorted(mapped)
    mismatched = {k for k, _, _ in report.mismatched_keys}
    report.missing_keys = sorted(_scope_for(layout, list(ours)) - set(mapped) - mismatched)
    report.log()
    return report
