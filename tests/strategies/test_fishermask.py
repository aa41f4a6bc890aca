"""FisherMask's passes and picks against direct implementations: one autograd.grad per (sample, class)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from models.augment import Normalizer
from models.small_cnn import SmallCNN
from strategies.base import ScoringInputs
from strategies.fisher_features import fisher_diagonal, masked_log_prob_grads
from strategies.fishermask import FisherMaskSettings, FisherMaskStrategy, build_mask, last_layer_weight
from tests.strategies.test_fisher_greedy import direct_greedy


def _model(seed=0) -> nn.Module:
    """A tiny CNN with trained-looking BN statistics, in float64 so the comparisons are tight."""
    torch.manual_seed(seed)
    model = SmallCNN(n_classes=4, in_channels=3, widths=(4, 6, 8, 8)).double()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return model.eval()


def _direct_grads(model: nn.Module, x: torch.Tensor) -> tuple[list[str], torch.Tensor, torch.Tensor]:
    """Names, p [N, C] and the full per-sample, per-class gradient [N, C, P] of log p_c, one backward each."""
    named = [(n, p) for n, p in model.named_parameters()]
    rows, probs = [], []
    for i in range(len(x)):
        log_p = torch.log_softmax(model(x[i : i + 1]).logits, 1)[0]
        probs.append(log_p.exp().detach())
        per_class = []
        for c in range(len(log_p)):
            grads = torch.autograd.grad(log_p[c], [p for _, p in named], retain_graph=True)
            per_class.append(torch.cat([g.flatten() for g in grads]))
        rows.append(torch.stack(per_class))
    return [n for n, _ in named], torch.stack(probs), torch.stack(rows)


def _flat_keys(model: nn.Module) -> list[tuple[str, int]]:
    return [(name, p.numel()) for name, p in model.named_parameters()]


def test_fisher_diagonal_is_the_expected_squared_log_prob_gradient():
    model, x = _model(), torch.randn(7, 3, 8, 8, dtype=torch.float64)
    _, p, g = _direct_grads(model, x)
    direct = (p[:, :, None] * g.square()).sum((0, 1))
    fast = fisher_diagonal(model, x, chunk_size=3)
    offset = 0
    for name, size in _flat_keys(model):
        torch.testing.assert_close(fast[name].flatten(), direct[offset : offset + size])
        offset += size
    assert all(p.grad is None for p in model.parameters()), ".grad is untouched"


def test_masked_gradients_are_the_full_gradients_at_the_mask():
    model, x = _model(1), torch.randn(5, 3, 8, 8, dtype=torch.float64)
    _, _, g = _direct_grads(model, x)
    rng = np.random.default_rng(0)
    mask, flat_positions, offset = {}, [], 0
    for name, size in _flat_keys(model):
        chosen = np.sort(rng.choice(size, size=min(size, 5), replace=False))
        if name != "stages.1.1.bias":  # a tensor without masked entries is skipped
            mask[name] = torch.as_tensor(chosen)
            flat_positions.extend((offset + chosen).tolist())
        offset += size
    fast = masked_log_prob_grads(model, x, mask, chunk_size=2)
    torch.testing.assert_close(fast, g[:, :, flat_positions])


def test_mask_keeps_the_whole_last_weight_plus_the_top_fisher_entries_elsewhere():
    model = _model()
    fisher = fisher_diagonal(model, torch.randn(6, 3, 8, 8, dtype=torch.float64))
    last = last_layer_weight(model)
    assert last == "linear.weight"
    mask = build_mask(fisher, last, fisher[last].numel() + 10)
    assert mask[last].tolist() == list(range(fisher[last].numel()))
    others = sorted(
        ((v.item(), k, i) for k, t in fisher.items() if k != last for i, v in enumerate(t.flatten())),
        key=lambda r: -r[0],
    )[:10]
    assert sorted((k, i) for _, k, i in others) == sorted((k, int(i)) for k in mask if k != last for i in mask[k])


def _inputs(model, images, pool_indices) -> ScoringInputs:
    return ScoringInputs(
        model, images[pool_indices], pool_indices, Normalizer((0.5,) * 3, (0.25,) * 3), 4, selection_key=7
    )


def test_fishermask_picks_what_the_direct_implementation_picks():
    model = _model(2)
    torch.manual_seed(3)
    images = torch.randint(0, 256, (40, 3, 8, 8), dtype=torch.uint8)
    labeled, subset, b, samples, size = np.arange(0, 10), np.arange(10, 40), 4, 16, 4 * 8 + 12
    strategy = FisherMaskStrategy(FisherMaskSettings(mask_size=size, samples=samples))
    candidates = np.union1d(subset, labeled)
    make_inputs = lambda idx: _inputs(model, images, idx)  # noqa: E731
    prepared = strategy.prepare(make_inputs, candidates, selection_key=7)
    merged = prepared.score(make_inputs(candidates))
    fast = prepared.select(merged, b, labeled)

    # direct: the same random mask sample, the full Fisher diagonal, the top entries, the full gradients masked
    sample = np.sort(prepared_sample(candidates, samples, 7))
    x_all = make_inputs(candidates).normalize(images[candidates]).double()
    names, p, g = _direct_grads(model, x_all)
    in_sample = np.isin(candidates, sample)
    fisher = (p[in_sample, :, None] * g[in_sample].square()).sum((0, 1))
    sizes = [n for _, n in _flat_keys(model)]
    offsets = np.cumsum([0, *sizes])
    last = names.index("linear.weight")
    whole = np.arange(offsets[last], offsets[last + 1])
    others = np.setdiff1d(np.arange(offsets[-1]), whole)
    ranked = others[np.argsort(-fisher[others].numpy(), kind="stable")][: size - len(whole)]
    columns = np.sort(np.concatenate([whole, ranked]))
    v = g[:, :, columns].numpy()
    direct = candidates[direct_greedy(v, np.isin(candidates, labeled), b, 1.0, 1)]
    assert fast.tolist() == direct.tolist()
    assert len(set(fast.tolist())) == b and not np.isin(fast, labeled).any()


def prepared_sample(candidates, samples, key):
    from strategies.fishermask import MASK_SAMPLE_SALT
    from strategies.views import uniform_hash

    return candidates[np.argsort(uniform_hash(key ^ MASK_SAMPLE_SALT, candidates), kind="stable")[:samples]]
