"""Caption metrics: BLEU-4, METEOR, ROUGE-L and CIDEr with pycocoevalcap (the COCO caption toolkit).

METEOR and the PTB tokenizer run Java. Where there is no Java (a new user's machine often has none)
the captions are tokenised by :func:`simple_tokenize` instead and METEOR is skipped: BLEU, ROUGE-L
and CIDEr are pure Python. :func:`caption_toolkit` says which was used, so every row can say it.
SPICE is left out: it needs a download.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Mapping, Sequence

#: What a Java-less machine is told, once, when caption metrics fall back.
JAVA_HINT = ("caption metrics: no Java here, so METEOR is skipped and captions are tokenised without the PTB "
             "tokenizer; install a Java runtime (e.g. `apt-get install default-jre-headless`) for the paper's")
# pycocoevalcap's PTBTokenizer drops these tokens after tokenising.
_PUNCTUATION = re.compile(r"[.?!,:;\-\"`()\[\]{}]+")
_TOKEN = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


def java_available() -> bool:
    return shutil.which("java") is not None


def caption_toolkit() -> str:
    """How :func:`caption_metrics` scores here: the PTB tokenizer with METEOR (Java), or the fallback."""
    return "pycocoevalcap, PTB tokenizer" if java_available() else \
        "pycocoevalcap, simple tokenizer, no METEOR (no Java)"


def simple_tokenize(captions: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    """The PTB tokenizer's output without Java: lower case, words split at spaces and punctuation,
    punctuation dropped, tokens joined by single spaces (what pycocoevalcap's scorers read)."""
    return {key: [" ".join(_TOKEN.findall(_PUNCTUATION.sub(" ", text.lower()))) for text in texts]
            for key, texts in captions.items()}


def caption_metrics(references: Mapping[str, Sequence[str]] | Sequence[Sequence[str]],
                    predictions: Mapping[str, str] | Sequence[str], meteor: bool = True) -> dict[str, float]:
    """Corpus-level BLEU-1..4, METEOR, ROUGE-L and CIDEr, as fractions (COCO's convention).

    ``references`` maps an id (or position) to one or more reference captions, ``predictions`` the
    same ids to one generated caption each. Both are tokenised with the PTB tokenizer first (Java);
    without Java, with :func:`simple_tokenize`, and METEOR is left out of the result.
    """
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    if not isinstance(references, Mapping):
        references = {str(i): refs for i, refs in enumerate(references)}
    if not isinstance(predictions, Mapping):
        predictions = {str(i): p for i, p in enumerate(predictions)}
    if set(references) != set(predictions):
        missing = sorted(set(references) ^ set(predictions))[:5]
        raise ValueError(f"references and predictions must have the same ids; they differ at {missing}")
    if not references:
        raise ValueError("no captions to score")
    java = java_available()
    if java:
        tokenizer = PTBTokenizer()
        gts = tokenizer.tokenize({k: [{"caption": c} for c in refs] for k, refs in references.items()})
        res = tokenizer.tokenize({k: [{"caption": p}] for k, p in predictions.items()})
    else:
        gts = simple_tokenize(references)
        res = simple_tokenize({k: [p] for k, p in predictions.items()})
    out: dict[str, float] = {}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    for n, value in enumerate(bleu, 1):
        out[f"BLEU-{n}"] = float(value)
    if meteor and java:
        from pycocoevalcap.meteor.meteor import Meteor

        scorer = Meteor()
        out["METEOR"] = float(scorer.compute_score(gts, res)[0])
        del scorer  # stops its Java process
    out["ROUGE-L"] = float(Rouge().compute_score(gts, res)[0])
    out["CIDEr"] = float(Cider().compute_score(gts, res)[0])
    return out


#: Attributes a detailed caption states, compared with the item's own when it has them.
CAPTION_ATTRIBUTES = ("category", "colour", "lightness", "pattern", "sleeve", "length", "fit", "neckline")


def caption_attribute_accuracy(captions: Sequence[str], attributes: Sequence[Mapping]) -> dict[str, float]:
    """Detailed captions read back to attributes (:func:`unifashion.data.mining.parse_detailed_caption`,
    as triplet mining reads them) against the items' own: the percentage right per attribute,
    over the items that have it, and ``parsed``, the percentage that parse at all. A caption that
    does not parse counts as wrong on every attribute."""
    from unifashion.data.mining import CaptionParseError, parse_detailed_caption

    if len(captions) != len(attributes):
        raise ValueError(f"{len(captions)} captions for {len(attributes)} items")
    right = {name: 0 for name in CAPTION_ATTRIBUTES}
    total = {name: 0 for name in CAPTION_ATTRIBUTES}
    parsed = 0
    for caption, truth in zip(captions, attributes, strict=True):
        try:
            stated = parse_detailed_caption(caption)
            parsed += 1
        except CaptionParseError:
            stated = {}
        for name in CAPTION_ATTRIBUTES:
            if name in truth:
                total[name] += 1
                right[name] += int(stated.get(name) == truth[name])
    out = {f"{name} accuracy": 100.0 * right[name] / total[name] for name in CAPTION_ATTRIBUTES if total[name]}
    out["parsed"] = 100.0 * parsed / max(1, len(captions))
    return out
