"""Exact per-sample gradient norms without per-sample gradients (AL-GradNorm, LPLgrad scoring).

The reference scores one image at a time: forward, backward of the entropy, then sum over parameter
tensors of each tensor's L2 norm. With the model in eval mode (BN on running statistics) the samples of a
batch are independent, so one backward of the *summed* loss gives, at every layer output, each sample's
own output gradient g_i, and each layer's per-sample norms follow from its input a_i and g_i
(`strategies.layer_norms`, in the form `strategies.norm_forms` picks for each conv).

The backward goes to the input only (`autograd.grad`), so no weight gradient is computed and `.grad` is
untouched. Output gradients are caught with tensor hooks registered in forward hooks, which receive the
gradient of the value before any later in-place op (e.g. ReLU(inplace=True)).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

import torch
from torch import nn

from strategies.layer_norms import (
    GRAM_FORMS,
    ConvForm,
    ConvGeometry,
    UnsupportedLayerError,
    eval_mode_of,
    layer_sq,
    logits_of,
    supported_layers,
)
from strategies.norm_forms import choose_conv_form, device_model

__all__ = ["Aggregate", "Loss", "UnsupportedLayerError", "conv_form_for", "per_sample_grad_norms"]

Loss = Literal["entropy", "expected_ce"]
Aggregate = Literal["layer_sum", "l2"]


def conv_form_for(module: nn.Module, a: torch.Tensor, forced: ConvForm | None = None) -> ConvForm:
    """The form of `module`'s weight-gradient norm for input a: `forced` where it applies (a Gram form needs
    groups = 1), else the cost model's choice for the geometry, batch and device."""
    if not isinstance(module, nn.Conv2d):
        return "per_sample_unfold"  # not read: only convs have forms
    if forced is not None and (forced not in GRAM_FORMS or module.groups == 1):
        return forced
    return choose_conv_form(ConvGeometry.of(module, tuple(a.shape[2:])), len(a), a.device.type)


class _NormCollector:
    """Forward hooks keep each layer's input; tensor hooks on its output add that layer's per-sample norms."""

    def __init__(self, layers: list[tuple[str, nn.Module]], forced: ConvForm | None = None) -> None:
        self.layers, self.forced = layers, forced
        self.inputs: dict[str, torch.Tensor] = {}
        self.squares: dict[str, torch.Tensor] = {}  # 'layer.param' -> [B], for the current backward pass

    @contextmanager
    def attached(self) -> Iterator[_NormCollector]:
        handles = [m.register_forward_hook(self._forward_hook(name)) for name, m in self.layers]
        try:
            yield self
        finally:
            for h in handles:
                h.remove()

    def _forward_hook(self, name: str):
        module = dict(self.layers)[name]

        def hook(_module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            if name in self.inputs:
                raise UnsupportedLayerError(
                    f"per_sample_grad_norms: layer '{name}' is called more than once per forward (shared weights); "
                    "its per-sample gradient is a sum over calls, which this exact method does not cover"
                )
            self.inputs[name] = inputs[0].detach()

            def on_grad(grad: torch.Tensor) -> None:
                a = self.inputs[name]
                step = device_model(a.device.type).layer_batch or len(a)
                parts = []
                with torch.no_grad():
                    for i in range(0, len(a), step):
                        a_part, g_part = a[i : i + step], grad[i : i + step]
                        parts.append(layer_sq(module, a_part, g_part, conv_form_for(module, a_part, self.forced)))
                for param in parts[0]:
                    self.squares[f"{name}.{param}"] = torch.cat([part[param] for part in parts])

            if output.requires_grad:
                output.register_hook(on_grad)

        return hook

    def take(self, aggregate: Aggregate, n: int, like: torch.Tensor) -> torch.Tensor:
        """This pass's per-sample score [B], then forget the pass."""
        if not self.squares:
            score = like.new_zeros(n)
        elif aggregate == "layer_sum":
            score = torch.stack([v.clamp_min(0).sqrt() for v in self.squares.values()]).sum(0)
        else:
            score = torch.stack(list(self.squares.values())).sum(0).clamp_min(0).sqrt()
        self.squares = {}
        return score


def _chunk_norms(
    model: nn.Module,
    layers,
    x: torch.Tensor,
    loss: Loss,
    aggregate: Aggregate,
    top_k: int | None,
    conv_form: ConvForm | None,
) -> torch.Tensor:
    collector = _NormCollector(layers, conv_form)
    x = x.detach().requires_grad_(True)
    with collector.attached():
        log_p = torch.log_softmax(logits_of(model(x)), dim=1)  # [B, C]
    p = log_p.exp()
    if loss == "entropy":
        entropy = -(p * log_p).sum()
        torch.autograd.grad(entropy, x, allow_unused=True)
        return collector.take(aggregate, len(x), x)
    # expected norm: sum over classes c (likeliest first) of p_c * || grad CE(x, c) ||
    k = p.shape[1] if top_k is None else min(top_k, p.shape[1])
    ranked = p.detach().topk(k, dim=1)  # values, indices: [B, k]
    score = x.new_zeros(len(x))
    for r in range(k):
        ce = -log_p.gather(1, ranked.indices[:, r : r + 1]).sum()
        torch.autograd.grad(ce, x, retain_graph=r < k - 1, allow_unused=True)
        score += ranked.values[:, r] * collector.take(aggregate, len(x), x)
    return score


def per_sample_grad_norms(
    model: nn.Module,
    inputs: torch.Tensor,
    *,
    loss: Loss = "entropy",
    aggregate: Aggregate = "layer_sum",
    top_k: int | None = None,
    chunk_size: int | None = None,
    conv_form: ConvForm | None = None,
) -> torch.Tensor:
    """Per-sample norm [B] of the gradient of each sample's loss w.r.t. every trainable parameter reaching the logits.

    loss: "entropy" (AL-GradNorm / LPLgrad: H(softmax)) or "expected_ce" (sum_c p_c ||grad CE(x, c)||, over
    the `top_k` likeliest classes or all). aggregate: "layer_sum" (the public code: sum over parameter
    tensors of each tensor's L2 norm) or "l2" (the global norm). Computed in eval mode, `chunk_size` samples
    at a time (bounds memory); the model's parameters, buffers, modes and `.grad` are left as they were.
    conv_form: every conv in this form where it applies (tests, benches); None: each conv's cheapest form by
    `strategies.norm_forms`.
    """
    if loss not in ("entropy", "expected_ce"):
        raise ValueError(f"loss {loss!r} is unknown; known: entropy, expected_ce")
    if aggregate not in ("layer_sum", "l2"):
        raise ValueError(f"aggregate {aggregate!r} is unknown; known: layer_sum, l2")
    layers = supported_layers(model)
    step = chunk_size or max(len(inputs), 1)
    with eval_mode_of(model), torch.enable_grad():
        parts = [
            _chunk_norms(model, layers, inputs[i : i + step], loss, aggregate, top_k, conv_form)
            for i in range(0, len(inputs), step)
        ]
    return torch.cat(parts) if parts else inputs.new_zeros(0)
