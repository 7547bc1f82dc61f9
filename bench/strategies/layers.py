"""The layers MODEL-aspect strategies compress (Linear and GPT-2's Conv1D), and Conv1D as an exact nn.Linear."""

from __future__ import annotations

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

DenseLayer = nn.Linear | Conv1D


def target_layers(model: nn.Module, *, head: bool) -> dict[str, DenseLayer]:
    """Every nn.Linear and Conv1D by qualified name; the LM head only when `head` is true.

    The head is left out by default because in every model here it is tied to the input
    embedding: pruning it would prune the embedding too, and factorising or quantizing it
    would untie it and store the matrix twice. It is also where compression hurts most.
    """
    out_emb = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    return {
        name: m
        for name, m in model.named_modules()
        if isinstance(m, (nn.Linear, Conv1D)) and (head or m is not out_emb)
    }


def linear_weight(layer: DenseLayer) -> torch.Tensor:
    """The weight in nn.Linear's (out, in) layout; Conv1D stores its transpose (in, out)."""
    return layer.weight.T if isinstance(layer, Conv1D) else layer.weight


def conv1d_to_linear(conv: Conv1D) -> nn.Linear:
    """An nn.Linear computing exactly what `conv` computes: `x @ W + b` is `linear(x)` with weight W^T."""
    w = conv.weight.detach()
    linear = nn.Linear(conv.nx, conv.nf, bias=conv.bias is not None, device=w.device, dtype=w.dtype)
    with torch.no_grad():
        linear.weight.copy_(w.T)
        if conv.bias is not None:
            linear.bias.copy_(conv.bias)
    linear.train(conv.training)
    return linear


def replace_module(model: nn.Module, name: str, new: nn.Module) -> None:
    """Put `new` where the submodule `name` (a dotted path) was."""
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name), child, new)


def convert_conv1d(model: nn.Module) -> int:
    """Replace every Conv1D in `model` by its nn.Linear twin; returns how many were replaced."""
    convs = [name for name, m in model.named_modules() if isinstance(m, Conv1D)]
    for name in convs:
        replace_module(model, name, conv1d_to_linear(model.get_submodule(name)))
    return len(convs)

