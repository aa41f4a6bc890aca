"""One layer's per-sample squared gradient norms from its input a and output gradient g, in every exact form.

With the model in eval mode (BN on running statistics) the samples of a batch are independent, so one backward
of the *summed* loss gives, at every layer output, each sample's own output gradient g_i. A layer's per-sample
weight-gradient norm then follows from a_i and g_i alone:

- Linear:    ||g_i a_i^T||_F^2 = ||a_i||^2 ||g_i||^2; bias ||g_i||^2.
- BatchNorm: d gamma = sum over positions of g * x_hat, d beta = sum of g (x_hat from the running statistics).
- Conv2d:    with A_i the unfolded input [T, d_in] and G_i the output gradient [T, C_out] (T output positions),
             ||G_i^T A_i||_F^2, in one of the forms of CONV_FORMS, which give the same number with different work:
  - `gram_unfold`: sum(A_i A_i^T * G_i G_i^T), two T x T Gram matrices (cheap where T is small);
  - `gram_shift`: the same A_i A_i^T without unfolding: the channel Gram P_i of the padded input over all its
    positions, summed over the k x k kernel offsets delta as P_i[t + delta, s + delta] (k^2 times less memory
    traffic than the unfold, and fewer products where the input has many channels and few positions);
  - `per_sample_unfold`: G_i^T A_i itself, one batched matrix product over the unfolded input;
  - `per_sample_grouped`: G_i^T A_i as one weight-gradient call with the batch folded into the groups;
  - `per_sample_loop`: G_i^T A_i as one ordinary weight-gradient call per sample;
  - `per_sample_func`: G_i^T A_i as torch.func's vmap of the one-sample weight gradient.

Which form a layer uses is `strategies.norm_forms`' decision; every form is exact (tests/strategies/
test_layer_norms.py checks each against torch.func in float64).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

SUPPORTED = (nn.Conv2d, nn.Linear, nn.BatchNorm1d, nn.BatchNorm2d)
ConvForm = Literal[
    "gram_unfold", "gram_shift", "per_sample_unfold", "per_sample_grouped", "per_sample_loop", "per_sample_func"
]
CONV_FORMS: tuple[ConvForm, ...] = ConvForm.__args__  # type: ignore[attr-defined]
GRAM_FORMS = frozenset({"gram_unfold", "gram_shift"})


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


def trainable(module: nn.Module) -> dict[str, nn.Parameter]:
    """The module's own trainable parameters (not its children's), by name."""
    return {n: p for n, p in module.named_parameters(recurse=False) if p.requires_grad}


def supported_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Every module with trainable parameters, by name; refuses a model with one this exact method cannot cover."""
    layers = []
    for name, module in model.named_modules():
        if not trainable(module):
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


@contextmanager
def eval_mode_of(model: nn.Module) -> Iterator[None]:
    """Eval mode for the block (BN on running statistics: independent samples), every module's mode restored."""
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        yield
    finally:
        for m, training in modes.items():
            m.training = training


