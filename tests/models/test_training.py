"""Training on real data: it learns, it is reproducible, LR schedules follow each reference, divergence is caught."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import models.training
from experiments.errors import DivergedError
from experiments.specs import TrainSpec
from models import build_model
from models.augment import Normalizer
from models.evaluation import evaluate
from models.networks import Networks
from models.objective import CROSS_ENTROPY
from models.training import lr_at, train_round
from strategies import build_strategy
from strategies.loss_prediction import MODULE, build_loss_module


def _lpl(name: str = "lplgrad", detach_epoch: int = 4):
    """The joint objective of a loss-prediction strategy, with its module among the networks to train."""
    from experiments.specs import StrategySpec

    return build_strategy(StrategySpec(name=name, settings={"detach_epoch": detach_epoch})).objective


def _train(digits, objective=CROSS_ENTROPY, seed=0, **spec):
    torch.manual_seed(seed)
    backbone = build_model("small_cnn", 10, 1)
    auxiliary = {MODULE: build_loss_module(backbone, (1, 8, 8))} if objective.name == "ce+lpl" else {}
    nets = Networks(backbone, auxiliary)
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
    a, _, _ = _train(digits, _lpl(), augment=True, crop_padding=1)
    b, _, _ = _train(digits, _lpl(), augment=True, crop_padding=1)
    assert a.weights().keys() == {"backbone", MODULE}
    for name, weights in a.weights().items():
        assert all(torch.equal(v, b.weights()[name][k]) for k, v in weights.items()), name


class RecordingSGD(torch.optim.SGD):
    """The real optimiser, noting each parameter group's LR at every step."""

    steps: list[list[float]] = []

    def step(self, closure=None):
        RecordingSGD.steps.append([group["lr"] for group in self.param_groups])
        return super().step(closure)


@pytest.mark.parametrize(("strategy", "module_lr_after_milestone"), [("lplgrad", 0.05), ("learning_loss", 0.005)])
def test_the_lr_steps_at_milestones_and_only_learning_loss_decays_the_module(
    strategy, module_lr_after_milestone, digits, monkeypatch
):
    train = TrainSpec(epochs=200, batch_size=128, lr=0.1, lr_milestones=(160,))
    assert lr_at(159, train) == 0.1 and lr_at(160, train) == pytest.approx(0.01)
    monkeypatch.setattr(models.training.torch.optim, "SGD", RecordingSGD)
    RecordingSGD.steps = []
    _train(digits, _lpl(strategy))  # 8 epochs of 300 images in batches of 32, milestone after epoch 6
    assert len(RecordingSGD.steps) == 8 * 10 and all(len(lrs) == 2 for lrs in RecordingSGD.steps)
    before, after = RecordingSGD.steps[6 * 10 - 1], RecordingSGD.steps[6 * 10]
    assert before == [0.05, 0.05], "backbone group, then the module's group"
    assert after[0] == pytest.approx(0.005) and after[1] == pytest.approx(module_lr_after_milestone)


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
