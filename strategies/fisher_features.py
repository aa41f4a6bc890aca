"""FisherMask's two gradient passes, exact and batched, from layer hooks (no per-sample autograd loops).

1. `fisher_diagonal`: F_i = sum_n sum_c p_c(x_n) (d log p_c(x_n) / d theta_i)^2, the model-expected Fisher
   diagonal over every trainable parameter (no labels). One backward per class of sum_n sqrt(p_nc) log p_nc
   gives each sample's output gradient already scaled by sqrt(p_nc); squaring its per-sample weight
   gradient gives the p_c weighting.
2. `masked_log_prob_grads`: V_x[c, k] = d log p_c(x) / d theta_k for the K masked coordinates only, without
   forming the per-sample gradient of any conv: for the selected (out, in-patch) pairs it sums
   g[out, t] * a_unfolded[in, t] over positions t.

As in `strategies.gradnorm`, the backward goes to the input only, in eval mode, and parameters, buffers,
modes and `.grad` are left untouched. A per-layer per-sample gradient of a conv is materialised only in
pass 1 (chunk x that layer's size: bounded by the chunk size).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from strategies.layer_norms import UnsupportedLayerError, eval_mode_of, logits_of, supported_layers, trainable

Mask = dict[str, torch.Tensor]  # 'layer.param' -> sorted flat int64 indices into that tensor
LayerFn = Callable[[str, nn.Module, torch.Tensor, torch.Tensor], None]


def _unfold(module: nn.Conv2d, a: torch.Tensor) -> torch.Tensor:
    """The layer input as patches [B, C_in*kh*kw, T], padded as the module pads."""
    if module.groups != 1:
        raise UnsupportedLayerError(f"FisherMask: grouped conv (groups={module.groups}) is not supported")
    if isinstance(module.padding, str):
        a, padding = F.pad(a, module._reversed_padding_repeated_twice), 0
    else:
        padding = module.padding
    return F.unfold(a, module.kernel_size, module.dilation, padding, module.stride)


def _bn_x_hat(module: nn.Module, a: torch.Tensor) -> torch.Tensor:
    shape = (1, -1) + (1,) * (a.ndim - 2)
    return (a - module.running_mean.view(shape)) / torch.sqrt(module.running_var.view(shape) + module.eps)


def per_sample_grads(module: nn.Module, a: torch.Tensor, g: torch.Tensor) -> dict[str, torch.Tensor]:
    """Each trainable parameter's per-sample gradient, flattened [B, numel], from input a and output gradient g."""
    params, out = trainable(module), {}
    b = len(a)
    if isinstance(module, nn.Linear):
        a2, g2 = a.reshape(b, -1, a.shape[-1]), g.reshape(b, -1, g.shape[-1])
        if "weight" in params:
            out["weight"] = torch.bmm(g2.transpose(1, 2), a2).reshape(b, -1)
        if "bias" in params:
            out["bias"] = g2.sum(1)
        return out
    spatial = tuple(range(2, g.ndim))
    if isinstance(module, nn.Conv2d):
        if "weight" in params:
            cols = _unfold(module, a)
            out["weight"] = torch.bmm(g.reshape(b, g.shape[1], -1), cols.transpose(1, 2)).reshape(b, -1)
        if "bias" in params:
            out["bias"] = g.sum(spatial)
        return out
    if "weight" in params:
        out["weight"] = (g * _bn_x_hat(module, a)).sum(spatial)
    if "bias" in params:
        out["bias"] = g.sum(spatial)
    return out


def masked_per_sample_grads(module: nn.Module, a: torch.Tensor, g: torch.Tensor, mask: Mask, name: str) -> list:
    """[(key, [B, k])] per-sample gradient entries at this layer's masked coordinates."""
    out, full = [], None
    for param in trainable(module):
        key = f"{name}.{param}"
        index = mask.get(key)
        if index is None or len(index) == 0:
            continue
        index = index.to(a.device)
        if isinstance(module, nn.Conv2d) and param == "weight":
            cols = _unfold(module, a)  # [B, D, T]
            g2 = g.reshape(len(g), g.shape[1], -1)  # [B, O, T]
            rows, cols_index = index // cols.shape[1], index % cols.shape[1]
            out.append((key, (g2[:, rows, :] * cols[:, cols_index, :]).sum(-1)))
        else:
            full = per_sample_grads(module, a, g) if full is None else full  # once per layer
            out.append((key, full[param][:, index]))
    return out


