"""per_sample_grad_norms against a one-sample-at-a-time backward loop (the reference's method), in float64."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from models import build_model
from strategies.gradnorm import UnsupportedLayerError, per_sample_grad_norms
from strategies.layer_norms import CONV_FORMS


def reference_loop(model, x, loss="entropy", aggregate="layer_sum"):
    """Batch size 1: backward of one sample's loss, norms of every parameter tensor's gradient."""
    model.eval()
    params = [p for p in model.parameters() if p.requires_grad]

    def norm_of(objective, retain=False):
        grads = [
            g for g in torch.autograd.grad(objective, params, retain_graph=retain, allow_unused=True) if g is not None
        ]
        norms = torch.stack([g.norm() for g in grads])
        return norms.sum() if aggregate == "layer_sum" else norms.square().sum().sqrt()

    scores = []
    for i in range(len(x)):
        out = model(x[i : i + 1])
        logits = out if isinstance(out, torch.Tensor) else (out[0] if isinstance(out, tuple) else out.logits)
        log_p = torch.log_softmax(logits, 1)
        p = log_p.exp()
        if loss == "entropy":
            scores.append(norm_of(-(p * log_p).sum()))
        else:
            scores.append(sum(p[0, c].detach() * norm_of(-log_p[0, c], retain=True) for c in range(p.shape[1])))
    return torch.stack(scores)


def _with_running_stats(model, shape):
    model = model.double()
    model.train()
    with torch.no_grad():  # non-trivial BN running statistics
        for _ in range(2):
            model(torch.randn(16, *shape, dtype=torch.float64) * 2 + 0.5)
    return model


@pytest.mark.parametrize("loss", ["entropy", "expected_ce"])
@pytest.mark.parametrize("aggregate", ["layer_sum", "l2"])
def test_small_cnn_agrees_with_the_loop(loss, aggregate):
    torch.manual_seed(0)
    model = _with_running_stats(build_model("small_cnn", 10, 3), (3, 16, 16))
    x = torch.randn(6, 3, 16, 16, dtype=torch.float64)
    fast = per_sample_grad_norms(model, x, loss=loss, aggregate=aggregate, chunk_size=4)
    torch.testing.assert_close(fast, reference_loop(model, x, loss, aggregate), rtol=1e-4, atol=0)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("loss", "aggregate"), [("entropy", "layer_sum"), ("entropy", "l2"), ("expected_ce", "layer_sum")]
)
def test_resnet18_agrees_with_the_loop(loss, aggregate):
    torch.manual_seed(0)
    model = _with_running_stats(build_model("resnet18", 10, 3), (3, 32, 32))
    x = torch.randn(3, 3, 32, 32, dtype=torch.float64)
    fast = per_sample_grad_norms(model, x, loss=loss, aggregate=aggregate)
    torch.testing.assert_close(fast, reference_loop(model, x, loss, aggregate), rtol=1e-4, atol=0)


def test_last_layer_closed_form():
    """||dH/dW|| = ||delta|| ||h|| and ||dH/db|| = ||delta|| with delta_k = -p_k (log p_k + H) (ALGORITHMS.md B)."""
    torch.manual_seed(1)
    layer = nn.Linear(5, 4).double()
    h = torch.randn(3, 5, dtype=torch.float64)
    log_p = torch.log_softmax(layer(h), 1)
    p = log_p.exp()
    entropy = -(p * log_p).sum(1, keepdim=True)
    delta = -p * (log_p + entropy)
    expected = delta.norm(dim=1) * h.norm(dim=1) + delta.norm(dim=1)
    torch.testing.assert_close(per_sample_grad_norms(layer, h), expected)


class InPlaceNet(nn.Module):
    """Tuple output, in-place ReLU after BN (as torchvision's ResNet), a frozen layer, grouped and 'same' convs."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding="same", bias=True)
        self.bn = nn.BatchNorm2d(8)
        self.grouped = nn.Conv2d(8, 8, 3, padding=1, groups=2, dilation=1, stride=2)
        self.frozen = nn.Linear(8, 8)
        self.frozen.requires_grad_(False)
        self.head = nn.Linear(8, 5)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        x = self.relu(self.bn(self.conv(x)))
        x = self.grouped(x).mean((2, 3))
        return self.head(self.frozen(x)), x


def test_generic_model_in_place_ops_tuple_output_frozen_and_grouped_layers():
    torch.manual_seed(2)
    model = _with_running_stats(InPlaceNet(), (3, 9, 9))
    x = torch.randn(5, 3, 9, 9, dtype=torch.float64)
    torch.testing.assert_close(per_sample_grad_norms(model, x), reference_loop(model, x), rtol=1e-6, atol=0)


@pytest.mark.parametrize("conv_form", CONV_FORMS)
def test_every_conv_form_agrees_with_the_loop_on_a_whole_model(conv_form):
    """Each form, forced on every conv it applies to ('same', strided, grouped), against the one-sample loop."""
    torch.manual_seed(2)
    model = _with_running_stats(InPlaceNet(), (3, 9, 9))
    x = torch.randn(5, 3, 9, 9, dtype=torch.float64)
    got = per_sample_grad_norms(model, x, conv_form=conv_form)
    torch.testing.assert_close(got, reference_loop(model, x), rtol=1e-6, atol=0)


@pytest.mark.slow
@pytest.mark.parametrize("conv_form", ["gram_shift", "per_sample_grouped"])
def test_resnet18_in_a_forced_form_agrees_with_the_loop(conv_form):
    torch.manual_seed(0)
    model = _with_running_stats(build_model("resnet18", 10, 3), (3, 32, 32))
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    got = per_sample_grad_norms(model, x, conv_form=conv_form)
    torch.testing.assert_close(got, reference_loop(model, x), rtol=1e-4, atol=0)


def test_leaves_parameters_buffers_modes_and_grads_untouched_even_under_no_grad():
    torch.manual_seed(3)
    model = build_model("small_cnn", 10, 1)
    model.train()
    model.stages[0][0].weight.grad = torch.ones_like(model.stages[0][0].weight)
    before = copy.deepcopy(model.state_dict())
    with torch.no_grad():
        scores = per_sample_grad_norms(model, torch.randn(7, 1, 8, 8))
    assert scores.shape == (7,) and bool((scores > 0).all())
    assert model.training and all(m.training for m in model.modules())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert torch.equal(model.stages[0][0].weight.grad, torch.ones_like(model.stages[0][0].weight))
    assert all(p.grad is None for n, p in model.named_parameters() if n != "stages.0.0.weight")


def test_chunking_does_not_change_the_scores():
    torch.manual_seed(4)
    model = _with_running_stats(build_model("small_cnn", 10, 1), (1, 8, 8))
    x = torch.randn(10, 1, 8, 8, dtype=torch.float64)
    torch.testing.assert_close(per_sample_grad_norms(model, x, chunk_size=3), per_sample_grad_norms(model, x))


def test_unsupported_layers_and_shared_weights_raise_clear_errors():
    with pytest.raises(UnsupportedLayerError, match=r"layer '0' \(LayerNorm\).*supported: Conv2d, Linear"):
        per_sample_grad_norms(nn.Sequential(nn.LayerNorm(4), nn.Linear(4, 2)), torch.randn(3, 4))

    class Shared(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x):
            return self.fc(F.relu(self.fc(x)))

    with pytest.raises(UnsupportedLayerError, match="called more than once"):
        per_sample_grad_norms(Shared(), torch.randn(3, 4))


class MLPWithBatchNorm1d(nn.Module):
    """A linear head with BatchNorm1d on [B, C] features: the layer whose per-sample norms once raised IndexError."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.bn, self.fc2 = nn.Linear(12, 16), nn.BatchNorm1d(16), nn.Linear(16, 5)

    def forward(self, x):
        return self.fc2(F.relu(self.bn(self.fc1(x.flatten(1)))))


@pytest.mark.parametrize("aggregate", ["layer_sum", "l2"])
def test_batchnorm1d_on_flat_features_matches_torch_func_per_sample_gradients(aggregate):
    from torch.func import functional_call, grad, vmap

    torch.manual_seed(0)
    model = MLPWithBatchNorm1d().double()
    model.train()
    for _ in range(3):  # non-trivial running statistics, then eval mode as in scoring
        model(torch.randn(32, 12, dtype=torch.float64) * 2 + 1)
    model.eval()
    x = torch.randn(9, 12, dtype=torch.float64)
    params = {k: v.detach() for k, v in model.named_parameters()}
    buffers = {k: v.detach() for k, v in model.named_buffers()}

    def entropy_of_one(p, sample):
        logits = functional_call(model, (p, buffers), (sample.unsqueeze(0),))
        log_p = torch.log_softmax(logits, 1)
        return -(log_p.exp() * log_p).sum()

    per_sample = vmap(grad(entropy_of_one), in_dims=(None, 0))(params, x)  # name -> [B, *shape]
    norms = torch.stack([g.flatten(1).norm(dim=1) for g in per_sample.values()], 1)  # [B, tensors]
    expected = norms.sum(1) if aggregate == "layer_sum" else norms.square().sum(1).sqrt()
    ours = per_sample_grad_norms(model, x, loss="entropy", aggregate=aggregate)
    assert ours.shape == (9,)
    torch.testing.assert_close(ours, expected, rtol=1e-10, atol=1e-12)
