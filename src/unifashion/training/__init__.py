"""Training: the two-phase recipe, the loop (accelerate, exact resume), checkpoints, the baselines
and the two-stage CIR and try-on training runs."""
