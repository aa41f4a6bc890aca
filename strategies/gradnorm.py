"""Exact per-sample gradient norms without per-sample gradients (AL-GradNorm, LPLgrad scoring).

The reference scores one image at a time: forward, backward of the entropy, then sum over parameter
tensors of each tensor's L2 norm. With the model in eval mode (BN on running statistics) the samples of a
batch are independent, so one backward of the *summed* loss gives, at every layer output, each sample's
own output gradient g_i. A layer's per-sample weight-gradient norm then follows from its input a_i and g_i:

- Linear:    ||g_i a_i^T||_F^2 = ||a_i||^2 ||g_i||^2; bias ||g_i||^2.
- Conv2d:    with A_i the unfolded input [T, d_in] and G_i the output gradient [T, C_out],
             ||G_i^T A_i||_F^2 = sum(A_i A_i^T * G_i G_i^T): the Gram form over the T positions where it
             is cheaper (late, low-resolution layers), else the per-sample weight gradient itself.
- BatchNorm: d gamma = sum over positions of g * x_hat, d beta = sum of g (x_hat from running stats).

The backward goes to the input only (`autograd.grad`), so no weight gradient is computed and `.grad` is
untouched. Output gradients are caught with tensor hooks registered in forward hooks, which receive the
gradient of the value before any later in-place op (e.g. ReLU(inplace=True)).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

Loss = Literal["entropy", "expected_ce"]
Aggregate = Literal["layer_sum", "l2"]
SUPPORTED = (nn.Conv2d, nn.Linear, nn.BatchNorm1d, nn.BatchNorm2d)


class UnsupportedLayerError(TypeError):
    """A parametrised layer whose per-sample gradient norm this module cannot compute exactly."""


def logits_of(output: object) -> torch.Tensor:
    """The logits: the output itself, or the first field of a tuple or dataclass."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, tuple | list):
        return output[0]
    if dataclasses.is_dataclass(output):
        return getattr(output, dataclasses.fields(output)[0].name)
    raise TypeError(f"model output of type {type(output).__name__} has no logits (tensor, tuple or dataclass expected)")


def _trainable(module: nn.Module) -> dict[str, nn.Parameter]:
    return {n: p for n, p in module.named_parameters(recurse=False) if p.requires_grad}


def _check_supported(model: nn.Module) -> list[tuple[str, nn.Module]]:
    layers = []
    for name, module in model.named_modules():
        if not _trainable(module):
            continue
        if not isinstance(module, SUPPORTED):
            raise UnsupportedLayerError(
                f"per_sample_grad_norms: layer '{name}' ({type(module).__name__}) has trainable parameters but is not "
                f"supported; supported: {', '.join(t.__name__ for t in SUPPORTED)}. Freeze it (requires_grad=False) "
                "or build the model from supported layers."
            )
        if isinstance(module, nn.Conv2d) and module.padding_mode != "zeros":
            raise UnsupportedLayerError(
                f"per_sample_grad_norms: conv '{name}' uses padding_mode={module.padding_mode!r}; "
                "only 'zeros' is supported"
            )
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.running_mean is None:
            raise UnsupportedLayerError(
                f"per_sample_grad_norms: batch norm '{name}' has no running statistics, "
                "so eval mode couples the samples"
            )
        layers.append((name, module))
    return layers


# On the CPU a conv with at least this many weights gets one weight-gradient call per sample, a smaller one a
# single grouped call (B x its weights at once). bench/gradnorm.py's early-conv table, at batch 256 (the
# default chunk) / 64, per-sample time over grouped time: 128->128 3x3 0.57 / 0.63, 64->128 3x3 stride 2
# 0.71 / 0.88-1.31 (noisy), 64->64 3x3 0.90 / 1.24 (kept grouped), 32->64 3x3, 3->64 3x3, 1x1 1.1-2.4. The
# choice is fixed by the shape, never timed at run time: scores must not depend on a noisy timing.
PER_SAMPLE_CALL_MIN_WEIGHT = 65_536


