"""Activation checkpointing: recompute layer activations in the backward pass instead of keeping
them, trading about a third more compute for memory that no longer grows with depth.

Applied from the outside (no model code changes): each Q-Former layer's forward is wrapped in
``torch.utils.checkpoint`` while gradients are being recorded; a transformers language model and a
diffusers UNet use their own switches (``gradient_checkpointing_enable`` /
``enable_gradient_checkpointing``). Dropout draws the same noise in the recomputation (the RNG
state is preserved), so the gradients are those of the plain forward.
"""

from __future__ import annotations

import functools

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint


def _checkpointed(layer: nn.Module) -> None:
    if getattr(layer, "_unifashion_checkpointed", False):
        return
    forward = layer.forward

    @functools.wraps(forward)
    def run(*args, **kwargs):
        if layer.training and torch.is_grad_enabled():
            return checkpoint(forward, *args, use_reentrant=False, **kwargs)
        return forward(*args, **kwargs)

    layer.forward = run
    layer._unifashion_checkpointed = True


def enable_activation_checkpointing(module: nn.Module) -> list[str]:
    """Turn checkpointing on for every layer stack in ``module`` it knows; return their names."""
    done = []
    for name, sub in module.named_modules():
        if hasattr(sub, "enable_gradient_checkpointing") and getattr(sub, "_supports_gradient_checkpointing", False):
            sub.enable_gradient_checkpointing()  # a diffusers model
            done.append(name)
        elif getattr(sub, "supports_gradient_checkpointing", False):  # a transformers model
            if hasattr(sub, "activation_checkpointing_enable"):
                sub.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
            else:
                sub.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            done.append(name)
        elif type(sub).__name__ == "QFormerEncoder" and isinstance(getattr(sub, "layer", None), nn.ModuleList):
            for layer in sub.layer:
                _checkpointed(layer)
            done.append(name)
    return done