@dataclass(frozen=True)
class ConvGeometry:
    """What a conv's gradient-norm cost depends on: its shape and its input's, padding made explicit."""

    c_in: int
    c_out: int
    groups: int
    kernel: tuple[int, int]
    stride: tuple[int, int]
    dilation: tuple[int, int]
    padding: tuple[int, int, int, int]  # left, right, top, bottom, as F.pad takes them
    in_size: tuple[int, int]  # input H, W (unpadded)
    out_size: tuple[int, int]  # output H', W'

    @classmethod
    def of(cls, module: nn.Conv2d, in_size: tuple[int, int]) -> ConvGeometry:
        if isinstance(module.padding, str):  # 'same' / 'valid': F.pad's order, as the module pads
            padding = tuple(module._reversed_padding_repeated_twice)
        else:
            padding = (module.padding[1], module.padding[1], module.padding[0], module.padding[0])
        h, w = in_size
        hp, wp = h + padding[2] + padding[3], w + padding[0] + padding[1]
        (kh, kw), (sh, sw), (dh, dw) = module.kernel_size, module.stride, module.dilation
        out = ((hp - dh * (kh - 1) - 1) // sh + 1, (wp - dw * (kw - 1) - 1) // sw + 1)
        return cls(
            module.in_channels, module.out_channels, module.groups, (kh, kw), (sh, sw), (dh, dw), padding, (h, w), out
        )

    @property
    def positions(self) -> int:
        """T, the output positions."""
        return self.out_size[0] * self.out_size[1]

    @property
    def padded_positions(self) -> int:
        left, right, top, bottom = self.padding
        return (self.in_size[0] + top + bottom) * (self.in_size[1] + left + right)

    @property
    def patch(self) -> int:
        """d_in, one output position's inputs: C_in / groups x k_h x k_w."""
        return self.c_in // self.groups * self.kernel[0] * self.kernel[1]

    @property
    def weights(self) -> int:
        return self.c_out * self.patch


def _padded(geometry: ConvGeometry, a: torch.Tensor) -> torch.Tensor:
    return F.pad(a, geometry.padding) if any(geometry.padding) else a


def _unfold(geometry: ConvGeometry, a: torch.Tensor) -> torch.Tensor:
    """The input as patches [B, C_in*kh*kw, T]."""
    return F.unfold(_padded(geometry, a), geometry.kernel, geometry.dilation, 0, geometry.stride)


def _weight_grad(geometry: ConvGeometry, g, a, weight, group_factor: int) -> torch.Tensor:
    """The weight gradient alone of the convolution for output gradient g and padded input a, with the groups
    multiplied by `group_factor` (the batch folded into the groups)."""
    return torch.ops.aten.convolution_backward(
        g,
        a,
        weight,
        None,
        list(geometry.stride),
        [0, 0],
        list(geometry.dilation),
        False,
        [0, 0],
        group_factor * geometry.groups,
        [False, True, False],
    )[1]


def _gram_of_outputs(g: torch.Tensor) -> torch.Tensor:
    g2 = g.flatten(2)  # [B, C_out, T]
    return torch.bmm(g2.transpose(1, 2), g2)  # [B, T, T]


def _gram_unfold(geometry: ConvGeometry, a, g, weight) -> torch.Tensor:
    cols = _unfold(geometry, a)  # [B, d_in, T]
    return (torch.bmm(cols.transpose(1, 2), cols) * _gram_of_outputs(g)).sum((1, 2))


def _gram_shift(geometry: ConvGeometry, a, g, weight) -> torch.Tensor:
    """A_i A_i^T[t, s] = sum over kernel offsets delta of P_i[p(t) + delta, p(s) + delta], P_i the channel Gram of
    the padded input over its positions and p(t) the top-left input position of output position t."""
    padded = _padded(geometry, a)
    b, _, hp, wp = padded.shape
    flat = padded.flatten(2)  # [B, C_in, Hp*Wp]
    channel_gram = torch.bmm(flat.transpose(1, 2), flat).view(b, hp, wp, hp, wp)
    (ho, wo), (sh, sw), (dh, dw) = geometry.out_size, geometry.stride, geometry.dilation
    patch_gram = None
    for ky in range(geometry.kernel[0]):
        rows = slice(ky * dh, ky * dh + sh * (ho - 1) + 1, sh)
        for kx in range(geometry.kernel[1]):
            cols = slice(kx * dw, kx * dw + sw * (wo - 1) + 1, sw)
            term = channel_gram[:, rows, cols, rows, cols]
            patch_gram = term.clone() if patch_gram is None else patch_gram.add_(term)
    t = ho * wo
    return (patch_gram.reshape(b, t, t) * _gram_of_outputs(g)).sum((1, 2))


def _per_sample_unfold(geometry: ConvGeometry, a, g, weight) -> torch.Tensor:
    b, groups = len(a), geometry.groups
    cols = _unfold(geometry, a).view(b, groups, geometry.patch, geometry.positions)
    g2 = g.reshape(b, groups, geometry.c_out // groups, geometry.positions)
    per_sample = torch.matmul(g2, cols.transpose(2, 3))  # [B, groups, C_out/groups, d_in]
    return per_sample.square().sum((1, 2, 3))


def _per_sample_grouped(geometry: ConvGeometry, a, g, weight) -> torch.Tensor:
    """The batch folded into the channels (groups = B x groups): one call computes B weight gradients without
    unfolding the input (the unfold is T x k^2 / (H x W) times the input)."""
    padded = _padded(geometry, a)
    b = len(a)
    stacked = weight.unsqueeze(0).expand(b, *weight.shape).reshape(b * geometry.c_out, *weight.shape[1:])
    grads = _weight_grad(
        geometry, g.reshape(1, b * geometry.c_out, *g.shape[2:]), padded.reshape(1, -1, *padded.shape[2:]), stacked, b
    )
    return grads.reshape(b, -1).square().sum(1)


def _per_sample_loop(geometry: ConvGeometry, a, g, weight) -> torch.Tensor:
    padded = _padded(geometry, a)
    return torch.stack(
        [_weight_grad(geometry, g[i : i + 1], padded[i : i + 1], weight, 1).square().sum() for i in range(len(a))]
    )


def _per_sample_func(geometry: ConvGeometry, a, g, weight) -> torch.Tensor:
    """d/dW <conv(a_i, W), g_i> = the weight gradient of sample i, vmapped over the batch by torch.func."""
    from torch.func import grad, vmap

    def one(a_i: torch.Tensor, g_i: torch.Tensor) -> torch.Tensor:
        def inner(w: torch.Tensor) -> torch.Tensor:
            out = F.conv2d(a_i[None], w, None, geometry.stride, 0, geometry.dilation, geometry.groups)
            return (out * g_i[None]).sum()

        return grad(inner)(weight).square().sum()

    return vmap(one)(_padded(geometry, a), g)


_CONV_WEIGHT_SQ = {
    "gram_unfold": _gram_unfold,
    "gram_shift": _gram_shift,
    "per_sample_unfold": _per_sample_unfold,
    "per_sample_grouped": _per_sample_grouped,
    "per_sample_loop": _per_sample_loop,
    "per_sample_func": _per_sample_func,
}


def conv_weight_sq(module: nn.Conv2d, a: torch.Tensor, g: torch.Tensor, form: ConvForm) -> torch.Tensor:
    """Per-sample squared Frobenius norm [B] of a Conv2d's weight gradient, in `form`.

    a: the layer input [B, C_in, H, W]; g: the output gradient [B, C_out, H', W']."""
    geometry = ConvGeometry.of(module, tuple(a.shape[2:]))
    if form in GRAM_FORMS and geometry.groups != 1:
        raise ValueError(f"the {form} form needs groups = 1 (this conv has groups = {geometry.groups})")
    return _CONV_WEIGHT_SQ[form](geometry, a, g, module.weight.detach())


def batch_norm_sq(module: nn.Module, a: torch.Tensor, g: torch.Tensor) -> dict[str, torch.Tensor]:
    """BatchNorm in eval mode, y = gamma * x_hat + beta: per channel, sum_t g x_hat = (sum_t g a - mu sum_t g) / sigma,
    so no x_hat the size of the activation is formed. A [B, C] input (BatchNorm1d) has no positions."""
    params, sq = trainable(module), {}
    a2, g2 = a.reshape(len(a), a.shape[1], -1), g.reshape(len(g), g.shape[1], -1)  # [B, C, T]
    g_sum = g2.sum(2)  # [B, C]
    if "weight" in params:
        g_dot_a = (g2 * a2).sum(2)
        inv_std = torch.rsqrt(module.running_var + module.eps)
        sq["weight"] = ((g_dot_a - module.running_mean * g_sum) * inv_std).square().sum(1)
    if "bias" in params:
        sq["bias"] = g_sum.square().sum(1)
    return sq


def linear_sq(module: nn.Linear, a: torch.Tensor, g: torch.Tensor) -> dict[str, torch.Tensor]:
    params, sq = trainable(module), {}
    if a.ndim == 2:
        g_sq = g.square().sum(1)
        if "weight" in params:
            sq["weight"] = a.square().sum(1) * g_sq
    else:  # [B, ..., in]: positions share the weight, sum their outer products
        a2, g2 = a.flatten(1, -2), g.flatten(1, -2)
        if "weight" in params:
            sq["weight"] = torch.bmm(g2.transpose(1, 2), a2).square().sum((1, 2))
        g_sq = g2.sum(1).square().sum(1)
    if "bias" in params:
        sq["bias"] = g_sq
    return sq


def layer_sq(module: nn.Module, a: torch.Tensor, g: torch.Tensor, conv_form: ConvForm) -> dict[str, torch.Tensor]:
    """Per-sample squared gradient norm [B] of each trainable parameter tensor of one layer, keyed by name."""
    if isinstance(module, nn.Linear):
        return linear_sq(module, a, g)
    if isinstance(module, nn.Conv2d):
        params, sq = trainable(module), {}
        if "weight" in params:
            sq["weight"] = conv_weight_sq(module, a, g, conv_form)
        if "bias" in params:
            sq["bias"] = g.sum((2, 3)).square().sum(1)
        return sq
    return batch_norm_sq(module, a, g)