def _weight_grad(module: nn.Conv2d, g, a, weight, padding, group_factor: int) -> torch.Tensor:
    """The weight gradient alone of `module`'s convolution for output gradient g and input a, with the
    module's groups multiplied by `group_factor` (the batch folded into the groups)."""
    return torch.ops.aten.convolution_backward(
        g,
        a,
        weight,
        None,
        list(module.stride),
        list(padding),
        list(module.dilation),
        False,
        [0, 0],
        group_factor * module.groups,
        [False, True, False],
    )[1]


def _per_sample_conv_weight_grad(module: nn.Conv2d, a: torch.Tensor, g: torch.Tensor, padding) -> torch.Tensor:
    """Every sample's weight gradient [B, C_out * C_in/groups * k * k] in one grouped weight-gradient call.

    The batch is folded into the channels (groups = B * groups), so one convolution_backward computes B
    independent weight gradients without unfolding the input (the unfold is T x k^2 times the input).
    """
    b, c_in, c_out = len(a), a.shape[1], g.shape[1]
    weight = module.weight.detach()
    stacked = weight.unsqueeze(0).expand(b, *weight.shape).reshape(b * c_out, *weight.shape[1:])
    grads = _weight_grad(
        module, g.reshape(1, b * c_out, *g.shape[2:]), a.reshape(1, b * c_in, *a.shape[2:]), stacked, padding, b
    )
    return grads.reshape(b, -1)


def _per_sample_conv_weight_sq_loop(module: nn.Conv2d, a: torch.Tensor, g: torch.Tensor, padding) -> torch.Tensor:
    """Every sample's squared weight-gradient norm, one ordinary weight-gradient call per sample."""
    weight = module.weight.detach()
    out = torch.empty(len(a), dtype=a.dtype, device=a.device)
    for i in range(len(a)):
        out[i] = _weight_grad(module, g[i : i + 1], a[i : i + 1], weight, padding, 1).square().sum()
    return out