class _Hooks:
    """Forward hooks keep each layer's input; tensor hooks on its output call `on_layer(name, module, a, g)`."""

    def __init__(self, layers: list[tuple[str, nn.Module]], on_layer: LayerFn) -> None:
        self.layers, self.on_layer, self.inputs = layers, on_layer, {}

    @contextmanager
    def attached(self) -> Iterator[None]:
        handles = [m.register_forward_hook(self._hook(name, m)) for name, m in self.layers]
        try:
            yield
        finally:
            for h in handles:
                h.remove()

    def _hook(self, name: str, module: nn.Module):
        def hook(_module, inputs, output) -> None:
            if name in self.inputs:
                raise UnsupportedLayerError(f"FisherMask: layer '{name}' is called twice per forward (shared weights)")
            self.inputs[name] = inputs[0].detach()
            if output.requires_grad:
                output.register_hook(lambda grad: self.on_layer(name, module, self.inputs[name], grad.detach()))

        return hook


def _per_class_backwards(
    model: nn.Module,
    x: torch.Tensor,
    on_layer: LayerFn,
    weight_by_sqrt_p: bool,
    on_class: Callable[[int], None] = lambda c: None,
) -> None:
    """For c = 0..C-1, `on_class(c)` then one backward of sum_n w_nc log p_nc to the input, whose layer hooks
    call `on_layer` with every layer's (input, output gradient)."""
    layers = supported_layers(model)
    hooks = _Hooks(layers, on_layer)
    x = x.detach().to(next(model.parameters()).dtype).requires_grad_(True)  # the model's precision
    with hooks.attached():
        log_p = torch.log_softmax(logits_of(model(x)), dim=1)
    n_classes = log_p.shape[1]
    weights = log_p.detach().exp().sqrt() if weight_by_sqrt_p else torch.ones_like(log_p)
    for c in range(n_classes):
        on_class(c)
        torch.autograd.grad((weights[:, c] * log_p[:, c]).sum(), x, retain_graph=c < n_classes - 1)


def fisher_diagonal(model: nn.Module, images: torch.Tensor, chunk_size: int = 64) -> dict[str, torch.Tensor]:
    """'layer.param' -> sum over the images and classes of p_c (d log p_c / d theta)^2, shaped like the parameter."""
    shapes = {f"{n}.{p}": t.shape for n, m in supported_layers(model) for p, t in trainable(m).items()}
    totals: dict[str, torch.Tensor] = {}

    def on_layer(name, module, a, g) -> None:
        with torch.no_grad():
            for param, grads in per_sample_grads(module, a, g).items():
                key = f"{name}.{param}"
                squares = grads.square().sum(0)
                totals[key] = squares if key not in totals else totals[key] + squares

    with eval_mode_of(model), torch.enable_grad():
        for start in range(0, len(images), chunk_size):
            _per_class_backwards(model, images[start : start + chunk_size], on_layer, weight_by_sqrt_p=True)
    return {key: totals[key].reshape(shape) for key, shape in shapes.items() if key in totals}


def _masked_chunk(model: nn.Module, x: torch.Tensor, mask: Mask) -> torch.Tensor:
    """V [B, C, K] for one chunk: each class's backward fills one row per sample."""
    rows: list[dict[str, torch.Tensor]] = []

    def on_layer(name, module, a, g) -> None:
        with torch.no_grad():
            rows[-1].update(masked_per_sample_grads(module, a, g, mask, name))

    _per_class_backwards(model, x, on_layer, False, on_class=lambda c: rows.append({}))
    return torch.stack([torch.cat([row[key] for key in mask], 1) for row in rows], 1)


def masked_log_prob_grads(model: nn.Module, images: torch.Tensor, mask: Mask, chunk_size: int = 64) -> torch.Tensor:
    """V [N, C, K]: d log p_c(x_n) / d theta at the masked coordinates, in `mask`'s key order then index order."""
    with eval_mode_of(model), torch.enable_grad():
        chunks = [_masked_chunk(model, images[i : i + chunk_size], mask) for i in range(0, len(images), chunk_size)]
    return torch.cat(chunks) if chunks else images.new_zeros((0, 0, sum(len(v) for v in mask.values())))
