#!/usr/bin/env bash
# Retrieval over 3 seeds with the paper's Table-5 ablations, on a large held-out catalogue.
#
#   make experiments        (or: experiments/retrieval_seeds_ablations.sh)
#
# Every step is skipped when its output exists, so the script can be stopped and re-run.
# 1. The default model (runs/default: phase 1 + phase 2, the tiny preset's recipe, seed 0) and the
#    dual-encoder baseline (seed 0).
# 2. Phase 2 again with seeds 1 and 2 from the same phase-1 model (recipes/phase2-seed*.json):
#    what varies between seeds is phase 2 (the CIR stage) and the dual encoder; phase 1 is shared.
# 3. Table 5 as phase-2 ablations from the same phase-1 model: Base = the Q-Former stage only,
#    then phase 2 with L_cir alone, evaluated without its generators (recipes/ablation-base.json);
#    +LLM = phase 2 with L_cir + L_ITG (recipes/ablation-llm.json), with and without caption
#    fusion; +LLM+diffusion = the default model (L_cir + L_ITG + L_q2I).
# 4. Dual-encoder seeds 1 and 2.
# 5. A held-out catalogue (10,000 items, seed 2: its test split is about 1,000 items), CMR and CIR
#    (R@1/5/10/50) per seed, then one table with mean ± std: outputs/eval-large/results.md.
# Threads: OMP_NUM_THREADS (default: all cores).
# DEMO_RUNS=$UNIFASHION_HOME/runs reuses the runs `make demo` trained (tiny-default, dual-encoder-default)
# as runs/default and runs/dual-encoder (seed 0) instead of training them again.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
if [ -n "${DEMO_RUNS:-}" ]; then
  mkdir -p runs
  [ -e runs/default ] || ln -s "$(realpath "$DEMO_RUNS/tiny-default")" runs/default
  [ -e runs/dual-encoder ] || ln -s "$(realpath "$DEMO_RUNS/dual-encoder-default")" runs/dual-encoder
fi
DE0=runs/dual-encoder
CAT=outputs/heldout-large
OUT=outputs/eval-large

[ -f runs/default/phase2/final/config.json ] || $BIN/unifashion train --output-dir runs/default
[ -f $DE0/final/dual_encoder_config.json ] || $BIN/unifashion train-baseline --output-dir $DE0 --seed 0
for recipe in phase2-seed1 phase2-seed2 ablation-base ablation-llm; do
  $BIN/unifashion train --recipe recipes/$recipe.json
done
for s in 1 2; do
  [ -f runs/dual-encoder-seed$s/final/dual_encoder_config.json ] || \
    $BIN/unifashion train-baseline --output-dir runs/dual-encoder-seed$s --seed $s
done
[ -f runs/ablation-base/retrieval-only/config.json ] || $BIN/python -c "
from unifashion.models import UniFashion
UniFashion.from_pretrained('runs/ablation-base/phase2/final', {'caption_lm': None, 'diffusion': None}
                           ).save_pretrained('runs/ablation-base/retrieval-only')"
[ -f $CAT/catalogue.json ] || $BIN/unifashion data build --out $CAT --n-items 10000 --seed 2 --workers 2

COMMON=(--catalogue $CAT --tasks cmr cir --itm-rerank 0 --cir-ks 1 5 10 50)
[ -f $OUT/seed0/results.json ] || $BIN/unifashion eval "${COMMON[@]}" --seed 0 --out $OUT/seed0 \
  --model runs/default/phase2/final --dual-encoder $DE0/final \
  --ablation "UniFashion Base (Q-Former only)=runs/ablation-base/retrieval-only" \
  --ablation "UniFashion +LLM=runs/ablation-llm/phase2/final" \
  --ablation "UniFashion phase 1 only=runs/default/phase1-generators/final"
for s in 1 2; do
  [ -f $OUT/seed$s/results.json ] || $BIN/unifashion eval "${COMMON[@]}" --seed $s --out $OUT/seed$s \
    --model runs/phase2-seed$s/phase2/final --dual-encoder runs/dual-encoder-seed$s/final
done
$BIN/unifashion results merge $OUT/seed0/results.json $OUT/seed1/results.json $OUT/seed2/results.json --out $OUT
