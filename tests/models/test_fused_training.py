"""Fused training equals separate training within float tolerance, on real digits: every member's weights and
BatchNorm statistics after a round, and its loss; a diverging member is reported and leaves the others untouched."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from experiments.errors import DivergedError
from experiments.specs import StrategySpec, TrainSpec
from models import build_model
from models.augment import Normalizer
from models.fused_training import FusedMember, check_fusable, train_round_fused
from models.networks import Networks
from models.objective import CROSS_ENTROPY
from models.training import train_round
from strategies import build_strategy
from strategies.loss_prediction import MODULE, build_loss_module

TRAIN = TrainSpec(epochs=3, batch_size=32, lr=0.05, lr_milestones=(2,), augment=True, crop_padding=1)


def _nets(seed: int, lpl: bool, dtype: torch.dtype) -> Networks:
    torch.manual_seed(seed)
    backbone = build_model("small_cnn", 10, 1)
    auxiliary = {MODULE: build_loss_module(backbone, (1, 8, 8)).to(dtype)} if lpl else {}
    return Networks(backbone.to(dtype), auxiliary)


def _member(seed: int, lpl: bool, n: int = 200, dtype: torch.dtype = torch.float32) -> FusedMember:
    labeled = np.random.default_rng(seed).choice(1000, n, replace=False)
    return FusedMember(
        _nets(seed, lpl, dtype),
        labeled,
        torch.Generator().manual_seed(100 + seed),
        torch.Generator().manual_seed(200 + seed),
    )


def _objective(lpl: bool):
    return (
        build_strategy(StrategySpec(name="lplgrad", settings={"detach_epoch": 1})).objective if lpl else CROSS_ENTROPY
    )


# float64: the same arithmetic up to rounding (measured: weights within 7e-15 of each other after a round, the
# three members' losses within 1e-16). float32: a batched convolution rounds differently from a member's own
# (channels-last) one, and the round's 21 steps amplify it: measured, two members bit-identical, the third's loss
# 0.19 % off and a conv weight 5.7 % of its tensor's largest value. So float32 checks only closeness.
TOLERANCE = {torch.float64: (1e-9, 1e-10), torch.float32: (1e-2, 1e-1)}


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("lpl", [False, True], ids=["cross_entropy", "lplgrad_with_its_module"])
def test_fused_round_equals_separate_rounds(digits, lpl, dtype):
    objective, seeds = _objective(lpl), (0, 1, 2)
    normalizer = Normalizer(digits.mean, digits.std)
    normalize = lambda x: normalizer(x).to(dtype)  # noqa: E731
    loss_tolerance, weight_tolerance = TOLERANCE[dtype]
    separate, losses = [], []
    for seed in seeds:
        m = _member(seed, lpl, dtype=dtype)
        stats = train_round(
            m.nets, digits.train_images, digits.train_labels, m.labeled, TRAIN, objective, normalize, m.order, m.augment
        )
        separate.append(m.nets.weights())
        losses.append(stats.final_loss)
    fused = [_member(seed, lpl, dtype=dtype) for seed in seeds]
    stats = train_round_fused(fused, digits.train_images, digits.train_labels, TRAIN, objective, normalize)
    assert [s.final_loss for s in stats] == pytest.approx(losses, rel=loss_tolerance)
    worst = 0.0
    for m, expected in zip(fused, separate, strict=True):
        got = m.nets.weights()
        assert got.keys() == expected.keys()
        for name in expected:
            for key, value in expected[name].items():
                if value.is_floating_point():
                    scale = value.abs().max().clamp_min(1e-6)
                    worst = max(worst, float((got[name][key] - value).abs().max() / scale))
                else:  # num_batches_tracked: each member counted its own steps
                    assert torch.equal(got[name][key], value), key
    assert worst < weight_tolerance, worst
    # and the members really differ from one another: each slice is its own model
    a, b = (m.nets.weights()["backbone"]["linear.weight"] for m in fused[:2])
    assert not torch.allclose(a, b)


def test_a_diverging_member_is_reported_and_the_others_train_as_alone(digits):
    normalize = Normalizer(digits.mean, digits.std)
    alone = _member(1, False)
    train_round(
        alone.nets,
        digits.train_images,
        digits.train_labels,
        alone.labeled,
        TRAIN,
        CROSS_ENTROPY,
        normalize,
        alone.order,
        alone.augment,
    )
    broken, healthy = _member(0, False), _member(1, False)
    with torch.no_grad():
        broken.nets.backbone.linear.weight.fill_(float("nan"))
    stats = train_round_fused(
        [broken, healthy], digits.train_images, digits.train_labels, TRAIN, CROSS_ENTROPY, normalize
    )
    assert isinstance(stats[0], DivergedError) and "epoch 0" in str(stats[0]) and "Lower train.lr" in str(stats[0])
    assert stats[1].final_loss == pytest.approx(stats[1].final_loss) and np.isfinite(stats[1].final_loss)
    for key, value in alone.nets.weights()["backbone"].items():
        got = healthy.nets.weights()["backbone"][key]
        assert torch.allclose(got.float(), value.float(), rtol=1e-3, atol=1e-5), key


def test_members_must_match_in_labeled_size_and_structure():
    with pytest.raises(ValueError, match="labeled sets of one size"):
        check_fusable([_member(0, False, 100), _member(1, False, 120)])
    with pytest.raises(ValueError, match="one structure"):
        check_fusable([_member(0, False), _member(1, True)])