def _conv_weight_sq(module: nn.Conv2d, a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Per-sample squared Frobenius norm of a Conv2d weight gradient.

    a: the layer input [B, C_in, H, W]; g: the output gradient [B, C_out, H', W']. Late, low-resolution
    layers use the Gram form over positions (T x T per sample); early ones the per-sample weight gradient:
    on the CPU a call per sample for large weights and one grouped call for small ones (whichever measured
    faster for the shape, PER_SAMPLE_CALL_MIN_WEIGHT), on a GPU the unfold + batched product (one large
    GEMM-like kernel rather than B small launches or B-group convolutions; not yet measured on a GPU).
    """
    if isinstance(module.padding, str):  # 'same' / 'valid': pad explicitly as the module does
        a = F.pad(a, module._reversed_padding_repeated_twice)
        padding = (0, 0)
    else:
        padding = module.padding
    b, c_out, groups = len(a), g.shape[1], module.groups
    d_in = module.weight[0].numel()
    t = g.shape[2] * g.shape[3]
    if groups == 1 and t * (d_in + c_out) < d_in * c_out:  # Gram form over positions: T x T per sample
        cols = F.unfold(a, module.kernel_size, module.dilation, padding, module.stride)  # [B, C_in*k*k, T]
        gram_a = torch.bmm(cols.transpose(1, 2), cols)  # [B, T, T]
        g2 = g.reshape(b, c_out, t)
        gram_g = torch.bmm(g2.transpose(1, 2), g2)  # [B, T, T]
        return (gram_a * gram_g).sum((1, 2))
    if a.device.type == "cpu":
        if module.weight.numel() >= PER_SAMPLE_CALL_MIN_WEIGHT:
            return _per_sample_conv_weight_sq_loop(module, a, g, padding)
        return _per_sample_conv_weight_grad(module, a, g, padding).square().sum(1)
    cols = F.unfold(a, module.kernel_size, module.dilation, padding, module.stride)
    per_sample = torch.einsum(
        "bgot,bgit->bgoi", g.reshape(b, groups, c_out // groups, t), cols.view(b, groups, d_in, t)
    )
    return per_sample.square().sum((1, 2, 3))


def _layer_sq(module: nn.Module, a: torch.Tensor, g: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-sample squared gradient norm of each trainable parameter tensor of one layer, keyed by name."""
    trainable, sq = _trainable(module), {}
    if isinstance(module, nn.Linear):
        if a.ndim == 2:
            g_sq = g.square().sum(1)
            if "weight" in trainable:
                sq["weight"] = a.square().sum(1) * g_sq
        else:  # [B, ..., in]: positions share the weight, sum their outer products
            a2, g2 = a.flatten(1, -2), g.flatten(1, -2)
            if "weight" in trainable:
                sq["weight"] = torch.bmm(g2.transpose(1, 2), a2).square().sum((1, 2))
            g_sq = g2.sum(1).square().sum(1)
        if "bias" in trainable:
            sq["bias"] = g_sq
        return sq
    spatial = tuple(range(2, g.ndim))
    if isinstance(module, nn.Conv2d):
        if "weight" in trainable:
            sq["weight"] = _conv_weight_sq(module, a, g)
        if "bias" in trainable:
            sq["bias"] = g.sum(spatial).square().sum(1)
        return sq
    # BatchNorm in eval mode: y = gamma * x_hat + beta with x_hat from the running statistics. A [B, C] input
    # (BatchNorm1d) has no positions to sum over: `.sum(())` would reduce every dimension, the batch included.
    per_channel = (lambda t: t.sum(spatial)) if spatial else (lambda t: t)  # [B, C]
    shape = (1, -1) + (1,) * len(spatial)
    x_hat = (a - module.running_mean.view(shape)) / torch.sqrt(module.running_var.view(shape) + module.eps)
    if "weight" in trainable:
        sq["weight"] = per_channel(g * x_hat).square().sum(1)
    if "bias" in trainable:
        sq["bias"] = per_channel(g).square().sum(1)
    return sq


class _NormCollector:
    """Forward hooks keep each layer's input; tensor hooks on its output add that layer's per-sample norms."""

    def __init__(self, layers: list[tuple[str, nn.Module]]) -> None:
        self.layers = layers
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
                with torch.no_grad():
                    for param, value in _layer_sq(module, self.inputs[name], grad).items():
                        self.squares[f"{name}.{param}"] = value

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


@contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        yield
    finally:
        for m, training in modes.items():
            m.training = training


def _chunk_norms(
    model: nn.Module, layers, x: torch.Tensor, loss: Loss, aggregate: Aggregate, top_k: int | None
) -> torch.Tensor:
    collector = _NormCollector(layers)
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
) -> torch.Tensor:
    """Per-sample norm [B] of the gradient of each sample's loss w.r.t. every trainable parameter reaching the logits.

    loss: "entropy" (AL-GradNorm / LPLgrad: H(softmax)) or "expected_ce" (sum_c p_c ||grad CE(x, c)||, over
    the `top_k` likeliest classes or all). aggregate: "layer_sum" (the public code: sum over parameter
    tensors of each tensor's L2 norm) or "l2" (the global norm). Computed in eval mode, `chunk_size` samples
    at a time (bounds memory); the model's parameters, buffers, modes and `.grad` are left as they were.
    """
    if loss not in ("entropy", "expected_ce"):
        raise ValueError(f"loss {loss!r} is unknown; known: entropy, expected_ce")
    if aggregate not in ("layer_sum", "l2"):
        raise ValueError(f"aggregate {aggregate!r} is unknown; known: layer_sum, l2")
    layers = _check_supported(model)
    step = chunk_size or max(len(inputs), 1)
    with _eval_mode(model), torch.enable_grad():
        parts = [
            _chunk_norms(model, layers, inputs[i : i + step], loss, aggregate, top_k)
            for i in range(0, len(inputs), step)
        ]
    return torch.cat(parts) if parts else inputs.new_zeros(0)
