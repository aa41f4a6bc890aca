"""Training on real data: it learns, it is reproducible, LR schedules follow each reference, divergence is caught."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from experiments.errors import DivergedError
from experiments.specs import TrainSpec
from models import LossPredictionModule, build_model, tap_channels
from models.augment import Normalizer
from models.evaluation import evaluate
from models.objective import CROSS_ENTROPY, Objective
from models.training import Networks, lr_at, train_round


def _train(digits, objective=CROSS_ENTROPY, seed=0, **spec):
    torch.manual_seed(seed)
    backbone = build_model("small_cnn", 10, 1)
    module = LossPredictionModule(tap_channels(backbone, (1, 8, 8))) if objective.loss_prediction else None
    nets = Networks(backbone, module)
    train = TrainSpec(**{"epochs": 8, "batch_size": 32, "lr": 0.05, "lr_milestones": (6,), "augment": False, **spec})
    normalize = Normalizer(digits.mean, digits.std)
    labeled = np.arange(300)
    stats = train_round(
        nets,
        digits.train_images,
        digits.train_labels,
        labeled,
        train,
        objective,
        normalize,
        torch.Generator().manual_seed(1),
        torch.Generator().manual_seed(2),
    )
    return nets, stats, evaluate(backbone, digits.test_images, digits.test_labels, normalize, 10)


def test_training_learns_real_digits(digits):
    _, stats, result = _train(digits)
    assert result.accuracy > 0.85, result
    assert len(result.per_class_accuracy) == 10 and min(result.per_class_accuracy) > 0.5
    assert stats.final_loss < 0.5


def test_training_is_bit_reproducible_on_cpu_with_augmentation_and_lpl(digits):
    objective = Objective(loss_prediction=True)
    a, _, _ = _train(digits, objective, augment=True, crop_padding=1)
    b, _, _ = _train(digits, objective, augment=True, crop_padding=1)
    for x, y in zip(a.backbone.state_dict().values(), b.backbone.state_dict().values(), strict=True):
        assert torch.equal(x, y)
    for x, y in zip(a.loss_module.state_dict().values(), b.loss_module.state_dict().values(), strict=True):
        assert torch.equal(x, y)


def test_lr_schedule_steps_at_milestones_and_the_lplgrad_module_never_decays():
    train = TrainSpec(epochs=200, batch_size=128, lr=0.1, lr_milestones=(160,))
    assert lr_at(159, train) == 0.1 and lr_at(160, train) == pytest.approx(0.01)
    assert lr_at(199, train, decays=False) == 0.1


def test_a_diverging_run_stops_with_a_clear_error(digits):
    with pytest.raises(DivergedError, match=r"training diverged.*Lower train.lr"):
        _train(digits, lr=1e12, momentum=0.9)


def test_bf16_precision_trains_under_bfloat16_autocast_and_still_learns(digits):
    nets32, _, fp32 = _train(digits)
    nets16, _, bf16 = _train(digits, precision="bf16")
    pairs = zip(nets32.backbone.state_dict().values(), nets16.backbone.state_dict().values(), strict=True)
    assert any(not torch.equal(x, y) for x, y in pairs), "bf16 autocast changed the arithmetic"
    assert all(p.dtype == torch.float32 for p in nets16.backbone.parameters()), "master weights stay fp32"
    assert bf16.accuracy > 0.8 and abs(bf16.accuracy - fp32.accuracy) < 0.08, (bf16, fp32)
    with pytest.raises(ValueError, match="precision"):
        TrainSpec(epochs=1, batch_size=8, lr=0.1, precision="fp16")
