"""Evaluation: the paper's protocols for CMR, CIR, FIC and FIG, and their metrics."""

from unifashion.evaluation.captioning import caption_metrics
from unifashion.evaluation.generation import fid, kid
from unifashion.evaluation.retrieval import (
    CandidateDraw,
    CIRResult,
    CMRResult,
    cir_fashioniq,
    cmr_full_gallery,
    cmr_random_100,
    draw_random_candidates,
    random_candidates,
    ranks_of_positives,
    recall_at_k,
    recall_curve,
)

__all__ = [
    "CIRResult", "CMRResult", "CandidateDraw", "caption_metrics", "cir_fashioniq", "cmr_full_gallery",
    "cmr_random_100", "draw_random_candidates", "fid", "kid",
    "random_candidates", "ranks_of_positives", "recall_at_k", "recall_curve",
]
