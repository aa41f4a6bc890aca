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
@pytest.mark.parametrize("epochs", [None, 1, 2, 3, 5, 8, 10, 30, 50, 64, 100, 200])
def test_the_default_detach_epoch_is_what_albench_17506af_resolved(dataset, epochs):
    """17506af kept a detach epoch per dataset (0.6 of its epochs) and rescaled it as max(1, round(d * E / E0))."""
    defaults = DEFAULTS[dataset].train
    old_default = {"digits": 18, "cifar10": 120, "cifar100": 120, "svhn": 120, "caltech101": 30, "imagefolder": 30}
    d0, e0 = old_default[dataset], defaults.epochs
    train = resolve_train(defaults, {} if epochs is None else {"epochs": epochs})
    expected = d0 if epochs is None else max(1, round(d0 * epochs / e0))
    assert LossPredictionSettings().resolved(train).detach_epoch == expected
    assert LossPredictionSettings(detach_epoch=7).resolved(train).detach_epoch == 7, "a given one is kept"
