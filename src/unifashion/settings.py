"""The defaults of inference and search, one home for each: the model, the pipelines, the CLI's
flags, the service's request fields, both index backends, the evaluation and the benchmarks read
them from here. The lowest layer: it imports nothing of the project.

Generation has three settings, each a protocol of its own:

* :data:`GENERATION`: what ``UniFashion.generate``, the search and try-on pipelines, ``unifashion
  generate`` and the service draw with unless told otherwise. DPM-Solver++ at 20 steps:
  benchmarks/results/generation.json (benchmarks/bench_generation.py compares it with
  :data:`TEXT_TO_IMAGE_EVAL`) measured it as good as PLMS (``pndm``) at 50 steps (FID-EffLite0
  691 vs 696, attribute accuracies within a few points) at 2.2 times the speed.
* :data:`TEXT_TO_IMAGE_EVAL`: the text-to-image evaluation (``eval --tasks fig``). The shipped
  models' results (src/unifashion/weights/*/results.json) were measured at it and their protocol
  labels name it: change it only with new results.
* :data:`TRYON_EVAL`: the design / try-on evaluation (``unifashion tryon``).

Guidance is 3.0 in all three: the value the shipped results were measured at, so that what a
user draws by default is what the results describe.
"""

from __future__ import annotations

from dataclasses import dataclass

SAMPLERS = ("pndm", "dpmsolver++")  # PLMS (diffusers' PNDM without its Runge-Kutta steps), DPM-Solver++
MAX_GENERATION_STEPS = 100  # the service's cap on denoising steps per request (``serve --max-steps``)


@dataclass(frozen=True)
class GenerationSettings:
    """How images are sampled: the sampler (one of :data:`SAMPLERS`), its denoising steps and the
    classifier-free guidance scale (``eps = eps(null) + w (eps(c) - eps(null))``; w <= 1: none)."""

    sampler: str
    steps: int
    guidance: float

    def __post_init__(self):
        if self.sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {SAMPLERS}, got {self.sampler!r}")

    def label(self) -> str:
        """How a protocol names these settings, e.g. ``"pndm 50 steps, guidance 3.0"``."""
        return f"{self.sampler} {self.steps} steps, guidance {self.guidance}"


GENERATION = GenerationSettings(sampler="dpmsolver++", steps=20, guidance=3.0)
TEXT_TO_IMAGE_EVAL = GenerationSettings(sampler="pndm", steps=50, guidance=3.0)
TRYON_EVAL = GenerationSettings(sampler="dpmsolver++", steps=15, guidance=3.0)


@dataclass(frozen=True)
class SearchSettings:
    """The catalogue index's search defaults, the same for the local and the Milvus backend.

    ``candidates``: items the ANN stage proposes for the exact max-sim re-rank (at least
    ``10 * top_k``). benchmarks/bench_search.py (results/search.md, trained embeddings, 1M items):
    composed queries need 800 (their fused index has half the sub-quantisers): 400 gave recall@10
    0.95, 800 gave 0.99; text queries reach 1.00 with either. ``nprobe``: IVF lists a search
    visits (16 of 1024 keeps recall@10 >= 0.989 at 1M items, as 32 and 64 do, at half the list
    scan). ``text_nprobe`` / ``text_hits``: the image-to-text stage's lists searched and texts
    proposed per image query vector (1M texts: recall@10 0.989, 0.996 counting ties, in 6.3 ms; 40
    hits gave 0.912).
    ``fusion_weight``: the weight of the caption term ``<e, Z_C>`` of caption fusion (the paper's
    sum) and of the fused index an index builds for it.
    """

    candidates: int = 800
    nprobe: int = 16
    text_nprobe: int = 16
    text_hits: int = 160
    fusion_weight: float = 1.0

    def candidates_for(self, top_k: int) -> int:
        """The re-rank depth of a search for ``top_k`` results."""
        return max(self.candidates, 10 * int(top_k))


SEARCH = SearchSettings()
