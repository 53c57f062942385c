"""Training objectives as pure functions and tables: the paper's losses (ITC, ITM, ITG, q2I,
L_cir), hard-negative selection for ITM, static negative banks, and each training
phase: its terms and what learns (:mod:`unifashion.objectives.phases`).

Below :mod:`unifashion.models` (the model's phase losses call these), above :mod:`unifashion.layers`.
"""
