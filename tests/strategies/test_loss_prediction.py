"""The Learning-Loss family's own parts: the loss-prediction module, LL4AL's ranking loss, the detach epoch."""

from __future__ import annotations

import pytest
import torch

from experiments.defaults import DEFAULTS, resolve_train
from models import build_model, tap_channels
from strategies.loss_prediction import LossPredictionModule, LossPredictionSettings, loss_prediction_loss


def test_small_cnn_shares_the_interface_and_the_loss_module_fits_both_backbones():
    for name, shape in (("small_cnn", (1, 8, 8)), ("resnet18", (3, 32, 32))):
        model = build_model(name, 7, shape[0])
        module = LossPredictionModule(tap_channels(model, shape))
        out = model(torch.zeros(4, *shape))
        assert out.logits.shape == (4, 7) and len(out.taps) == 4
        assert module(out.taps).shape == (4,)


def test_ranking_loss_matches_the_ll4al_formula_by_hand():
    predicted = torch.tensor([0.5, 2.0, 1.0, 0.0])
    target = torch.tensor([3.0, 1.0, 1.0, 1.0])
    # pairs (0, 3): target diff +2 -> s=+1, pred diff 0.5 -> max(0, 1 - 0.5) = 0.5
    #       (1, 2): target diff 0 (tie) -> s=-1, pred diff 1.0 -> max(0, 1 + 1.0) = 2.0
    assert torch.isclose(loss_prediction_loss(predicted, target, margin=1.0), torch.tensor(1.25))
    # an odd batch leaves its middle sample out; one sample gives a zero loss
    assert torch.isclose(
        loss_prediction_loss(torch.tensor([0.5, 9.0, 0.0]), torch.tensor([3.0, 0.0, 1.0])), torch.tensor(0.5)
    )
    assert loss_prediction_loss(torch.tensor([1.0]), torch.tensor([1.0])) == 0


@pytest.mark.parametrize("dataset", sorted(DEFAULTS))
def test_at_its_reference_length_a_schedule_detaches_where_the_reference_does(dataset):
    reference = DEFAULTS[dataset].train
    expected = {"digits": 18, "cifar10": 120, "cifar100": 120, "svhn": 120, "caltech101": 30, "imagefolder": 30}
    assert LossPredictionSettings().resolved(reference, reference).detach_epoch == expected[dataset]
    assert LossPredictionSettings(detach_epoch=7).resolved(reference, reference).detach_epoch == 7, "a given one"


def phases(epochs: int) -> tuple[int, int, int]:
    """CIFAR's schedule shortened to `epochs`: (attached, detached at the high LR, after the LR step) epochs."""
    reference = DEFAULTS["cifar10"].train
    train = resolve_train(reference, {"epochs": epochs})
    d = LossPredictionSettings().resolved(train, reference).detach_epoch
    (step,) = train.lr_milestones
    attached = sum(1 for e in range(epochs) if not e > d)
    detached_high = sum(1 for e in range(epochs) if e > d and e < step)
    return attached, detached_high, epochs - step


@pytest.mark.parametrize("epochs", [5, 8, 10, 20, 30, 50, 60, 100, 150, 200])
def test_a_shortened_schedule_keeps_the_references_phase_split(epochs):
    """200 epochs: 121 attached (60.5 %), 39 detached at the high LR (19.5 %), 40 after the step (20 %)."""
    attached, detached_high, after_step = phases(epochs)
    assert attached + detached_high + after_step == epochs
    assert abs(attached / epochs - 0.605) <= 0.5 / epochs + 1e-9, "the attached count is the reference's, rounded"
    assert abs(after_step / epochs - 0.2) <= 0.5 / epochs + 1e-9
    assert detached_high >= 1, "some epochs run detached at the high LR"


def test_the_split_at_the_lengths_the_old_rule_got_wrong():
    assert phases(200) == (121, 39, 40)
    assert phases(8) == (5, 1, 2)  # the old round(120 * 8 / 200) = 5 kept 6 of 8 attached, none detached at high LR
    assert phases(3) == (2, 0, 1)  # the old rule never detached at 3 epochs or fewer
    assert phases(1) == (1, 0, 0)
