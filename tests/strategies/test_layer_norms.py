"""Each exact form of a layer's per-sample gradient norm against torch.func's per-sample gradients, in float64,
and the cost model that picks a conv's form."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from models import build_model
from strategies.layer_norms import (
    CONV_FORMS,
    GRAM_FORMS,
    ConvGeometry,
    batch_norm_sq,
    conv_weight_sq,
    supported_layers,
)
from strategies.norm_forms import PER_SAMPLE_CALL_MIN_WEIGHT, choose_conv_form, form_cost

CONVS = {  # (C_in, C_out, kernel, keyword arguments), input size
    "3x3 pad 1": ((4, 6, 3, {"padding": 1}), (9, 9)),
    "3x3 stride 2": ((4, 6, 3, {"padding": 1, "stride": 2}), (9, 8)),
    "1x1 stride 2": ((4, 6, 1, {"stride": 2}), (8, 8)),
    "even 'same' (asymmetric pad)": ((3, 5, 4, {"padding": "same"}), (7, 7)),
    "dilation 2": ((3, 5, 3, {"padding": 2, "dilation": 2}), (8, 8)),
    "3x1 pad (1, 0)": ((3, 5, (3, 1), {"padding": (1, 0)}), (6, 7)),
    "'valid'": ((3, 4, 3, {"padding": "valid"}), (7, 6)),
    "groups 2": ((4, 6, 3, {"padding": 1, "groups": 2}), (7, 7)),
}


def _per_sample_weight_sq(conv: nn.Module, a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """||d/dW <conv(a_i), g_i>||^2 per sample, by torch.func: the independent oracle."""

    def inner(params, a_i, g_i):
        return (functional_call(conv, params, (a_i[None],)) * g_i[None]).sum()

    grads = vmap(grad(inner), in_dims=(None, 0, 0))({"weight": conv.weight.detach()}, a, g)
    return grads["weight"].flatten(1).square().sum(1)


@pytest.mark.parametrize("form", CONV_FORMS)
@pytest.mark.parametrize("case", list(CONVS))
def test_every_conv_form_equals_torch_func_per_sample_gradients(form, case):
    (c_in, c_out, k, kwargs), size = CONVS[case]
    torch.manual_seed(0)
    conv = nn.Conv2d(c_in, c_out, k, bias=False, **kwargs).double()
    a = torch.randn(5, c_in, *size, dtype=torch.float64)
    g = torch.randn_like(conv(a))
    expected = _per_sample_weight_sq(conv, a, g)
    if form in GRAM_FORMS and conv.groups != 1:
        with pytest.raises(ValueError, match="needs groups = 1"):
            conv_weight_sq(conv, a, g, form)
        return
    torch.testing.assert_close(conv_weight_sq(conv, a, g, form), expected, rtol=1e-10, atol=1e-12)


def test_the_geometry_matches_the_convolution_output():
    for (c_in, c_out, k, kwargs), size in CONVS.values():
        conv = nn.Conv2d(c_in, c_out, k, **kwargs)
        geometry = ConvGeometry.of(conv, size)
        assert conv(torch.zeros(1, c_in, *size)).shape[2:] == geometry.out_size


@pytest.mark.parametrize("spatial", [True, False], ids=["BatchNorm2d", "BatchNorm1d"])
def test_batch_norm_without_x_hat_equals_torch_func(spatial):
    torch.manual_seed(1)
    bn = (nn.BatchNorm2d(6) if spatial else nn.BatchNorm1d(6)).double()
    shape = (7, 6, 4, 5) if spatial else (7, 6)
    bn.train()
    for _ in range(3):
        bn(torch.randn(*shape, dtype=torch.float64) * 3 + 1)
    bn.eval()
    a, g = torch.randn(*shape, dtype=torch.float64), torch.randn(*shape, dtype=torch.float64)
    params = {k: v.detach() for k, v in bn.named_parameters()}
    buffers = {k: v for k, v in bn.named_buffers()}

    def inner(p, a_i, g_i):
        return (functional_call(bn, (p, buffers), (a_i[None],)) * g_i[None]).sum()

    per_sample = vmap(grad(inner), in_dims=(None, 0, 0))(params, a, g)
    got = batch_norm_sq(bn, a, g)
    for name in ("weight", "bias"):
        torch.testing.assert_close(got[name], per_sample[name].square().sum(1), rtol=1e-10, atol=1e-12)


def _conv_geometries(model_name: str, size: int) -> list[ConvGeometry]:
    model = build_model(model_name, 10, 3).eval()
    geometries = []
    hooks = [
        m.register_forward_hook(lambda m, i, o: geometries.append(ConvGeometry.of(m, tuple(i[0].shape[2:]))))
        for _, m in supported_layers(model)
        if isinstance(m, nn.Conv2d)
    ]
    with torch.no_grad():
        model(torch.zeros(1, 3, size, size))
    for h in hooks:
        h.remove()
    return geometries


# bench/results/gradnorm.md (2026-12-06, this project's 2-core Intel Xeon, torch threads 2, layers in 32-sample
# slices): the fastest of each ResNet-18 conv's CPU candidates (the Gram forms and the CPU's per-sample form), at
# batch 64 and 256 alike, keyed by (c_in, c_out, kernel, stride, input size).
CPU_FASTEST = {
    (3, 64, 3, 1, 32): "per_sample_grouped",
    (64, 64, 3, 1, 32): "per_sample_grouped",
    (64, 128, 3, 2, 32): "per_sample_grouped",
    (128, 128, 3, 1, 16): "gram_shift",
    (64, 128, 1, 2, 32): "per_sample_grouped",
    (256, 256, 3, 1, 8): "gram_shift",
    (128, 256, 1, 2, 16): "gram_unfold",
    (256, 512, 3, 2, 8): "gram_shift",
    (512, 512, 3, 1, 4): "gram_shift",
}
# Near ties the rule gives to gram_unfold: 256->512 1x1 s2 on 8x8 (1 ms; gram_shift 1.01-1.34x faster at 2
# threads over three runs, a tie at 1) and 128->256 3x3 s2 on 16x16 (gram_shift 9.0 against 10.1 ms at 2
# threads, 19.7 against 19.0 at 1).
NEAR_TIES = {(256, 512, 1, 2, 8), (128, 256, 3, 2, 16)}


def test_on_the_cpu_the_rule_picks_the_measured_fastest_form_of_every_resnet18_conv_but_two_near_ties():
    picks = {
        (g.c_in, g.c_out, g.kernel[0], g.stride[0], g.in_size[0]): choose_conv_form(g, 32, "cpu")
        for g in _conv_geometries("resnet18", 32)
    }
    assert {k: v for k, v in picks.items() if k in CPU_FASTEST} == CPU_FASTEST
    assert set(picks) - set(CPU_FASTEST) == NEAR_TIES
    assert {picks[k] for k in NEAR_TIES} == {"gram_unfold"}


def test_on_the_cpu_a_late_stride_2_conv_of_the_small_cnn_takes_the_unfolded_gram_form():
    # its per-sample weight gradient sums over only T = 64 positions, and gram_shift's stride-2 slices are a
    # gather: at batch 64 in 32-sample slices, gram_unfold 8.8 ms against gram_shift 13.7, per_sample_grouped
    # 15.0 at 1 thread (a trial's default), 4.6 against 4.8 and 5.3 at 2
    geometry = ConvGeometry.of(nn.Conv2d(64, 128, 3, stride=2, padding=1), (16, 16))
    assert choose_conv_form(geometry, 32, "cpu") == "gram_unfold"


def test_on_the_cpu_large_weights_take_a_call_per_sample_and_small_ones_the_grouped_call():
    sizes = []
    for c_in, c_out in ((8, 8), (64, 128), (128, 256)):
        geometry = ConvGeometry.of(nn.Conv2d(c_in, c_out, 3, padding=1), (32, 32))  # T = 1024: a Gram costs more
        big = geometry.weights >= PER_SAMPLE_CALL_MIN_WEIGHT
        assert choose_conv_form(geometry, 32, "cpu") == ("per_sample_loop" if big else "per_sample_grouped")
        sizes.append(big)
    assert sizes == [False, False, True]


def test_resnet18_on_32x32_uses_per_sample_gradients_early_and_gram_matrices_late():
    forms = [(g.in_size[0], g.c_in, g.c_out, choose_conv_form(g, 256, "cpu")) for g in _conv_geometries("resnet18", 32)]
    assert all(form.startswith("per_sample") for size, *_, form in forms if size == 32)
    assert all(form in GRAM_FORMS for size, *_, form in forms if size <= 8)
    # stage 2's 128 -> 128 convs: the channel Gram of the padded 18 x 18 input (13 M FLOPs a sample) and its 9
    # shifted slices beat the 38 M multiply-adds of the per-sample gradient
    assert {form for size, c_in, c_out, form in forms if size == 16 and c_in == c_out == 128} == {"gram_shift"}


def test_a_gpu_never_gets_a_call_per_sample_and_a_grouped_conv_never_a_gram_form():
    for geometry in _conv_geometries("resnet18", 32):
        assert choose_conv_form(geometry, 256, "cuda") != "per_sample_loop"
    grouped = ConvGeometry.of(nn.Conv2d(8, 8, 3, padding=1, groups=2), (4, 4))  # T = 16: a Gram would be cheap
    assert choose_conv_form(grouped, 64, "cpu").startswith("per_sample")
    assert choose_conv_form(grouped, 64, "cuda").startswith("per_sample")


def test_the_costs_count_the_products_each_form_does():
    geometry = ConvGeometry.of(nn.Conv2d(64, 128, 3, padding=1), (16, 16))  # T = 256, d_in = 576
    t, d = 256, 576
    assert form_cost(geometry, "per_sample_unfold", 2).flops == 2 * (2 * t * d * 128)
    assert form_cost(geometry, "gram_unfold", 1).flops == 2 * t * t * d + 2 * t * t * 128 + 2 * t * t
    assert form_cost(geometry, "gram_shift", 1).flops == 2 * 18**4 * 64 + 9 * t * t + 2 * t * t * 128 + 2 * t * t
    assert form_cost(geometry, "per_sample_loop", 8).calls == 25
    with pytest.raises(ValueError, match="unknown conv form 'ghost'"):
        form_cost(geometry, "ghost", 1)
